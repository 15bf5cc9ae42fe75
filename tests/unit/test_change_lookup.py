"""The order's lookup before a change: decoded once, and a guard through any middleware."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    CartItem,
    Handler,
    LoyaltyClient,
    MalformedResponseError,
    OutcomeUnknownError,
)
from rees46_loyalty import (
    TimeoutError as LoyaltyTimeoutError,
)
from rees46_loyalty import _reconcile as reconcile
from rees46_loyalty import _serialization as serialization
from tests.conftest import SHOP_ID, SHOP_SECRET, FakeClock
from tests.payloads import CALCULATION, CHANGE, status_envelope
from tests.unit.helpers import FakeApi

# The order of the payloads holds 4 units of product A at 1000.
HELD = [CartItem(product_id="A", price=Decimal(1000), quantity=4)]
SMALLER = [CartItem(product_id="A", price=Decimal(1000), quantity=3)]


def _client(api: FakeApi, **options: Any) -> LoyaltyClient:
    return LoyaltyClient(SHOP_ID, SHOP_SECRET, transport=api, clock=FakeClock(), **options)


async def test_the_orders_lookup_is_decoded_once(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refund-trap guard reads the lookup's decoded result: no second decode of the order."""
    decoded: list[bytes] = []
    real = serialization.load_answer

    def counting(body: bytes, model: Any) -> Any:
        decoded.append(body)
        return real(body, model)

    monkeypatch.setattr(reconcile, "load_answer", counting)
    api.get("details", payload=status_envelope(CALCULATION))
    api.post("change", payload=status_envelope(CHANGE))
    async with _client(api) as client:
        result = await client.change(order_id="1001", cart_items=SMALLER)
    assert result.order_total_change == Decimal(-300)
    assert decoded == []
    assert [r.operation.name for r in api.requests] == ["details", "change"]


async def test_a_lookup_rebuilt_by_a_middleware_still_guards_the_refund(api: FakeApi) -> None:
    """A middleware that answers without the decoded result: the order that already holds the
    cart asked for is still found, and the change is not sent."""

    async def rebuild(request: ApiRequest, call_next: Handler) -> ApiResponse:
        response = await call_next(request)
        return ApiResponse(status=response.status, headers=response.headers, body=response.body)

    api.get("details", payload=status_envelope(CALCULATION))
    async with _client(api, middlewares=[rebuild]) as client:
        with pytest.raises(OutcomeUnknownError, match="already holds"):
            await client.change(order_id="1001", cart_items=HELD)
    assert [r.operation.name for r in api.requests] == ["details"]


async def test_a_cart_of_the_same_total_but_other_lines_is_sent(api: FakeApi) -> None:
    """Equal totals are not enough to call two carts the same: the lines are compared."""
    other = [
        CartItem(product_id="A", price=Decimal(1000), quantity=2),
        CartItem(product_id="B", price=Decimal(1000), quantity=2),
    ]
    api.get("details", payload=status_envelope(CALCULATION))
    api.post("change", payload=status_envelope(CHANGE))
    async with _client(api) as client:
        await client.change(order_id="1001", cart_items=other)
    assert [r.operation.name for r in api.requests] == ["details", "change"]


def _order(**fields: Any) -> dict[str, Any]:
    return status_envelope({**CALCULATION, **fields})


async def test_the_lookup_reads_the_lines_only_and_reconcile_decides_from_them(
    api: FakeApi,
) -> None:
    """A lookup whose other fields are malformed still guards and notes the order: what the
    guard and reconcile read (lines, ``order_to_pay``) is decoded and bounded, nothing else."""
    api.get("details", payload=_order(bonuses_balance="lots", promo_codes=7))
    api.post("change", exception=LoyaltyTimeoutError("read", request_sent=True))
    after = {
        **CALCULATION,
        "order_to_pay": 3900,
        "items": [{**CALCULATION["items"][0], "quantity": 3}],
    }
    api.get("details", payload=status_envelope(after))
    async with _client(api) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1001", cart_items=SMALLER)
        found = await client.reconcile(order_id="1001")
    assert found.applied
    assert found.order_total_change == Decimal(-1000)  # 3900 now, 4900 before
    assert [r.operation.name for r in api.requests] == ["details", "change", "details"]


