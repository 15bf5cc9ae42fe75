"""Requests the API would refuse are refused locally, naming the field, with nothing sent."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from rees46_loyalty import CartItem, LoyaltyClient, ValidationError
from tests.conftest import PHONE
from tests.unit.helpers import FakeApi, count

GOOD = CartItem(product_id="A", price=Decimal(100), quantity=1)


def item(**changes: Any) -> CartItem:
    fields = {"product_id": "A", "price": Decimal(100), "quantity": 1, **changes}
    return CartItem(**fields)


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("estimate", {"cart_items": []}, "cart_items", "empty"),
    ("estimate", {"cart_items": GOOD}, "cart_items", "list of CartItem"),
    ("estimate", {"cart_items": None}, "cart_items", "list of CartItem"),
    ("estimate", {"cart_items": [{"product_id": "A"}]}, "cart_items[0]", "expected a CartItem"),
    (
        "estimate",
        {"cart_items": [GOOD, item(price=5)]},
        "cart_items[1].product_id",
        "same product ID",
    ),
    ("estimate", {"cart_items": [item(product_id="")]}, "cart_items[0].product_id", "non-empty"),
    ("estimate", {"cart_items": [item(product_id=None)]}, "cart_items[0].product_id", "required"),
    ("estimate", {"cart_items": [item(price=0)]}, "cart_items[0].price", "greater than 0"),
    (
        "estimate",
        {"cart_items": [item(price=Decimal("-1.5"))]},
        "cart_items[0].price",
        "greater than 0",
    ),
    ("estimate", {"cart_items": [item(price=None)]}, "cart_items[0].price", "Decimal or an int"),
    ("estimate", {"cart_items": [item(price=99.9)]}, "cart_items[0].price", "float cannot hold"),
    ("estimate", {"cart_items": [item(price="99.90")]}, "cart_items[0].price", "got str"),
    ("estimate", {"cart_items": [item(price=True)]}, "cart_items[0].price", "got bool"),
    (
        "estimate",
        {"cart_items": [item(price=Decimal("NaN"))]},
        "cart_items[0].price",
        "not a number",
    ),
    (
        "estimate",
        {"cart_items": [item(price=Decimal("Infinity"))]},
        "cart_items[0].price",
        "not a number",
    ),
    (
        "estimate",
        {"cart_items": [item(price=Decimal("1.0000000000000001"))]},
        "cart_items[0].price",
        "significant digits",
    ),
    ("estimate", {"cart_items": [item(quantity=0)]}, "cart_items[0].quantity", "greater than 0"),
    (
        "estimate",
        {"cart_items": [item(price=Decimal("1E+5000"))]},
        "cart_items[0].price",
        "less than",
    ),
    ("estimate", {"cart_items": [item(price=10**15)]}, "cart_items[0].price", "less than"),
    (
        "estimate",
        {"cart_items": [item(quantity=Decimal("1E-400"))]},
        "cart_items[0].quantity",
        "exactly",
    ),
    (
        "estimate",
        {"cart_items": [item(quantity=None)]},
        "cart_items[0].quantity",
        "Decimal or an int",
    ),
    (
        "estimate",
        {"cart_items": [item(discountable="no")]},
        "cart_items[0].discountable",
        "True or False",
    ),
    ("estimate", {"charge_bonuses": True}, "identifier", "existing member"),
    ("estimate", {"charge_bonuses": "yes", "identifier": PHONE}, "charge_bonuses", "True or False"),
    ("estimate", {"identifier": "+7 999 000-11-22"}, "identifier", "7XXXXXXXXXX"),
    ("estimate", {"identifier": "89990001122x"}, "identifier", "7XXXXXXXXXX"),
    ("estimate", {"identifier": 79990001122}, "identifier", "got int"),
    ("estimate", {"current_time": "9:30"}, "current_time", "HH:MM"),
    ("estimate", {"current_time": "24:00"}, "current_time", "HH:MM"),
    ("estimate", {"current_time": "12:60"}, "current_time", "HH:MM"),
    ("estimate", {"bonuses_amount": -1}, "bonuses_amount", "0 or more"),
    ("estimate", {"bonuses_amount": 10.5}, "bonuses_amount", "float"),
    ("estimate", {"promo_codes": "SALE10"}, "promo_codes", "list of strings"),
    ("estimate", {"certificates": ["C-1", 7]}, "certificates[1]", "non-empty string"),
    ("estimate", {"payment_type": ""}, "payment_type", "non-empty string"),
    ("estimate", {"use_personal_certificates": 1}, "use_personal_certificates", "True or False"),
    ("estimate", {"order_id": ""}, "order_id", "non-empty string"),
    ("apply", {"order_id": None}, "order_id", "non-empty string"),
    ("apply", {"order_id": "   "}, "order_id", "non-empty string"),
    ("change", {"order_id": 1001}, "order_id", "non-empty string"),
    ("confirm", {"order_id": None}, "order_id", "non-empty string"),
    ("cancel", {"order_id": ""}, "order_id", "non-empty string"),
    ("details", {"order_id": 5}, "order_id", "non-empty string"),
    ("history", {"identifier": "123"}, "identifier", "7XXXXXXXXXX"),
    ("history", {"identifier": None}, "identifier", "7XXXXXXXXXX"),
]


def arguments(operation: str, overrides: dict[str, Any]) -> dict[str, Any]:
    every: dict[str, dict[str, Any]] = {
        "estimate": {"cart_items": [GOOD]},
        "apply": {"order_id": "1001", "cart_items": [GOOD]},
        "change": {"order_id": "1001", "cart_items": [GOOD]},
        "confirm": {"order_id": "1001"},
        "cancel": {"order_id": "1001"},
        "details": {"order_id": "1001"},
        "history": {"identifier": PHONE},
    }
    return {**every[operation], **overrides}


@pytest.mark.parametrize(
    ("operation", "overrides", "field", "reason"),
    CASES,
    ids=[f"{op}-{field}-{reason}" for op, _, field, reason in CASES],
)
async def test_invalid_requests_are_refused_before_sending(
    client: LoyaltyClient,
    api: FakeApi,
    operation: str,
    overrides: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    """ValidationError names the field and the reason; zero requests go out."""
    with pytest.raises(ValidationError) as caught:
        await getattr(client, operation)(**arguments(operation, overrides))
    error = caught.value
    assert error.field == field
    assert reason in str(error)
    assert error.operation == operation
    assert error.attempts == 0
    assert count(api) == 0


async def test_a_wrong_identifier_is_masked_in_the_error(client: LoyaltyClient) -> None:
    """The refused identifier is shown masked, never in full."""
    with pytest.raises(ValidationError) as caught:
        await client.history(identifier="799900011229999999")
    assert "799900011229999999" not in str(caught.value)
    assert "7999***9999" in str(caught.value)


@pytest.mark.parametrize("identifier", ["79990001122", "375291234567", "998901234567"])
async def test_international_identifiers_are_accepted(
    client: LoyaltyClient, api: FakeApi, identifier: str
) -> None:
    """The same API serves other countries: any 10 to 15 digit phone number passes."""
    api.get("history", payload={"status": "success", "payload": {"orders": []}})
    history = await client.history(identifier=identifier)
    assert history.orders == ()
    assert count(api) == 1
    assert api.requests[0].data["identifier"] == identifier
