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
    OutcomeUnknownError,
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
