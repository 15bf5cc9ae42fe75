"""The SDK against a real aiohttp server on loopback: real sockets, real failures.

The server here is a small stand-in that answers what each test needs; the full fake REES46
server comes with rees46_loyalty.testing.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web

from rees46_loyalty import (
    CartItem,
    ConnectError,
    LoyaltyClient,
    OrderStatusError,
    OutcomeUnknownError,
    RetryPolicy,
    ServerError,
    TransportError,
)
from rees46_loyalty import (
    TimeoutError as LoyaltyTimeoutError,
)
from tests.conftest import SHOP_ID, SHOP_SECRET, FakeClock
from tests.payloads import CALCULATION, REF, status_envelope

pytestmark = pytest.mark.integration

CART = [CartItem(product_id="A", price=Decimal("99.90"), quantity=2)]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Stub:
    """A loopback HTTP server whose handler a test sets; it counts requests and connections."""

    def __init__(self) -> None:
        self.handler: Handler = self._ok
        self.requests = 0
        self.peers: set[tuple[str, int]] = set()
        self.bodies: list[dict[str, object]] = []
        self.url = ""

    async def _ok(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response(status_envelope(REF))

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add(peer[:2])
        if request.method == "POST":
            self.bodies.append(await request.json())
        return await self.handler(request)


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    stub = Stub()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stub.dispatch)
    runner = web.AppRunner(app, access_log=None)  # an access log would print GET secrets
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stub.url = f"http://127.0.0.1:{port}"
    try:
        yield stub
    finally:
        await runner.cleanup()


def make_client(stub: Stub, **kwargs: object) -> LoyaltyClient:
    return LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=stub.url, clock=FakeClock(), **kwargs)  # type: ignore[arg-type]


async def test_500_concurrent_calls_share_one_connection_pool(stub: Stub) -> None:
    """500 calls at once all complete over at most 100 pooled connections."""
    async with make_client(stub) as client:
        results = await asyncio.gather(*(client.confirm(order_id=str(n)) for n in range(500)))
    assert len(results) == 500
    assert all(ref.order_id == "1001" for ref in results)
    assert stub.requests == 500
    assert 1 <= len(stub.peers) <= 100


async def test_a_round_trip_keeps_money_exact(stub: Stub) -> None:
    """Decimals go out as JSON numbers and come back exact through real HTTP."""

    async def change(request: web.Request) -> web.StreamResponse:
        text = (
            '{"status": "success", "payload": {"order_id": "1", "order_total": 199.80, '
            '"order_to_pay": 199.80, "order_total_change": -0.10}}'
        )
        return web.Response(text=text, content_type="application/json")

    stub.handler = change
    async with make_client(stub) as client:
        result = await client.change(order_id="1", cart_items=CART)
    assert str(result.order_total_change) == "-0.10"
    assert stub.bodies[0]["cart_items"] == [{"product_id": "A", "price": 99.9, "quantity": 2}]
    assert stub.bodies[0]["shop_secret"] == SHOP_SECRET


async def test_a_dropped_connection_after_the_request_makes_change_unknown(stub: Stub) -> None:
    """The server reads the change and hangs up: OutcomeUnknownError after exactly 1 request."""

    async def hang_up(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":  # the order as it is, read before the change
            return web.json_response({"status": "success", "payload": CALCULATION})
        assert request.transport is not None
        request.transport.close()
        raise web.HTTPOk  # never sent: the connection is gone

    stub.handler = hang_up
    async with make_client(stub) as client:
        with pytest.raises(OutcomeUnknownError) as caught:
            await client.change(order_id="1001", cart_items=CART)
    assert stub.requests == 2  # the lookup, and the change once
    assert isinstance(caught.value.__cause__, TransportError)
    assert caught.value.__cause__.request_sent is True


async def test_a_dropped_connection_is_retried_for_confirm(stub: Stub) -> None:
    """confirm is safe to repeat: two hang-ups, then an answer = 3 requests."""
    calls = 0

    async def flaky(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls < 3:
            assert request.transport is not None
            request.transport.close()
        return web.json_response(status_envelope(REF))

    stub.handler = flaky
    async with make_client(stub) as client:
        ref = await client.confirm(order_id="1001")
    assert ref.order_id == "1001"
    assert stub.requests == 3


async def test_a_body_cut_short_is_a_transport_error(stub: Stub) -> None:
    """Content-Length promises more than arrives: TransportError, request_sent True."""

    async def truncated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Length": "500", "Content-Type": "application/json"}
        )
        await response.prepare(request)
        await response.write(b'{"status": "success", "pay')
        assert request.transport is not None
        request.transport.close()
        return response

    stub.handler = truncated
    async with make_client(stub, retry=RetryPolicy.disabled()) as client:
        with pytest.raises(TransportError) as caught:
            await client.cancel(order_id="1001")
    assert caught.value.request_sent is True
    assert stub.requests == 1


async def test_an_html_502_from_a_proxy(stub: Stub) -> None:
    """nginx's 502 page is a ServerError with a short message, retried for safe operations."""

    async def bad_gateway(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=502,
            text="<html><center><h1>502 Bad Gateway</h1></center></html>",
            content_type="text/html",
        )

    stub.handler = bad_gateway
    async with make_client(stub) as client:
        with pytest.raises(ServerError) as caught:
            await client.details(order_id="1001")
    assert caught.value.status == 502
    assert "text/html" in caught.value.message
    assert stub.requests == 3


