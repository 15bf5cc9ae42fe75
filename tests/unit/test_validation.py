"""Requests the API would refuse are refused locally, naming the field, with nothing sent."""

from __future__ import annotations

import inspect
import sys
import typing
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rees46_loyalty import CartItem, CheckoutFields, LoyaltyClient, ValidationError
from rees46_loyalty import _validation as check
from rees46_loyalty._serialization import dumps, unstructure
from rees46_loyalty.models import CheckoutRequest
from tests.conftest import PHONE
from tests.payloads import CALCULATION, status_envelope
from tests.unit.helpers import FakeApi, body_of, count

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


def test_a_checkout_field_is_declared_once_for_the_model_the_signature_and_the_checks() -> None:
    """CheckoutFields holds CheckoutRequest's optional fields, in its order; each names a rule."""
    model = attrs.fields(CheckoutRequest)
    assert [a.name for a in model][:2] == ["cart_items", "order_id"]
    assert list(CheckoutFields.__annotations__) == [a.name for a in model][2:]
    assert CheckoutFields.__total__ is False
    assert all(a.metadata["rule"] in check._RULES for a in model)
    for name in ("estimate", "apply", "change"):
        fields = inspect.signature(getattr(LoyaltyClient, name)).parameters["fields"]
        assert fields.kind is inspect.Parameter.VAR_KEYWORD
        assert fields.annotation == "Unpack[CheckoutFields]"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.Unpack is new in 3.11")
@pytest.mark.parametrize("operation", ["estimate", "apply", "change"])
def test_the_checkout_methods_type_hints_resolve_at_runtime(operation: str) -> None:
    """Tools reading the hints at runtime get every field of CheckoutFields under ``fields``."""
    hints = typing.get_type_hints(getattr(LoyaltyClient, operation))
    assert typing.get_args(hints["fields"]) == (CheckoutFields,)


@pytest.mark.parametrize("operation", ["estimate", "apply", "change"])
async def test_a_misspelt_field_is_a_type_error_naming_it(
    client: LoyaltyClient, api: FakeApi, operation: str
) -> None:
    """An unknown keyword raises TypeError as a written-out signature would; nothing is sent."""
    expected = rf"^{operation}\(\) got an unexpected keyword argument 'locaton_id'$"
    with pytest.raises(TypeError, match=expected):
        await getattr(client, operation)(**arguments(operation, {"locaton_id": "msk-1"}))
    assert count(api) == 0


class _Sku(str):
    __slots__ = ()


class _Units(int):
    pass


class _Money(Decimal):
    __slots__ = ()


async def test_subclasses_of_str_int_and_decimal_pass_in_a_cart_line(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """A str subclass as product id and int / Decimal subclasses as amounts pass as their bases.

    They were refused as "the same product ID" before: the quick check of a line wanted the
    exact types, and the explanation of a refused line found nothing else wrong.
    """
    api.post("estimate", payload=status_envelope(CALCULATION))
    line = CartItem(product_id=_Sku("A"), price=_Money("99.90"), quantity=_Units(2))
    await client.estimate(cart_items=[line])
    assert body_of(api)["cart_items"] == [{"product_id": "A", "price": 99.9, "quantity": 2}]


@pytest.mark.parametrize(
    ("amount", "sent"), [(150, 150), (0, 0), (Decimal("150.00"), 150), (Decimal("0.5"), 0.5)]
)
async def test_bonuses_amount_goes_out_as_an_int_or_a_float(
    client: LoyaltyClient, api: FakeApi, amount: Decimal | int, sent: float
) -> None:
    """An int cap is sent as it is, an integral Decimal as an int, any other as its float."""
    api.post("estimate", payload=status_envelope(CALCULATION))
    await client.estimate(cart_items=[GOOD], bonuses_amount=amount)
    assert body_of(api)["bonuses_amount"] == sent
    assert type(body_of(api)["bonuses_amount"]) is type(sent)


_amounts = st.one_of(
    st.integers(min_value=1, max_value=10**15 - 1),
    st.decimals(
        min_value=Decimal("0.01"), max_value=Decimal("999999999.99"), places=2, allow_nan=False
    ),
)
_flags = st.sampled_from([None, True, False])
_texts = st.one_of(st.none(), st.text(min_size=1, max_size=20).filter(str.strip))


@st.composite
def _checkout_calls(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=8, unique=True))
    cart = [
        CartItem(
            product_id=product_id,
            price=draw(_amounts),
            quantity=draw(_amounts),
            discountable=draw(_flags),
            bonusable=draw(_flags),
            rewardable=draw(_flags),
        )
        for product_id in ids
    ]
    fields: dict[str, Any] = {
        "payment_type": draw(_texts),
        "location_id": draw(_texts),
        "promo_codes": draw(st.one_of(st.none(), st.lists(st.text(min_size=1, max_size=8)))),
        "bonuses_amount": draw(st.one_of(st.none(), st.just(0), _amounts)),
        "use_personal_certificates": draw(_flags),
        "current_time": draw(st.sampled_from([None, "00:00", "09:05", "23:59"])),
    }
    if draw(st.booleans()):
        fields["identifier"] = PHONE
        fields["charge_bonuses"] = draw(_flags)
    return {"cart_items": cart, "order_id": draw(_texts), "fields": fields}


@given(_checkout_calls())
def test_the_one_pass_body_is_what_the_converter_writes_for_the_model(call: dict[str, Any]) -> None:
    """The body built while checking equals the converter's encoding of the checked request."""
    model = check.checkout_request(
        "estimate",
        cart_items=call["cart_items"],
        order_id_required=False,
        order_id_value=call["order_id"],
        **call["fields"],
    )
    body = check.checkout_body(
        "estimate",
        cart_items=call["cart_items"],
        order_id=call["order_id"],
        order_id_required=False,
        fields=call["fields"],
    )
    assert body == unstructure(model)
    assert dumps(body) == dumps(unstructure(model))
