"""No frame of a failed call's traceback holds the secret or an unmasked phone in its local
variables, along the whole chain of causes: checked with the real sentry-sdk (local variables
on, its default) and with ``traceback.TracebackException(capture_locals=True)``.

Every failure scenario of test_secrets.py, plus timeouts, disconnects, HTTP errors, malformed
answers, an unknown outcome of ``change`` and a cancelled call, GET (secret in the query) and
POST (secret in the body) alike. The real-socket versions are in
tests/integration/test_hostile_answers.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses as AioResponses  # noqa: N812
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from rees46_loyalty import CartItem, LoyaltyClient, RetryPolicy
from tests.conftest import BASE_URL, PHONE, SHOP_ID, SHOP_SECRET
from tests.leaks import failure_of, tracked_text
from tests.payloads import status_envelope
from tests.unit.helpers import url, url_pattern

GET_URL = f"{BASE_URL}/loyalty/checkout/history?identifier={PHONE}&shop_secret={SHOP_SECRET}"
CART = [CartItem(product_id="A", price=Decimal(1), quantity=1)]

Call = Callable[[LoyaltyClient], Awaitable[object]]


def _history(client: LoyaltyClient) -> Awaitable[object]:
    return client.history(identifier=PHONE)


def _change(client: LoyaltyClient) -> Awaitable[object]:
    return client.change(order_id="1001", cart_items=CART, identifier=PHONE)


def _estimate(client: LoyaltyClient) -> Awaitable[object]:
    return client.estimate(cart_items=CART, identifier=PHONE)


def _request_info() -> aiohttp.RequestInfo:
    return aiohttp.RequestInfo(
        url=URL(GET_URL), method="GET", headers=CIMultiDictProxy(CIMultiDict())
    )


# (name, method, operation, aioresponses keyword arguments, call)
SCENARIOS: list[tuple[str, str, str, dict[str, Any], Call]] = [
    ("get connect timeout", "get", "history",
     {"exception": aiohttp.ConnectionTimeoutError(f"Connection timeout to host {GET_URL}")},
     _history),
    ("get read timeout", "get", "history", {"exception": asyncio.TimeoutError()}, _history),
    ("get response error", "get", "history",
     {"exception": aiohttp.ClientResponseError(_request_info(), (), status=500, message=GET_URL)},
     _history),
    ("get invalid url", "get", "history", {"exception": aiohttp.InvalidURL(GET_URL)}, _history),
    ("get os error", "get", "history", {"exception": OSError(f"trouble with {GET_URL}")},
     _history),
    ("get disconnect", "get", "history",
     {"exception": aiohttp.ServerDisconnectedError()}, _history),
    ("get 404 quoting the phone", "get", "history",
     {"payload": status_envelope({"message": f"member {PHONE} is not found"}, ok=False),
      "status": 404}, _history),
    ("get echoed secret", "get", "history",
     {"payload": status_envelope({"message": f"bad shop_secret={SHOP_SECRET}"}, ok=False)},
     _history),
    ("get malformed answer", "get", "history",
     {"payload": status_envelope({"orders": [{"id": {"phone": PHONE}}]})}, _history),
    ("post read timeout", "post", "estimate", {"exception": asyncio.TimeoutError()}, _estimate),
    ("post disconnect", "post", "estimate",
     {"exception": aiohttp.ServerDisconnectedError()}, _estimate),
    ("post connection reset", "post", "estimate",
     {"exception": aiohttp.ClientOSError(104, "Connection reset by peer")}, _estimate),
    ("post 500 html", "post", "estimate",
     {"body": "<html>502</html>", "status": 502, "content_type": "text/html"}, _estimate),
    ("post malformed answer", "post", "estimate",
     {"payload": status_envelope({"order_total": 1, "order_to_pay": 1,
                                  "identifier": {"phone": PHONE}})}, _estimate),
    ("post invalid json", "post", "estimate", {"body": "{not json"}, _estimate),
    ("change: unknown outcome", "post", "change",
     {"exception": aiohttp.ServerDisconnectedError()}, _change),
    ("change: 500 unknown outcome", "post", "change",
     {"payload": status_envelope({"message": f"oops {PHONE}"}, ok=False), "status": 500},
     _change),
]  # fmt: skip


def assert_nothing_tracked(error: BaseException) -> None:
    """Neither the secret nor the phone in what an error tracker records of *error*."""
    text = tracked_text(error)
    assert SHOP_SECRET not in text
    assert PHONE not in text


@pytest.mark.parametrize(
    ("method", "operation", "answer", "call"),
    [scenario[1:] for scenario in SCENARIOS],
    ids=[scenario[0] for scenario in SCENARIOS],
)
async def test_no_frame_of_a_failed_call_holds_the_secret_or_the_phone(
    mocked: AioResponses, method: str, operation: str, answer: dict[str, Any], call: Call
) -> None:
    """Each failure, as sentry-sdk and capture_locals record it, names neither."""
    target = url_pattern(operation) if method == "get" else url(operation)
    getattr(mocked, method)(target, repeat=True, **answer)
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, retry=RetryPolicy(max_attempts=2, max_delay=0)
    ) as client:
        error = await failure_of(call(client))
    assert_nothing_tracked(error)


async def test_a_refused_phone_is_not_in_any_frame(client: LoyaltyClient) -> None:
    """A ValidationError about the identifier leaves no frame holding the phone."""
    error = await failure_of(client.estimate(cart_items=CART, identifier=PHONE + "x"))
    assert_nothing_tracked(error)


async def test_a_cancelled_call_leaves_no_frame_holding_them(mocked: AioResponses) -> None:
    """A call cancelled while it waits for the answer: its CancelledError names neither."""
    arrived = asyncio.Event()

    async def hold(*_: object, **__: object) -> None:
        arrived.set()
        await asyncio.Event().wait()

    mocked.get(url_pattern("history"), callback=hold)
    async with LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL) as client:
        task = asyncio.ensure_future(client.history(identifier=PHONE))
        await arrived.wait()
        task.cancel()
        error = await failure_of(task)
    assert isinstance(error, asyncio.CancelledError)
    assert_nothing_tracked(error)
