"""OpenTelemetry spans: one per call, one per attempt (the ``otel`` extra).

The call span (INTERNAL, ``rees46_loyalty <operation>``) is outermost, so a call answered from
the idempotency store has one too; it carries the retry count (from the answer or the error)
and the idempotency outcome (from the answer).
Each attempt is a CLIENT span named and described after the HTTP client semantic conventions
(``http.request.method``, ``url.full`` without its query string, ``server.address``,
``server.port``, ``http.response.status_code``, ``error.type``,
``http.request.resend_count``). The shop secret travels only in the body of a POST or the
query string of a GET, so no attribute can hold it; the member's phone is masked.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from yarl import URL

from .._http import ApiRequest, ApiResponse, Handler
from .._redact import mask_identifier
from .._version import VERSION
from ..errors import LoyaltyError
from .idempotency import recorded

__all__ = ["AttemptSpanMiddleware", "CallSpanMiddleware", "tracer_of"]

_SCOPE = "rees46_loyalty"


def tracer_of(provider: TracerProvider | None) -> trace.Tracer:
    """The SDK's tracer from *provider*, or from the global provider when it is ``None``."""
    return trace.get_tracer(_SCOPE, VERSION, tracer_provider=provider)


class CallSpanMiddleware:
    """Opens the span of a whole call, retries and idempotency included."""

    __slots__ = ("_idempotency", "_tracer")

    def __init__(self, tracer: trace.Tracer, *, idempotency: bool) -> None:
        self._tracer = tracer
        self._idempotency = idempotency  # whether the chain has the idempotency layer

    async def __call__(self, request: ApiRequest, call_next: Handler) -> ApiResponse:
        attributes: dict[str, Any] = {"rees46_loyalty.operation": request.operation.name}
        if request.order_id is not None:
            attributes["rees46_loyalty.order_id"] = request.order_id
        identifier = mask_identifier(request.identifier)
        if identifier is not None:
            attributes["rees46_loyalty.identifier"] = identifier
        with self._tracer.start_as_current_span(
            f"rees46_loyalty {request.operation.name}",
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            record_exception=False,  # the exception's text is set below, once
            set_status_on_exception=False,
        ) as span:
            try:
                response = await call_next(request)
            except BaseException as error:
                if isinstance(error, LoyaltyError):
                    _count_attempts(span, error.attempts)
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(Status(StatusCode.ERROR, _describe(error)))
                raise
            _count_attempts(span, response.attempts)
            outcome = response.idempotency
            if outcome is None and self._idempotency and recorded(request):
                outcome = "sent"
            if outcome is not None:
                span.set_attribute("rees46_loyalty.idempotency", outcome)
            return response


class AttemptSpanMiddleware:
    """Opens a CLIENT span per attempt (inside the retry middleware)."""

    __slots__ = ("_base_url", "_tracer")

    def __init__(self, tracer: trace.Tracer, base_url: URL) -> None:
        self._tracer = tracer
        self._base_url = base_url

    async def __call__(self, request: ApiRequest, call_next: Handler) -> ApiResponse:
        base = self._base_url
        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            # Never with the query string: a GET carries the secret there.
            "url.full": str(request.operation.url(base)),
            "server.address": base.host or "",
            "server.port": base.port or 443,
        }
        if request.attempt > 1:
            attributes["http.request.resend_count"] = request.attempt - 1
        with self._tracer.start_as_current_span(
            f"{request.method} {request.path}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                response = await call_next(request)
            except BaseException as error:
                status = error.status if isinstance(error, LoyaltyError) else None
                if status is not None:
                    span.set_attribute("http.response.status_code", status)
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(Status(StatusCode.ERROR, _describe(error)))
                raise
            span.set_attribute("http.response.status_code", response.status)
            return response


def _count_attempts(span: trace.Span, attempts: int) -> None:
    span.set_attribute("rees46_loyalty.attempts", attempts)
    span.set_attribute("rees46_loyalty.retry_count", max(attempts - 1, 0))


def _describe(error: BaseException) -> str:
    # The SDK's own errors are redacted where they are made; anything else is named, not quoted.
    return str(error) if isinstance(error, LoyaltyError) else type(error).__name__
