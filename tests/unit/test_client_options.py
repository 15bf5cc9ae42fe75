"""The async client's event-loop guard, with_options views, the forgotten close and the
message of a connection failure."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest
from aioresponses import aioresponses as AioResponses  # noqa: N812

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    CartItem,
    ConnectError,
    Handler,
    Hooks,
    LoyaltyClient,
    ResponseRecord,
    RetryPolicy,
    ServerError,
)
from tests.conftest import BASE_URL, SHOP_ID, SHOP_SECRET, FakeClock
from tests.payloads import status_envelope
from tests.unit.helpers import count, url

CONFIRMED = status_envelope({"order_id": "1001", "status": "confirmed"})
LOOP_MESSAGE = "one client per event loop"


def test_a_second_asyncio_run_is_refused_with_a_clear_error(mocked: AioResponses) -> None:
    """A client used in one asyncio.run() and then in another names the rule and the sync
    client, instead of failing inside aiohttp with "Event loop is closed"."""
    mocked.post(url("confirm"), payload=CONFIRMED, repeat=True)
    client = LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL, idempotency=None)
    first = asyncio.run(client.confirm(order_id="1001"))
    assert first.order_id == "1001"
    with pytest.raises(RuntimeError, match=LOOP_MESSAGE) as caught:
        asyncio.run(client.confirm(order_id="1001"))
    message = str(caught.value)
    assert "LoyaltyClient" in message
    assert "SyncLoyaltyClient" in message
    assert "Event loop is closed" not in message
    assert count(mocked) == 1
    asyncio.run(client._sessions.close())  # the first loop's session; nothing else to close


def test_a_second_threads_loop_is_refused_with_the_same_error(mocked: AioResponses) -> None:
    """A client made and used on one thread's loop is refused on another thread's loop."""
    mocked.post(url("confirm"), payload=CONFIRMED, repeat=True)
    client = LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL, idempotency=None)
    asyncio.run(client.confirm(order_id="1001"))
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            asyncio.run(client.confirm(order_id="1001"))
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert LOOP_MESSAGE in str(errors[0])
    assert "SyncLoyaltyClient" in str(errors[0])
    assert count(mocked) == 1
    asyncio.run(client._sessions.close())


async def test_a_view_shares_the_pool_the_store_and_the_hooks(mocked: AioResponses) -> None:
    """with_options() returns a client holding the same session holder, store and hooks."""
    seen: list[ResponseRecord] = []
    mocked.post(url("confirm"), payload=CONFIRMED, repeat=True)
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, hooks=Hooks(on_response=seen.append)
    ) as client:
        view = client.with_options(timeout=2.5, retry=RetryPolicy.disabled())
        await client.confirm(order_id="1001")
        await view.confirm(order_id="1002")
        assert view._sessions is client._sessions
        assert view._sessions.get() is client._sessions.get()
        assert view.idempotency is client.idempotency
        assert view._transport is client._transport
        assert view.retry_policy == RetryPolicy.disabled()
        assert client.retry_policy == RetryPolicy()
        assert len(seen) == 2  # the one hook saw both
        await view.close()  # a view owns nothing
        assert not client.closed
        await view.confirm(order_id="1003")
    assert view.closed  # closing the client closed the pool both use


async def test_a_views_options_apply_to_its_calls_only(mocked: AioResponses) -> None:
    """The view's timeout reaches its requests and its retry policy decides its attempts;
    the client keeps its own."""
    timeouts: list[float | None] = []

    async def note(request: ApiRequest, call_next: Handler) -> ApiResponse:
        timeouts.append(request.timeout)
        return await call_next(request)

    mocked.post(url("confirm"), status=503, repeat=True)
    async with LoyaltyClient(
        SHOP_ID,
        SHOP_SECRET,
        base_url=BASE_URL,
        clock=FakeClock(),
        middlewares=[note],
        idempotency=None,
        retry=RetryPolicy(max_attempts=3),
    ) as client:
        with pytest.raises(ServerError):
            await client.with_options(timeout=1.5, retry=RetryPolicy.disabled()).confirm(
                order_id="1001"
            )
        assert timeouts == [1.5]
        with pytest.raises(ServerError):
            await client.confirm(order_id="1001")
        assert timeouts == [1.5, 10.0, 10.0, 10.0]
        with pytest.raises(ValueError, match="timeout"):
            client.with_options(timeout=0)


async def test_a_forgotten_close_warns_naming_the_client_and_the_cure(
    mocked: AioResponses,
) -> None:
    """A client dropped with its pool open raises a ResourceWarning that says how to close it."""
    mocked.post(url("confirm"), payload=CONFIRMED)
    client = LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL, idempotency=None)
    await client.confirm(order_id="1001")
    session = client._sessions.get()
    warning = r"unclosed LoyaltyClient\(.*await client\.close\(\)"
    with pytest.warns(ResourceWarning, match=warning):  # noqa: PT031 - gc warns
        del client
        gc.collect()
    await session.close()


async def test_a_closed_client_and_a_view_do_not_warn(mocked: AioResponses) -> None:
    """Closed clients and views are dropped silently (the suite turns warnings into errors)."""
    mocked.post(url("confirm"), payload=CONFIRMED)
    client = LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL, idempotency=None)
    view = client.with_options(timeout=1)
    await view.confirm(order_id="1001")
    del view
    gc.collect()
    await client.close()
    del client
    gc.collect()


async def test_a_connection_failure_names_the_base_url_and_where_it_comes_from() -> None:
    """No server at the base URL: the ConnectError names it, base_url and REES46_BASE_URL."""
    async with LoyaltyClient(
        SHOP_ID,
        SHOP_SECRET,
        base_url="http://127.0.0.1:9",
        retry=RetryPolicy.disabled(),
        idempotency=None,
    ) as client:
        with pytest.raises(ConnectError) as caught:
            await client.estimate(cart_items=[CartItem(product_id="A", price=1, quantity=1)])
    message = str(caught.value)
    assert "'http://127.0.0.1:9'" in message
    assert "base_url" in message
    assert "REES46_BASE_URL" in message
    assert caught.value.request_sent is False
    assert message.count("REES46_BASE_URL") == 1
