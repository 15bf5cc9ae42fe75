"""The holes a second attack on the rewritten exactly-once layer found, one test each.

Each failed before its fix: a stale apply replayed, a terminal failure outliving the order's
state, a change's success dropped beside another call's lease, unknown outcomes made by a
closed client or a borrowed session, a change cut short by a short lease, a large 503 taken
for an unknown outcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from rees46_loyalty import CartItem, IdempotencyError, LoyaltyError, OutcomeUnknownError
from rees46_loyalty.idempotency import MemoryIdempotencyStore, RedisIdempotencyStore
from rees46_loyalty.middleware.idempotency import record_key
from rees46_loyalty.testing import FakeClock, FakeRees46, Fault
from tests.conftest import PHONE, SHOP_ID
from tests.integration.conftest import redis_call

pytestmark = pytest.mark.integration

CART = [CartItem(product_id="A", price=Decimal("1000"), quantity=4)]
SMALLER = [CartItem(product_id="A", price=Decimal("1000"), quantity=3)]
ONE = [CartItem(product_id="A", price=Decimal("1000"), quantity=1)]
TWO_LINES = [*ONE, CartItem(product_id="B", price=Decimal("500"), quantity=1)]


@pytest.fixture
def fake(fake_in_one_style: FakeRees46) -> FakeRees46:
    """The shared fake server, in one envelope style: these tests are about other layers."""
    return fake_in_one_style


JSON = {"Content-Type": "application/json"}


def _namespace() -> str:
    return f"review-11-{uuid.uuid4().hex}"


async def test_apply_x_then_y_then_x_again_is_sent(fake: FakeRees46, clock: FakeClock) -> None:
    """A checkout that goes back to an earlier cart gets the server's calculation of that cart."""
    async with fake.client(clock=clock) as client:
        await client.apply(order_id="1", cart_items=ONE, identifier=PHONE)
        await client.apply(order_id="1", cart_items=TWO_LINES, identifier=PHONE)
        back = await client.apply(order_id="1", cart_items=ONE, identifier=PHONE)
        server = await client.details(order_id="1")
    # Today: replayed, the caller is shown 1000 while the server holds (and will confirm) 1500.
    assert back.order_total == server.order_total


async def test_change_x_y_x_does_what_the_docs_say(fake: FakeRees46, clock: FakeClock) -> None:
    """docs/idempotency.md: with the default key, change X, change Y, change X replays the first
    X (a redelivery); a genuine change back to X takes a key of its own, and is sent."""
    async with fake.client(clock=clock) as client:
        await client.apply(order_id="1", cart_items=CART, identifier=PHONE)
        await client.confirm(order_id="1")
        first = await client.change(order_id="1", cart_items=SMALLER)
        await client.change(order_id="1", cart_items=ONE)
        third = await client.change(order_id="1", cart_items=SMALLER)
        back = await client.change(order_id="1", cart_items=SMALLER, idempotency_key="back")
    assert third.replayed is True
    assert third.order_total_change == first.order_total_change
    assert back.replayed is False
    assert len(fake.ledger.effects_for("change", "1")) == 3