async def test_a_terminal_cancel_is_sent_once(stub: Stub) -> None:
    """Could not cancel… over real HTTP: OrderStatusError after one request."""

    async def cannot(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "success": False,
                "payload": {"message": "Could not cancel order in its current status"},
            }
        )

    stub.handler = cannot
    async with make_client(stub) as client:
        with pytest.raises(OrderStatusError):
            await client.cancel(order_id="1001")
    assert stub.requests == 1


async def test_a_slow_answer_times_out(stub: Stub) -> None:
    """An answer that never comes within the attempt timeout: TimeoutError, request_sent True."""
    never = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await never.wait()
        return web.json_response(status_envelope(REF))  # pragma: no cover

    stub.handler = slow
    async with make_client(stub, timeout=0.05, retry=RetryPolicy.disabled()) as client:
        with pytest.raises(LoyaltyTimeoutError) as caught:
            await client.confirm(order_id="1001")
    assert caught.value.request_sent is True
    never.set()


async def test_nothing_listening_is_a_connect_error_and_change_is_retried() -> None:
    """A closed port refuses the connection: ConnectError, request_sent False, and even change
    is tried again (max_attempts times), since nothing can have been processed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=f"http://127.0.0.1:{port}", clock=FakeClock()
    ) as client:
        with pytest.raises(ConnectError) as caught:
            await client.change(order_id="1001", cart_items=CART)
    assert caught.value.request_sent is False
    assert caught.value.attempts == 3
    assert SHOP_SECRET not in str(caught.value)


async def test_waiting_too_long_for_a_connection_is_a_connect_error(stub: Stub) -> None:
    """With the pool full, the connect timeout fires before the request is written: ConnectError
    with request_sent False, and even change is tried again."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(_request: web.Request) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.json_response(status_envelope(REF))

    stub.handler = held
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = make_client(stub, session=session, timeout=1.0, connect_timeout=0.02)
        async with client:
            holder = asyncio.create_task(client.confirm(order_id="1"))
            await arrived.wait()  # the confirm now holds the only connection
            with pytest.raises(ConnectError) as caught:
                await client.change(order_id="1001", cart_items=CART)
            release.set()
            await holder
    assert caught.value.request_sent is False
    assert caught.value.attempts == 3
    assert stub.requests == 1  # the change never reached the server
