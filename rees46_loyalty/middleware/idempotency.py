"""The idempotency middleware: a mutating call is sent at most once per intent.

The REES46 API takes no idempotency key, so the SDK keeps its own record of apply, confirm,
cancel and change in a store (memory or Redis), under the order id or the caller's
``idempotency_key``. Outermost in the chain, it decides before anything is sent:

* the same request as a finished record: answer from the record (``result.replayed`` is true),
  or raise its terminal error again, without sending;
* a call in flight on the same key: wait for it (bounded), then decide again;
* an explicit key reused with another request: :class:`IdempotencyError`;
* a ``change`` whose earlier run has an unknown outcome: :class:`OutcomeUnknownError`, again,
  until the record is cleared with ``LoyaltyClient.clear_idempotency``;
* anything else: send, then record the outcome. Transient failures leave no record.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from typing import Any

import attrs

from .. import errors
from .._clock import Clock
from .._http import ApiRequest, ApiResponse, Handler, SendTrace
from .._operations import RetrySafety
from .._serialization import dumps
from ..errors import (
    APIError,
    BadRequestError,
    IdempotencyError,
    LoyaltyError,
    NotFoundError,
    OrderStatusError,
    OutcomeUnknownError,
)
from ..idempotency._records import Decision, IdempotencyStore, Intent, Record, State, Verdict
from .retry import outcome_unknown

__all__ = ["IdempotencyMiddleware", "IdempotencyStore", "record_key"]

logger = logging.getLogger("rees46_loyalty")

# Errors that say the order's state refused the request: the same request gets the same answer,
# so it is kept and replayed. Authentication, rate limits and server errors are not.
_TERMINAL_ERRORS = (OrderStatusError, BadRequestError, NotFoundError)


def record_key(shop_id: str, *, order_id: str | None, idempotency_key: str | None) -> str:
    """The store key of a call: the caller's key if given, else its order."""
    if idempotency_key is not None:
        return f"{shop_id}:key:{idempotency_key}"
    return f"{shop_id}:order:{order_id}"


