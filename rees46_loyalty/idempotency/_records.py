"""Idempotency records: their format, and the rules that decide what a new call does.

Every store keeps one *book* per order, in this format, and follows :func:`decide` (the Redis
store runs the same rules in Lua, over the same JSON document; a shared table of cases in the
tests runs against every store). A book holds:

* ``lease``: the one call allowed to send on the order right now (its owner, its intent, and
  when the lease runs out). Calls on one order are serialised through it. A book with a lease
  never expires: a lease that ran out is read as an unknown outcome by whoever looks next, however
  late that is.
* ``outcomes``: every finished intent on the order, by intent id, until its TTL:

  * ``succeeded``: the answer's bytes, replayed for the same intent without sending;
  * ``failed``: the API's own JSON error answer (the order's state refused the request), replayed
    the same way;
  * ``unknown``: the request may have been processed. An unknown ``change`` blocks every later
    mutating call on the order until it is reconciled or cleared; an unknown ``apply``,
    ``confirm`` or ``cancel`` is sent again when repeated, and the caller is told that an earlier
    attempt may have done it (``previous_outcome_unknown``). Unknown outcomes of ``change`` and
    ``cancel`` never expire by themselves.

An intent is an operation and a canonical fingerprint of its request, or the caller's own
``idempotency_key`` (then a different request under the same key is a conflict).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

from attrs import Factory, define, evolve, field, frozen

__all__ = [
    "Book",
    "CorruptRecordError",
    "Decision",
    "Finish",
    "IdempotencyStore",
    "Intent",
    "Lease",
    "Outcome",
    "State",
    "Verdict",
    "as_of",
    "book_from_json",
    "book_to_json",
    "check_durations",
    "decide",
    "finish",
    "forget",
    "intent_to_json",
    "note",
    "outcome_from_json",
    "release",
]


class CorruptRecordError(ValueError):
    """A stored record is not in the format of this module."""


class State(str, enum.Enum):
    """The state of a recorded intent."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"


class Verdict(enum.Enum):
    """What a new call must do."""

    #: Send: the caller now holds the order's lease.
    ACQUIRED = "acquired"
    #: Answer from the recorded outcome without sending.
    REPLAY = "replay"
    #: Another call holds the order's lease: wait, then ask again.
    BUSY = "busy"
    #: An explicit key was reused with another request.
    CONFLICT = "conflict"
    #: A ``change`` on the order has an unknown outcome: nothing is sent until it is reconciled.
    UNKNOWN = "unknown"


class Finish(enum.Enum):
    """What a store did with a call's outcome (:meth:`IdempotencyStore.finish`)."""

    #: Recorded; the caller's lease is released.
    RECORDED = "recorded"
    #: Recorded, although the store had lost the call's lease (a restart or a flush of Redis,
    #: an eviction): nobody else held the order, so the outcome is kept all the same.
    RECORDED_AFTER_LOSS = "recorded after loss"
    #: Not recorded: the same intent already has an outcome written by another call.
    SUPERSEDED = "superseded"


#: The retry-safety classes whose unknown outcomes never expire by themselves.
_DURABLE_UNKNOWN = frozenset({"once", "cancel"})


@define(kw_only=True)
class Intent:
    """What a call wants to do.

    ``fingerprint`` is a canonical digest of the request (the same cart in another line order is
    the same intent); ``key`` the caller's ``idempotency_key``, if any; ``safety`` the
    operation's retry-safety class (``"safe"``, ``"cancel"`` or ``"once"``).
    """

    operation: str
    fingerprint: str
    key: str | None = None
    safety: str = "safe"
    #: The name of this intent in its order's book: ``k:<key>``, or ``<operation>:<fingerprint>``.
    id: str = field(
        init=False,
        eq=False,
        repr=False,
        default=Factory(
            lambda self: (
                "k:" + self.key if self.key is not None else f"{self.operation}:{self.fingerprint}"
            ),
            takes_self=True,
        ),
    )

    @property
    def once(self) -> bool:
        """Whether the operation must never be sent twice (``change``)."""
        return self.safety == "once"


def check_durations(*, ttl: float, lease: float, **others: float) -> None:
    """Refuse a store's durations (seconds) that are not positive numbers, or a TTL < lease.

    A lease that runs out is an unknown outcome; a TTL shorter than the lease would let an
    order's book go before anyone could read it so.
    """
    for name, value in (("ttl", ttl), ("lease", lease), *others.items()):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
        if not 0 < value < math.inf:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if ttl < lease:
        raise ValueError(f"ttl ({ttl:g}s) must not be shorter than lease ({lease:g}s)")


