"""MemoryIdempotencyStore: records in this process, bounded by a TTL and a count."""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict

from attrs import evolve

from .._clock import Clock, SystemClock
from ._records import Decision, Intent, Record, State, decide

__all__ = ["MemoryIdempotencyStore"]


class MemoryIdempotencyStore:
    """Idempotency records in memory: the default store of :class:`LoyaltyClient`.

    It protects the calls of one process (all tasks on its event loop). Workers in several
    processes or on several machines need :class:`RedisIdempotencyStore`.

    Args:
        ttl: Seconds a finished record is kept (default 24 h). An unknown outcome is kept
            until it is cleared.
        lease: Seconds a call may hold a key before another call may take it over (default
            60 s; longer than a call's retry deadline).
        max_records: Finished records kept at most; the oldest go first. Records of calls in
            flight and of unknown outcomes are never evicted.
        clock: The clock of leases and TTLs (tests pass a fake one).
    """

    #: Its methods never suspend: they cannot be interrupted half-way.
    suspends = False

    def __init__(
        self,
        *,
        ttl: float = 24 * 3600,
        lease: float = 60.0,
        max_records: int = 10_000,
        clock: Clock | None = None,
    ) -> None:
        if ttl <= 0 or lease <= 0 or max_records < 1:
            raise ValueError("ttl and lease must be positive and max_records at least 1")
        self.ttl = ttl
        self.lease = lease
        self.max_records = max_records
        self.clock: Clock = SystemClock() if clock is None else clock
        self._records: OrderedDict[str, tuple[Record, float]] = OrderedDict()
        self._changed: dict[str, asyncio.Event] = {}

    def __len__(self) -> int:
        return len(self._records)

    async def begin(self, key: str, intent: Intent, owner: str) -> Decision:
        """Decide what a call with *intent* does under *key*, taking the lease if it may send."""
        now = self.clock.monotonic()
        decision, record = decide(
            self._get(key, now), intent, owner=owner, now=now, lease=self.lease
        )
        if record is not None:
            self._put(key, record, now)
        return decision

    async def finish(self, key: str, owner: str, record: Record) -> bool:
        """Store the outcome of *owner*'s call; False when *owner* no longer holds the lease."""
        now = self.clock.monotonic()
        if not self._held_by(key, owner, now):
            return False
        if record.owner is not None or record.lease_expires is not None:
            record = evolve(record, owner=None, lease_expires=None)
        self._put(key, record, now)
        self._notify(key)
        return True

    def _held_by(self, key: str, owner: str, now: float) -> bool:
        """Whether *owner* holds *key*: its lease, or the unknown outcome its lease became."""
        current = self._get(key, now)
        return (
            current is not None
            and current.owner == owner
            and current.state in (State.IN_FLIGHT, State.UNKNOWN)
        )

    async def release(self, key: str, owner: str) -> None:
        """Drop *owner*'s lease and its record: the call left nothing worth remembering."""
        if self._held_by(key, owner, self.clock.monotonic()):
            del self._records[key]
            self._notify(key)

    async def wait(self, key: str, timeout: float) -> None:
        """Return when the record under *key* changes, or after *timeout* clock seconds."""
        changed = asyncio.ensure_future(self._changed.setdefault(key, asyncio.Event()).wait())
        timer = asyncio.ensure_future(self.clock.sleep(timeout))
        try:
            await asyncio.wait((changed, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            timer.cancel()

    async def get(self, key: str) -> Record | None:
        """The record under *key*, if any."""
        return self._get(key, self.clock.monotonic())

    async def forget(self, key: str) -> None:
        """Remove the record under *key* if it is an unknown outcome or a terminal failure.

        A call in flight and a success are kept: clearing them could let a request go twice.
        """
        now = self.clock.monotonic()
        record = self._get(key, now)
        if record is None:
            return
        expired = record.state is State.IN_FLIGHT and (record.lease_expires or 0.0) <= now
        if expired or record.state in (State.UNKNOWN, State.FAILED):
            del self._records[key]
            self._notify(key)

    async def close(self) -> None:
        """Nothing to close; here for the store protocol."""

    def _get(self, key: str, now: float) -> Record | None:
        entry = self._records.get(key)
        if entry is None:
            return None
        record, expires = entry
        if expires <= now:
            del self._records[key]
            return None
        return record

    def _put(self, key: str, record: Record, now: float) -> None:
        # An unknown outcome waits for a person, however long that takes.
        expires = math.inf if record.state is State.UNKNOWN else now + self.ttl
        self._records[key] = (record, expires)
        self._records.move_to_end(key)
        if len(self._records) > self.max_records:
            self._evict()

    def _evict(self) -> None:
        # Oldest first, in O(1) per record: a record that must stay (a call in flight, an unknown
        # outcome: what keeps a change from going twice) moves to the back instead.
        protected = 0
        while len(self._records) > self.max_records and protected < len(self._records):
            key, (record, _) = next(iter(self._records.items()))
            if record.state in (State.IN_FLIGHT, State.UNKNOWN):
                self._records.move_to_end(key)
                protected += 1
            else:
                del self._records[key]

    def _notify(self, key: str) -> None:
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()
