"""The holes an attack on the exactly-once layer found, one test (or a few) each.

Each test is the attack's scenario against the fake server (and a real redis-server where the
hole was Redis's): before the fix it sent a change twice, lost an outcome, or told the caller
something untrue.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import aiohttp.abc
import pytest

from benchmarks._redis import _binary, _free_port, _wait_for_pong
from rees46_loyalty import (
    BadRequestError,
    CartItem,
    Hooks,
    IdempotencyError,
    LoyaltyClient,
    NotAnApiError,
    NotFoundError,
    OrderStatusError,
    OutcomeUnknownError,
    RateLimitError,
    ServerError,
)
from rees46_loyalty.idempotency import (
    Decision,
    Intent,
    MemoryIdempotencyStore,
    Outcome,
    RedisIdempotencyStore,
    State,
)
from rees46_loyalty.middleware.idempotency import record_key
from rees46_loyalty.testing import FakeClock, FakeRees46, Fault
from tests.conftest import PHONE, SHOP_ID, SHOP_SECRET
from tests.integration.conftest import redis_call
from tests.payloads import CALCULATION, CHANGE, status_envelope
from tests.unit.helpers import FakeApi

pytestmark = pytest.mark.integration

CART = [CartItem(product_id="A", price=Decimal("1000"), quantity=4)]
SMALLER = [CartItem(product_id="A", price=Decimal("1000"), quantity=3)]
_CONNECTOR = aiohttp.TCPConnector


@pytest.fixture
async def fake() -> AsyncIterator[FakeRees46]:
    async with FakeRees46(shop_id=SHOP_ID, shop_secret=SHOP_SECRET) as server:
        server.add_member(PHONE, bonuses=1000)
        server.add_product("A", "Tea")
        yield server


async def _confirmed(client: LoyaltyClient, order_id: str = "1") -> None:
    await client.apply(order_id=order_id, cart_items=CART, identifier=PHONE)
    await client.confirm(order_id=order_id)


def _changes(fake: FakeRees46) -> int:
    return len(fake.ledger.effects_for("change"))


# -- 1. one record per order kept only the last intent ------------------------------------------


async def test_a_memory_store_past_its_bound_keeps_unknown_outcomes(clock: FakeClock) -> None:
    """A full memory store drops finished outcomes, oldest first, never an unknown change."""
    store = MemoryIdempotencyStore(clock=clock, max_records=3)
    unknown = Intent(operation="change", fingerprint="u", safety="once")
    await store.begin("order-u", unknown, "a")
    await store.finish("order-u", "a", Outcome(state=State.UNKNOWN, intent=unknown))
    for n in range(10):
        done = Intent(operation="cancel", fingerprint=str(n), safety="cancel")
        await store.begin(f"order-{n}", done, "a")
        await store.finish(
            f"order-{n}", "a", Outcome(state=State.SUCCEEDED, intent=done, answer=b"{}")
        )
    book = await store.get("order-u")
    assert book is not None
    assert book.blocker is not None
    assert await store.get("order-0") is None  # the oldest finished one went
    assert await store.get("order-9") is not None


async def test_a_memory_store_is_bounded_by_bytes(clock: FakeClock) -> None:
    """Answers are counted in bytes (big ones compressed); past max_bytes the oldest go."""
    store = MemoryIdempotencyStore(clock=clock, max_bytes=200_000)
    rows = ",".join(f'{{"product_id":"SKU-{n}","quantity":{n % 7}}}' for n in range(2000))
    answer = f'{{"status":"success","payload":{{"items":[{rows}]}}}}'.encode()
    for n in range(50):
        intent = Intent(operation="change", fingerprint=str(n), safety="once")
        await store.begin(f"o-{n}", intent, "a")
        outcome = Outcome(state=State.SUCCEEDED, intent=intent, status=200, answer=answer)
        await store.finish(f"o-{n}", "a", outcome)
    assert store.kept_bytes <= 200_000
    newest = await store.get("o-49")
    assert newest is not None
    assert [o.answer for o in newest.outcomes.values()] == [answer]  # compressed, then restored
    assert await store.get("o-0") is None


# -- 2. Redis loses its data mid-call --------------------------------------------------------


async def test_a_redis_flush_mid_change_loses_no_outcome(
    fake: FakeRees46, redis_url: str, log_records: list[logging.LogRecord]
) -> None:
    """FLUSHALL while the server holds the change: the outcome is recorded all the same, the
    redelivery is replayed, and the log says what happened."""
    store = RedisIdempotencyStore(redis_url, namespace=f"flush-{uuid.uuid4().hex}")
    async with fake.client(idempotency=store) as client:
        await _confirmed(client)
        fake.faults.on("change", Fault.latency(0.2))
        call = asyncio.ensure_future(client.change(order_id="1", cart_items=SMALLER))
        await fake.wait_received("change")
        await redis_call(store, "FLUSHALL")
        first = await call
        again = await client.change(order_id="1", cart_items=SMALLER)
    await store.close()
    assert again.replayed is True
    assert again.order_total_change == first.order_total_change == Decimal(-1000)
    assert _changes(fake) == 1
    assert any("recorded the outcome anew" in r.getMessage() for r in log_records)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """A redis-server of this test's own (it is shut down mid-test), without persistence."""
    port = _free_port()
    processes: list[subprocess.Popen[bytes]] = []
    yield port, processes
    for process in processes:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