@define(kw_only=True)
class Lease:
    """The call that may send on an order now, until ``expires`` (the store's clock, seconds).

    A ``change`` notes, before it is sent, the order as it was (``before``: the answer of
    ``details``) and its own request body (``request``): with them its outcome can be
    reconciled if it turns out unknown, even when its process dies.
    """

    owner: str
    intent: Intent
    expires: float
    before: bytes | None = field(default=None, repr=False)
    request: bytes | None = field(default=None, repr=False)


@define(kw_only=True)
class Outcome:
    """A finished (or unknown) intent.

    ``status`` and ``answer`` are the HTTP status and body of the answer to replay (a success,
    or the API's own JSON error); ``owner`` is the call whose outcome it is, while it is unknown
    (that call may still record what really happened); ``expires`` is when it is dropped
    (the store's clock, seconds), ``None`` for never.
    """

    state: State
    intent: Intent
    status: int | None = None
    answer: bytes | None = field(default=None, repr=False)
    previous_unknown: bool = False
    owner: str | None = None
    expires: float | None = None
    #: An unknown outcome that ``reconcile`` found not applied: it blocks nothing and the same
    #: intent is sent again, but what was noted stays, in case the lost request lands late.
    not_applied: bool = False
    #: What the call's lease noted (see :class:`Lease`), kept while the outcome is unknown.
    before: bytes | None = field(default=None, repr=False)
    request: bytes | None = field(default=None, repr=False)

    @property
    def blocks(self) -> bool:
        """Whether this outcome keeps every mutating call on its order from being sent."""
        return self.state is State.UNKNOWN and self.intent.once and not self.not_applied

    def same_request(self, intent: Intent) -> bool:
        """Whether *intent* asks for what this outcome is about."""
        return (
            self.intent.operation == intent.operation
            and self.intent.fingerprint == intent.fingerprint
        )


@define(kw_only=True)
class Book:
    """Everything a store keeps about one order."""

    lease: Lease | None = None
    outcomes: Mapping[str, Outcome] = field(factory=dict)

    @property
    def empty(self) -> bool:
        """Whether nothing is left worth keeping."""
        return self.lease is None and not self.outcomes

    @property
    def durable(self) -> bool:
        """Whether the book must outlive every TTL: a lease, or an unknown change or cancel."""
        return self.lease is not None or any(
            outcome.expires is None for outcome in self.outcomes.values()
        )

    @property
    def expires(self) -> float | None:
        """When the whole book may go (its last outcome's expiry), ``None`` for never."""
        if self.durable or not self.outcomes:
            return None
        return max(outcome.expires or 0.0 for outcome in self.outcomes.values())

    @property
    def blocker(self) -> Outcome | None:
        """The unknown ``change`` that blocks the order, if any."""
        for outcome in self.outcomes.values():
            if outcome.blocks:
                return outcome
        return None


@frozen(kw_only=True)
class Decision:
    """A store's answer to :meth:`IdempotencyStore.begin`.

    ``outcome`` is the outcome to replay (REPLAY) or the one in the way (CONFLICT, UNKNOWN);
    ``wait`` the seconds left on another call's lease (BUSY); ``previous_unknown`` tells an
    ACQUIRED caller that an earlier call of the same intent has an unknown outcome.
    """

    verdict: Verdict
    outcome: Outcome | None = None
    wait: float = 0.0
    previous_unknown: bool = False


_NO_OUTCOMES: Mapping[str, Outcome] = MappingProxyType({})
# Decisions without an outcome are all alike: built once.
_ACQUIRED = Decision(verdict=Verdict.ACQUIRED)


def _unknown_of(lease: Lease, now: float, ttl: float) -> Outcome:
    # The holder died or stalled: whatever it sent may have been processed. It stays the owner,
    # so that a holder that was only slow can still record what really happened.
    durable = lease.intent.safety in _DURABLE_UNKNOWN
    return Outcome(
        state=State.UNKNOWN,
        intent=lease.intent,
        owner=lease.owner,
        expires=None if durable else now + ttl,
        before=lease.before,
        request=lease.request,
    )


def as_of(book: Book | None, now: float, ttl: float) -> Book | None:
    """*book* with expired outcomes dropped and a lease that ran out turned into an outcome."""
    if book is None:
        return None
    outcomes = book.outcomes
    if any(o.expires is not None and o.expires <= now for o in outcomes.values()):
        outcomes = {name: o for name, o in outcomes.items() if o.expires is None or o.expires > now}
    lease = book.lease
    if lease is not None and lease.expires <= now:
        outcomes = {**outcomes, lease.intent.id: _unknown_of(lease, now, ttl)}
        lease = None
    if lease is book.lease and outcomes is book.outcomes:
        return book
    current = Book(lease=lease, outcomes=outcomes)
    return None if current.empty else current


