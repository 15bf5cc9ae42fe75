"""The idempotency layer where it is hardest: failing stores, cancelled callers, slow holders,
records that outlive their TTL, answers that must come back from Redis to the last digit."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    BadRequestError,
    CartItem,
    Handler,
    IdempotencyError,
    LoyaltyClient,
    OrderStatusError,
    OutcomeUnknownError,
    RateLimitError,
    ServerError,
)
from rees46_loyalty.idempotency import (
    Book,
    Decision,
    Finish,
    Intent,
    MemoryIdempotencyStore,
    Outcome,
    RedisIdempotencyStore,
    State,
    Verdict,
)
from rees46_loyalty.middleware.idempotency import record_key
from rees46_loyalty.testing import FakeClock, FakeRees46, Fault
from tests.conftest import SHOP_ID, SHOP_SECRET
from tests.integration.conftest import redis_call
from tests.payloads import CALCULATION, CHANGE, status_envelope
from tests.unit.helpers import FakeApi

pytestmark = pytest.mark.integration

CART = [CartItem(product_id="A", price=Decimal("1000"), quantity=4)]
SMALLER = [CartItem(product_id="A", price=Decimal("1000"), quantity=3)]
CHANGE_X = Intent(operation="change", fingerprint="x", safety="once")


def operations(book: Book | None) -> list[str]:
    """The operations with an outcome in *book* (after checking it holds no lease)."""
    assert book is not None
    assert book.lease is None
    return [outcome.intent.operation for outcome in book.outcomes.values()]


class _Gated(MemoryIdempotencyStore):
    """A memory store whose begin or finish waits for a gate, or whose finish fails."""

    suspends = True  # its gates make it suspend, like a store that talks to a server

    def __init__(self, clock: FakeClock, *, fail_finish: bool = False) -> None:
        super().__init__(clock=clock)
        self.begin_gate: asyncio.Event | None = None
        self.finish_gate: asyncio.Event | None = None
        self.finish_entered = asyncio.Event()
        self.begin_entered = asyncio.Event()
        self.fail_finish = fail_finish

    async def begin(self, key: str, intent: Intent, owner: str) -> Decision:
        if self.begin_gate is not None:
            self.begin_entered.set()
            await self.begin_gate.wait()
        return await super().begin(key, intent, owner)

    async def finish(self, key: str, owner: str, outcome: Outcome) -> Finish:
        if self.fail_finish:
            raise ConnectionError("the store is down")
        if self.finish_gate is not None:
            self.finish_entered.set()
            await self.finish_gate.wait()
        return await super().finish(key, owner, outcome)


async def _confirmed(client: LoyaltyClient, order_id: str = "1") -> None:
    await client.apply(order_id=order_id, cart_items=CART)
    await client.confirm(order_id=order_id)


@pytest.fixture
async def fake() -> AsyncIterator[FakeRees46]:
    async with FakeRees46() as server:
        server.add_product("A", "Tea")
        yield server


async def test_a_store_that_fails_after_the_change_does_not_lose_the_refund(
    fake: FakeRees46, clock: FakeClock, log_records: list[logging.LogRecord]
) -> None:
    """The change is applied; the store cannot record it: the caller still gets the amount,
    and the failure is logged as an error."""
    store = _Gated(clock, fail_finish=True)
    async with fake.client(clock=clock, idempotency=store) as client:
        await client.apply(order_id="1", cart_items=CART)
        store.fail_finish = False
        await client.confirm(order_id="1")
        store.fail_finish = True
        change = await client.change(order_id="1", cart_items=SMALLER)
    assert change.order_total_change == Decimal(-1000)
    assert any(
        r.levelno == logging.ERROR and "could not be recorded" in r.getMessage()
        for r in log_records
    )


async def test_a_caller_cancelled_while_its_success_is_recorded_still_records_it(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """Cancelled while the store writes the result: the write finishes (shielded), and a
    repeat is answered from it."""
    store = _Gated(clock)
    async with fake.client(clock=clock, idempotency=store) as client:
        await _confirmed(client)
        store.finish_gate = asyncio.Event()
        task = asyncio.ensure_future(client.change(order_id="1", cart_items=SMALLER))
        await store.finish_entered.wait()  # the change is done; its result is being written
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        store.finish_gate.set()  # the repeat below waits for the shielded write to finish
        again = await client.change(order_id="1", cart_items=SMALLER)
    assert again.replayed is True
    assert again.order_total_change == Decimal(-1000)
    assert len(fake.ledger.requests_for("change")) == 1


async def test_a_caller_cancelled_before_sending_leaves_nothing(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """Cancelled before the request left the process: no unknown outcome, the key is free."""
    entered, hold = asyncio.Event(), asyncio.Event()

    async def slow(request: ApiRequest, call_next: Handler) -> ApiResponse:
        if request.operation.name == "change":
            entered.set()
            await hold.wait()
        return await call_next(request)

    store = MemoryIdempotencyStore(clock=clock)
    async with fake.client(clock=clock, idempotency=store, middlewares=[slow]) as client:
        await _confirmed(client)
        task = asyncio.ensure_future(client.change(order_id="1", cart_items=SMALLER))
        await entered.wait()  # the lease is held; nothing has left the process
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert operations(await store.get(record_key(fake.shop_id, "1"))) == ["apply", "confirm"]
        hold.set()
        change = await client.change(order_id="1", cart_items=SMALLER)
    assert change.replayed is False
    assert len(fake.ledger.requests_for("change")) == 1


async def test_a_caller_cancelled_while_the_store_answers_leaves_no_lease(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """Cancelled during store.begin: the lease taken anyway is released."""
    store = _Gated(clock)
    store.begin_gate = asyncio.Event()
    async with fake.client(clock=clock, idempotency=store) as client:
        task = asyncio.ensure_future(client.cancel(order_id="1"))
        await store.begin_entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        store.begin_gate.set()
        for _ in range(10):  # the release runs in a task scheduled when begin completes
            await asyncio.sleep(0)
        assert await store.get(record_key(fake.shop_id, "1")) is None


async def test_a_call_never_outlives_its_lease(fake: FakeRees46, clock: FakeClock) -> None:
    """With a 2 s lease, retries stop before 1.8 s: a second caller can never find the holder
    still running after its lease."""
    store = MemoryIdempotencyStore(clock=clock, lease=2)
    async with fake.client(clock=clock, idempotency=store, timeout=0.1) as client:
        await _confirmed(client)
        fake.faults.on("change", Fault.rate_limited(retry_after="1.5"), times=3)
        with pytest.raises(RateLimitError):
            await client.change(order_id="1", cart_items=SMALLER)
    assert clock.sleeps == [1.5]  # a second wait would end at 3 s, past the lease
    # 429s processed nothing: no lease, no outcome of the change
    assert operations(await store.get(record_key(fake.shop_id, "1"))) == ["apply", "confirm"]


async def test_a_slow_holder_still_records_its_real_outcome(clock: FakeClock) -> None:
    """A holder whose lease ran out (its key turned unknown) may still record a success."""
    store = MemoryIdempotencyStore(clock=clock, lease=1)
    await store.begin("k", CHANGE_X, "slow")
    clock.advance(2)
    assert (await store.begin("k", CHANGE_X, "other")).verdict is Verdict.UNKNOWN
    done = Outcome(state=State.SUCCEEDED, intent=CHANGE_X, status=200, answer=b"{}")
    assert await store.finish("k", "slow", done) is Finish.RECORDED
    assert (await store.begin("k", CHANGE_X, "third")).verdict is Verdict.REPLAY


async def test_unknown_outcomes_never_expire(clock: FakeClock, redis_url: str) -> None:
    """An unknown change waits for a person past any TTL, in both stores."""
    memory = MemoryIdempotencyStore(clock=clock, ttl=10, lease=5)
    redis = RedisIdempotencyStore(redis_url, namespace=f"ttl-{uuid.uuid4().hex}", ttl=10, lease=5)
    unknown = Outcome(state=State.UNKNOWN, intent=CHANGE_X)
    for store in (memory, redis):
        await store.begin("k", CHANGE_X, "a")
        assert await store.finish("k", "a", unknown) is Finish.RECORDED
    clock.advance(11)
    assert (await memory.begin("k", CHANGE_X, "b")).verdict is Verdict.UNKNOWN
    assert await redis_call(redis, "TTL", redis._key("k")) == -1  # no expiry
    await redis.close()


async def test_forget_frees_a_key_whose_holder_is_gone(clock: FakeClock, redis_url: str) -> None:
    """clear_idempotency after reconciling a dead worker's call frees its expired lease."""
    memory = MemoryIdempotencyStore(clock=clock, lease=1)
    redis = RedisIdempotencyStore(redis_url, namespace=f"gone-{uuid.uuid4().hex}", lease=0.05)
    for store in (memory, redis):
        await store.begin("k", CHANGE_X, "dead")
    clock.advance(2)
    for _ in range(5):  # the Redis lease runs on Redis time: a few polls outlast it
        await redis.wait("k", 0.1)
    for store in (memory, redis):
        await store.forget("k")
        assert await store.get("k") is None
    await redis.close()