async def test_a_change_refused_before_confirm_is_sent_after_confirm(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """A change that ran before its order's confirm (jobs out of order) goes through once the
    order is confirmed, instead of replaying "confirm it first" for 24 h."""
    async with fake.client(clock=clock) as client:
        await client.apply(order_id="1", cart_items=CART, identifier=PHONE)
        with pytest.raises(LoyaltyError):
            await client.change(order_id="1", cart_items=SMALLER)
        await client.confirm(order_id="1")
        result = await client.change(order_id="1", cart_items=SMALLER)
    assert result.order_total_change == Decimal(-1000)


async def test_a_change_whose_book_was_evicted_is_recorded_beside_another_lease(
    fake: FakeRees46, redis_url: str, log_records: list[logging.LogRecord]
) -> None:
    """Redis evicts the book mid-change, a redelivered confirm takes the order's lease; the
    change's success must still be recorded, and its redelivery replayed, not sent again."""
    namespace = _namespace()
    store = RedisIdempotencyStore(redis_url, namespace=namespace)
    async with fake.client(idempotency=store) as client:
        await client.apply(order_id="1", cart_items=CART, identifier=PHONE)
        await client.confirm(order_id="1")
        fake.faults.on("change", Fault.latency(0.3))
        fake.faults.on("confirm", Fault.latency(0.6))
        change = asyncio.ensure_future(client.change(order_id="1", cart_items=SMALLER))
        await fake.wait_received("change")
        await redis_call(store, "DEL", f"{namespace}:{record_key(SHOP_ID, '1')}")  # evicted
        confirm = asyncio.ensure_future(client.confirm(order_id="1"))  # a redelivered job
        first = await change
        await confirm
        again = await client.change(order_id="1", cart_items=SMALLER)
    await store.close()
    assert first.order_total_change == Decimal(-1000)
    # Today: 2 changes committed, the redelivery answers 0, and the log blames a lease that
    # "ran out" (it never did).
    assert len(fake.ledger.effects_for("change")) == 1
    assert again.replayed is True


class _WatchedStore(RedisIdempotencyStore):
    """The Redis store, telling when a call first waits for a busy order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = asyncio.Event()

    async def wait(self, key: str, timeout: float) -> None:
        self.waiting.set()
        await super().wait(key, timeout)


async def test_a_client_closed_while_its_change_waits_leaves_nothing_unknown(
    fake: FakeRees46, redis_url: str
) -> None:
    """Worker A shuts down while its change waits for worker B's call on the order: nothing
    is sent, so the next worker's change must go through, not raise OutcomeUnknownError."""
    namespace = _namespace()
    redis_a = Redis.from_url(redis_url)
    store_a = _WatchedStore(redis_a, namespace=namespace)
    worker_a = fake.client(idempotency=store_a)
    store_b = RedisIdempotencyStore(redis_url, namespace=namespace)
    async with fake.client(idempotency=store_b) as worker_b:
        await worker_b.apply(order_id="1", cart_items=CART, identifier=PHONE)
        await worker_b.confirm(order_id="1")
        fake.faults.on("confirm", Fault.latency(0.3))
        held = asyncio.ensure_future(worker_b.confirm(order_id="1", idempotency_key="again"))
        await fake.wait_received("confirm", 2)
        waiting = asyncio.ensure_future(worker_a.change(order_id="1", cart_items=SMALLER))
        await store_a.waiting.wait()  # worker A's change is polling Redis for the busy order
        await worker_a.close()  # graceful shutdown of worker A
        with pytest.raises(RuntimeError):
            await waiting
        await held
        assert fake.received("change") == 0
        result = await worker_b.change(order_id="1", cart_items=SMALLER)  # the redelivery
    await store_b.close()
    await redis_a.aclose()
    assert result.order_total_change == Decimal(-1000)


async def test_a_borrowed_session_change_cancelled_before_writing_leaves_nothing(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """session= of the caller's (one connection): a change cancelled while it waits for that
    connection wrote nothing, so the next change is sent."""
    queued = asyncio.Event()

    async def on_queued(*_: object) -> None:
        queued.set()

    tracing = aiohttp.TraceConfig()
    tracing.on_connection_queued_start.append(on_queued)
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1), trace_configs=[tracing]
        ) as session,
        fake.client(session=session, clock=clock) as client,
    ):
        await client.apply(order_id="1", cart_items=CART, identifier=PHONE)
        await client.confirm(order_id="1")
        fake.faults.on("details", Fault.latency(0.3))
        busy = asyncio.ensure_future(client.details(order_id="1"))
        await fake.wait_received("details")
        change = asyncio.ensure_future(client.change(order_id="1", cart_items=SMALLER))
        await queued.wait()  # the change waits for the only connection
        change.cancel()
        with pytest.raises(asyncio.CancelledError):
            await change
        await busy
        assert fake.received("change") == 0
        result = await client.change(order_id="1", cart_items=SMALLER)
    assert result.order_total_change == Decimal(-1000)


