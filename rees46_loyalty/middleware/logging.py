"""The logging middleware: one DEBUG record and the attempt hooks per attempt.

Records go to the ``rees46_loyalty`` logger with structured ``extra`` fields: ``operation``,
``order_id``, ``identifier`` (masked), ``attempt``, ``idempotency`` (``sent`` for a call the
idempotency layer recorded, else ``None``), ``status``, ``elapsed_ms`` and, on failure or
interruption, ``error``. Retries are logged at INFO and
final failures at WARNING by the retry middleware. It sits outside the auth middleware, so the
request it sees holds no secret.
"""

from __future__ import annotations

import logging

from .._clock import Clock
from .._hooks import HookCaller, RequestRecord, ResponseRecord, elapsed_ms
from .._http import ApiRequest, ApiResponse, Handler
from ..errors import LoyaltyError

__all__ = ["LoggingMiddleware"]

logger = logging.getLogger("rees46_loyalty")


class LoggingMiddleware:
    """Logs each attempt's outcome and duration at DEBUG and runs the attempt hooks."""

    def __init__(
        self,
        clock: Clock,
        on_request: HookCaller[RequestRecord] | None = None,
        on_response: HookCaller[ResponseRecord] | None = None,
    ) -> None:
        self._clock = clock
        self._on_request = on_request or None
        self._on_response = on_response or None

    async def __call__(self, request: ApiRequest, call_next: Handler) -> ApiResponse:
        logs = logger.isEnabledFor(logging.DEBUG)
        if not logs and self._on_request is None and self._on_response is None:
            return await call_next(request)
        if self._on_request is not None:
            self._on_request(RequestRecord(**request.shown_fields(request.attempt)))
        started = self._clock.monotonic()
        try:
            response = await call_next(request)
        except BaseException as exc:  # noqa: BLE001 - cancelled, or a bug below: still one record
            failure = exc
        else:
            self._done(request, started, response.status, None, logs=logs)
            return response
        # Out of the `except` block: an exception a hook raises is logged with its traceback,
        # and inside the block it would chain the failure, whose frames below may still hold
        # the request (a cancelled attempt's are not cleared yet).
        try:
            if isinstance(failure, LoyaltyError):
                self._done(request, started, failure.status, failure, logs=logs)
            else:
                self._done(request, started, None, None, logs=logs, interrupted=failure)
            raise failure
        finally:
            del failure  # no cycle through this frame

    def _done(
        self,
        request: ApiRequest,
        started: float,
        status: int | None,
        error: LoyaltyError | None,
        *,
        logs: bool,
        interrupted: BaseException | None = None,
    ) -> None:
        elapsed = self._clock.monotonic() - started
        if logs:
            _log(request, status, elapsed, error, interrupted)
        if self._on_response is not None:
            self._on_response(
                ResponseRecord(
                    **request.shown_fields(request.attempt),
                    status=status,
                    elapsed=elapsed,
                    error=error,
                    interrupted=None if interrupted is None else type(interrupted).__name__,
                )
            )


def _log(
    request: ApiRequest,
    status: int | None,
    elapsed: float,
    error: LoyaltyError | None,
    interrupted: BaseException | None,
) -> None:
    extra: dict[str, object] = {
        **request.shown_fields(request.attempt),
        "status": status,
        "elapsed_ms": elapsed_ms(elapsed),
    }
    outcome: object
    if interrupted is not None:
        extra["error"] = outcome = type(interrupted).__name__
        message = "%s attempt %d interrupted: %s"
    elif error is not None:
        extra["error"] = type(error).__name__
        message, outcome = "%s attempt %d failed: %s", error
    else:
        message, outcome = "%s attempt %d answered %d", status
    logger.debug(message, request.operation.name, request.attempt, outcome, extra=extra)
