"""The record rules and the memory store, without a network."""

from __future__ import annotations

import pytest

from rees46_loyalty.idempotency import Intent, MemoryIdempotencyStore, Record, State, Verdict
from rees46_loyalty.idempotency._records import decide
from tests.conftest import FakeClock

CHANGE_X = Intent(operation="change", fingerprint="x", once=True)
CHANGE_Y = Intent(operation="change", fingerprint="y", once=True)
CANCEL = Intent(operation="cancel", fingerprint="c")


def finished(intent: Intent, state: State = State.SUCCEEDED) -> Record:
    return Record(
        state=state, operation=intent.operation, fingerprint=intent.fingerprint, once=intent.once
    )


@pytest.mark.parametrize(
    ("existing", "intent", "verdict", "previous_unknown"),
    [
        (None, CHANGE_X, Verdict.ACQUIRED, False),
        (finished(CHANGE_X), CHANGE_X, Verdict.REPLAY, False),
        (finished(CHANGE_X, State.FAILED), CHANGE_X, Verdict.REPLAY, False),
        (finished(CHANGE_X), CHANGE_Y, Verdict.ACQUIRED, False),
        (
            finished(CHANGE_X),
            Intent(operation="change", fingerprint="y", explicit=True),
            Verdict.CONFLICT,
            False,
        ),
        (finished(CHANGE_X, State.UNKNOWN), CHANGE_X, Verdict.UNKNOWN, False),
        (finished(CHANGE_X, State.UNKNOWN), CHANGE_Y, Verdict.ACQUIRED, False),
        (finished(CANCEL, State.UNKNOWN), CANCEL, Verdict.ACQUIRED, True),
    ],
)
def test_the_rules(
    existing: Record | None, intent: Intent, verdict: Verdict, previous_unknown: bool
) -> None:
    """The decision table of DESIGN.md's client-side idempotency."""
    decision, _ = decide(existing, intent, owner="me", now=0.0, lease=10.0)
    assert decision.verdict is verdict
    assert decision.previous_unknown is previous_unknown


def test_a_live_lease_makes_others_wait_and_a_dead_one_becomes_unknown() -> None:
    """Before its expiry a lease says BUSY (with the time left); after it, a change is unknown."""
    holding = Record(
        state=State.IN_FLIGHT,
        operation="change",
        fingerprint="x",
        once=True,
        owner="a",
        lease_expires=10.0,
    )
    busy, stored = decide(holding, CHANGE_X, owner="b", now=4.0, lease=10.0)
    assert (busy.verdict, busy.wait, stored) == (Verdict.BUSY, 6.0, None)
    dead, stored = decide(holding, CHANGE_X, owner="b", now=11.0, lease=10.0)
    assert dead.verdict is Verdict.UNKNOWN
    assert stored is not None
    assert stored.state is State.UNKNOWN


async def test_the_memory_store_keeps_records_for_their_ttl(clock: FakeClock) -> None:
    """A finished record lives ttl seconds; then the same intent is sent again."""
    store = MemoryIdempotencyStore(ttl=100, lease=10, clock=clock)
    assert (await store.begin("k", CHANGE_X, "a")).verdict is Verdict.ACQUIRED
    assert await store.finish("k", "a", finished(CHANGE_X))
    assert not await store.finish("k", "someone-else", finished(CHANGE_X))
    assert (await store.begin("k", CHANGE_X, "b")).verdict is Verdict.REPLAY
    clock.advance(101)
    assert (await store.begin("k", CHANGE_X, "c")).verdict is Verdict.ACQUIRED
    assert len(store) == 1


async def test_the_memory_store_evicts_the_oldest_finished_records(clock: FakeClock) -> None:
    """Past max_records the oldest finished records go; calls in flight and unknown outcomes
    stay."""
    store = MemoryIdempotencyStore(max_records=2, clock=clock)
    await store.begin("flying", CANCEL, "a")
    await store.begin("unknown", CHANGE_X, "a")
    await store.finish("unknown", "a", finished(CHANGE_X, State.UNKNOWN))
    for n in range(3):
        await store.begin(f"done-{n}", CANCEL, "a")
        await store.finish(f"done-{n}", "a", finished(CANCEL))
    kept = {
        key for key in ("flying", "unknown", "done-0", "done-1", "done-2") if await store.get(key)
    }
    assert {"flying", "unknown"} <= kept
    assert "done-0" not in kept
    assert len(store) <= 4


async def test_release_only_by_the_owner(clock: FakeClock) -> None:
    """Only the holder of a lease can release it; forget removes only unknown or failed
    records."""
    store = MemoryIdempotencyStore(clock=clock)
    await store.begin("k", CANCEL, "a")
    await store.release("k", "b")
    assert await store.get("k") is not None
    await store.release("k", "a")
    assert await store.get("k") is None
    await store.begin("k", CANCEL, "a")
    await store.forget("k")  # a call in flight is never forgotten
    assert await store.get("k") is not None
    await store.finish("k", "a", finished(CANCEL))
    await store.forget("k")  # nor a success
    assert await store.get("k") is not None
    await store.begin("u", CHANGE_X, "a")
    await store.finish("u", "a", finished(CHANGE_X, State.UNKNOWN))
    await store.forget("u")  # an unknown outcome is
    assert await store.get("u") is None
    await store.close()


def test_the_memory_store_refuses_nonsense() -> None:
    """Non-positive settings fail at construction."""
    with pytest.raises(ValueError, match="positive"):
        MemoryIdempotencyStore(ttl=0)
