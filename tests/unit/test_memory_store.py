"""The memory store's cost to the process: what it leaves the garbage collector, and its owners."""

from __future__ import annotations

import gc
import os

import pytest

from rees46_loyalty.idempotency import Finish, Intent, MemoryIdempotencyStore, Outcome, State
from rees46_loyalty.middleware import idempotency as layer
from tests.conftest import FakeClock

ANSWER = b'{"status":"success","payload":{"order_id":"1"}}'


async def _fill(store: MemoryIdempotencyStore, orders: int) -> None:
    for number in range(orders):
        key = f"4:shop:{number}"
        intent = Intent(operation="cancel", fingerprint=str(number), safety="cancel")
        await store.begin(key, intent, "owner")
        await store.finish(
            key, "owner", Outcome(state=State.SUCCEEDED, intent=intent, status=200, answer=ANSWER)
        )


async def test_finished_outcomes_add_nothing_for_the_garbage_collector_to_walk() -> None:
    """10,000 kept outcomes leave (nearly) no objects the collector tracks, and replay alike.

    Kept as objects, every collection walked them all and each call paid for it.
    """
    store = MemoryIdempotencyStore(clock=FakeClock())
    gc.collect()
    before = len(gc.get_objects())
    await _fill(store, 10_000)
    gc.collect()
    assert len(store) == 10_000
    assert len(gc.get_objects()) - before < 500
    again = Intent(operation="cancel", fingerprint="1234", safety="cancel")
    decision = await store.begin("4:shop:1234", again, "another")
    assert decision.outcome is not None
    assert decision.outcome.answer == ANSWER
    assert decision.outcome.intent == again


def test_lease_owners_are_unique_per_call() -> None:
    """Each call gets an owner name of its own."""
    owners = {layer._new_owner() for _ in range(1000)}
    assert len(owners) == 1000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_names_its_owners_apart_from_its_parent() -> None:
    """A child forked from a process that made a client never reuses the parent's owner names."""
    read, write = os.pipe()
    parent_next = layer._new_owner()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(write, layer._new_owner().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    mine = layer._new_owner()
    assert len(child) == 32
    assert child not in (parent_next, mine)


async def test_a_first_outcome_is_kept_as_the_rules_keep_it() -> None:
    """A first success keeps no lease notes or not-applied flag, as every later one (the rules)."""
    store = MemoryIdempotencyStore(clock=FakeClock())
    change = Intent(operation="change", fingerprint="x", safety="once")
    given = Outcome(
        state=State.SUCCEEDED,
        intent=change,
        status=200,
        answer=ANSWER,
        not_applied=True,
        before=b"order before " * 1000,
        request=b"cart asked for",
    )
    for key in ("4:shop:first", "4:shop:second"):
        if key.endswith("second"):  # a book that already holds an outcome: the general rules
            cancel = Intent(operation="cancel", fingerprint="c", safety="cancel")
            await store.begin(key, cancel, "earlier")
            await store.finish(key, "earlier", Outcome(state=State.FAILED, intent=cancel))
        await store.begin(key, change, "owner")
        await store.finish(key, "owner", given)
    first, second = await store.get("4:shop:first"), await store.get("4:shop:second")
    assert first is not None
    assert second is not None
    kept, by_the_rules = first.outcomes[change.id], second.outcomes[change.id]
    assert (kept.not_applied, kept.before, kept.request) == (False, None, None)
    assert kept == by_the_rules


async def test_a_first_outcome_of_another_intent_keeps_the_lease_that_ran_out() -> None:
    """A lease that ran out stays an unknown change when its holder records another intent."""
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock=clock, ttl=100, lease=10)
    leased = Intent(operation="change", fingerprint="y", safety="once")
    other = Intent(operation="change", fingerprint="x", safety="once")
    await store.begin("4:shop:1", leased, "owner")
    clock.advance(11)
    done = await store.finish(
        "4:shop:1", "owner", Outcome(state=State.SUCCEEDED, intent=other, status=200)
    )
    book = await store.get("4:shop:1")
    assert book is not None
    assert book.outcomes[leased.id].state is State.UNKNOWN
    assert done is Finish.RECORDED_AFTER_LOSS


async def test_an_unknown_outcome_is_answered_with_its_answer_as_recorded() -> None:
    """begin() gives an unknown outcome's long answer as it was recorded, as get() does."""
    store = MemoryIdempotencyStore(clock=FakeClock())
    change = Intent(operation="change", fingerprint="x", safety="once")
    answer = b'{"partial":"' + b"7" * 6000 + b'"}'
    await store.finish(
        "4:shop:1", "owner", Outcome(state=State.UNKNOWN, intent=change, answer=answer)
    )
    decision = await store.begin("4:shop:1", change, "another")
    book = await store.get("4:shop:1")
    assert decision.outcome is not None
    assert book is not None
    assert decision.outcome.answer == answer == book.outcomes[change.id].answer


async def test_expired_unknown_outcomes_are_swept_without_anyone_looking() -> None:
    """An unknown apply outlives its TTL by no more than a few writes, though nobody reads it."""
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock=clock, ttl=3600, lease=60)
    for number in range(100):
        key = f"4:shop:u{number}"
        intent = Intent(operation="apply", fingerprint=str(number), safety="safe")
        await store.begin(key, intent, "owner")
        await store.finish(key, "owner", Outcome(state=State.UNKNOWN, intent=intent))
    assert len(store) == 100
    clock.advance(3601)
    await _fill(store, 400)
    assert len(store) == 400


async def test_an_order_of_many_outcomes_answers_each_of_them() -> None:
    """Twenty keyed outcomes on one order: each is replayed with its own answer."""
    store = MemoryIdempotencyStore(clock=FakeClock())
    key = "4:shop:many"
    for number in range(20):
        intent = Intent(operation="apply", fingerprint="same", key=f"k{number}", safety="safe")
        await store.begin(key, intent, "owner")
        answer = b'{"n":%d}' % number
        await store.finish(
            key, "owner", Outcome(state=State.SUCCEEDED, intent=intent, status=200, answer=answer)
        )
    for number in range(20):
        intent = Intent(operation="apply", fingerprint="same", key=f"k{number}", safety="safe")
        decision = await store.begin(key, intent, "another")
        assert decision.outcome is not None
        assert decision.outcome.answer == b'{"n":%d}' % number


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"ttl": "3600"}, TypeError, "ttl"),
        ({"lease": True}, TypeError, "lease"),
        ({"lease": float("inf")}, ValueError, "lease"),
        ({"ttl": 0}, ValueError, "ttl"),
        ({"ttl": 30, "lease": 60}, ValueError, "ttl"),
    ],
)
def test_durations_are_checked_as_every_store_checks_them(
    options: dict[str, object], error: type[Exception], named: str
) -> None:
    """A duration that is no number of seconds, not positive and finite, or a TTL under the
    lease: refused, naming it, as the Redis and SQLite stores refuse it."""
    with pytest.raises(error, match=named):
        MemoryIdempotencyStore(**options)  # type: ignore[arg-type]
