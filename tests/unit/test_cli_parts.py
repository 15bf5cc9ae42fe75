"""The pieces of the operator commands that need no server: the cart syntax and the formats."""

from __future__ import annotations

import argparse
from decimal import Decimal

import pytest

from rees46_loyalty.cli._args import _cart_item
from rees46_loyalty.cli._render import money, number, to_json
from rees46_loyalty.models import CartItem, OrderRef


def test_a_cart_item_is_read_as_exact_decimals() -> None:
    """PRODUCT_ID:PRICE:QUANTITY gives Decimals with the digits as typed."""
    item = _cart_item("SKU-1:99.90:3")
    assert item == CartItem(product_id="SKU-1", price=Decimal("99.90"), quantity=Decimal(3))
    assert str(item.price) == "99.90"


def test_a_product_id_may_hold_colons() -> None:
    """The last two fields are price and quantity; the rest is the product id."""
    assert _cart_item("shop:A:1:0.5").product_id == "shop:A"
    assert _cart_item("shop:A:1:0.5").quantity == Decimal("0.5")


@pytest.mark.parametrize(
    "text", ["SKU-1", "SKU-1:10", ":10:1", "SKU-1:ten:1", "SKU-1:10:x", "A:Infinity:1", "A:1:NaN"]
)
def test_a_malformed_cart_item_is_a_usage_error(text: str) -> None:
    """Missing fields, words and non-finite numbers are refused by argparse."""
    with pytest.raises(argparse.ArgumentTypeError):
        _cart_item(text)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("4099.9", "4099.90"),
        ("1000", "1000.00"),
        ("1E+3", "1000.00"),
        ("-710", "-710.00"),
        ("33.335", "33.335"),
        ("0.00", "0.00"),
    ],
)
def test_money_has_two_decimals_and_is_never_rounded(value: str, shown: str) -> None:
    """Amounts are padded to kopecks, never rounded, never in exponent form."""
    assert money(Decimal(value)) == shown


def test_number_is_written_as_sent() -> None:
    """Quantities and JSON amounts keep the API's digits, without an exponent."""
    assert number(Decimal("4099.9")) == "4099.9"
    assert number(Decimal("1E+2")) == "100"


def test_json_masks_the_member_and_keeps_ids_whole() -> None:
    """to_json masks identifier fields and phone numbers in messages, not order ids."""
    ref = OrderRef(
        order_id="4601234567890", identifier="79990001122", message="member 79990001122 ok"
    )
    assert to_json(ref) == {
        "order_id": "4601234567890",
        "identifier": "7999***1122",
        "message": "member 7999***1122 ok",
        "replayed": False,
    }
