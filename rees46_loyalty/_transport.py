"""The last handler of the chain: one ApiRequest out through aiohttp, one ApiResponse back.

Every aiohttp failure becomes a typed TransportError here, once.

Whether a failed request may have reached the server decides whether ``change`` may be resent,
so the failures are sorted by what they prove:

* not sent: no connection was made (DNS, refused, TLS, connect timeout);
* maybe processed: everything after the connection was made (read timeout, disconnect, a body cut
  short). aiohttp never resends a POST on its own, so one attempt is one request.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from typing import Any

import aiohttp
from yarl import URL

from ._body import AnswerTooLarge, read_body
from ._clock import Clock
from ._http import ApiRequest, ApiResponse, SendRecord, Transport
from ._operations import RetrySafety
from ._redact import redact
from ._scrub import chained, forget_locals, strip_tracebacks
from ._serialization import dumps
from ._session import SessionHolder
from ._version import VERSION
from .errors import ConnectError, LoyaltyError, MalformedResponseError, TransportError
from .errors import TimeoutError as ApiTimeoutError

__all__ = ["USER_AGENT", "AiohttpTransport", "FunctionTransport", "attempt_timeout"]

try:
    # OpenTelemetry's HTTP client instrumentations (aiohttp's included) make no span while this
    # key is set. Theirs would record the full URL, and a GET's query holds the secret and the
    # member's phone; the SDK's own attempt span (tracing=True) is the HTTP client span instead.
    from opentelemetry import context as _otel_context
    from opentelemetry.context import _SUPPRESS_HTTP_INSTRUMENTATION_KEY
except ImportError:  # pragma: no cover - exercised by installs without OpenTelemetry
    _otel_context = None  # type: ignore[assignment]


USER_AGENT = f"rees46-loyalty-python/{VERSION} aiohttp/{aiohttp.__version__}"
_HEADERS = {
    "User-Agent": USER_AGENT,
    "Content-Type": "application/json",
    "Accept": "application/json",
}


class AiohttpTransport:
    """Sends one request per call over the client's shared aiohttp session."""

    __slots__ = ("_base_url", "_clock", "_connect_timeout", "_max_body", "_sessions", "_urls")

    def __init__(
        self,
        sessions: SessionHolder,
        base_url: URL,
        clock: Clock,
        connect_timeout: float,
        *,
        max_body: int = 32 * 1024 * 1024,
    ) -> None:
        self._sessions = sessions
        self._base_url = base_url
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._urls: dict[str, URL] = {}  # operation path -> full URL, built once
        self._max_body = max_body  # the largest answer read, in bytes after decompression

    async def __call__(self, request: ApiRequest) -> ApiResponse:
        timeout = attempt_timeout(request, self._clock)
        url = self._urls.get(request.path)
        if url is None:
            url = self._urls[request.path] = request.operation.url(self._base_url)
        headers = {**_HEADERS, **request.headers} if request.headers else _HEADERS
        token = (
            None
            if _otel_context is None
            else _otel_context.attach(
                _otel_context.set_value(_SUPPRESS_HTTP_INSTRUMENTATION_KEY, value=True)
            )
        )
        # The error is raised after the `except` blocks, so that aiohttp's exception is never
        # its __context__, and its cause keeps no traceback: the frames of aiohttp (and of
        # _exchange) hold the body and the URL with the secret in their local variables.
        error: LoyaltyError
        # Whether this attempt may have written anything: the call's record when the
        # idempotency layer keeps one, else this attempt's own.
        record = request.send_record if request.send_record is not None else SendRecord()
        try:
            return await self._exchange(request, url, headers, timeout, record)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # ConnectionTimeoutError covers the wait for a pooled connection and the connect
            # itself: in both the request was never written.
            error = _translate(ConnectError, "could not connect", exc, request, request_sent=False)
            cause = _shown_cause(exc, request)
        except asyncio.TimeoutError as exc:  # SocketTimeoutError, or the attempt's total timeout
            error = _translate(
                ApiTimeoutError, "no answer in time", exc, request, request_sent=record.writing
            )
            cause = _shown_cause(exc, request)
        except (aiohttp.ClientError, OSError) as exc:
            error = _translate(
                TransportError, "the connection failed", exc, request, request_sent=record.writing
            )
            cause = _shown_cause(exc, request)
        except AnswerTooLarge as exc:
            # The status line was read whole: a 503 or a 4xx says what it says however long its
            # page (a 2xx cut short stays "may have been processed").
            error = MalformedResponseError(
                str(exc), operation=request.operation.name, order_id=request.order_id,
                attempts=request.attempt, status=exc.status,
            )  # fmt: skip
            cause = None
        except BaseException as exc:  # cancelled, or anything else: it passes, its frames go
            # The frames below (_exchange's, aiohttp's) have finished; whoever sees this
            # exception before the public method clears them (a hook's log, another middleware)
            # sees no local variable of theirs.
            forget_locals(exc)
            raise
        finally:
            if token is not None:
                _otel_context.detach(token)
        raise error from cause

    async def _exchange(
        self,
        request: ApiRequest,
        url: URL,
        headers: Mapping[str, str],
        timeout: float | None,
        record: SendRecord,
    ) -> ApiResponse:
        # The only frame of the SDK that holds the secret (the query of a GET, the body of a
        # POST) and the answer before redaction; an error leaving it loses its traceback.
        if request.method == "GET":
            params = {name: str(value) for name, value in request.data.items()}
            body = None
        else:
            params = None
            body = request.body if request.body is not None else dumps(request.data)
        # change goes on a connection of its own: a pooled one may be stale (see get_fresh).
        sessions = self._sessions
        once = request.operation.safety is RetrySafety.ONCE
        session = sessions.get_fresh() if once else sessions.get()
        # Until the session says otherwise (the SDK's own sessions tell when writing really
        # starts; a borrowed one cannot), anything may be written from here on.
        record.writing = True
        async with session.request(
            request.method,
            url,
            params=params,
            data=body,
            headers=headers,
            timeout=self._timeouts(timeout),
            allow_redirects=False,  # a redirect must never carry the secret elsewhere
            middlewares=(),  # a borrowed session's own middlewares could resend a change
            raise_for_status=False,  # status codes are the errors middleware's business
            trace_request_ctx=record,
        ) as response:
            payload = await read_body(response, self._max_body)
            return ApiResponse(status=response.status, headers=response.headers, body=payload)

    def _timeouts(self, attempt: float | None) -> aiohttp.ClientTimeout:
        if attempt is None:
            return aiohttp.ClientTimeout(total=None, connect=self._connect_timeout)
        # Only aiohttp's `connect` timeout tells "never sent" apart from "no answer": the total
        # one fires wherever the attempt is. So the connect phase always ends a little before
        # the attempt does, and a slow connect surfaces as ConnectError, which change may retry.
        connect = min(self._connect_timeout, attempt * 0.9)
        return aiohttp.ClientTimeout(total=attempt, connect=connect)