async def test_a_lease_shorter_than_the_timeout_never_makes_an_unknown(fake: FakeRees46) -> None:
    """lease=0.5 s with timeout=10 s: either refused at construction, or a change that takes
    0.6 s on the server is waited for (not cut at 0.45 s into an OutcomeUnknownError)."""
    store = MemoryIdempotencyStore(lease=0.5, ttl=60)
    try:
        client = fake.client(idempotency=store, timeout=10)
    except ValueError:
        return
    async with client:
        await client.apply(order_id="1", cart_items=CART, identifier=PHONE)
        await client.confirm(order_id="1")
        fake.faults.on("change", Fault.latency(0.6))
        result = await client.change(order_id="1", cart_items=SMALLER)
    assert result.order_total_change == Decimal(-1000)


async def test_a_large_503_is_not_an_unknown_change(fake: FakeRees46, clock: FakeClock) -> None:
    """A maintenance page bigger than the answer cap says as much as a small one: nothing was
    processed, so the change is not blocked."""
    async with fake.client(clock=clock, max_response_bytes=4096) as client:
        await client.apply(order_id="1", cart_items=CART, identifier=PHONE)
        await client.confirm(order_id="1")
        page = b"<html>" + b"x" * 9000 + b"</html>"
        fake.faults.on(
            "change",
            Fault.raw_answer(
                page, status=503, headers={"Content-Type": "text/html"}, after_commit=False
            ),
        )
        with pytest.raises(LoyaltyError) as first:
            await client.change(order_id="1", cart_items=SMALLER)
        assert not isinstance(first.value, OutcomeUnknownError)
        result = await client.change(order_id="1", cart_items=SMALLER)
    assert result.order_total_change == Decimal(-1000)


async def test_an_explicit_key_names_an_intent_of_its_order(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """docs/idempotency.md: keys live in their order's book; the same key on another order is
    another intent (sent), and on the same order with another request a conflict."""
    async with fake.client(clock=clock) as client:
        await client.apply(order_id="1", cart_items=CART, identifier=PHONE, idempotency_key="K")
        other = await client.apply(
            order_id="2", cart_items=CART, identifier=PHONE, idempotency_key="K"
        )
        with pytest.raises(IdempotencyError):
            await client.apply(order_id="1", cart_items=ONE, identifier=PHONE, idempotency_key="K")
    assert other.replayed is False


async def test_a_decoding_redis_client_replays_any_answer(
    fake: FakeRees46, redis_url: str, clock: FakeClock
) -> None:
    """A Redis client with decode_responses=True (common in apps) replays a recorded answer
    with non-ASCII text; answers are UTF-8 only (a UTF-16 one is refused before it is kept)."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    store = RedisIdempotencyStore(redis, namespace=_namespace())
    document = {
        "status": "success",
        "payload": {"order_id": "9", "order_total": 1000, "order_to_pay": 1000},
    }
    utf16 = json.dumps(document).encode("utf-16")
    document["payload"]["payment_type"] = "карта"  # type: ignore[index]
    body = json.dumps(document, ensure_ascii=False).encode()
    try:
        async with fake.client(idempotency=store, clock=clock) as client:
            fake.faults.on("apply", Fault.raw_answer(utf16, headers=JSON))
            with pytest.raises(LoyaltyError):
                await client.apply(order_id="8", cart_items=CART, identifier=PHONE)
            fake.faults.on("apply", Fault.raw_answer(body, headers=JSON))
            first = await client.apply(order_id="9", cart_items=CART, identifier=PHONE)
            again = await client.apply(order_id="9", cart_items=CART, identifier=PHONE)
    finally:
        await redis.aclose()
    assert again.replayed is True
    assert again.order_total == first.order_total