def decide(
    book: Book | None, intent: Intent, *, owner: str, now: float, lease: float, ttl: float
) -> tuple[Decision, Book | None, bool]:
    """Apply the rules to an order's *book* for a call with *intent*.

    Returns the decision, the book to store, and whether it differs from *book* (a store writes
    it back only then; ``None`` means delete).
    """
    current = as_of(book, now, ttl)
    changed = current is not book
    outcomes = current.outcomes if current is not None else _NO_OUTCOMES
    mine = outcomes.get(intent.id)
    if mine is not None and not mine.same_request(intent):
        return Decision(verdict=Verdict.CONFLICT, outcome=mine), current, changed
    if mine is not None and mine.state is not State.UNKNOWN:
        return Decision(verdict=Verdict.REPLAY, outcome=mine), current, changed
    held = current.lease if current is not None else None
    if held is not None:
        # The same call again holds the lease already; another call makes this one wait.
        if held.owner == owner:
            return _ACQUIRED, current, changed
        return Decision(verdict=Verdict.BUSY, wait=held.expires - now), current, changed
    blocker = current.blocker if current is not None else None
    if blocker is not None:
        return Decision(verdict=Verdict.UNKNOWN, outcome=blocker), current, changed
    taken = Book(lease=Lease(owner=owner, intent=intent, expires=now + lease), outcomes=outcomes)
    # After an unknown outcome of the same intent: sent, and told what is known of it.
    sent = (
        _ACQUIRED
        if mine is None
        else Decision(verdict=Verdict.ACQUIRED, outcome=mine, previous_unknown=True)
    )
    return sent, taken, True


def finish(
    book: Book | None, owner: str, outcome: Outcome, *, now: float, ttl: float
) -> tuple[Finish, Book | None]:
    """Record *owner*'s *outcome* in *book*; returns what was done and the book to store.

    The outcome is recorded whoever holds the order's lease now (the store may have lost
    *owner*'s lease, and another call taken the order since): a call's own outcome is never
    thrown away. Only an outcome of the same intent already finished by another call stays as
    it is. A success also drops the order's terminal failures (they answered the order's state
    before it) and, for an operation safe to repeat, the order's earlier successes of the same
    operation (an ``apply`` of an earlier cart must be sent again, not replayed).
    """
    current = as_of(book, now, ttl)
    lease = current.lease if current is not None else None
    mine = lease is not None and lease.owner == owner
    kept_lease = None if mine else lease
    outcomes = dict(current.outcomes) if current is not None else {}
    intent = outcome.intent
    existing = outcomes.get(intent.id)
    if existing is not None and existing.state is not State.UNKNOWN:
        if existing.owner == owner:  # the same finish again (a client that retried it)
            return Finish.RECORDED, current
        return Finish.SUPERSEDED, Book(lease=kept_lease, outcomes=outcomes)
    kept_by_me = mine or (existing is not None and existing.owner == owner)
    if outcome.state is State.UNKNOWN:
        durable = intent.safety in _DURABLE_UNKNOWN
        noted = lease if mine else existing
        recorded = Outcome(
            state=State.UNKNOWN,
            intent=intent,
            status=outcome.status,
            answer=outcome.answer,
            previous_unknown=outcome.previous_unknown,
            owner=owner,
            expires=None if durable and not outcome.not_applied else now + ttl,
            not_applied=outcome.not_applied,
            before=_first(outcome.before, noted.before if noted is not None else None),
            request=_first(outcome.request, noted.request if noted is not None else None),
        )
    else:
        recorded = Outcome(
            state=outcome.state,
            intent=intent,
            status=outcome.status,
            answer=outcome.answer,
            previous_unknown=outcome.previous_unknown,
            owner=owner,
            expires=now + ttl,
        )
        if outcomes and any(_superseded_by(other, intent) for other in outcomes.values()):
            outcomes = {
                name: other for name, other in outcomes.items() if not _superseded_by(other, intent)
            }
    outcomes[intent.id] = recorded
    done = Finish.RECORDED if kept_by_me else Finish.RECORDED_AFTER_LOSS
    return done, Book(lease=kept_lease, outcomes=outcomes)


def _superseded_by(other: Outcome, succeeded: Intent) -> bool:
    """Whether a success of *succeeded* makes the outcome *other* stale."""
    if other.state is State.FAILED:
        return True
    return (
        other.state is State.SUCCEEDED
        and succeeded.safety == "safe"
        and succeeded.key is None
        and other.intent.key is None
        and other.intent.operation == succeeded.operation
    )