def attempt_timeout(request: ApiRequest, clock: Clock) -> float | None:
    """The seconds *request*'s attempt may take, its deadline counted; or a not-sent timeout.

    Raises :class:`~rees46_loyalty.errors.TimeoutError` (``request_sent=False``) when the
    deadline has passed, or when a ``change`` could not have its whole timeout before it.
    """
    timeout = request.timeout
    if request.deadline is None:
        return timeout
    left = request.deadline - clock.monotonic()
    if left > 0 and (
        timeout is None or left >= timeout or request.operation.safety is not RetrySafety.ONCE
    ):
        return left if timeout is None else min(timeout, left)
    context: dict[str, Any] = {
        "operation": request.operation.name,
        "order_id": request.order_id,
        "attempts": request.attempt,
    }
    if left <= 0:
        raise ApiTimeoutError("the call's deadline passed", request_sent=False, **context)
    # Started now, a change could be cut short while the server commits it: an unknown outcome
    # made by the SDK itself. Not sent is the outcome to prefer.
    raise ApiTimeoutError(
        f"not sent: a change needs its whole timeout ({timeout:g}s), and only {left:.3g}s were "
        "left before the call's deadline (the retry policy's deadline, or 90% of the "
        "idempotency store's lease)",
        request_sent=False,
        **context,
    )


