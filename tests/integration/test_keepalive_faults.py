"""The fake server's idle keep-alive close race, over hand-written aiohttp sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rees46_loyalty.testing import FakeRees46, Fault, FaultKind, Faults
from tests.conftest import SHOP_ID, SHOP_SECRET

pytestmark = pytest.mark.integration

CART = [{"product_id": "A", "price": 1000, "quantity": 2}]


@pytest.fixture
async def server() -> AsyncIterator[FakeRees46]:
    """A fake server with one product in its feed."""
    async with FakeRees46(shop_id=SHOP_ID, shop_secret=SHOP_SECRET) as fake:
        fake.add_product("A", "Tea")
        yield fake


async def _post(session: aiohttp.ClientSession, url: str, operation: str, **fields: Any) -> int:
    body = {"shop_id": SHOP_ID, "shop_secret": SHOP_SECRET, **fields}
    async with session.post(f"{url}/loyalty/checkout/{operation}", json=body) as response:
        await response.read()
        return response.status


async def test_a_request_on_a_reused_connection_is_closed_unprocessed(server: FakeRees46) -> None:
    """On one pooled connection the first request is processed; the second finds the
    connection closed: no answer, nothing committed, and the ledger says so."""
    server.faults.on("*", Fault.idle_close())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        assert await _post(session, server.url, "apply", order_id="1", cart_items=CART) == 200
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await _post(session, server.url, "confirm", order_id="1")

    assert [e.operation for e in server.ledger.effects] == ["apply"]
    assert server.book.orders["1"].status == "created"
    confirm = server.ledger.requests_for("confirm")
    assert len(confirm) == 1
    assert confirm[0].status is None
    assert confirm[0].committed is False
    assert confirm[0].fault == "idle keep-alive close"
    assert server.faults.injected == [("confirm", 1, "idle keep-alive close")]


async def test_a_fresh_connection_is_processed_and_the_fault_stays_planned(
    server: FakeRees46,
) -> None:
    """With a fresh connection per request (force_close) every request is processed; the
    planned fault waits for a reused connection and then hits it."""
    server.faults.on("*", Fault.idle_close())
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        assert await _post(session, server.url, "apply", order_id="1", cart_items=CART) == 200
        assert await _post(session, server.url, "confirm", order_id="1") == 200
    assert [e.operation for e in server.ledger.effects] == ["apply", "confirm"]
    assert all(r.committed and r.fault is None for r in server.ledger.requests)
    assert server.faults.injected == []

    async with aiohttp.ClientSession() as session:
        assert await _post(session, server.url, "cancel", order_id="1") == 200
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await _post(session, server.url, "cancel", order_id="1")
    assert server.faults.counts() == {"idle keep-alive close": 1}


def test_random_idle_closes_pass_over_fresh_connections() -> None:
    """Drawn at random, the fault hits only requests on reused connections."""
    faults = Faults()
    faults.random(1.0, kinds=[Fault.idle_close()])
    assert faults.pick("change", 1, reused_connection=False) is None
    picked = faults.pick("change", 2, reused_connection=True)
    assert picked is not None
    assert picked.kind is FaultKind.IDLE_CLOSE
    assert not picked.commits
    assert faults.injected == [("change", 2, "idle keep-alive close")]


@pytest.mark.parametrize("timeout", [0, -1.5])
def test_a_keepalive_timeout_must_be_positive(timeout: float) -> None:
    """A zero or negative idle keep-alive timeout is refused with a clear error."""
    with pytest.raises(ValueError, match="keepalive_timeout must be > 0"):
        FakeRees46(keepalive_timeout=timeout)