def _start_redis(port: int, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(  # noqa: S603 - a binary we chose, arguments we wrote
        [_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_pong(port, process)
    return process


async def test_a_redis_restart_without_persistence_mid_change_loses_no_outcome(
    fake: FakeRees46,
    private_redis: tuple[int, list[subprocess.Popen[bytes]]],
    tmp_path: Path,
    log_records: list[logging.LogRecord],
) -> None:
    """SHUTDOWN NOSAVE and a new start while the server holds the change: recorded anyway;
    the store warned at its first call that this Redis persists nothing."""
    port, processes = private_redis
    processes.append(_start_redis(port, tmp_path, "--save", "", "--appendonly", "no"))
    store = RedisIdempotencyStore(f"redis://127.0.0.1:{port}/0")
    async with fake.client(idempotency=store) as client:
        await _confirmed(client)
        fake.faults.on("change", Fault.latency(0.3))
        call = asyncio.ensure_future(client.change(order_id="1", cart_items=SMALLER))
        await fake.wait_received("change")
        with contextlib.suppress(Exception):  # the connection dies with the server
            await redis_call(store, "SHUTDOWN", "NOSAVE")
        await asyncio.to_thread(processes[0].wait, 10)
        processes.append(_start_redis(port, tmp_path, "--save", "", "--appendonly", "no"))
        first = await call
        again = await client.change(order_id="1", cart_items=SMALLER)
    await store.close()
    assert again.replayed is True
    assert again.order_total_change == first.order_total_change
    assert _changes(fake) == 1
    warnings = [r.getMessage() for r in log_records if r.levelno == logging.WARNING]
    assert any("persists nothing" in w for w in warnings)


async def test_the_redis_store_warns_when_redis_would_evict_its_keys(
    private_redis: tuple[int, list[subprocess.Popen[bytes]]],
    tmp_path: Path,
    log_records: list[logging.LogRecord],
) -> None:
    """maxmemory-policy other than noeviction is named in a warning; AOF on: no other."""
    port, processes = private_redis
    processes.append(
        _start_redis(port, tmp_path, "--appendonly", "yes", "--maxmemory-policy", "allkeys-lru")
    )
    store = RedisIdempotencyStore(f"redis://127.0.0.1:{port}/0")
    problems = await store.check()
    await store.close()
    assert len(problems) == 1
    assert "allkeys-lru" in problems[0]
    assert any("allkeys-lru" in r.getMessage() for r in log_records)


# -- 3. in-flight records expired with the record TTL ---------------------------------------


async def test_a_dead_workers_change_stays_unknown_past_the_ttl(
    fake: FakeRees46, redis_url: str
) -> None:
    """A worker SIGKILLed mid-change: its lease never expires with the TTL, so a redelivery a
    day later is still refused, not sent."""
    store = RedisIdempotencyStore(redis_url, namespace=f"dead-{uuid.uuid4().hex}", ttl=2, lease=1)
    async with fake.client(idempotency=store, timeout=0.5) as client:
        await _confirmed(client)
        dead = Intent(operation="change", fingerprint="whatever", safety="once")
        key = record_key(SHOP_ID, "1")
        await store.begin(key, dead, "killed-worker")
        assert await redis_call(store, "TTL", store._key(key)) == -1
        raw = await redis_call(store, "HGET", store._key(key), "book")
        book = json.loads(raw)
        book["lease"]["expires"] -= 86_400_000  # a day later
        await redis_call(store, "HSET", store._key(key), "book", json.dumps(book))
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1", cart_items=SMALLER)
    await store.close()
    assert fake.received("change") == 0


def test_a_ttl_shorter_than_the_lease_is_refused(redis_url: str) -> None:
    """Such a store would let a leased book expire before anyone read it as unknown."""
    with pytest.raises(ValueError, match="ttl"):
        RedisIdempotencyStore(redis_url, ttl=30, lease=60)
    with pytest.raises(ValueError, match="ttl"):
        MemoryIdempotencyStore(ttl=30, lease=60)


# -- 4. a cancel whose earlier attempt's outcome was unknown was forgotten -------------------


async def test_a_cancel_with_an_unknown_attempt_stays_unknown(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """504 after commit, then 503, 503: the error says an attempt may have worked, the record
    keeps it, and the next cancel's OrderStatusError is flagged."""
    async with fake.client(clock=clock) as client:
        await _confirmed(client)
        fake.faults.on("cancel", Fault.gateway_timeout(after_commit=True))
        fake.faults.on("cancel", Fault.unavailable(), times=2)
        with pytest.raises(ServerError) as failed:
            await client.cancel(order_id="1")
        assert failed.value.status == 503
        assert failed.value.previous_outcome_unknown is True
        assert failed.value.outcome_unknown is True
        with pytest.raises(OrderStatusError) as again:
            await client.cancel(order_id="1")
    assert again.value.previous_outcome_unknown is True
    assert len(fake.ledger.effects_for("cancel")) == 1


# -- 5. a failed begin left an orphaned lease --------------------------------------------------


class _AnswersTooLate(MemoryIdempotencyStore):
    """A store whose begin takes the lease, then fails (Redis answering after a timeout)."""

    suspends = True

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.failures = 1

    async def begin(self, key: str, intent: Intent, owner: str) -> Decision:
        decision = await super().begin(key, intent, owner)
        if self.failures:
            self.failures -= 1
            raise TimeoutError("Timeout reading from redis")
        return decision


async def test_a_failed_begin_leaves_no_lease(fake: FakeRees46, clock: FakeClock) -> None:
    """The failed call sent nothing and says so; the next change on the order is sent."""
    store = _AnswersTooLate(clock)
    async with fake.client(clock=clock, idempotency=store) as client:
        store.failures = 0
        await _confirmed(client)
        store.failures = 1
        with pytest.raises(IdempotencyError, match="nothing was sent"):
            await client.change(order_id="1", cart_items=SMALLER)
        change = await client.change(order_id="1", cart_items=SMALLER)
    assert change.order_total_change == Decimal(-1000)
    assert _changes(fake) == 1


# -- 6. a retry squeezed against the deadline --------------------------------------------------


async def test_a_change_retry_never_starts_without_its_timeout_left(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """429 with Retry-After: 29.7 and a 30 s deadline: the 429 is raised, nothing is unknown,
    and the next change on the order is sent."""
    async with fake.client(clock=clock) as client:
        await _confirmed(client)
        fake.faults.on("change", Fault.rate_limited(retry_after="29.7"))
        with pytest.raises(RateLimitError) as limited:
            await client.change(order_id="1", cart_items=SMALLER)
        assert limited.value.outcome_unknown is False
        assert clock.sleeps == []
        change = await client.change(order_id="1", cart_items=SMALLER)
    assert change.replayed is False
    assert _changes(fake) == 1


# -- 7. spurious unknown outcomes --------------------------------------------------------------


async def test_a_caller_cancelled_during_the_backoff_leaves_nothing_unknown(
    fake: FakeRees46,
) -> None:
    """Cancelled while waiting to retry after a 503 (which processed nothing): the change is
    not recorded as unknown, and is sent when asked again."""
    waiting = asyncio.Event()
    async with fake.client(hooks=Hooks(on_retry=lambda _: waiting.set())) as client:
        await _confirmed(client)
        fake.faults.on("change", Fault.unavailable(retry_after="5"))
        call = asyncio.ensure_future(client.change(order_id="1", cart_items=SMALLER))
        await asyncio.wait_for(waiting.wait(), timeout=10)  # the 503 is in; the retry waits
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        change = await client.change(order_id="1", cart_items=SMALLER)
    assert change.order_total_change == Decimal(-1000)
    assert _changes(fake) == 1


class _HangingResolver(aiohttp.abc.AbstractResolver):
    """Resolves localhost, or hangs while ``hang`` is set (a slow DNS, a connect queue)."""

    def __init__(self) -> None:
        self.hang = False
        self.entered = asyncio.Event()
        self.released = asyncio.Event()

    async def resolve(
        self,
        host: str,
        port: int = 0,
        family: socket.AddressFamily = socket.AF_INET,  # noqa: ARG002 - the interface's
    ) -> list[aiohttp.abc.ResolveResult]:
        if self.hang:
            self.entered.set()
            await self.released.wait()  # aiohttp shields a resolution from its caller
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        """Nothing to close."""


async def test_a_caller_cancelled_before_the_request_is_written_leaves_nothing_unknown(
    fake: FakeRees46, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while the change's connection is still being made: no byte was written, so
    nothing is unknown, and the change is sent when asked again."""
    resolver = _HangingResolver()
    monkeypatch.setattr(aiohttp, "TCPConnector", functools.partial(_CONNECTOR, resolver=resolver))
    base_url = fake.url.replace("127.0.0.1", "localhost")
    async with LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=base_url) as client:
        await _confirmed(client)
        resolver.hang = True
        call = asyncio.ensure_future(client.change(order_id="1", cart_items=SMALLER))
        await asyncio.wait_for(resolver.entered.wait(), timeout=10)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        resolver.hang = False
        resolver.released.set()
        change = await client.change(order_id="1", cart_items=SMALLER)
    assert change.replayed is False
    assert _changes(fake) == 1


# -- 9. a proxy's HTML 404 / 408 was cached as a terminal error ----------------------------


@pytest.mark.parametrize("status", [404, 408])
async def test_a_proxys_error_page_is_never_replayed(api: FakeApi, status: int) -> None:
    """A proxy's HTML error page is raised, not recorded: the next identical call is sent."""
    api.get("details", payload=status_envelope(CALCULATION), repeat=True)
    api.post("change", status=status, body="<html>no</html>", content_type="text/html")
    api.post("change", payload=status_envelope(CHANGE))
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url="https://api.test", transport=api
    ) as client:
        # Not the API's answer (a NotAnApiError since issue 14), so never the API's "not found".
        with pytest.raises(NotAnApiError) as caught:
            await client.change(order_id="1001", cart_items=SMALLER)
        change = await client.change(order_id="1001", cart_items=SMALLER)
    assert not isinstance(caught.value, NotFoundError | BadRequestError)
    assert change.replayed is False


# -- 10. ambiguous store keys ------------------------------------------------------------------


async def test_store_keys_of_two_shops_never_collide(api: FakeApi) -> None:
    """Shop 's' with key 't:key:K' and shop 's:key:t' with key 'K' are two records."""
    api.get("details", payload=status_envelope(CALCULATION), repeat=True)
    api.post("change", payload=status_envelope(CHANGE), repeat=True)
    store = MemoryIdempotencyStore()
    calls = (("s", "t:key:K"), ("s:key:t", "K"))
    results = []
    for shop, key in calls:
        async with LoyaltyClient(
            shop, SHOP_SECRET, base_url="https://api.test", idempotency=store, transport=api
        ) as client:
            results.append(
                await client.change(order_id="1", cart_items=SMALLER, idempotency_key=key)
            )
    assert [r.replayed for r in results] == [False, False]
    assert len(store) == 2


# -- 11. stored errors lost their types --------------------------------------------------------


async def test_a_terminal_error_replayed_from_redis_equals_the_original(
    api: FakeApi, redis_url: str
) -> None:
    """Decimals of the error payload come back as Decimals, the type and message the same."""
    answer = {"status": "error", "payload": {"message": "too much", "max_bonuses": 12.5}}
    api.get("details", payload=status_envelope(CALCULATION))
    api.post("change", status=400, payload=answer)
    store = RedisIdempotencyStore(redis_url, namespace=f"err-{uuid.uuid4().hex}")
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url="https://api.test", idempotency=store, transport=api
    ) as client:
        with pytest.raises(BadRequestError) as first:
            await client.change(order_id="1001", cart_items=SMALLER)
        with pytest.raises(BadRequestError) as again:
            await client.change(order_id="1001", cart_items=SMALLER)
    await store.close()
    assert again.value.payload == first.value.payload
    assert again.value.payload is not None
    assert again.value.payload["max_bonuses"] == Decimal("12.5")
    assert type(again.value.payload["max_bonuses"]) is Decimal
    assert (again.value.status, again.value.message) == (400, "too much")


async def test_a_corrupt_record_is_an_idempotency_error(api: FakeApi, redis_url: str) -> None:
    """A record that is not a book: IdempotencyError from the call and from clearing it."""
    store = RedisIdempotencyStore(redis_url, namespace=f"bad-{uuid.uuid4().hex}")
    key = store._key(record_key(SHOP_ID, "1001"))
    await redis_call(store, "HSET", key, "book", "not json")
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url="https://api.test", idempotency=store, transport=api
    ) as client:
        with pytest.raises(IdempotencyError, match="nothing was sent"):
            await client.change(order_id="1001", cart_items=SMALLER)
        with pytest.raises(IdempotencyError, match="could not clear"):
            await client.clear_idempotency(order_id="1001")
    await store.close()
    assert len(api.requests) == 0