class FunctionTransport:
    """A transport of the caller's (``transport=``) at the bottom of the chain.

    The rules of an attempt stay the SDK's: an attempt that could not finish before the call's
    deadline is not started, and anything the function does with the request may have reached
    the server, unless it raises an error that says otherwise
    (:class:`~rees46_loyalty.errors.ConnectError`, ``request_sent=False``). An SDK error it
    raises gets the call's operation, order and attempt number.
    """

    __slots__ = ("_clock", "_send")

    def __init__(self, send: Transport, clock: Clock) -> None:
        self._send = send
        self._clock = clock

    async def __call__(self, request: ApiRequest) -> ApiResponse:
        attempt_timeout(request, self._clock)  # raises when the attempt may not start
        if request.body is None and request.method == "POST":  # a middleware replaced `data`
            request = request.replace(body=dumps(request.data))
        if request.send_record is not None:
            request.send_record.writing = True
        try:
            pending = self._send(request)
            if not inspect.isawaitable(pending):
                raise TypeError(
                    "transport= must be an async function (async def), returning an "
                    f"ApiResponse when awaited; it returned {type(pending).__name__}"
                )
            response = await pending
        except LoyaltyError as error:
            # The call's context, as the aiohttp transport gives its own errors.
            error.operation = request.operation.name
            error.order_id = request.order_id
            error.attempts = request.attempt
            # This attempt's error says nothing of earlier attempts (the retry middleware adds
            # that): a function may raise one instance again, flagged by an earlier call.
            error.previous_outcome_unknown = False
            _redact_error(error, request)
            raise
        return _checked_answer(response)


def _checked_answer(response: object) -> ApiResponse:
    """*response* if it is an ApiResponse whose fields have the types the chain reads.

    Without this, a ``body`` given as text or a ``status`` as a string failed deep inside the
    chain with a TypeError naming neither.
    """
    if not isinstance(response, ApiResponse):
        raise TypeError(f"transport= must return an ApiResponse, got {type(response).__name__}")
    fields: tuple[tuple[str, object, type, str], ...] = (
        ("status", response.status, int, "an int"),
        ("body", response.body, bytes, "bytes"),
        ("headers", response.headers, Mapping, "a mapping"),
    )
    for name, value, kind, what in fields:
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(
                f"transport= returned an ApiResponse whose {name} is "
                f"{type(value).__name__}, not {what} (testing.json_response() builds one)"
            )
    if response.attempts != 1 or response.idempotency is not None:
        # What the layers above say of the call (the call span reads them): an answer from the
        # transport is one attempt, sent, whatever the function put there.
        return response.replace(attempts=1, idempotency=None)
    return response


def _redact_error(error: LoyaltyError, request: ApiRequest) -> None:
    """Cut the secret out of an SDK error a ``transport=`` function raised.

    The function holds the request with its credentials, and an error it raises may quote them
    (the body, or a GET's URL as httpx's errors quote it): the SDK's log records, spans and the
    caller would show them. Its message is redacted as the aiohttp transport redacts aiohttp's
    texts, and a chained cause or context whose text holds the secret is dropped.
    """
    shown = redact(error.message, request.secrets)
    if shown != error.message:
        error.message = shown
        error.args = (shown,)
    for linked in (error.__cause__, error.__context__):
        if linked is not None and _holds_secret(linked, request):
            error.__cause__ = error.__context__ = None
            error.__suppress_context__ = True
            break
    strip_tracebacks(error, keep_own=True)


def _holds_secret(error: BaseException, request: ApiRequest) -> bool:
    """Whether *error* or an exception chained to it shows what redaction would cut.

    A form of the request's secrets, and also a URL's query or a phone number: a cause is kept
    only when its text is shown as it is.
    """
    for current in chained(error):
        text = f"{current}{current!r}"
        if redact(text, request.secrets) != text:
            return True
    return False


def _translate(
    error_type: type[TransportError],
    what: str,
    exc: BaseException,
    request: ApiRequest,
    *,
    request_sent: bool,
) -> TransportError:
    # aiohttp quotes the full URL in some messages, and a GET URL holds the secret in its query.
    shown = redact(str(exc), request.secrets) or type(exc).__name__
    return error_type(
        f"{what}: {type(exc).__name__}: {shown}",
        request_sent=request_sent,
        operation=request.operation.name,
        order_id=request.order_id,
        attempts=request.attempt,
    )


def _shown_cause(exc: BaseException, request: ApiRequest) -> BaseException | None:
    """*exc* as the cause, unless a printed traceback of it could show a secret or a phone.

    aiohttp puts the request URL in some exceptions (and in their ``request_info``), and the
    URL of a GET holds the secret and maybe a phone number in its query; those causes are
    dropped, their text is in the SDK's own message, redacted. A kept cause loses its
    traceback (and so do the exceptions chained to it): its frames hold the request.
    """
    if request.method == "GET":
        return None
    text = f"{exc}{exc!r}"
    if redact(text, request.secrets) != text:
        return None
    strip_tracebacks(exc)
    return exc
