"""The memory store against the rules it follows, over random sequences of calls.

Its books are kept packed and its first outcomes recorded by a short path: every answer must
still be what the rules of ``idempotency._records`` give, applied to plain books, and its byte
accounting must match what it keeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rees46_loyalty.idempotency import Intent, MemoryIdempotencyStore, Outcome, State
from rees46_loyalty.idempotency._records import (
    Book,
    as_of,
    decide,
    finish,
    forget,
    note,
    release,
)
from tests.conftest import FakeClock

TTL, LEASE = 100.0, 10.0
INTENTS = [
    Intent(operation="change", fingerprint="x", safety="once"),
    Intent(operation="change", fingerprint="y", safety="once"),
    Intent(operation="cancel", fingerprint="c", safety="cancel"),
    Intent(operation="apply", fingerprint="a", safety="safe"),
    Intent(operation="apply", fingerprint="b", safety="safe"),
    Intent(operation="change", fingerprint="x", key="job-1", safety="once"),
    Intent(operation="change", fingerprint="y", key="job-1", safety="once"),
]
ANSWERS = [None, b'{"ok":1}', b'{"ok":"' + b"7" * 6000 + b'"}']

outcomes = st.builds(
    Outcome,
    state=st.sampled_from(State),
    intent=st.sampled_from(INTENTS),
    status=st.sampled_from([None, 200, 409]),
    answer=st.sampled_from(ANSWERS),
    previous_unknown=st.booleans(),
    not_applied=st.booleans(),
    before=st.sampled_from([None, b"before"]),
    request=st.sampled_from([None, b"request"]),
)
keys, owners = st.sampled_from(["o1", "o2"]), st.sampled_from(["a", "b", "c"])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("begin"), keys, st.sampled_from(INTENTS), owners),
        st.tuples(st.just("finish"), keys, owners, outcomes),
        st.tuples(st.just("note"), keys, owners),
        st.tuples(st.just("release"), keys, owners, st.sampled_from(INTENTS)),
        st.tuples(st.just("forget"), keys, st.sampled_from([None, "job-1"])),
        st.tuples(st.just("get"), keys),
        st.tuples(st.just("age"), st.sampled_from([1.0, LEASE + 1, TTL + 1])),
    ),
    max_size=40,
)


class Rules:
    """The rules applied to plain books: what the memory store must answer."""

    def __init__(self, clock: FakeClock) -> None:
        self.books: dict[str, Book] = {}
        self.clock = clock

    def keep(self, key: str, book: Book | None) -> None:
        if book is None:
            self.books.pop(key, None)
        else:
            self.books[key] = book

    def step(self, name: str, *args: Any) -> Any:
        now = self.clock.monotonic()
        if name == "begin":
            key, intent, owner = args
            decision, book, changed = decide(
                self.books.get(key), intent, owner=owner, now=now, lease=LEASE, ttl=TTL
            )
            if changed:
                self.keep(key, book)
            return decision
        if name == "finish":
            key, owner, outcome = args
            done, book = finish(self.books.get(key), owner, outcome, now=now, ttl=TTL)
            self.keep(key, book)
            return done
        if name == "note":
            (key, owner), old = args, self.books.get(args[0])
            book = note(old, owner, before=b"b", request=b"r", now=now, ttl=TTL)
            self.keep(key, book)
            return book is not old
        if name == "release":
            key, owner, intent = args
            self.keep(key, release(self.books.get(key), owner, intent, now=now, ttl=TTL))
            return None
        if name == "forget":
            key, idempotency_key = args
            dropped, book = forget(self.books.get(key), idempotency_key, now=now, ttl=TTL)
            self.keep(key, book)
            return dropped
        (key,) = args
        book = as_of(self.books.get(key), now, TTL)
        self.keep(key, book)
        return book


def _finished(books: Mapping[str, Book | None]) -> set[tuple[str, str]]:
    return {
        (key, name)
        for key, book in books.items()
        if book is not None
        for name, outcome in book.outcomes.items()
        if outcome.state is not State.UNKNOWN
    }


async def _store_step(store: MemoryIdempotencyStore, name: str, *args: Any) -> Any:
    if name == "note":
        return await store.note(*args, before=b"b", request=b"r")
    return await getattr(store, name)(*args)


def _run(sequence: list[tuple[Any, ...]]) -> None:
    clock, rules_clock = FakeClock(), FakeClock()
    store = MemoryIdempotencyStore(clock=clock, ttl=TTL, lease=LEASE)
    rules = Rules(rules_clock)

    async def run() -> None:
        for number, (name, *args) in enumerate(sequence):
            if name == "age":
                clock.advance(args[0])
                rules_clock.advance(args[0])
                continue
            where = f"step {number}: {name}{tuple(args)}"
            assert await _store_step(store, name, *args) == rules.step(name, *args), where
            # The store drops expired outcomes now and then without being asked; the rules
            # only when a book is read: it keeps at least what is live, at most what the
            # rules still hold.
            now = rules_clock.monotonic()
            live = {key: as_of(book, now, TTL) for key, book in rules.books.items()}
            assert sum(book is not None for book in live.values()) <= len(store), where
            assert len(store) <= len(rules.books), where
            assert _finished(live) <= set(store._finished) <= _finished(rules.books), where
            assert store.kept_bytes == sum(size for size, _ in store._finished.values()), where

    asyncio.run(run())


@settings(max_examples=50, deadline=None)
@given(steps)
def test_the_memory_store_answers_as_the_rules_do(sequence: list[tuple[Any, ...]]) -> None:
    """Every answer of the memory store equals the rules' on plain books, and its bytes add up."""
    _run(sequence)
