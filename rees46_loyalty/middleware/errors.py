"""The errors middleware: HTTP status + envelope -> a result model or a typed exception.

Both revisions of REES46's envelope are accepted (``envelope_payload`` and
``envelope_succeeded`` of ``_serialization`` read them, for the fast decode path too), and a
payload that has a ``message`` and none of the fields of a result is an error whatever the
flag says (the API documents one such answer of ``apply``).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from datetime import timezone
from http import HTTPStatus
from typing import Any

import attrs

from .._http import ApiRequest, ApiResponse, Handler
from .._serialization import (
    PayloadShapeError,
    envelope_payload,
    envelope_succeeded,
    fast_decode,
    loads,
    structure,
)
from ..errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    NotAnApiError,
    NotFoundError,
    OrderStatusError,
    RateLimitError,
    ServerError,
)

__all__ = ["decode_response", "errors_middleware", "parse_retry_after", "recorded_answer"]

# Where an APIError built from the API's own JSON envelope keeps that answer's body, for the
# idempotency layer to record a terminal error and replay it exactly (Decimals and all).
_ANSWER = "_api_answer"

_ORDER_STATUS_RE = re.compile(r"^Could not \w+ order in its current status", re.IGNORECASE)
_NOT_FOUND_RE = re.compile(r"\bnot found\b", re.IGNORECASE)
# Fields that an error payload may carry beside its message (the seed of `change` shows one).
_NOT_RESULT_FIELDS = frozenset({"message", "identifier"})
# 5xx that say "try again"; a 501 or 505 will answer the same tomorrow.
_TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})


async def errors_middleware(request: ApiRequest, call_next: Handler) -> ApiResponse:
    """Turn the raw answer of *call_next* into ``response.result`` or raise an :class:`APIError`."""
    response = await call_next(request)
    return decode_response(request, response)


def decode_response(request: ApiRequest, response: ApiResponse) -> ApiResponse:
    """Decode *response* to *request*; see the module docstring for the rules."""
    if 200 <= response.status < 300:
        fast = fast_decode(response.body, request.operation.result_type)
        if fast is not None:
            return response.replace(result=fast)
    context: dict[str, Any] = {
        "operation": request.operation.name,
        "order_id": request.order_id,
        "attempts": request.attempt,
        "status": response.status,
    }
    try:
        document = loads(response.body) if response.body else None
        decode_problem = None if response.body else "the body is empty"
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
        document, decode_problem = None, f"the body is not valid JSON ({type(exc).__name__})"
    payload = envelope_payload(document)
    message = _message_of(payload)

    if response.status >= 400:
        if payload is None and _not_the_api(response):
            raise NotAnApiError(
                f"{_describe_status(response)}, not an answer of the REES46 API: the base URL "
                "does not serve it",
                **context,
            )
        raise _kept(_status_error(response, message, payload, context), response, payload)
    if not 200 <= response.status < 300:
        raise MalformedResponseError(f"unexpected HTTP status {response.status}", **context)
    if decode_problem is not None:
        raise MalformedResponseError(decode_problem, **context)
    if payload is None or not isinstance(document, Mapping):
        kind = type(document).__name__
        raise MalformedResponseError(f"expected an envelope with a payload, got {kind}", **context)

    succeeded = envelope_succeeded(document.get("success"), document.get("status"))
    if succeeded is None:
        raise MalformedResponseError("the envelope has neither `success` nor `status`", **context)
    result_type = request.operation.result_type
    if not succeeded or (message is not None and not _has_result_fields(payload, result_type)):
        error = _message_error(message or "the API reported an error", payload, context)
        raise _kept(error, response, payload)
    try:
        result = structure(payload, result_type)
    except PayloadShapeError as exc:
        raise MalformedResponseError(
            f"the payload does not match {result_type.__name__}: {exc}", payload=payload, **context
        ) from exc
    return response.replace(result=result)


def _not_the_api(response: ApiResponse) -> bool:
    """Whether a 4xx without the API's envelope comes from something else than the API.

    A 429 or a 5xx without it is a proxy's passing trouble, and answered as such; an empty
    4xx other than a 404 may be the API refusing a method.
    """
    status = response.status
    return status != 429 and status < 500 and (status == 404 or bool(response.body))


def _kept(error: APIError, response: ApiResponse, payload: Mapping[str, Any] | None) -> APIError:
    if payload is not None:  # the API's own envelope, not a proxy's page
        setattr(error, _ANSWER, response.body)
    return error


def recorded_answer(error: APIError) -> bytes | None:
    """The body of the API's own JSON answer that *error* was built from, if it was."""
    answer = error.__dict__.get(_ANSWER)
    return answer if isinstance(answer, bytes) else None


def _message_of(payload: Mapping[str, Any] | None) -> str | None:
    message = payload.get("message") if payload is not None else None
    return message if isinstance(message, str) and message else None


def _has_result_fields(payload: Mapping[str, Any], result_type: type) -> bool:
    names = {a.name for a in attrs.fields(result_type)} - _NOT_RESULT_FIELDS
    return not names.isdisjoint(payload)


def _message_error(
    message: str, payload: Mapping[str, Any] | None, context: dict[str, Any]
) -> APIError:
    if _ORDER_STATUS_RE.match(message):
        return OrderStatusError(message, payload=payload, **context)
    if _NOT_FOUND_RE.search(message):
        return NotFoundError(message, payload=payload, **context)
    return BadRequestError(message, payload=payload, **context)


def _status_error(
    response: ApiResponse,
    message: str | None,
    payload: Mapping[str, Any] | None,
    context: dict[str, Any],
) -> APIError:
    status = response.status
    text = message or _describe_status(response)
    if message is not None and _ORDER_STATUS_RE.match(message):
        return OrderStatusError(text, payload=payload, **context)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return RateLimitError(text, retry_after=retry_after, payload=payload, **context)
    if status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return ServerError(
            text,
            retry_after=retry_after,
            payload=payload,
            retryable=status in _TRANSIENT_STATUSES,
            **context,
        )
    if status in (401, 403):
        return AuthenticationError(text, payload=payload, **context)
    if status == 404 or (message is not None and _NOT_FOUND_RE.search(message)):
        return NotFoundError(text, payload=payload, **context)
    return BadRequestError(text, payload=payload, **context)


def _describe_status(response: ApiResponse) -> str:
    try:
        phrase = HTTPStatus(response.status).phrase
    except ValueError:
        phrase = "Unknown Status"
    content_type = response.headers.get("Content-Type", "no content type")
    body = f"a {content_type} body" if response.body else "an empty body"
    return f"HTTP {response.status} {phrase} with {body}"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date.

    *now* is the current Unix time (for tests); a date in the past gives 0. An unreadable value
    gives ``None``.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds != float("inf") else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
