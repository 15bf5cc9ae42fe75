"""Idempotency records and the rules that decide what a new call does with them.

A record remembers the last mutating intent under a key (an order, or an explicit key):

* ``in_flight``: a call holds the lease until ``lease_expires``;
* ``succeeded``: its result is kept, and the same intent is answered from it;
* ``failed``: it ended in a terminal API error (the order's state refused it), kept likewise;
* ``unknown``: the outcome is unknown. The same ``change`` is never sent again until someone
  reconciles and clears the record; the same apply / confirm / cancel is sent again, and told
  that an earlier attempt may have done it (``OrderStatusError.previous_outcome_unknown``).

Both stores follow :func:`decide`; the Redis store runs the same rules in a Lua script.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

from attrs import evolve, field, frozen

__all__ = ["Decision", "IdempotencyStore", "Intent", "Record", "State", "Verdict", "decide"]


class State(str, enum.Enum):
    """The state of a record."""

    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"


class Verdict(enum.Enum):
    """What a new call must do."""

    #: Send: the caller now holds the lease.
    ACQUIRED = "acquired"
    #: Answer from the record without sending.
    REPLAY = "replay"
    #: Another call holds the lease: wait, then ask again.
    BUSY = "busy"
    #: An explicit key was reused with another request.
    CONFLICT = "conflict"
    #: The same change already ran with an unknown outcome: never send it again.
    UNKNOWN = "unknown"


@frozen(kw_only=True)
class Intent:
    """What a call wants to do: its operation, a fingerprint of its request, and how to treat it.

    ``explicit`` is true for a caller's own idempotency key; ``once`` for an operation that must
    never be sent twice (``change``).
    """

    operation: str
    fingerprint: str
    explicit: bool = False
    once: bool = False


@frozen(kw_only=True)
class Record:
    """What a store keeps under a key.

    ``result`` is the result model of a success; ``error`` describes a terminal error.
    """

    state: State
    operation: str
    fingerprint: str
    once: bool = False
    owner: str | None = None
    lease_expires: float | None = None
    result: Any = None
    #: The answer's body, from which a store that serialises (Redis) rebuilds ``result``.
    answer: bytes | None = field(default=None, repr=False)
    error: dict[str, Any] | None = None

    def same_intent(self, intent: Intent) -> bool:
        """Whether *intent* is the request this record is about."""
        return self.operation == intent.operation and self.fingerprint == intent.fingerprint


@frozen(kw_only=True)
class Decision:
    """A store's answer to :meth:`begin`.

    ``record`` is the record to replay (REPLAY) or the one in the way (BUSY, CONFLICT, UNKNOWN);
    ``wait`` the seconds left on another holder's lease (BUSY); ``previous_unknown`` tells an
    ACQUIRED caller that an earlier holder of the same key died without a result.
    """

    verdict: Verdict
    record: Record | None = None
    wait: float = 0.0
    previous_unknown: bool = False


# Decisions without a record are all alike: built once.
_ACQUIRED = Decision(verdict=Verdict.ACQUIRED)
_ACQUIRED_AFTER_UNKNOWN = Decision(verdict=Verdict.ACQUIRED, previous_unknown=True)


def decide(
    existing: Record | None, intent: Intent, *, owner: str, now: float, lease: float
) -> tuple[Decision, Record | None]:
    """Apply the rules to *existing*; return the decision and the record to store, if changed."""
    taken = Record(
        state=State.IN_FLIGHT,
        operation=intent.operation,
        fingerprint=intent.fingerprint,
        once=intent.once,
        owner=owner,
        lease_expires=now + lease,
    )
    if existing is None:
        return _ACQUIRED, taken
    replacement: Record | None = None
    if existing.state is State.IN_FLIGHT:
        if existing.lease_expires is not None and existing.lease_expires > now:
            wait = existing.lease_expires - now
            return Decision(verdict=Verdict.BUSY, record=existing, wait=wait), None
        # The holder died (or stalled) without a result: its outcome is unknown. It stays the
        # owner, so that a holder that was only slow can still record what really happened.
        existing = replacement = evolve(existing, state=State.UNKNOWN)
    return _after(existing, intent, taken, replacement)


def _after(
    existing: Record, intent: Intent, taken: Record, replacement: Record | None
) -> tuple[Decision, Record | None]:
    """The rules for a key whose record is finished (or unknown)."""
    if not existing.same_intent(intent):
        if intent.explicit:
            return Decision(verdict=Verdict.CONFLICT, record=existing), replacement
        return _ACQUIRED, taken  # a new intent on the order
    if existing.state is not State.UNKNOWN:
        return Decision(verdict=Verdict.REPLAY, record=existing), replacement
    if existing.once:
        return Decision(verdict=Verdict.UNKNOWN, record=existing), replacement
    # apply / confirm / cancel are safe to send again; the caller learns why.
    return _ACQUIRED_AFTER_UNKNOWN, taken


class IdempotencyStore(Protocol):
    """Where idempotency records live. See MemoryIdempotencyStore and RedisIdempotencyStore."""

    #: Seconds a call may hold a key before another call may take it over.
    lease: float
    #: Whether the store's methods may suspend (talk to a server). A store whose methods never
    #: suspend cannot be cancelled half-way through one, and needs no shielding.
    suspends: bool

    async def begin(self, key: str, intent: Intent, owner: str) -> Decision:
        """Decide what a call with *intent* does under *key*; take the lease if it may send."""
        ...

    async def finish(self, key: str, owner: str, record: Record) -> bool:
        """Store the outcome of *owner*'s call, if *owner* still holds the lease."""
        ...

    async def release(self, key: str, owner: str) -> None:
        """Drop *owner*'s lease and record."""
        ...

    async def wait(self, key: str, timeout: float) -> None:
        """Return when the record may have changed, or after *timeout* seconds."""
        ...

    async def get(self, key: str) -> Record | None:
        """The record under *key*."""
        ...

    async def forget(self, key: str) -> None:
        """Remove the record under *key* if it is an unknown outcome or a terminal failure."""
        ...

    async def close(self) -> None:
        """Release what the store holds (connections)."""
        ...