def _first(value: bytes | None, fallback: bytes | None) -> bytes | None:
    return value if value is not None else fallback


def note(
    book: Book | None, owner: str, *, before: bytes, request: bytes, now: float, ttl: float
) -> Book | None:
    """*book* with *owner*'s lease noting the order as it was and the request.

    Returns *book* itself (unchanged) when *owner* holds no lease.
    """
    current = as_of(book, now, ttl)
    if current is None or current.lease is None or current.lease.owner != owner:
        return book
    return evolve(current, lease=evolve(current.lease, before=before, request=request))


def release(
    book: Book | None, owner: str, intent: Intent, *, now: float, ttl: float
) -> Book | None:
    """Drop *owner*'s lease: its call provably changed nothing, so nothing is recorded.

    An unknown outcome that *owner*'s own lease became (it ran out while the call was still
    going) goes too: the call has since learned that nothing was processed.
    """
    current = as_of(book, now, ttl)
    if current is None:
        return None
    lease = current.lease
    if lease is not None and lease.owner == owner:
        lease = None
    outcomes = current.outcomes
    mine = outcomes.get(intent.id)
    if mine is not None and mine.state is State.UNKNOWN and mine.owner == owner:
        outcomes = {name: o for name, o in outcomes.items() if name != intent.id}
    released = Book(lease=lease, outcomes=outcomes)
    return None if released.empty else released


def forget(
    book: Book | None, key: str | None, *, now: float, ttl: float
) -> tuple[list[Outcome], Book | None]:
    """Drop the unknown outcomes and terminal failures of *book* (only *key*'s, if given).

    Returns what was dropped and the book to store. Successes and a live lease stay: clearing
    them could let a request go twice.
    """
    current = as_of(book, now, ttl)
    if current is None:
        return [], None
    wanted = None if key is None else "k:" + key
    dropped = [
        outcome
        for name, outcome in current.outcomes.items()
        if outcome.state is not State.SUCCEEDED and (wanted is None or name == wanted)
    ]
    if not dropped:
        return [], current
    gone = {outcome.intent.id for outcome in dropped}
    kept = {name: o for name, o in current.outcomes.items() if name not in gone}
    left = Book(lease=current.lease, outcomes=kept)
    return dropped, None if left.empty else left


# -- the JSON document every serialising store keeps ------------------------------------------
#
# Times are whole milliseconds on the store's clock; answers are kept apart from the document
# (the Redis store keeps each in a hash field of its own, so that deciding never reads them).


def intent_to_json(intent: Intent) -> dict[str, Any]:
    document: dict[str, Any] = {
        "operation": intent.operation,
        "fingerprint": intent.fingerprint,
        "safety": intent.safety,
    }
    if intent.key is not None:
        document["key"] = intent.key
    return document


def _intent_of(document: Mapping[str, Any]) -> Intent:
    return Intent(
        operation=_text(document, "operation"),
        fingerprint=_text(document, "fingerprint"),
        key=document.get("key") if isinstance(document.get("key"), str) else None,
        safety=_text(document, "safety"),
    )


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def _seconds(document: Mapping[str, Any], name: str) -> float | None:
    value = document.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CorruptRecordError(f"{name} is not a number")
    return value / 1000