def fingerprint(request: ApiRequest) -> str:
    """A digest of what the request asks for (the secret is not in it yet)."""
    body = request.body if request.body is not None else dumps(request.data)
    digest = hashlib.blake2b(request.operation.name.encode(), digest_size=16)
    digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


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
        if not operation.mutating:
            return await call_next(request)
        key = record_key(
            self._shop_id, order_id=request.order_id, idempotency_key=request.idempotency_key
        )
        intent = Intent(
            operation=operation.name,
            fingerprint=fingerprint(request),
            explicit=request.idempotency_key is not None,
            once=operation.safety is RetrySafety.ONCE,
        )
        # Random per call: a client made before a fork (gunicorn --preload) lives on in every
        # child, so nothing derived from the client alone tells their leases apart.
        owner = secrets.token_hex(16)
        trace = request.trace if request.trace is not None else SendTrace()
        decision = await self._acquire(request, key, intent, owner, trace)
        if isinstance(decision, ApiResponse):  # replayed
            return decision
        # The call must be over before its lease is: once the lease runs out another caller may
        # take the key over. A tenth of the lease is kept as a margin.
        lease_ends = self._clock.monotonic() + self.store.lease * 0.9
        request = request.replace(
            deadline=lease_ends if request.deadline is None else min(request.deadline, lease_ends),
            trace=trace,
        )
        try:
            response = await call_next(request)
        except BaseException as failure:
            if isinstance(failure, OrderStatusError) and decision.previous_unknown:
                failure.previous_outcome_unknown = True
            # Shielded: a cancelled caller must still leave the key settled, not blocked.
            settle = self._settle(key, owner, intent, failure, trace)
            try:
                await (asyncio.shield(settle) if self.store.suspends else settle)
            except Exception:  # the call's own failure is what the caller must see
                logger.exception(
                    "%s failed and the idempotency store could not record it; the key is "
                    "held until its lease runs out",
                    request.operation.name,
                    extra={"operation": request.operation.name, "order_id": request.order_id},
                )
            raise
        record = Record(
            state=State.SUCCEEDED,
            operation=intent.operation,
            fingerprint=intent.fingerprint,
            once=intent.once,
            result=response.result,
            answer=response.body,
        )
        await self._record_success(request, key, owner, record)
        return response

    async def _record_success(
        self, request: ApiRequest, key: str, owner: str, record: Record
    ) -> None:
        """Store a success, shielded, and never fail the call over it.

        The API has applied it: the caller gets its result whatever the store does, and a
        cancelled caller still gets it recorded.
        """
        extra = {"operation": request.operation.name, "order_id": request.order_id}
        finish = self.store.finish(key, owner, record)
        try:
            written = await (asyncio.shield(finish) if self.store.suspends else finish)
        except Exception:
            logger.exception(
                "%s succeeded but its result could not be recorded: a repeat of this request "
                "will be refused as an unknown outcome once the lease runs out",
                request.operation.name,
                extra=extra,
            )
            return
        if not written:
            logger.error(
                "%s succeeded after its lease ran out: another call may have taken the key",
                request.operation.name,
                extra=extra,
            )

    async def _acquire(
        self, request: ApiRequest, key: str, intent: Intent, owner: str, trace: SendTrace
    ) -> Decision | ApiResponse:
        """Wait while the key is busy; then take the lease, replay, or raise what the record says.

        Returns the ACQUIRED decision or a replayed response; tells *trace* which it was.
        """
        started = self._clock.monotonic()
        give_up_at = started + self._wait_timeout
        waited = False
        while True:
            decision = await self._begin(key, intent, owner)
            verdict = decision.verdict
            if verdict is Verdict.ACQUIRED:
                trace.idempotency = "sent"
                return decision
            if verdict is Verdict.BUSY:
                if not waited:
                    waited = True
                    logger.debug(
                        "%s waits for another call on the same key",
                        request.operation.name,
                        extra=_extra(request, "waiting"),
                    )
                left = give_up_at - self._clock.monotonic()
                if left <= 0:
                    raise IdempotencyError(
                        f"waited {self._wait_timeout:g}s for another {request.operation.name} "
                        "call on the same key to finish",
                        operation=request.operation.name,
                        order_id=request.order_id,
                        retryable=True,
                    )
                await self.store.wait(key, min(decision.wait, left))
                continue
            trace.idempotency = "waited" if waited else "replayed"
            answer = self._answer_from(request, decision, trace.idempotency)
            if isinstance(answer, ApiResponse):
                return answer
            raise answer

    async def _begin(self, key: str, intent: Intent, owner: str) -> Decision:
        """``store.begin``, shielded.

        A caller cancelled while the store answers must not leave behind a lease that nobody
        will release.
        """
        try:
            if not self.store.suspends:
                return await self.store.begin(key, intent, owner)
            task = asyncio.ensure_future(self.store.begin(key, intent, owner))
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                task.add_done_callback(lambda done: self._release_if_taken(done, key, owner))
                raise
        except Exception as exc:
            # Without its record the SDK cannot promise "at most once": nothing is sent.
            raise IdempotencyError(
                f"the idempotency store failed, so nothing was sent: {type(exc).__name__}",
                operation=intent.operation,
                retryable=True,
            ) from exc

    def _release_if_taken(self, done: asyncio.Future[Decision], key: str, owner: str) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        if done.result().verdict is Verdict.ACQUIRED:
            release = asyncio.ensure_future(self.store.release(key, owner))
            self._background.add(release)
            release.add_done_callback(self._background.discard)

    def _answer_from(
        self, request: ApiRequest, decision: Decision, outcome: str
    ) -> ApiResponse | LoyaltyError:
        """The answer of a call decided without sending: a replayed response or an error."""
        record = decision.record
        assert record is not None  # noqa: S101 - every verdict but ACQUIRED carries its record
        name = request.operation.name
        if decision.verdict is Verdict.CONFLICT:
            return IdempotencyError(
                f"idempotency key {request.idempotency_key!r} was used for another request "
                f"({record.operation} with different arguments)",
                operation=name,
                order_id=request.order_id,
            )
        if decision.verdict is Verdict.UNKNOWN:
            return OutcomeUnknownError(
                f"an earlier {name} with the same request may have been applied and its outcome "
                "is unknown, so it is not sent again; reconcile with details(), then call "
                "clear_idempotency()",
                operation=name,
                order_id=request.order_id,
            )
        if record.state is State.FAILED and record.error is not None:
            return _rebuild_error(record.error, request)
        result = record.result
        if attrs.has(type(result)) and "replayed" in attrs.fields_dict(type(result)):
            result = attrs.evolve(result, replayed=True)
        logger.debug(
            "%s answered from the idempotency store (%s)",
            name,
            outcome,
            extra=_extra(request, outcome),
        )
        return ApiResponse(status=200, headers={}, body=b"", result=result)

    async def _settle(
        self, key: str, owner: str, intent: Intent, failure: BaseException, trace: SendTrace
    ) -> None:
        state: State | None = None
        error: dict[str, Any] | None = None
        if isinstance(failure, OutcomeUnknownError):
            state = State.UNKNOWN
        elif isinstance(failure, _TERMINAL_ERRORS):
            state, error = State.FAILED, _describe_error(failure)
        elif isinstance(failure, errors.LoyaltyError):
            if outcome_unknown(failure):  # e.g. a cancel whose last answer was a 504
                state = State.UNKNOWN
        elif trace.maybe_sent:
            # Cancelled (or broken) after a request may have left this process.
            state = State.UNKNOWN
        if state is None:
            await self.store.release(key, owner)
            return
        record = Record(
            state=state,
            operation=intent.operation,
            fingerprint=intent.fingerprint,
            once=intent.once,
            error=error,
        )
        await self.store.finish(key, owner, record)


def _extra(request: ApiRequest, outcome: str) -> dict[str, Any]:
    return {**request.shown_fields(), "idempotency": outcome}


def _describe_error(error: APIError) -> dict[str, Any]:
    return {
        "type": type(error).__name__,
        "message": error.message,
        "status": error.status,
        "payload": dict(error.payload) if error.payload is not None else None,
        "previous_outcome_unknown": getattr(error, "previous_outcome_unknown", False),
    }


def _rebuild_error(data: dict[str, Any], request: ApiRequest) -> APIError:
    error_type = getattr(errors, data["type"])
    error: APIError = error_type(
        data["message"],
        payload=data.get("payload"),
        operation=request.operation.name,
        order_id=request.order_id,
        status=data.get("status"),
        attempts=0,
    )
    if data.get("previous_outcome_unknown"):
        error.previous_outcome_unknown = True  # type: ignore[attr-defined]
    return error
