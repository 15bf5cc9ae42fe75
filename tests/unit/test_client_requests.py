"""What the client puts on the wire, and what it makes of the answers (through ``transport=``)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from rees46_loyalty import (
    CartItem,
    FailedCode,
    LoyaltyClient,
    OrderCalculation,
    OrderChange,
    OrderHistory,
    OrderRef,
)
from tests.conftest import PHONE, SHOP_ID, SHOP_SECRET
from tests.payloads import CALCULATION, CHANGE, HISTORY, REF, status_envelope, success_envelope
from tests.unit.helpers import FakeApi, body_of

CART = [
    CartItem(product_id="A", price=Decimal("1000"), quantity=4),
    CartItem(
        product_id="B",
        price=Decimal("2000"),
        quantity=1,
        discountable=False,
        bonusable=False,
        rewardable=False,
    ),
]


async def test_post_body_carries_credentials_and_api_field_names(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """A POST body is JSON with shop_id and shop_secret and every field under the API's name."""
    api.post("estimate", payload=status_envelope(CALCULATION))
    await client.estimate(
        cart_items=CART,
        identifier=PHONE,
        payment_type="card",
        promo_codes=["SALE10"],
        certificates=["C-1"],
        charge_bonuses=True,
        bonuses_amount=Decimal("150.50"),
        use_personal_certificates=True,
        location_id="msk-1",
        stream="web",
        current_time="14:30",
        subscription="gold",
    )
    assert body_of(api) == {
        "shop_id": SHOP_ID,
        "shop_secret": SHOP_SECRET,
        "cart_items": [
            {"product_id": "A", "price": 1000, "quantity": 4},
            {
                "product_id": "B",
                "price": 2000,
                "quantity": 1,
                "discountable": False,
                "bonusable": False,
                "rewardable": False,
            },
        ],
        "identifier": PHONE,
        "payment_type": "card",
        "promo_codes": ["SALE10"],
        "certificates": ["C-1"],
        "charge_bonuses": True,
        "bonuses_amount": 150.5,
        "use_personal_certificates": True,
        "location_id": "msk-1",
        "stream": "web",
        "current_time": "14:30",
        "subscription": "gold",
    }


async def test_decimals_go_out_as_json_numbers_without_loss(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """Kopecks are written as JSON numbers (not strings) and read back to the same value."""
    api.post("apply", payload=status_envelope(CALCULATION))
    await client.apply(
        order_id="1001",
        cart_items=[CartItem(product_id="A", price=Decimal("99.90"), quantity=Decimal("1.5"))],
    )
    body = api.requests[0].body
    assert body is not None
    raw = body.decode()
    assert '"price":99.9' in raw
    assert '"quantity":1.5' in raw
    item = json.loads(raw, parse_float=Decimal)["cart_items"][0]
    assert item["price"] == Decimal("99.90")
    assert item["quantity"] == Decimal("1.5")


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        ("confirm", lambda c: c.confirm(order_id="1001")),
        ("cancel", lambda c: c.cancel(order_id="1001")),
    ],
)
async def test_confirm_and_cancel_send_the_order_id(
    client: LoyaltyClient, api: FakeApi, operation: str, call: object
) -> None:
    """confirm and cancel POST {shop_id, shop_secret, order_id} and return an OrderRef."""
    api.post(operation, payload=success_envelope(REF))
    ref = await call(client)  # type: ignore[operator]
    assert ref == OrderRef(order_id="1001", identifier=PHONE)
    assert body_of(api) == {"shop_id": SHOP_ID, "shop_secret": SHOP_SECRET, "order_id": "1001"}


async def test_get_methods_send_credentials_in_the_query(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """details and history are GETs with shop_id, shop_secret and their key in the query."""
    api.get("details", payload=status_envelope(CALCULATION))
    api.get("history", payload=status_envelope(HISTORY))
    details = await client.details(order_id="1001")
    history = await client.history(identifier=PHONE)
    details_request, history_request = api.requests
    assert details_request.method == history_request.method == "GET"
    assert details_request.data == {
        "order_id": "1001",
        "shop_id": SHOP_ID,
        "shop_secret": SHOP_SECRET,
    }
    assert details_request.body is None
    assert history_request.data == {
        "identifier": PHONE,
        "shop_id": SHOP_ID,
        "shop_secret": SHOP_SECRET,
    }
    assert isinstance(details, OrderCalculation)
    assert isinstance(history, OrderHistory)
    order = history.orders[0]
    assert order.total == Decimal("4900.50")
    assert order.items[0].price == Decimal("875.5")
    assert order.items[0].name == "---"


@pytest.mark.parametrize("envelope", [status_envelope, success_envelope])
async def test_both_envelopes_parse_into_the_same_result(
    client: LoyaltyClient, api: FakeApi, envelope: object
) -> None:
    """{"status": "success"} and {"success": true} envelopes give equal results."""
    api.post("change", payload=envelope(CHANGE))  # type: ignore[operator]
    result = await client.change(order_id="1001", cart_items=CART)
    assert isinstance(result, OrderChange)
    assert result.order_total_change == Decimal("-300")
    assert result.order_total == Decimal("6000")
    assert result.order_to_pay == Decimal("4900")
    assert result.promo_codes_failed == (FailedCode(code="OLD", message="Promo code expired"),)
    assert result.applied_promotions == (33, 17)  # ids as the API sends them
    item = result.items[0]
    assert item.total_after_discounts == Decimal("3500")
    assert item.bonuses_reward_promotions["17"].per_product == Decimal("45")
    assert item.certificates["14"].pool_id == 11
    assert item.bonuses_reward_referral_program is not None
    assert item.bonuses_reward_referral_program.referral_program_id == 21


async def test_money_is_exact(client: LoyaltyClient, api: FakeApi) -> None:
    """99.90 and -0.10 in the answer come out as Decimal('99.90') and Decimal('-0.10')."""
    body = json.dumps(status_envelope({**CHANGE, "order_total": 0, "order_total_change": 0}))
    body = body.replace('"order_total": 0', '"order_total": 99.90')
    body = body.replace('"order_total_change": 0', '"order_total_change": -0.10')
    api.post("change", body=body, content_type="application/json")
    result = await client.change(order_id="1001", cart_items=CART)
    assert str(result.order_total) == "99.90"
    assert result.order_total == Decimal("99.90")
    assert str(result.order_total_change) == "-0.10"


async def test_unknown_fields_are_ignored_and_missing_ones_default(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """Fields the SDK does not know are ignored; documented optional fields get defaults."""
    payload = {"order_total": 10, "order_to_pay": 9, "brand_new_field": {"x": [1, 2]}}
    api.post("estimate", payload=status_envelope(payload))
    result = await client.estimate(cart_items=CART)
    assert result.order_total == Decimal(10)
    assert result.saved_total == Decimal(0)
    assert result.items == ()
    assert result.order_id is None
    assert not hasattr(result, "brand_new_field")


async def test_a_result_message_beside_the_fields_is_not_an_error(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """The seed documents payload.message on success: with the result fields it is kept."""
    api.post("cancel", payload=success_envelope({**REF, "message": "Order cancelled"}))
    ref = await client.cancel(order_id="1001")
    assert ref.message == "Order cancelled"
