"""The idempotency middleware: a mutating call is sent at most once per intent.

The REES46 API takes no idempotency key, so the SDK keeps its own book of every order's apply,
confirm, cancel and change calls in a store (memory or Redis; see
``rees46_loyalty.idempotency._records`` for the format and the rules). Outermost in the chain, it
decides before anything is sent:

* the same intent as a finished one (the same operation and request, or the same explicit
  ``idempotency_key``): answer from the record (``result.replayed`` is true), or raise its
  terminal error again, without sending;
* another call in flight on the same order: wait for it (bounded), then decide again — calls on
  one order are serialised;
* an explicit key reused with another request: :class:`IdempotencyError`;
* a ``change`` on the order with an unknown outcome: :class:`OutcomeUnknownError` for every
  mutating call on the order, until it is reconciled or cleared;
* anything else: send, then record the outcome. A failure that provably changed nothing
  leaves no record.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Mapping, Sequence
from itertools import pairwise
from operator import itemgetter
from typing import Any

import attrs

from .._clock import Clock
from .._http import ApiRequest, ApiResponse, Handler, SendRecord
from .._operations import ORDER_LINES
from .._reconcile import (
    derived_change,
    order_lines,
    read_lines,
    refund_of,
    request_lines,
    same_cart,
)
from .._serialization import dumps
from ..errors import (
    APIError,
    BadRequestError,
    IdempotencyError,
    LoyaltyError,
    MalformedResponseError,
    NotFoundError,
    OrderStatusError,
    OutcomeUnknownError,
)
from ..idempotency._records import (
    Decision,
    Finish,
    IdempotencyStore,
    Intent,
    Outcome,
    State,
    Verdict,
)
from .errors import decode_response, recorded_answer

__all__ = [
    "IdempotencyMiddleware",
    "IdempotencyStore",
    "fingerprint",
    "record_key",
    "recorded",
]

logger = logging.getLogger("rees46_loyalty")

# Errors that say the order's state refused the request: the same request gets the same answer,
# so it is kept and replayed — when it is the API's own JSON answer (a proxy's HTML 404 is not).
# Authentication, rate limits and server errors are never kept.
_TERMINAL_ERRORS = (OrderStatusError, BadRequestError, NotFoundError)
_by_product = itemgetter("product_id")


def recorded(request: ApiRequest) -> bool:
    """Whether the layer records *request*: a mutating call on an order.

    Its answer is then ``"sent"`` unless it says otherwise (:attr:`ApiResponse.idempotency`
    is ``"replayed"`` or ``"waited"`` for an answer from the store).
    """
    return request.operation.mutating and request.order_id is not None


def record_key(shop_id: str, order_id: str) -> str:
    """The store key of an order's book: the shop's id is length-prefixed, so no two collide."""
    return f"{len(shop_id)}:{shop_id}:{order_id}"


def fingerprint(request: ApiRequest) -> str:
    """A canonical digest of what *request* asks for (the secret is not in it yet).

    The cart's lines count in no particular order (the API keys them by ``product_id``): the
    same cart listed in another order is the same intent. Amounts are already in their wire form
    (``1000`` for ``Decimal("1000.00")``).
    """
    body = request.body
    lines = request.data.get("cart_items")
    if type(lines) is list and len(lines) > 1 and not _sorted(lines):
        body = dumps({**request.data, "cart_items": sorted(lines, key=_by_product)})
    elif body is None:
        body = dumps(request.data)
    digest = hashlib.blake2b(request.operation.name.encode(), digest_size=16)
    digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


def _sorted(lines: Sequence[Any]) -> bool:
    return all(
        isinstance(a, Mapping) and isinstance(b, Mapping) and a["product_id"] <= b["product_id"]
        for a, b in pairwise(lines)
    )


def _new_owner() -> str:
    """A name for one call's lease, unique among all the processes sharing a store.

    Drawn from the system's random source on every call: a client made before a fork (gunicorn
    --preload; uWSGI, which forks from C without Python's at-fork hooks) or restored from a
    snapshot (AWS Lambda SnapStart, CRIU) lives on in many processes, so nothing kept by the
    process tells their leases apart. (A per-process prefix and a counter saved about a
    microsecond a call, and shared names after such a fork.)
    """
    return secrets.token_hex(16)


class IdempotencyMiddleware:
    """Replays, serialises and records mutating calls; see the module docstring."""

    def __init__(
        self, store: IdempotencyStore, *, shop_id: str, clock: Clock, wait_timeout: float
    ) -> None:
        self.store = store
        self._shop_id = shop_id
        self._clock = clock
        self._wait_timeout = wait_timeout
        self._background: set[asyncio.Future[None]] = set()

    async def __call__(self, request: ApiRequest, call_next: Handler) -> ApiResponse:
        operation = request.operation
        if not recorded(request) or request.order_id is None:  # (the latter for mypy)
            return await call_next(request)
        key = record_key(self._shop_id, request.order_id)
        intent = Intent(
            operation=operation.name,
            fingerprint=fingerprint(request),
            key=request.idempotency_key,
            safety=operation.safety.value,
        )
        owner = _new_owner()
        decision = await self._acquire(request, key, intent, owner)
        if isinstance(decision, ApiResponse):  # replayed
            return decision
        # The call must be over before its lease is: once the lease runs out another caller may
        # take the order over. A tenth of the lease is kept as a margin.
        lease_ends = self._clock.monotonic() + self.store.lease * 0.9
        record = SendRecord()
        request = request.replace(
            deadline=lease_ends if request.deadline is None else min(request.deadline, lease_ends),
            idempotency="sent",
            send_record=record,
        )
        noted: tuple[bytes, bytes] | None = None
        if intent.once:
            looked = await self._note_before(request, key, owner, intent, decision, call_next)
            if isinstance(looked, ApiResponse):  # a lost change that landed late: derived
                return looked
            noted = looked
        try:
            response = await call_next(request)
        except BaseException as failure:
            if decision.previous_unknown and isinstance(failure, LoyaltyError):
                failure.previous_outcome_unknown = True
            # Shielded: a cancelled caller must still leave the order settled, not blocked.
            settle = self._settle(
                request,
                key=key,
                owner=owner,
                intent=intent,
                failure=failure,
                record=record,
                noted=noted,
            )
            try:
                await (asyncio.shield(settle) if self.store.suspends else settle)
            except Exception:  # the call's own failure is what the caller must see
                logger.exception(
                    "%s failed and the idempotency store could not record it; the order is "
                    "held until its lease runs out, and then counts as an unknown outcome",
                    request.operation.name,
                    extra=_extra(request, "sent"),
                )
            raise
        outcome = Outcome(
            state=State.SUCCEEDED, intent=intent, status=response.status, answer=response.body
        )
        await self._record(request, key, owner, outcome)
        return response

    async def _note_before(  # noqa: PLR0917 - the call's parts, each needed
        self,
        request: ApiRequest,
        key: str,
        owner: str,
        intent: Intent,
        decision: Decision,
        call_next: Handler,
    ) -> tuple[bytes, bytes] | ApiResponse:
        """Read the order as it is and keep it, with the request, in the lease; or send nothing.

        An unknown outcome of the change can then be reconciled (``LoyaltyClient.reconcile``):
        from the order before, the order after and the cart asked for, decided and its
        ``order_total_change`` derived — even when this process dies mid-call. A change to the
        cart the order already holds is not sent: it would answer ``order_total_change`` 0,
        and it means the change was made before, by a call whose record this store no longer
        has (a Redis that lost its data). An order that does not exist is noted as an empty
        ``before``; the change is sent, and the API answers what it answers.

        The invariant :meth:`LoyaltyClient.reconcile` relies on: a change is sent only after its
        note is in the store, so an unknown change without one was never sent. Returns what
        was noted, for the outcome to keep should the store lose the lease meanwhile.
        """
        lookup = ApiRequest(
            operation=ORDER_LINES,
            data={"order_id": request.order_id},
            order_id=request.order_id,
            timeout=request.timeout,
            deadline=request.deadline,
        )
        body = request.body if request.body is not None else dumps(request.data)
        try:
            # A 404 here (no such order, or a lagging replica) is raised: a change of an order
            # that does not exist cannot succeed, and one sent without the order's state from
            # before could never be reconciled.
            looked = await call_next(lookup)
            before = looked.body
            if not before or before.isspace():
                _refuse_a_change_without_its_order(request)
            if same_cart(looked, request_lines(request.data, body)):
                landed = await self._landed_late(request, key, owner, decision, looked)
                if landed is not None:
                    return landed
                _refuse_a_change_made_before(request)
            try:
                noted = await self.store.note(key, owner, before=before, request=body)
            except Exception as exc:
                raise IdempotencyError(
                    f"the idempotency store failed, so nothing was sent: {type(exc).__name__}",
                    operation=request.operation.name,
                    order_id=request.order_id,
                    retryable=True,
                ) from exc
            if not noted:
                _refuse_a_change_without_lease(request)
        except BaseException:
            release = self.store.release(key, owner, intent)
            try:
                await (asyncio.shield(release) if self.store.suspends else release)
            except Exception:  # the lookup's own failure is what the caller must see
                logger.exception(
                    "the idempotency store could not release an order after a failed lookup",
                    extra=_extra(request, "sent"),
                )
            raise
        return before, body

    async def _landed_late(
        self, request: ApiRequest, key: str, owner: str, decision: Decision, now: ApiResponse
    ) -> ApiResponse | None:
        """The derived answer of this very change, sent before and lost, that landed late.

        ``reconcile`` found it not applied, and keeps what it had noted; the order now holds
        the cart it asked for: it landed after all. Its ``order_total_change`` is derived (the
        order's ``order_to_pay`` now minus before), recorded and answered; nothing is sent.
        """
        known = decision.outcome
        if known is None or not known.not_applied or not known.before or not known.request:
            return None
        before = read_lines(known.before, request.operation.name)
        answer = derived_change(before, order_lines(now), now.body)
        # What is recorded must replay: the lookup read the order's lines only, and its answer
        # is now decoded whole, as the change's own; a malformed one raises, and nothing is kept.
        try:
            decode_response(request, ApiResponse(status=200, headers={}, body=answer))
        except MalformedResponseError as error:
            error.message += (
                f"; the change landed late (the order holds its cart){refund_of(answer)}: it is "
                "not recorded, and is derived again on the next call"
            )
            error.args = (error.message,)
            raise
        outcome = Outcome(state=State.SUCCEEDED, intent=known.intent, status=200, answer=answer)
        # Answered whatever the store does: unrecorded, the note stays, and is derived again.
        await self._record(request, key, owner, outcome, "landed late")
        replayed = self._replay(request, outcome, "replayed")
        if isinstance(replayed, LoyaltyError):
            raise replayed
        return replayed

    async def _record(
        self, request: ApiRequest, key: str, owner: str, outcome: Outcome, what: str = "succeeded"
    ) -> None:
        """Store a success, shielded, and never fail the call over it.

        The API has applied it: the caller gets its result whatever the store does, and a
        cancelled caller still gets it recorded.
        """
        name = request.operation.name
        finish = self.store.finish(key, owner, outcome)
        try:
            done = await (asyncio.shield(finish) if self.store.suspends else finish)
        except Exception:
            logger.exception(
                "%s succeeded but its result could not be recorded: the order counts as an "
                "unknown outcome once the lease runs out",
                name,
                extra=_extra(request, "sent"),
            )
            return
        _log_finish(request, done, what)

    async def _acquire(
        self, request: ApiRequest, key: str, intent: Intent, owner: str
    ) -> Decision | ApiResponse:
        """Wait while the order is busy; then take the lease, replay, or raise what the book says.

        Returns the ACQUIRED decision or a replayed response.
        """
        give_up_at = self._clock.monotonic() + self._wait_timeout
        waited = False
        while True:
            decision = await self._begin(key, intent, owner)
            verdict = decision.verdict
            if verdict is Verdict.ACQUIRED:
                return decision
            if verdict is Verdict.BUSY:
                if not waited:
                    waited = True
                    logger.debug(
                        "%s waits for another call on the same order",
                        request.operation.name,
                        extra=_extra(request, "waiting"),
                    )
                left = give_up_at - self._clock.monotonic()
                if left <= 0:
                    raise IdempotencyError(
                        f"waited {self._wait_timeout:g}s for another call on order "
                        f"{request.order_id!r} to finish; nothing was sent",
                        operation=request.operation.name,
                        order_id=request.order_id,
                        retryable=True,
                    )
                await self.store.wait(key, min(decision.wait, left))
                continue
            answer = self._answer_from(request, decision, "waited" if waited else "replayed")
            if isinstance(answer, ApiResponse):
                return answer
            raise answer

    async def _begin(self, key: str, intent: Intent, owner: str) -> Decision:
        """``store.begin``, shielded; whatever it may have taken is released if it fails.

        A caller cancelled while the store answers, or a store that answered too late for its
        client (a Redis timeout after the script ran), must not leave behind a lease that nobody
        will release.
        """
        try:
            if not self.store.suspends:
                return await self.store.begin(key, intent, owner)
            task = asyncio.ensure_future(self.store.begin(key, intent, owner))
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                task.add_done_callback(
                    lambda done: self._release_if_taken(done, key, owner, intent)
                )
                raise
        except Exception as exc:
            # Without its record the SDK cannot promise "at most once": nothing is sent.
            self._release_later(key, owner, intent)
            raise IdempotencyError(
                f"the idempotency store failed, so nothing was sent: {type(exc).__name__}",
                operation=intent.operation,
                retryable=True,
            ) from exc

    def _release_if_taken(
        self, done: asyncio.Future[Decision], key: str, owner: str, intent: Intent
    ) -> None:
        taken = (
            done.cancelled()
            or done.exception() is not None
            or done.result().verdict is Verdict.ACQUIRED
        )
        if taken:
            self._release_later(key, owner, intent)

    def _release_later(self, key: str, owner: str, intent: Intent) -> None:
        """Release *owner*'s lease in the background (a no-op if it holds none)."""
        release = asyncio.ensure_future(self.store.release(key, owner, intent))
        self._background.add(release)
        release.add_done_callback(self._released)

    def _released(self, release: asyncio.Future[None]) -> None:
        self._background.discard(release)
        if not release.cancelled() and release.exception() is not None:
            logger.warning(
                "a lease taken by a call that sent nothing could not be released (%s); the "
                "order is held until the lease runs out, then counts as an unknown outcome",
                type(release.exception()).__name__,
            )

    def _answer_from(
        self, request: ApiRequest, decision: Decision, outcome_name: str
    ) -> ApiResponse | LoyaltyError:
        """The answer of a call decided without sending: a replayed response or an error."""
        outcome = decision.outcome
        assert outcome is not None  # noqa: S101 - every verdict but ACQUIRED and BUSY has one
        name = request.operation.name
        if decision.verdict is Verdict.CONFLICT:
            return IdempotencyError(
                f"idempotency key {request.idempotency_key!r} was used for another request "
                f"({outcome.intent.operation} with different arguments); nothing was sent",
                operation=name,
                order_id=request.order_id,
            )
        if decision.verdict is Verdict.UNKNOWN:
            blocked = outcome.intent
            same = blocked.operation == name and blocked.fingerprint == fingerprint(request)
            what = "the same change" if same else "a change"
            key = blocked.key
            with_key = "" if key is None else f", idempotency_key={key!r}"
            return OutcomeUnknownError(
                f"{what} on order {request.order_id!r} may have been applied and its outcome "
                f"is unknown, so no {name} is sent on this order until it is reconciled: "
                f"await client.reconcile(order_id={request.order_id!r}{with_key})",
                operation=name,
                order_id=request.order_id,
                idempotency_key=key,
            )
        return self._replay(request, outcome, outcome_name)

    def _replay(
        self, request: ApiRequest, outcome: Outcome, outcome_name: str
    ) -> ApiResponse | LoyaltyError:
        """The recorded answer of *outcome*, decoded again: the result, or the terminal error."""
        recorded = ApiResponse(status=outcome.status or 200, headers={}, body=outcome.answer or b"")
        try:
            replayed = decode_response(request, recorded)
        except APIError as error:
            if outcome.state is not State.FAILED:
                return _corrupt(request, error)
            error.previous_outcome_unknown = outcome.previous_unknown
            error.attempts = 0
            return error
        except LoyaltyError as error:
            return _corrupt(request, error)
        if outcome.state is not State.SUCCEEDED:
            return _corrupt(request, None)
        result = replayed.result
        if attrs.has(type(result)) and "replayed" in attrs.fields_dict(type(result)):
            result = attrs.evolve(result, replayed=True)
        logger.debug(
            "%s answered from the idempotency store (%s)",
            request.operation.name,
            outcome_name,
            extra=_extra(request, outcome_name),
        )
        return ApiResponse(
            status=200, headers={}, body=b"", result=result, attempts=0, idempotency=outcome_name
        )

    async def _settle(
        self,
        request: ApiRequest,
        *,
        key: str,
        owner: str,
        intent: Intent,
        failure: BaseException,
        record: SendRecord,
        noted: tuple[bytes, bytes] | None,
    ) -> None:
        """Record what a failed call leaves behind.

        A terminal error, an unknown outcome (with what its lease noted, in case the store
        lost the lease meanwhile), or nothing at all (its lease released).
        """
        before, asked = noted if noted is not None else (None, None)
        unknown = Outcome(state=State.UNKNOWN, intent=intent, before=before, request=asked)
        outcome: Outcome | None = None
        if isinstance(failure, LoyaltyError):
            if failure.outcome_unknown:
                outcome = unknown
            elif isinstance(failure, _TERMINAL_ERRORS):
                answer = recorded_answer(failure)
                if answer is not None:
                    outcome = Outcome(
                        state=State.FAILED,
                        intent=intent,
                        status=failure.status,
                        answer=answer,
                        previous_unknown=failure.previous_outcome_unknown,
                    )
        elif record.maybe_processed:
            # Cancelled (or broken) after an attempt started writing its request.
            outcome = unknown
        if outcome is None:
            await self.store.release(key, owner, intent)
            return
        done = await self.store.finish(key, owner, outcome)
        _log_finish(request, done, outcome.state.value)


def _refuse_a_change_without_lease(request: ApiRequest) -> None:
    raise IdempotencyError(
        f"the lease of this change on order {request.order_id!r} was lost before it was sent "
        "(the idempotency store lost its data, or the lease ran out); nothing was sent",
        operation=request.operation.name,
        order_id=request.order_id,
        retryable=True,
    )


def _refuse_a_change_without_its_order(request: ApiRequest) -> None:
    raise MalformedResponseError(
        f"the order {request.order_id!r} was read before the change, but its answer came back "
        "without a body (a middleware dropped it?); nothing was sent: without the order as it "
        "was, an unknown outcome of the change could never be reconciled",
        operation=request.operation.name,
        order_id=request.order_id,
    )


def _refuse_a_change_made_before(request: ApiRequest) -> None:
    error = OutcomeUnknownError(
        f"order {request.order_id!r} already holds the cart of this change, so it was not "
        "sent (it would move no money): an earlier change made it, and that change's refund "
        "amount is not in the idempotency store; check the order's history and the shop's "
        "refunds",
        operation=request.operation.name,
        order_id=request.order_id,
    )
    error.idempotency_key = request.idempotency_key
    raise error


def _log_finish(request: ApiRequest, done: Finish, what: str) -> None:
    """Say what the store really did with a call's outcome, when it is not the usual."""
    if done is Finish.RECORDED:  # the usual: nothing to say
        return
    name = request.operation.name
    extra = _extra(request, "sent")
    if done is Finish.RECORDED_AFTER_LOSS:
        logger.warning(
            "%s %s; the idempotency store had lost the call's lease (a restart, flush or "
            "eviction of Redis, or a lease that ran out) and recorded the outcome anew",
            name,
            what,
            extra=extra,
        )
    elif done is Finish.SUPERSEDED:
        logger.error(
            "%s %s, and another call had already recorded the same request: it was sent more "
            "than once (the store lost its record in between?)",
            name,
            what,
            extra=extra,
        )


def _corrupt(request: ApiRequest, cause: LoyaltyError | None) -> IdempotencyError:
    error = IdempotencyError(
        f"the idempotency record of this {request.operation.name} cannot be read; nothing was "
        "sent (clear it with clear_idempotency once the order is checked with details())",
        operation=request.operation.name,
        order_id=request.order_id,
    )
    error.__cause__ = cause
    return error


def _extra(request: ApiRequest, outcome: str) -> dict[str, Any]:
    return {**request.shown_fields(), "idempotency": outcome}
