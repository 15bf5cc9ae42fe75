"""MemoryIdempotencyStore: books in this process, bounded by a TTL and by bytes."""

from __future__ import annotations

import asyncio
import logging
import math
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from attrs import evolve

from .._clock import Clock, SystemClock
from ._records import (
    Book,
    Decision,
    Finish,
    Intent,
    Lease,
    Outcome,
    State,
    Verdict,
    as_of,
    check_durations,
    decide,
    finish,
    forget,
    note,
    release,
)

__all__ = ["MemoryIdempotencyStore"]

logger = logging.getLogger("rees46_loyalty")

#: Answers longer than this are kept compressed: a 200-line change answers ~180 KB of JSON that
#: compresses 10 to 60 times, and a long-running worker keeps thousands of them.
_COMPRESS_ABOVE = 4096
_NONE: Mapping[str, Outcome] = MappingProxyType({})
_TAKEN = Decision(verdict=Verdict.ACQUIRED)
_GONE = (0, 0.0)
#: What one kept outcome costs beside its answer's bytes (its objects and the book's), roughly.
_OUTCOME_OVERHEAD = 600

#: A book without a lease, kept as plain values: one tuple an outcome (see :func:`_pack`).
_Packed = tuple[tuple[Any, ...], ...]


class MemoryIdempotencyStore:
    """Idempotency records in memory: the default store of :class:`LoyaltyClient`.

    It protects the calls of one process (all tasks on its event loop), and forgets everything
    when the process ends. Workers in several processes or on several machines need
    :class:`RedisIdempotencyStore`.

    Args:
        ttl: Seconds a finished outcome is kept (default 24 h). An unknown outcome of a
            ``change`` or ``cancel`` is kept until it is cleared.
        lease: Seconds a call may hold an order before another call may take it over (default
            60 s; longer than a call's retry deadline).
        max_bytes: Bytes of kept answers at most (default 128 MiB; answers over 4 KiB are kept
            compressed, so this holds about 10,000 200-line changes). Past it the oldest
            finished outcomes go first: a job redelivered after its outcome was dropped is
            sent again. Calls in flight and unknown outcomes are never dropped.
        max_records: Finished outcomes kept at most (default 100,000), whatever their size.
        clock: The clock of leases and TTLs (tests pass a fake one).
    """

    #: Its methods never suspend: they cannot be interrupted half-way.
    suspends = False

    def __init__(
        self,
        *,
        ttl: float = 24 * 3600,
        lease: float = 60.0,
        max_bytes: int = 128 * 1024 * 1024,
        max_records: int = 100_000,
        clock: Clock | None = None,
    ) -> None:
        check_durations(ttl=ttl, lease=lease)
        if max_records < 1 or max_bytes < 1:
            raise ValueError("max_records and max_bytes must be at least 1")
        self.ttl = float(ttl)
        self.lease = float(lease)
        self.max_bytes = max_bytes
        self.max_records = max_records
        self.clock: Clock = SystemClock() if clock is None else clock
        # Books with a lease (calls in flight: few) as objects, the others packed.
        self._books: dict[str, Book | _Packed] = {}
        # Finished outcomes, oldest first, with the bytes each holds and its expiry: what may be
        # dropped.
        self._finished: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        # Unknown outcomes that expire (an apply's, a confirm's, a change found not applied),
        # oldest first, with their expiry: never dropped by the bounds, but swept once expired.
        self._expiring: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._sweeping = False
        self._bytes = 0
        self._puts = 0
        self._warned_full = False
        self._changed: dict[str, asyncio.Event] = {}

    def __repr__(self) -> str:
        return (
            f"MemoryIdempotencyStore(orders={len(self._books)}, kept_bytes={self._bytes}, "
            f"max_bytes={self.max_bytes})"
        )

    def __len__(self) -> int:
        """The number of orders with a book."""
        return len(self._books)

    @property
    def kept_bytes(self) -> int:
        """Bytes the kept answers take, as counted against ``max_bytes``."""
        return self._bytes

    async def begin(self, key: str, intent: Intent, owner: str) -> Decision:
        """Decide what a call with *intent* does on the order *key*, taking the lease if it may."""
        kept = self._books.get(key)
        if kept is None:  # the common case, as decide() has it: a new order's lease
            lease = Lease(owner=owner, intent=intent, expires=self.clock.monotonic() + self.lease)
            self._books[key] = Book(lease=lease, outcomes=_NONE)
            return _TAKEN
        book = _unpack(kept)
        decision, stored, changed = decide(
            book, intent, owner=owner, now=self.clock.monotonic(), lease=self.lease, ttl=self.ttl
        )
        if changed:
            self._put(key, book, stored)
        outcome = decision.outcome
        if outcome is not None and outcome.answer is not None:  # an unknown one's too, as get()
            decision = evolve(decision, outcome=evolve(outcome, answer=_expand(outcome.answer)))
        return decision

    async def finish(self, key: str, owner: str, outcome: Outcome) -> Finish:
        """Record *owner*'s outcome and release its lease (see :class:`Finish`)."""
        if outcome.answer is not None and len(outcome.answer) > _COMPRESS_ABOVE:
            outcome = evolve(outcome, answer=_shrink(outcome.answer))
        book = self._book(key)
        now = self.clock.monotonic()
        lease = book.lease if book is not None else None
        if (
            lease is not None
            and lease.owner == owner
            and lease.intent.id == outcome.intent.id
            and not book.outcomes  # type: ignore[union-attr]
            and outcome.state is not State.UNKNOWN
        ):
            # The common case, as finish() has it: the first outcome of an order whose lease
            # this call holds, of the lease's own intent (ran out or not: it is this call's
            # own, either way; a lease of another intent that ran out is an unknown outcome
            # the general rules keep). Kept packed
            # at once, without the objects the general rules would build, and as they keep a
            # finished outcome: without a lease's notes or a not-applied flag.
            expires = now + self.ttl
            name = outcome.intent.id
            packed = _packed(name, outcome, owner=owner, expires=expires, finished=True)
            self._books[key] = (packed,)
            answer = outcome.answer
            size = _OUTCOME_OVERHEAD + (len(answer) if answer else 0)
            self._finished[(key, name)] = (size, expires)
            self._bytes += size
            self._after_put()
            self._notify(key)
            return Finish.RECORDED
        done, stored = finish(book, owner, outcome, now=now, ttl=self.ttl)
        if stored is not book:
            self._put(key, book, stored)
        self._notify(key)
        return done

    async def note(self, key: str, owner: str, *, before: bytes, request: bytes) -> bool:
        """Keep with *owner*'s lease the order as it was and the request."""
        book = self._book(key)
        stored = note(
            book, owner, before=before, request=request, now=self.clock.monotonic(), ttl=self.ttl
        )
        if stored is book:
            return False
        self._put(key, book, stored)
        return True

    async def release(self, key: str, owner: str, intent: Intent) -> None:
        """Drop *owner*'s lease: its call provably changed nothing."""
        book = self._book(key)
        stored = release(book, owner, intent, now=self.clock.monotonic(), ttl=self.ttl)
        if stored is not book:
            self._put(key, book, stored)
        self._notify(key)

    async def wait(self, key: str, timeout: float) -> None:
        """Return when the book of *key* changes, or after *timeout* clock seconds."""
        changed = asyncio.ensure_future(self._changed.setdefault(key, asyncio.Event()).wait())
        timer = asyncio.ensure_future(self.clock.sleep(timeout))
        try:
            await asyncio.wait((changed, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            timer.cancel()

    async def get(self, key: str) -> Book | None:
        """The book of the order *key*, as the rules read it now (answers expanded)."""
        book = self._book(key)
        current = as_of(book, self.clock.monotonic(), self.ttl)
        if current is not book:
            self._put(key, book, current)
        if current is None:
            return None
        outcomes = {name: _expanded(o) for name, o in current.outcomes.items()}
        return evolve(current, outcomes=outcomes)

    async def forget(self, key: str, idempotency_key: str | None = None) -> list[Outcome]:
        """Drop the order's unknown outcomes and terminal failures (only *idempotency_key*'s)."""
        book = self._book(key)
        dropped, stored = forget(book, idempotency_key, now=self.clock.monotonic(), ttl=self.ttl)
        if stored is not book:
            self._put(key, book, stored)
            self._notify(key)
        return [_expanded(outcome) for outcome in dropped]

    async def close(self) -> None:
        """Nothing to close; here for the store protocol."""

    # -- bookkeeping ----------------------------------------------------------------------------

    def _book(self, key: str) -> Book | None:
        kept = self._books.get(key)
        return None if kept is None else _unpack(kept)

    def _put(self, key: str, old: Book | None, new: Book | None) -> None:
        """Store *new* as the book of *key* (``None``: delete) and account for what changed."""
        before = old.outcomes if old is not None else _NONE
        after = new.outcomes if new is not None else _NONE
        if before is not after and (before or after):
            finished = self._finished
            for name, outcome in before.items():
                if after.get(name) is not outcome:
                    if outcome.state is not State.UNKNOWN:
                        self._bytes -= finished.pop((key, name), _GONE)[0]
                    else:
                        self._expiring.pop((key, name), None)
            for name, outcome in after.items():
                if before.get(name) is not outcome:
                    if outcome.state is not State.UNKNOWN:
                        answer = outcome.answer
                        size = _OUTCOME_OVERHEAD + (len(answer) if answer else 0)
                        finished[(key, name)] = (size, outcome.expires or math.inf)
                        self._bytes += size
                    elif outcome.expires is not None:
                        self._expiring[(key, name)] = outcome.expires
        if new is None:
            self._books.pop(key, None)
        else:
            self._books[key] = _kept(new)
        if before is not after and (before or after):
            self._after_put()

    def _after_put(self) -> None:
        self._puts += 1
        if not self._puts % 8:  # every eighth write: expired outcomes are cheap to keep awhile
            self._drop_expired()
        if self._bytes > self.max_bytes or len(self._finished) > self.max_records:
            self._drop_oldest()

    def _drop_expired(self) -> None:
        # Outcomes finish in about the order they expire (one TTL for all), so a look at the
        # oldest few every few writes keeps the store free of expired ones without a sweep.
        if self._sweeping:  # the writes of a sweep
            return
        self._sweeping = True
        try:
            self._sweep()
        finally:
            self._sweeping = False

    def _sweep(self) -> None:
        finished = self._finished
        for _ in range(16):
            if not finished:
                break
            key, name = oldest = next(iter(finished))
            if finished[oldest][1] > self.clock.monotonic():
                break
            self._remove(key, name)
        expiring = self._expiring
        for _ in range(4):
            if not expiring:
                return
            key, _name = oldest = next(iter(expiring))
            if expiring[oldest] > self.clock.monotonic():
                return
            # The rules drop it (and whatever else of the order expired); the books follow.
            book = self._book(key)
            self._put(key, book, as_of(book, self.clock.monotonic(), self.ttl))
            expiring.pop(oldest, None)  # gone already, unless the book was dropped whole

    def _remove(self, key: str, name: str) -> Outcome:
        self._bytes -= self._finished.pop((key, name))[0]
        book = _unpack(self._books[key])
        outcome = book.outcomes[name]
        left = Book(
            lease=book.lease, outcomes={n: o for n, o in book.outcomes.items() if n != name}
        )
        if left.empty:
            del self._books[key]
        else:
            self._books[key] = _kept(left)
        return outcome

    def _drop_oldest(self) -> None:
        # Only finished outcomes are ever dropped: a lease or an unknown outcome is what keeps
        # a change from going twice, so they stay whatever the bound says.
        now = self.clock.monotonic()
        dropped = 0
        while self._finished and (
            self._bytes > self.max_bytes or len(self._finished) > self.max_records
        ):
            outcome = self._remove(*next(iter(self._finished)))
            if outcome.expires is not None and outcome.expires > now:
                dropped += 1
        if dropped and not self._warned_full:
            self._warned_full = True
            logger.warning(
                "the idempotency memory store is full (max_bytes=%d, max_records=%d): its "
                "oldest finished outcomes are dropped before their TTL, and a job redelivered "
                "after that is sent again; raise the bounds or use a shared store",
                self.max_bytes,
                self.max_records,
            )

    def _notify(self, key: str) -> None:
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()


# A one-byte tag tells a compressed answer from a plain one: every JSON answer starts with
# something else.
_ZLIB_TAG = b"\x00"


def _shrink(answer: bytes) -> bytes:
    return _ZLIB_TAG + zlib.compress(answer, 1)


def _expanded(outcome: Outcome) -> Outcome:
    if outcome.answer is None:
        return outcome
    return evolve(outcome, answer=_expand(outcome.answer))


def _expand(answer: bytes) -> bytes:
    if answer[:1] == _ZLIB_TAG:
        return zlib.decompress(answer[1:])
    return answer


# Books without a lease are kept packed: tuples of strings, numbers and bytes, which the garbage
# collector stops tracking. Kept as objects (a book, its outcomes, their intents), the tens of
# thousands of orders a busy worker remembers were walked by every collection, and each call
# paid for it, the more the fuller the store.


def _packed(
    name: str,
    outcome: Outcome,
    *,
    owner: str | None,
    expires: float | None,
    finished: bool = False,
) -> tuple[Any, ...]:
    intent = outcome.intent
    if finished:  # a success or a terminal failure keeps nothing a lease noted
        not_applied, before, request = False, None, None
    else:
        not_applied, before, request = outcome.not_applied, outcome.before, outcome.request
    return (
        name,
        outcome.state.value,
        outcome.status,
        outcome.answer,
        outcome.previous_unknown,
        owner,
        expires,
        not_applied,
        before,
        request,
        intent.operation,
        intent.fingerprint,
        intent.key,
        intent.safety,
    )


#: Books of more outcomes than this stay objects: unpacking them on every call would cost more
#: than the collector's walk over them (such orders are few: a key of its own for each call).
_PACK_AT_MOST = 8


def _kept(book: Book) -> Book | _Packed:
    """*book* as the store keeps it: packed, unless it has a lease or many outcomes."""
    if book.lease is not None or len(book.outcomes) > _PACK_AT_MOST:
        return book
    return _pack(book)


def _pack(book: Book) -> _Packed:
    return tuple(
        _packed(name, outcome, owner=outcome.owner, expires=outcome.expires)
        for name, outcome in book.outcomes.items()
    )


def _unpack(kept: Book | _Packed) -> Book:
    if isinstance(kept, Book):
        return kept
    outcomes: dict[str, Outcome] = {}
    for packed in kept:
        name, state, status, answer, previous, owner, expires, not_applied, before, request = (
            packed[:10]
        )
        operation, fingerprint, key, safety = packed[10:]
        outcomes[name] = Outcome(
            state=State(state),
            intent=Intent(operation=operation, fingerprint=fingerprint, key=key, safety=safety),
            status=status,
            answer=answer,
            previous_unknown=previous,
            owner=owner,
            expires=expires,
            not_applied=not_applied,
            before=before,
            request=request,
        )
    return Book(lease=None, outcomes=outcomes)
