"""The retry middleware: resend what is safe to resend, and nothing else.

What may be resent depends on the operation's retry-safety class:

* ``SAFE`` (estimate, details, history, apply, confirm): connection failures, timeouts, 429 and
  500 / 502 / 503 / 504;
* ``CANCEL``: the same, and when a retry meets ``Could not cancel order in its current status``
  after an attempt whose outcome was unknown, the error says so (``previous_outcome_unknown``);
* ``ONCE`` (change): only failures that prove the server never processed the request (no
  connection, 429, 503). Any other failure leaves the outcome unknown and becomes
  :class:`~rees46_loyalty.errors.OutcomeUnknownError` at once. A retry of a change never starts
  with less than its per-attempt timeout left before the deadline: the last failure (which
  proved nothing was processed) is raised instead.

Whatever the class, a call that fails after an attempt that may have been processed says so on
its error (``previous_outcome_unknown``), and the call's send record keeps it for the idempotency
layer.
Whether a failure may have been processed is the error's own business
(:attr:`~rees46_loyalty.errors.LoyaltyError.maybe_processed`).

tenacity runs the loop; it is imported here and nowhere else.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from tenacity import AsyncRetrying, RetryCallState

from .._clock import Clock
from .._hooks import HookCaller, RetryRecord, elapsed_ms
from .._http import ApiRequest, ApiResponse, Handler
from .._operations import RetrySafety
from .._policy import RetryPolicy
from ..errors import (
    APIError,
    LoyaltyError,
    OutcomeUnknownError,
    RateLimitError,
    ServerError,
    TransportError,
)
from ..errors import TimeoutError as ApiTimeoutError

__all__ = ["RetryBudget", "RetryMiddleware"]

logger = logging.getLogger("rees46_loyalty")

_RETRIED_STATUSES = frozenset({500, 502, 503, 504})
_RETRY_COST = 5
_TIMEOUT_RETRY_COST = 10


class RetryBudget:
    """A token bucket shared by all calls of one client (botocore's retry quota, in small).

    A retry takes tokens; a call that succeeds gives some back. During an outage the bucket runs
    dry and calls fail after their first attempt instead of tripling the load on the API.
    """

    __slots__ = ("capacity", "tokens")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.tokens = capacity

    def acquire(self, cost: int) -> bool:
        """Take *cost* tokens if there are that many."""
        if cost > self.tokens:
            return False
        self.tokens -= cost
        return True

    def release(self, amount: int) -> None:
        """Give *amount* tokens back, up to the capacity."""
        self.tokens = min(self.capacity, self.tokens + amount)


class _Call:
    """The state of one call across its attempts."""

    __slots__ = ("last_cost", "outcome_unknown")

    def __init__(self) -> None:
        self.outcome_unknown = False
        self.last_cost = 0


class RetryMiddleware:
    """Retries a call as its operation's safety class and the :class:`RetryPolicy` allow."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        clock: Clock,
        jitter: Callable[[], float] = random.random,
        on_retry: HookCaller[RetryRecord] | None = None,
    ) -> None:
        self._policy = policy
        self._on_retry = on_retry or None
        self._clock = clock
        self._jitter = jitter
        self._budget = None if policy.retry_budget is None else RetryBudget(policy.retry_budget)

    @property
    def budget(self) -> RetryBudget | None:
        """The client's retry budget, or ``None`` when the policy has none."""
        return self._budget

    async def __call__(self, request: ApiRequest, call_next: Handler) -> ApiResponse:
        policy = self._policy
        started = self._clock.monotonic()
        if policy.deadline is not None:
            deadline = started + policy.deadline
            if request.deadline is None or deadline < request.deadline:
                request = request.replace(deadline=deadline)
        # The first attempt runs outside tenacity: most calls succeed at once, and the retry
        # machinery is only worth building when they do not.
        try:
            response = await call_next(request)
        except LoyaltyError as first:
            if request.send_record is not None:
                request.send_record.attempt_failed(first.maybe_processed)
            return await self._retry(request, call_next, first, started)
        if self._budget is not None:
            self._budget.release(1)
        return response

    async def _retry(
        self, request: ApiRequest, call_next: Handler, first: LoyaltyError, started: float
    ) -> ApiResponse:
        call = _Call()
        retrying = AsyncRetrying(
            sleep=self._clock.sleep,
            retry=lambda state: self._should_retry(_error_of(state)),
            wait=self._wait,
            stop=lambda state: self._should_stop(request, call, state),
            before_sleep=lambda state: self._before_sleep(request, state, started),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    number = attempt.retry_state.attempt_number
                    try:
                        if number == 1:
                            raise first  # the attempt already made, for tenacity to judge
                        response = await call_next(request.replace(attempt=number))
                    except LoyaltyError as error:
                        if request.send_record is not None:
                            request.send_record.attempt_failed(error.maybe_processed)
                        replacement = self._classify(request, call, error)
                        if replacement is not error:
                            raise replacement from error
                        raise
                    self._succeeded(call)
                    return response.replace(attempts=number)
        except LoyaltyError as error:
            if error.retryable or isinstance(error, OutcomeUnknownError):
                logger.warning(
                    "%s failed after %d attempt(s): %s",
                    request.operation.name,
                    error.attempts,
                    error,
                    extra={
                        **_extra(request, error.attempts, error),
                        "elapsed_ms": elapsed_ms(self._clock.monotonic() - started),
                    },
                )
            raise
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    def _classify(self, request: ApiRequest, call: _Call, error: LoyaltyError) -> LoyaltyError:
        unknown = error.maybe_processed
        if request.operation.safety is RetrySafety.ONCE and unknown:
            return OutcomeUnknownError(
                f"{request.operation.name} on order {request.order_id!r} may have been applied "
                f"and was not sent again ({type(error).__name__}: {error.message}); find out "
                f"with {_reconcile_call(request)}",
                operation=request.operation.name,
                order_id=request.order_id,
                attempts=error.attempts,
                status=error.status,
                payload=getattr(error, "payload", None),
                idempotency_key=request.idempotency_key,
            )
        if call.outcome_unknown and request.operation.mutating:
            # An earlier attempt may have done what this one failed to: the caller must know,
            # whatever this failure says (a cancel's "Could not cancel", a 503, ...).
            error.previous_outcome_unknown = True
        call.outcome_unknown = call.outcome_unknown or unknown
        return error

    def _should_retry(self, error: BaseException | None) -> bool:
        # Unknown outcomes of ONCE operations never get here: _classify has already turned them
        # into OutcomeUnknownError, which is not retried.
        retry_after = self._retry_after(error)
        if retry_after is not None and retry_after > self._policy.max_retry_after:
            return False
        if isinstance(error, TransportError | RateLimitError):
            return True
        return isinstance(error, ServerError) and error.status in _RETRIED_STATUSES

    def _retry_after(self, error: BaseException | None) -> float | None:
        if self._policy.respect_retry_after and isinstance(error, APIError):
            return error.retry_after
        return None

    def _wait(self, state: RetryCallState) -> float:
        retry_after = self._retry_after(_error_of(state))
        if retry_after is not None:
            return retry_after
        return self._policy.backoff(state.attempt_number, self._jitter())

    def _should_stop(self, request: ApiRequest, call: _Call, state: RetryCallState) -> bool:
        if state.attempt_number >= self._policy.max_attempts:
            return True
        resumes_at = self._clock.monotonic() + (state.upcoming_sleep or 0.0)
        if request.deadline is not None:
            if resumes_at >= request.deadline:
                return True
            # A change squeezed against the deadline would time out while the server may be
            # committing it: an unknown outcome made by the SDK itself. Every failure that
            # reaches this point proved that nothing was processed, so raising it is safe.
            if (
                request.operation.safety is RetrySafety.ONCE
                and request.timeout is not None
                and resumes_at + request.timeout > request.deadline
            ):
                return True
        if self._budget is not None:
            cost = (
                _TIMEOUT_RETRY_COST
                if isinstance(_error_of(state), ApiTimeoutError)
                else _RETRY_COST
            )
            if not self._budget.acquire(cost):
                return True
            call.last_cost = cost
        return False

    def _before_sleep(self, request: ApiRequest, state: RetryCallState, started: float) -> None:
        error: Any = _error_of(state)
        delay = state.upcoming_sleep
        elapsed = self._clock.monotonic() - started
        logger.info(
            "retrying %s in %.3fs after attempt %d failed: %s",
            request.operation.name,
            delay,
            state.attempt_number,
            error,
            extra={
                **_extra(request, state.attempt_number, error),
                "retry_delay": delay,
                "elapsed_ms": elapsed_ms(elapsed),
            },
        )
        if self._on_retry is not None:
            self._on_retry(
                RetryRecord(
                    **request.shown_fields(state.attempt_number),
                    wait=delay,
                    elapsed=elapsed,
                    error=error,
                )
            )

    def _succeeded(self, call: _Call) -> None:
        if self._budget is not None:
            self._budget.release(call.last_cost or 1)


def _reconcile_call(request: ApiRequest) -> str:
    key = request.idempotency_key
    with_key = "" if key is None else f", idempotency_key={key!r}"
    return f"await client.reconcile(order_id={request.order_id!r}{with_key})"


def _error_of(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None


def _extra(request: ApiRequest, attempt: int, error: LoyaltyError) -> dict[str, Any]:
    return {
        **request.shown_fields(attempt),
        "status": error.status,
        "error": type(error).__name__,
    }