def _text(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise CorruptRecordError(f"{name} is not a string")
    return value


def book_to_json(book: Book) -> tuple[str, dict[str, bytes]]:
    """The document of *book*, and its byte fields by name.

    ``a:<intent id>`` is an outcome's answer; ``b:<intent id>`` and ``r:<intent id>`` what a
    lease noted (the order before, the request), kept with its unknown outcome.
    """
    document: dict[str, Any] = {}
    fields: dict[str, bytes] = {}
    lease = book.lease
    if lease is not None:
        document["lease"] = {
            "owner": lease.owner,
            "intent": intent_to_json(lease.intent),
            "expires": _ms(lease.expires),
        }
        _put_noted(fields, lease.intent.id, lease.before, lease.request)
    outcomes: dict[str, Any] = {}
    for name, outcome in book.outcomes.items():
        entry: dict[str, Any] = {
            "state": outcome.state.value,
            "intent": intent_to_json(outcome.intent),
        }
        if outcome.status is not None:
            entry["status"] = outcome.status
        if outcome.previous_unknown:
            entry["previous_unknown"] = True
        if outcome.not_applied:
            entry["not_applied"] = True
        if outcome.owner is not None:
            entry["owner"] = outcome.owner
        if outcome.expires is not None:
            entry["expires"] = _ms(outcome.expires)
        if outcome.answer is not None:
            fields["a:" + name] = outcome.answer
        _put_noted(fields, name, outcome.before, outcome.request)
        outcomes[name] = entry
    document["outcomes"] = outcomes
    return json.dumps(document, separators=(",", ":")), fields


def _put_noted(
    fields: dict[str, bytes], name: str, before: bytes | None, request: bytes | None
) -> None:
    if before is not None:
        fields["b:" + name] = before
    if request is not None:
        fields["r:" + name] = request


def book_from_json(raw: str | bytes, fields: Mapping[str, bytes] | None = None) -> Book:
    """Read a book written by :func:`book_to_json` (or the Redis store's scripts).

    Raises :class:`CorruptRecordError` when the document is not a book.
    """
    fields = fields or {}
    document = json.loads(raw)
    if not isinstance(document, dict):
        raise CorruptRecordError("a book is a JSON object")
    lease = None
    held = document.get("lease")
    if isinstance(held, dict):
        expires = _seconds(held, "expires")
        if expires is None:
            raise CorruptRecordError("a lease has no expiry")
        intent = _intent_of(held["intent"])
        lease = Lease(
            owner=_text(held, "owner"),
            intent=intent,
            expires=expires,
            before=fields.get("b:" + intent.id),
            request=fields.get("r:" + intent.id),
        )
    outcomes: dict[str, Outcome] = {}
    entries = document.get("outcomes") or {}
    if not isinstance(entries, dict):
        raise CorruptRecordError("outcomes is not an object")
    for name, entry in entries.items():
        outcomes[name] = evolve(
            _outcome_of(entry, fields.get("a:" + name)),
            before=fields.get("b:" + name),
            request=fields.get("r:" + name),
        )
    return Book(lease=lease, outcomes=outcomes)


def _outcome_of(entry: object, answer: bytes | None) -> Outcome:
    if not isinstance(entry, dict) or not isinstance(entry.get("intent"), dict):
        raise CorruptRecordError("an outcome is an object with an intent")
    status = entry.get("status")
    owner = entry.get("owner")
    return Outcome(
        state=State(entry.get("state")),
        intent=_intent_of(entry["intent"]),
        status=status if isinstance(status, int) and not isinstance(status, bool) else None,
        answer=answer,
        previous_unknown=entry.get("previous_unknown") is True,
        not_applied=entry.get("not_applied") is True,
        owner=owner if isinstance(owner, str) else None,
        expires=_seconds(entry, "expires"),
    )


def outcome_from_json(raw: str | bytes, answer: bytes | None) -> Outcome:
    """Read one outcome of a book's document, with its *answer*.

    Raises :class:`CorruptRecordError` when it is not one.
    """
    return _outcome_of(json.loads(raw), answer)


class IdempotencyStore(Protocol):
    """Where idempotency records live: one book per order (see the module docstring).

    The memory and Redis stores of this package implement it; every store follows :func:`decide`.
    """

    #: Seconds a call may hold an order before another call may take it over.
    lease: float
    #: Seconds a finished outcome is kept.
    ttl: float
    #: Whether the store's methods may suspend (talk to a server). A store whose methods never
    #: suspend cannot be cancelled half-way through one, and needs no shielding.
    suspends: bool

    async def begin(self, key: str, intent: Intent, owner: str) -> Decision:
        """Decide what a call with *intent* does on the order *key*; take the lease if it may send.

        Repeated by the same *owner* while it holds the lease, it answers ACQUIRED again.
        """
        ...

    async def finish(self, key: str, owner: str, outcome: Outcome) -> Finish:
        """Record the *outcome* of *owner*'s call and release its lease (see :class:`Finish`)."""
        ...

    async def note(self, key: str, owner: str, *, before: bytes, request: bytes) -> bool:
        """Keep with *owner*'s lease the order as it was and the request (see :class:`Lease`).

        False when *owner* no longer holds the lease.
        """
        ...

    async def release(self, key: str, owner: str, intent: Intent) -> None:
        """Drop *owner*'s lease: its call provably changed nothing."""
        ...

    async def wait(self, key: str, timeout: float) -> None:
        """Return when the book may have changed, or after *timeout* seconds."""
        ...

    async def get(self, key: str) -> Book | None:
        """The book of the order *key*, as the rules read it now."""
        ...

    async def forget(self, key: str, idempotency_key: str | None = None) -> list[Outcome]:
        """Drop the order's unknown outcomes and terminal failures (only *idempotency_key*'s)."""
        ...

    async def close(self) -> None:
        """Release what the store holds (connections)."""
        ...
