"""The logging middleware: one DEBUG record per attempt on the ``rees46_loyalty`` logger.

Records carry structured ``extra`` fields (``operation``, ``order_id``, ``identifier`` masked,
``attempt``, ``status``, ``elapsed_ms``, ``error``). It sits outside the auth middleware, so the
request it sees holds no secret.
"""

from __future__ import annotations

import logging

from .._clock import Clock
from .._http import ApiRequest, ApiResponse, Handler
from .._redact import mask_identifier
from ..errors import LoyaltyError

__all__ = ["LoggingMiddleware"]

logger = logging.getLogger("rees46_loyalty")


class LoggingMiddleware:
    """Logs each attempt's outcome and duration at DEBUG."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def __call__(self, request: ApiRequest, call_next: Handler) -> ApiResponse:
        if not logger.isEnabledFor(logging.DEBUG):
            return await call_next(request)
        started = self._clock.monotonic()
        extra: dict[str, object] = {
            "operation": request.operation.name,
            "order_id": request.order_id,
            "identifier": mask_identifier(request.identifier),
            "attempt": request.attempt,
        }
        try:
            response = await call_next(request)
        except LoyaltyError as error:
            extra.update(
                status=error.status,
                error=type(error).__name__,
                elapsed_ms=round((self._clock.monotonic() - started) * 1000, 3),
            )
            logger.debug(
                "%s attempt %d failed: %s",
                request.operation.name,
                request.attempt,
                error,
                extra=extra,
            )
            raise
        extra.update(
            status=response.status,
            elapsed_ms=round((self._clock.monotonic() - started) * 1000, 3),
        )
        logger.debug(
            "%s attempt %d answered %d",
            request.operation.name,
            request.attempt,
            response.status,
            extra=extra,
        )
        return response