@pytest.mark.parametrize(
    "lines",
    [
        [{"product_id": "A", "price": "NaN", "quantity": 4}],
        [{"product_id": "A", "price": 1000, "quantity": 1e999}],
        [{"product_id": "A", "price": 1000, "quantity": "4 units"}],
        [{"product_id": "A", "price": 1000, "quantity": 4, "discountable": "yes"}],
        "A",
    ],
)
async def test_a_lookup_whose_lines_are_malformed_sends_nothing(api: FakeApi, lines: Any) -> None:
    """What reconcile would read must be sound before the change goes: else it never goes."""
    api.get("details", payload=_order(items=lines))
    async with _client(api) as client:
        with pytest.raises(MalformedResponseError):
            await client.change(order_id="1001", cart_items=SMALLER)
    assert [r.operation.name for r in api.requests] == ["details"]


async def test_an_order_to_pay_missing_from_the_lookup_sends_nothing(api: FakeApi) -> None:
    """Without ``order_to_pay`` before, no refund could be derived: the change is not sent."""
    order = dict(CALCULATION)
    del order["order_to_pay"]
    api.get("details", payload=status_envelope(order))
    async with _client(api) as client:
        with pytest.raises(MalformedResponseError):
            await client.change(order_id="1001", cart_items=SMALLER)
    assert [r.operation.name for r in api.requests] == ["details"]


async def test_fractional_quantities_held_already_are_not_sent_again(api: FakeApi) -> None:
    """Weighed goods (0.1 kg): the cart asked for is compared exactly, not as binary floats
    (0.1 + 0.2 is not 0.3 in floats; the guard must still see the order holds the cart)."""
    held = [
        {**CALCULATION["items"][0], "product_id": p, "quantity": q, "price": 99.9}
        for p, q in (("A", 0.1), ("B", 0.2))
    ]
    api.get("details", payload=_order(items=held))
    cart = [
        CartItem(product_id="A", price=Decimal("99.9"), quantity=Decimal("0.1")),
        CartItem(product_id="B", price=Decimal("99.9"), quantity=Decimal("0.2")),
    ]
    async with _client(api) as client:
        with pytest.raises(OutcomeUnknownError, match="already holds"):
            await client.change(order_id="1001", cart_items=cart)
    assert [r.operation.name for r in api.requests] == ["details"]


async def test_a_late_landing_whose_order_is_malformed_records_nothing(api: FakeApi) -> None:
    """The redelivery of a change reconciled as not applied finds it landed late: its refund is
    derived from the order now, decoded whole first: a malformed order raises and keeps the
    note (the next look can still derive the refund)."""
    api.get("details", payload=status_envelope(CALCULATION))
    api.post("change", exception=LoyaltyTimeoutError("read", request_sent=True))
    api.get("details", payload=status_envelope(CALCULATION))  # reconcile: not applied (yet)
    landed = {
        **CALCULATION,
        "order_to_pay": 3900,
        "items": [{**CALCULATION["items"][0], "quantity": 3}],
    }
    api.get("details", payload=status_envelope({**landed, "bonuses_balance": "lots"}))
    api.get("details", payload=status_envelope(landed))
    async with _client(api) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1001", cart_items=SMALLER)
        found = await client.reconcile(order_id="1001")
        assert not found.applied
        with pytest.raises(MalformedResponseError):
            await client.change(order_id="1001", cart_items=SMALLER)
        result = await client.change(order_id="1001", cart_items=SMALLER)
    assert result.order_total_change == Decimal(-1000)
    assert [r.operation.name for r in api.requests] == ["details", "change"] + ["details"] * 3
