"""One table of cases that every idempotency store runs: the rules of DESIGN.md, step by step.

The memory and SQLite stores run the Python rules (``idempotency._records``); the Redis store
runs its Lua scripts against a real redis-server. All must answer every step of every case alike.
Time is moved without waiting: the memory and SQLite stores' clock is a fake one, and a Redis
book is aged by moving its stored expiries (and its key's TTL) back.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from attrs import frozen

from rees46_loyalty.idempotency import (
    Finish,
    IdempotencyStore,
    Intent,
    MemoryIdempotencyStore,
    Outcome,
    RedisIdempotencyStore,
    SqliteIdempotencyStore,
    State,
    Verdict,
)
from rees46_loyalty.testing import FakeClock
from tests.integration.conftest import age_redis_book, redis_call

pytestmark = pytest.mark.integration

TTL, LEASE = 100.0, 10.0
X = Intent(operation="change", fingerprint="x", safety="once")
Y = Intent(operation="change", fingerprint="y", safety="once")
C = Intent(operation="cancel", fingerprint="c", safety="cancel")
A = Intent(operation="apply", fingerprint="a", safety="safe")
A2 = Intent(operation="apply", fingerprint="a2", safety="safe")
KEYED_X = Intent(operation="change", fingerprint="x", key="job-1", safety="once")
KEYED_Y = Intent(operation="change", fingerprint="y", key="job-1", safety="once")


@frozen
class Begin:
    intent: Intent
    owner: str
    verdict: Verdict
    previous_unknown: bool = False


@frozen
class End:
    """finish() with an outcome of *state* (an answer for a success or a failure)."""

    owner: str
    intent: Intent
    state: State
    done: Finish


@frozen
class Release:
    owner: str
    intent: Intent


@frozen
class Forget:
    key: str | None
    dropped: list[str]


@frozen
class Age:
    seconds: float


@frozen
class Wipe:
    """The store loses the book (a Redis restart without persistence, a flush, an eviction)."""


Step = Begin | End | Release | Forget | Age | Wipe

CASES: dict[str, list[Step]] = {
    "a new intent takes the lease": [Begin(X, "a", Verdict.ACQUIRED)],
    "a begin repeated by the same owner is idempotent": [
        Begin(X, "a", Verdict.ACQUIRED),
        Begin(X, "a", Verdict.ACQUIRED),
        Begin(X, "b", Verdict.BUSY),
    ],
    "calls on one order are serialised, whatever their intent": [
        Begin(X, "a", Verdict.ACQUIRED),
        Begin(C, "b", Verdict.BUSY),
        Begin(Y, "c", Verdict.BUSY),
    ],
    "a finished intent is replayed": [
        Begin(X, "a", Verdict.ACQUIRED),
        End("a", X, State.SUCCEEDED, Finish.RECORDED),
        Begin(X, "b", Verdict.REPLAY),
    ],
    "every finished intent on an order is kept": [
        Begin(X, "a", Verdict.ACQUIRED),
        End("a", X, State.SUCCEEDED, Finish.RECORDED),
        Begin(C, "b", Verdict.ACQUIRED),
        End("b", C, State.SUCCEEDED, Finish.RECORDED),
        Begin(Y, "c", Verdict.ACQUIRED),
        End("c", Y, State.SUCCEEDED, Finish.RECORDED),
        Begin(X, "d", Verdict.REPLAY),
        Begin(C, "d", Verdict.REPLAY),
        Begin(Y, "d", Verdict.REPLAY),
    ],
    "a finished intent is replayed while another call holds the order": [
        Begin(X, "a", Verdict.ACQUIRED),
        End("a", X, State.SUCCEEDED, Finish.RECORDED),
        Begin(C, "b", Verdict.ACQUIRED),
        Begin(X, "c", Verdict.REPLAY),
    ],
    "an unknown change blocks every later mutating call on its order": [
        Begin(A, "a", Verdict.ACQUIRED),
        End("a", A, State.SUCCEEDED, Finish.RECORDED),
        Begin(X, "b", Verdict.ACQUIRED),
        End("b", X, State.UNKNOWN, Finish.RECORDED),
        Begin(X, "c", Verdict.UNKNOWN),
        Begin(Y, "c", Verdict.UNKNOWN),
        Begin(C, "c", Verdict.UNKNOWN),
        Begin(A, "c", Verdict.REPLAY),  # finished: answered from the book, nothing sent
    ],
    "an explicit key reused with another request conflicts": [
        Begin(KEYED_X, "a", Verdict.ACQUIRED),
        End("a", KEYED_X, State.SUCCEEDED, Finish.RECORDED),
        Begin(KEYED_Y, "b", Verdict.CONFLICT),
        Begin(KEYED_X, "b", Verdict.REPLAY),
        Begin(X, "b", Verdict.ACQUIRED),  # the same request without the key: another intent
    ],
    "an unknown cancel is sent again, flagged": [
        Begin(C, "a", Verdict.ACQUIRED),
        End("a", C, State.UNKNOWN, Finish.RECORDED),
        Begin(C, "b", Verdict.ACQUIRED, previous_unknown=True),
        End("b", C, State.FAILED, Finish.RECORDED),
        Begin(C, "c", Verdict.REPLAY),
    ],
    "a lease that ran out is an unknown change": [
        Begin(X, "a", Verdict.ACQUIRED),
        Age(LEASE + 1),
        Begin(Y, "b", Verdict.UNKNOWN),
        Begin(X, "b", Verdict.UNKNOWN),
    ],
    "a lease that ran out is an unknown change however late anyone looks": [
        Begin(X, "a", Verdict.ACQUIRED),
        Age(TTL * 5),
        Begin(X, "b", Verdict.UNKNOWN),
    ],
    "a slow holder still records what really happened": [
        Begin(X, "a", Verdict.ACQUIRED),
        Age(LEASE + 1),
        Begin(Y, "b", Verdict.UNKNOWN),
        End("a", X, State.SUCCEEDED, Finish.RECORDED),
        Begin(X, "c", Verdict.REPLAY),
        Begin(Y, "c", Verdict.ACQUIRED),
    ],
    "a holder that records another intent after its lease ran out keeps that unknown change": [
        Begin(Y, "a", Verdict.ACQUIRED),
        Age(LEASE + 1),
        End("a", X, State.SUCCEEDED, Finish.RECORDED_AFTER_LOSS),
        Begin(Y, "b", Verdict.UNKNOWN),
        Begin(X, "b", Verdict.REPLAY),
    ],
    "a finish after the store lost the book records anyway": [
        Begin(X, "a", Verdict.ACQUIRED),
        Wipe(),
        End("a", X, State.SUCCEEDED, Finish.RECORDED_AFTER_LOSS),
        Begin(X, "b", Verdict.REPLAY),
    ],
    "a slow holder records beside another call's lease, which keeps the order": [
        Begin(C, "a", Verdict.ACQUIRED),
        Age(LEASE + 1),
        Begin(C, "b", Verdict.ACQUIRED, previous_unknown=True),
        End("a", C, State.SUCCEEDED, Finish.RECORDED),
        Begin(A, "c", Verdict.BUSY),
        End("b", C, State.SUCCEEDED, Finish.SUPERSEDED),
        Begin(C, "c", Verdict.REPLAY),
        Begin(A, "c", Verdict.ACQUIRED),
    ],
    "a finish after the store lost the book records beside another call's lease": [
        Begin(X, "a", Verdict.ACQUIRED),
        Wipe(),
        Begin(C, "b", Verdict.ACQUIRED),
        End("a", X, State.SUCCEEDED, Finish.RECORDED_AFTER_LOSS),
        Begin(X, "c", Verdict.REPLAY),
        Begin(C, "c", Verdict.BUSY),
    ],
    "a finish repeated by the same call is recorded once": [
        Begin(X, "a", Verdict.ACQUIRED),
        End("a", X, State.SUCCEEDED, Finish.RECORDED),
        End("a", X, State.SUCCEEDED, Finish.RECORDED),
        Begin(X, "b", Verdict.REPLAY),
    ],
    "a success drops the order's failures, and an apply its earlier applies": [
        Begin(A, "a", Verdict.ACQUIRED),
        End("a", A, State.SUCCEEDED, Finish.RECORDED),
        Begin(X, "a", Verdict.ACQUIRED),
        End("a", X, State.FAILED, Finish.RECORDED),
        Begin(A2, "b", Verdict.ACQUIRED),
        End("b", A2, State.SUCCEEDED, Finish.RECORDED),
        Begin(A, "c", Verdict.ACQUIRED),
        Release("c", A),
        Begin(X, "c", Verdict.ACQUIRED),
    ],
    "a finish of an intent another call already recorded is refused": [
        Begin(C, "a", Verdict.ACQUIRED),
        Age(LEASE + 1),
        Begin(C, "b", Verdict.ACQUIRED, previous_unknown=True),
        End("b", C, State.FAILED, Finish.RECORDED),
        End("a", C, State.SUCCEEDED, Finish.SUPERSEDED),
    ],
    "a finished outcome lives its TTL": [
        Begin(C, "a", Verdict.ACQUIRED),
        End("a", C, State.SUCCEEDED, Finish.RECORDED),
        Age(TTL - 1),
        Begin(C, "b", Verdict.REPLAY),
        Age(2),
        Begin(C, "b", Verdict.ACQUIRED),
    ],
    "an unknown change and an unknown cancel never expire": [
        Begin(C, "a", Verdict.ACQUIRED),
        End("a", C, State.UNKNOWN, Finish.RECORDED),
        Begin(X, "b", Verdict.ACQUIRED),
        End("b", X, State.UNKNOWN, Finish.RECORDED),
        Age(TTL * 10),
        Begin(Y, "c", Verdict.UNKNOWN),
        Forget(None, ["cancel", "change"]),
        Begin(C, "c", Verdict.ACQUIRED),
    ],
    "an unknown apply expires with its TTL": [
        Begin(A, "a", Verdict.ACQUIRED),
        End("a", A, State.UNKNOWN, Finish.RECORDED),
        Begin(A, "b", Verdict.ACQUIRED, previous_unknown=True),
        Release("b", A),
        Age(TTL + 1),
        Begin(A, "c", Verdict.ACQUIRED),
    ],
    "a release leaves nothing behind": [
        Begin(X, "a", Verdict.ACQUIRED),
        Release("b", X),  # not the holder: nothing happens
        Begin(X, "b", Verdict.BUSY),
        Release("a", X),
        Begin(X, "b", Verdict.ACQUIRED),
    ],
    "a release by a holder whose lease ran out drops the unknown outcome it became": [
        Begin(X, "a", Verdict.ACQUIRED),
        Age(LEASE + 1),
        Release("a", X),
        Begin(X, "b", Verdict.ACQUIRED),
    ],
    "forget drops unknown outcomes and failures, never a success or a lease": [
        Begin(A, "a", Verdict.ACQUIRED),
        End("a", A, State.SUCCEEDED, Finish.RECORDED),
        Begin(C, "a", Verdict.ACQUIRED),
        End("a", C, State.FAILED, Finish.RECORDED),
        Begin(X, "a", Verdict.ACQUIRED),
        End("a", X, State.UNKNOWN, Finish.RECORDED),
        Forget(None, ["cancel", "change"]),
        Begin(A, "b", Verdict.REPLAY),
        Begin(Y, "b", Verdict.ACQUIRED),
        Forget(None, []),
        Begin(Y, "c", Verdict.BUSY),
    ],
    "forget with a key drops only that key's outcome": [
        Begin(C, "a", Verdict.ACQUIRED),
        End("a", C, State.FAILED, Finish.RECORDED),
        Begin(KEYED_X, "a", Verdict.ACQUIRED),
        End("a", KEYED_X, State.UNKNOWN, Finish.RECORDED),
        Forget("job-1", ["change"]),
        Begin(C, "b", Verdict.REPLAY),
    ],
}

ORDER = "7:shop-42:order-1"


@pytest.fixture(params=["memory", "redis", "sqlite"])
async def store(
    request: pytest.FixtureRequest, clock: FakeClock, redis_url: str, tmp_path: Path
) -> AsyncIterator[IdempotencyStore]:
    if request.param == "memory":
        yield MemoryIdempotencyStore(clock=clock, ttl=TTL, lease=LEASE)
        return
    if request.param == "sqlite":
        sqlite = SqliteIdempotencyStore(tmp_path / "books.db", ttl=TTL, lease=LEASE, clock=clock)
        yield sqlite
        await sqlite.close()
        return
    redis = RedisIdempotencyStore(
        redis_url, namespace=f"cases-{uuid.uuid4().hex}", ttl=TTL, lease=LEASE
    )
    yield redis
    await redis.close()


async def _age(store: IdempotencyStore, clock: FakeClock, seconds: float) -> None:
    if isinstance(store, MemoryIdempotencyStore | SqliteIdempotencyStore):
        clock.advance(seconds)
        return
    assert isinstance(store, RedisIdempotencyStore)
    await age_redis_book(store, ORDER, seconds)


def _empty_database(path: Path) -> None:
    wiped = sqlite3.connect(path, isolation_level=None)
    try:
        wiped.executescript("BEGIN IMMEDIATE; DELETE FROM fields; DELETE FROM books; COMMIT;")
    finally:
        wiped.close()


async def _wipe(store: IdempotencyStore) -> None:
    if isinstance(store, SqliteIdempotencyStore):
        # Every record lost (the store refuses a file deleted under it: see test_sqlite_store).
        await asyncio.to_thread(_empty_database, store.path)
        return
    if isinstance(store, RedisIdempotencyStore):
        await redis_call(store, "DEL", store._key(ORDER))
        return
    assert isinstance(store, MemoryIdempotencyStore)
    store._books.clear()
    store._finished.clear()
    store._bytes = 0


def _outcome(step: End) -> Outcome:
    answers: dict[State, Callable[[], Outcome]] = {
        State.SUCCEEDED: lambda: Outcome(
            state=State.SUCCEEDED, intent=step.intent, status=200, answer=b'{"ok":1}'
        ),
        State.FAILED: lambda: Outcome(
            state=State.FAILED, intent=step.intent, status=400, answer=b'{"no":1}'
        ),
        State.UNKNOWN: lambda: Outcome(state=State.UNKNOWN, intent=step.intent),
    }
    return answers[step.state]()


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_every_store_follows_the_rules(
    case: str, store: IdempotencyStore, clock: FakeClock
) -> None:
    """Every step of the case answers the same in every store."""
    for number, step in enumerate(CASES[case], 1):
        where = f"step {number}: {step}"
        if isinstance(step, Begin):
            decision = await store.begin(ORDER, step.intent, step.owner)
            assert decision.verdict is step.verdict, where
            assert decision.previous_unknown is step.previous_unknown, where
            if step.verdict is Verdict.REPLAY:
                assert decision.outcome is not None
                assert decision.outcome.answer in (b'{"ok":1}', b'{"no":1}'), where
        elif isinstance(step, End):
            assert await store.finish(ORDER, step.owner, _outcome(step)) is step.done, where
        elif isinstance(step, Release):
            await store.release(ORDER, step.owner, step.intent)
        elif isinstance(step, Forget):
            dropped = await store.forget(ORDER, step.key)
            assert sorted(o.intent.operation for o in dropped) == step.dropped, where
        elif isinstance(step, Age):
            await _age(store, clock, step.seconds)
        else:
            await _wipe(store)


async def test_a_redis_book_without_a_lease_or_an_unknown_outcome_expires(redis_url: str) -> None:
    """The key's own TTL follows the book: none while a lease or an unknown change is in it."""
    store = RedisIdempotencyStore(redis_url, namespace=f"ttl-{uuid.uuid4().hex}", ttl=TTL)
    key = store._key(ORDER)
    await store.begin(ORDER, X, "a")
    assert await redis_call(store, "TTL", key) == -1  # leased: never expires
    await store.finish(ORDER, "a", Outcome(state=State.UNKNOWN, intent=X))
    assert await redis_call(store, "TTL", key) == -1  # an unknown change: never expires
    await store.forget(ORDER)
    await store.begin(ORDER, C, "b")
    await store.finish(ORDER, "b", Outcome(state=State.SUCCEEDED, intent=C, status=200))
    assert 0 < await redis_call(store, "TTL", key) <= TTL
    await store.close()