async def test_a_replayed_terminal_error_keeps_previous_outcome_unknown(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """The flag an earlier attempt's lost answer gave is replayed with the error."""
    async with fake.client(clock=clock) as client:
        await _confirmed(client)
        fake.faults.on("cancel", Fault.gateway_timeout(after_commit=True), times=3)
        with pytest.raises(Exception):  # noqa: B017, PT011 - the 504, after three attempts
            await client.cancel(order_id="1")
        for _ in range(2):
            with pytest.raises(OrderStatusError) as caught:
                await client.cancel(order_id="1")
            assert caught.value.previous_outcome_unknown is True


async def test_redis_replays_results_to_the_last_digit(api: FakeApi, redis_url: str) -> None:
    """A replay from Redis equals the original: Decimals inside free-form fields, and trailing
    zeros, come back as they were."""
    payload: dict[str, Any] = {
        **CHANGE,
        "rewarded_stickers": {"gold": 1.5},
        "order_total_change": -300.10,
        "bonuses_balance": 0.00,
    }
    api.get("details", payload=status_envelope(CALCULATION))
    api.post("change", payload=status_envelope(payload))
    store = RedisIdempotencyStore(redis_url, namespace=f"digits-{uuid.uuid4().hex}")
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url="https://api.test", idempotency=store, transport=api
    ) as client:
        first = await client.change(order_id="1001", cart_items=SMALLER)
        again = await client.change(order_id="1001", cart_items=SMALLER)
    await store.close()
    assert again.replayed is True
    assert again == first
    assert again.rewarded_stickers == {"gold": Decimal("1.5")}
    assert str(again.order_total_change) == str(first.order_total_change)


