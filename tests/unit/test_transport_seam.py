"""transport=: what the function gets, what it may return or raise, and what is refused."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    CartItem,
    ConnectError,
    LoyaltyClient,
    OutcomeUnknownError,
    SyncLoyaltyClient,
)
from rees46_loyalty.testing import json_response
from tests.conftest import BASE_URL, PHONE, SHOP_ID, SHOP_SECRET, FakeClock
from tests.payloads import CALCULATION, CHANGE, REF, status_envelope
from tests.unit.helpers import FakeApi

CART = [CartItem(product_id="A", price=Decimal(100), quantity=1)]


def _client(api: Any, **options: Any) -> LoyaltyClient:
    return LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL, transport=api, **options)


async def test_the_transport_gets_the_request_as_it_goes_on_the_wire(api: FakeApi) -> None:
    """A POST's body and a GET's data carry the credentials; nothing of aiohttp's is added."""
    api.post("confirm", payload=status_envelope(REF))
    api.get("history", payload=status_envelope({"orders": []}))
    async with _client(api) as client:
        await client.confirm(order_id="1001")
        await client.history(identifier=PHONE)
    post, get = api.requests
    assert (post.method, post.path, post.headers) == ("POST", "/loyalty/checkout/confirm", {})
    assert post.body is not None
    assert json.loads(post.body) == {
        "shop_id": SHOP_ID,
        "shop_secret": SHOP_SECRET,
        "order_id": "1001",
    }
    assert (get.method, get.body) == ("GET", None)
    assert get.data == {"identifier": PHONE, "shop_id": SHOP_ID, "shop_secret": SHOP_SECRET}


async def test_json_response_builds_an_answer_the_client_decodes() -> None:
    """testing.json_response(): a JSON body with its content type, decoded to the result."""

    async def api(request: ApiRequest) -> ApiResponse:
        return json_response(status_envelope(CALCULATION))

    answer = json_response({"a": 1}, status=404, headers={"X-Id": "7"})
    assert (answer.status, answer.body) == (404, b'{"a":1}')
    assert answer.headers == {"Content-Type": "application/json", "X-Id": "7"}
    async with _client(api) as client:
        calculation = await client.details(order_id="1001")
    assert calculation.order_to_pay == Decimal(CALCULATION["order_to_pay"])


async def test_a_transport_that_returns_something_else_is_named() -> None:
    """A function that returns a dict, not an ApiResponse: a TypeError that says so."""

    async def api(request: ApiRequest) -> Any:
        return {"status": "success"}

    async with _client(api, idempotency=None) as client:
        with pytest.raises(TypeError, match="transport= must return an ApiResponse, got dict"):
            await client.confirm(order_id="1001")


async def test_session_and_transport_together_are_refused() -> None:
    """transport= replaces what session= is for: a ValueError; a non-callable a TypeError."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="one or the other"):
            LoyaltyClient(SHOP_ID, SHOP_SECRET, session=session, transport=FakeApi())
    with pytest.raises(TypeError, match="transport must be a callable"):
        LoyaltyClient(SHOP_ID, SHOP_SECRET, transport="http://x")  # type: ignore[arg-type]


async def test_a_change_that_meets_a_connect_error_is_sent_again(
    api: FakeApi, clock: FakeClock
) -> None:
    """ConnectError(request_sent=False) says nothing was sent: the change is retried."""
    api.get("details", payload=status_envelope(CALCULATION))
    api.post("change", exception=ConnectError("refused", request_sent=False))
    api.post("change", payload=status_envelope(CHANGE))
    async with _client(api, clock=clock) as client:
        change = await client.change(order_id="1001", cart_items=CART)
    assert change.order_total_change == Decimal(-300)
    assert [r.operation.name for r in api.requests] == ["details", "change", "change"]


async def test_a_change_that_meets_any_other_exception_is_an_unknown_outcome(
    api: FakeApi, clock: FakeClock
) -> None:
    """An exception that is not the SDK's may hide a processed change: it passes as it is,
    and the next change on the order is refused until reconciled."""
    api.get("details", payload=status_envelope(CALCULATION))
    api.post("change", exception=RuntimeError("the fake broke"))
    async with _client(api, clock=clock) as client:
        with pytest.raises(RuntimeError, match="the fake broke"):
            await client.change(order_id="1001", cart_items=CART)
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1001", cart_items=CART)
    assert [r.operation.name for r in api.requests] == ["details", "change"]


async def test_the_sdks_error_from_a_transport_gets_the_calls_context(api: FakeApi) -> None:
    """A bare ConnectError raised by the function is told its operation, order and attempt."""
    api.post("confirm", exception=ConnectError("refused", request_sent=False))
    async with _client(api, retry=None, idempotency=None, clock=FakeClock()) as client:
        api.post("confirm", exception=ConnectError("refused", request_sent=False))
        api.post("confirm", exception=ConnectError("refused", request_sent=False))
        with pytest.raises(ConnectError) as caught:
            await client.confirm(order_id="1001")
    assert (caught.value.operation, caught.value.order_id, caught.value.attempts) == (
        "confirm",
        "1001",
        3,
    )


def test_the_sync_client_passes_the_transport_on() -> None:
    """SyncLoyaltyClient(transport=...) runs the function on its own loop."""
    loops: list[asyncio.AbstractEventLoop] = []

    async def api(request: ApiRequest) -> ApiResponse:
        loops.append(asyncio.get_running_loop())
        return json_response(status_envelope(REF))

    with SyncLoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL, transport=api) as client:
        assert client.confirm(order_id="1001").order_id == REF["order_id"]
    assert len(loops) == 1