async def test_redis_keeps_terminal_errors_with_fractional_payloads(
    api: FakeApi, redis_url: str
) -> None:
    """A refused change whose error payload holds a fraction is recorded and replayed."""
    answer = {"status": "error", "payload": {"message": "too much", "max_bonuses": 12.5}}
    api.get("details", payload=status_envelope(CALCULATION))
    api.post("change", status=400, payload=answer)
    store = RedisIdempotencyStore(redis_url, namespace=f"err-{uuid.uuid4().hex}")
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url="https://api.test", idempotency=store, transport=api
    ) as client:
        for attempts in (1, 0):
            with pytest.raises(BadRequestError) as caught:
                await client.change(order_id="1001", cart_items=SMALLER)
            assert caught.value.attempts == attempts
            assert caught.value.message == "too much"
    await store.close()


async def test_an_unknown_change_stays_refused(fake: FakeRees46, clock: FakeClock) -> None:
    """A change lost after commit stays refused however long the caller waits."""
    async with fake.client(
        clock=clock, idempotency=MemoryIdempotencyStore(clock=clock, ttl=60)
    ) as client:
        await _confirmed(client)
        fake.faults.on("change", Fault.drop_after_commit())
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1", cart_items=SMALLER)
        clock.advance(3600)
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1", cart_items=SMALLER)
    assert len(fake.ledger.requests_for("change")) == 1


class _Broken(MemoryIdempotencyStore):
    """A store that fails at begin, or at release."""

    def __init__(self, clock: FakeClock, *, fail: str) -> None:
        super().__init__(clock=clock)
        self.fail = fail

    async def begin(self, key: str, intent: Intent, owner: str) -> Decision:
        if self.fail == "begin":
            raise ConnectionError("the store is down")
        return await super().begin(key, intent, owner)

    async def release(self, key: str, owner: str, intent: Intent) -> None:
        if self.fail == "release":
            raise ConnectionError("the store is down")
        await super().release(key, owner, intent)


async def test_a_store_down_before_the_call_sends_nothing(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """Without its record the SDK cannot promise "at most once": IdempotencyError, retryable,
    and nothing reaches the API."""
    async with fake.client(clock=clock, idempotency=_Broken(clock, fail="begin")) as client:
        with pytest.raises(IdempotencyError, match="nothing was sent") as caught:
            await client.cancel(order_id="1")
    assert caught.value.retryable is True
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert fake.received() == 0


async def test_a_store_down_after_a_failure_does_not_hide_the_failure(
    fake: FakeRees46, clock: FakeClock, log_records: list[logging.LogRecord]
) -> None:
    """The call's own error is raised; the store's is logged."""
    store = _Broken(clock, fail="release")
    async with fake.client(clock=clock, idempotency=store) as client:
        fake.faults.on("cancel", Fault.unavailable(), times=3)
        with pytest.raises(ServerError):
            await client.cancel(order_id="1")
    assert any("could not record it" in r.getMessage() for r in log_records)


async def test_the_redis_store_sends_many_calls_at_once_over_one_connection(
    fake: FakeRees46, redis_url: str
) -> None:
    """Thirty calls at once on one loop: one connection to Redis, every call answered."""
    store = RedisIdempotencyStore(redis_url, namespace=f"pool-{uuid.uuid4().hex}")
    before = _connected_clients(await redis_call(store, "INFO", "clients"))
    async with fake.client(idempotency=store) as client:
        for n in range(30):
            await client.apply(order_id=f"p-{n}", cart_items=CART)
        refs = await asyncio.gather(*(client.confirm(order_id=f"p-{n}") for n in range(30)))
        during = _connected_clients(await redis_call(store, "INFO", "clients"))
    await store.close()
    assert len(refs) == 30
    assert len(fake.ledger.effects_for("confirm")) == 30
    assert during == before  # the store's one connection was open before, and is the only one


def _connected_clients(info: bytes) -> int:
    line = next(line for line in info.splitlines() if line.startswith(b"connected_clients:"))
    return int(line.split(b":")[1])


def test_max_connections_is_deprecated(redis_url: str) -> None:
    """The option of the pooled client is accepted, unused, with a warning at the caller's line."""
    with pytest.warns(DeprecationWarning, match="max_connections is unused") as caught:
        RedisIdempotencyStore(redis_url, max_connections=3)
    assert caught[0].filename == __file__
