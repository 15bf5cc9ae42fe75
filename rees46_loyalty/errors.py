"""The exceptions of ``rees46_loyalty``.

Every exception the SDK raises on purpose is a :class:`LoyaltyError`::

    LoyaltyError
    ├── ValidationError          rejected locally; nothing was sent
    ├── APIError                 the API answered with an error: .status, .message, .payload
    │   ├── BadRequestError      400 (and other 4xx), documented validation messages
    │   ├── AuthenticationError  401, 403
    │   ├── NotFoundError        404, "Order … not found", "… member is not found"
    │   ├── OrderStatusError     "Could not cancel/confirm order in its current status" (terminal)
    │   ├── RateLimitError       429, .retry_after
    │   └── ServerError          5xx
    ├── TransportError           no answer: .request_sent tells whether it may have been processed
    │   ├── ConnectError
    │   └── TimeoutError
    ├── MalformedResponseError   an answer that is not the documented envelope
    │   └── NotAnApiError        not the API's answer at all (an HTML 404): a wrong base URL
    ├── OutcomeUnknownError      a ``change`` may or may not have been applied: reconcile first
    └── IdempotencyError         explicit key reused with another request, or a lease wait ran out

Each carries the operation name, the order id where there is one, the number of requests sent
(``attempts``), whether retrying later could help (``retryable``), the HTTP status where there was
an answer, the decoded payload of the API's answer where one was read (``payload``), and the
underlying cause as ``__cause__``. Whether the server may have processed the
request is decided here and nowhere else: :attr:`LoyaltyError.maybe_processed` for the failure
itself, :attr:`LoyaltyError.previous_outcome_unknown` for an earlier attempt of the same call,
and :attr:`LoyaltyError.outcome_unknown` for the call as a whole. Neither ``str()`` nor
``repr()`` ever holds the shop secret, and member phone numbers in them are masked
(``7999***1122``).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any, ClassVar

from ._redact import mask_identifier, mask_phones

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ConnectError",
    "IdempotencyError",
    "LoyaltyError",
    "MalformedResponseError",
    "NotAnApiError",
    "NotFoundError",
    "OrderStatusError",
    "OutcomeUnknownError",
    "RateLimitError",
    "ServerError",
    "TimeoutError",
    "TransportError",
    "ValidationError",
]


class LoyaltyError(Exception):
    """Base class of every error the SDK raises about a loyalty operation."""

    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        order_id: str | None = None,
        attempts: int = 0,
        status: int | None = None,
        retryable: bool | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        self.message = mask_phones(message)
        self.operation = operation
        self.order_id = order_id
        self.attempts = attempts
        self.status = status
        self.retryable = self.default_retryable if retryable is None else retryable
        #: The decoded payload of the API's answer, where one was read (see each error); else None.
        self.payload = payload
        #: Whether an earlier attempt of the same call may have been processed by the server.
        self.previous_outcome_unknown = False
        super().__init__(self.message)

    @property
    def maybe_processed(self) -> bool:
        """Whether the server may have processed the request that failed with this error.

        False only where the failure proves it was not: nothing was sent (a local check, no
        connection), or the answer says so (429, 503, the API's own error message).
        """
        return False

    @property
    def outcome_unknown(self) -> bool:
        """Whether the call may have had its effect although it failed.

        True when this attempt, or an earlier one of the same call, may have been processed.
        """
        return self.maybe_processed or self.previous_outcome_unknown

    def _context(self) -> dict[str, object]:
        context: dict[str, object] = {
            "operation": self.operation,
            "order_id": self.order_id,
            "status": self.status,
            "attempts": self.attempts,
        }
        shown = {name: value for name, value in context.items() if value is not None}
        if self.previous_outcome_unknown:
            shown["previous_outcome_unknown"] = True
        return shown

    def __str__(self) -> str:
        context = ", ".join(f"{name}={value!r}" for name, value in self._context().items())
        return f"{self.message} ({context})" if context else self.message

    def __repr__(self) -> str:
        context = "".join(f", {name}={value!r}" for name, value in self._context().items())
        return f"{type(self).__name__}({self.message!r}{context})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive the default pickling of exceptions, and task
        # queues pickle the exceptions of failed jobs.
        # The raw answer an API error may keep for the idempotency store stays in this process.
        state = {name: value for name, value in self.__dict__.items() if name != "_api_answer"}
        if isinstance(state.get("payload"), Mapping):
            # A result backend keeps what it pickles: the member's phone goes masked.
            state["payload"] = _masked(state["payload"])
        return (_rebuild, (type(self), state))


def _masked(value: Any, key: str = "") -> Any:
    """A copy of a decoded *value* with member identifiers and phones in its text masked.

    Strings under an ``…identifier`` or ``phone`` key are masked whole (``7999***1122``),
    ids (``…id``) are kept as they are, phones inside any other text are masked.
    """
    if isinstance(value, str):
        if key.endswith("identifier") or key == "phone":
            return mask_identifier(value)
        return value if key.endswith("id") else mask_phones(value)
    if isinstance(value, Mapping):
        return {name: _masked(item, str(name)) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(item, key) for item in value]
    return value


def _rebuild(cls: type[LoyaltyError], state: dict[str, Any]) -> LoyaltyError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    error.args = (state.get("message", ""),)
    return error


class ValidationError(LoyaltyError, ValueError):
    """The request was rejected locally, before anything was sent; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str, operation: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}", operation=operation)


class APIError(LoyaltyError):
    """The API answered, and the answer is an error.

    ``message`` is the API's own message (phone numbers masked); ``payload`` the decoded payload of
    the answer, if it had one; ``retry_after`` the seconds of a ``Retry-After`` header, if any.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **context: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **context)


class BadRequestError(APIError):
    """The API refused the request as invalid (400, or another 4xx such as 405 and 406)."""


class AuthenticationError(APIError):
    """Wrong ``shop_id`` (401) or a missing or wrong ``shop_secret`` (403)."""


class NotFoundError(APIError):
    """No such order or no such loyalty member (404 or the API's "not found" messages)."""


class OrderStatusError(APIError):
    """The order is not in a state that allows the operation. Terminal: retrying never helps.

    ``previous_outcome_unknown`` is true when an earlier attempt of the same call may have been
    processed: a ``cancel`` whose first answer was lost fails like this on the retry although the
    order was cancelled by that first attempt. Check ``details()`` before treating it as a failure.
    """

    def __init__(
        self, message: str, *, previous_outcome_unknown: bool = False, **context: Any
    ) -> None:
        super().__init__(message, **context)
        self.previous_outcome_unknown = previous_outcome_unknown

    @property
    def hint(self) -> str | None:
        """The likely cause, and where to look; ``str()`` shows it after the API's message."""
        if self.previous_outcome_unknown:
            return (
                "an earlier attempt of this same call was most likely processed: check details() "
                "before treating this as a failure"
            )
        return _ORDER_STATUS_HINTS.get(self.operation or "")

    def __str__(self) -> str:
        shown = super().__str__()
        hint = self.hint
        return f"{shown}; {hint}" if hint else shown


_ORDER_STATUS_HINTS = {
    "change": (
        "change needs a confirmed order: confirm it first (a cancelled order cannot be "
        "changed); see details()"
    ),
    "cancel": (
        "the order is most likely cancelled already (a cancel is final); see details() or the "
        "member's history()"
    ),
    "confirm": "confirm needs an applied order that is not cancelled; see details()",
    "apply": (
        "apply replaces the cart only while the order is 'created'; a confirmed order's cart "
        "changes with change(); see details()"
    ),
}


class RateLimitError(APIError):
    """Too many requests (429). ``retry_after`` is the server's wait in seconds, if it sent one."""

    default_retryable = True


class ServerError(APIError):
    """The server or a proxy in front of it failed (5xx)."""

    default_retryable = True

    @property
    def maybe_processed(self) -> bool:
        """True but for a 503 ("temporarily offline for maintenance": nothing was processed)."""
        return self.status != 503


class TransportError(LoyaltyError):
    """No usable answer arrived.

    ``request_sent`` is false only when the request provably never reached the server (the
    connection was never established); otherwise the server may have processed it.
    """

    default_retryable = True

    def __init__(self, message: str, *, request_sent: bool, **context: Any) -> None:
        self.request_sent = request_sent
        super().__init__(message, **context)

    @property
    def maybe_processed(self) -> bool:
        """Whether any of the request may have left this process (``request_sent``)."""
        return self.request_sent


class ConnectError(TransportError):
    """The connection could not be established (DNS, refused, TLS, connect timeout)."""


class TimeoutError(TransportError, builtins.TimeoutError):  # noqa: A001 - the name of the tree
    """An attempt ran out of time (its own timeout, or the call's overall deadline)."""


class MalformedResponseError(LoyaltyError):
    """An answer that is not the documented envelope: HTML, invalid JSON, wrong field types.

    ``payload`` is the decoded payload when the envelope itself could be read (so the amounts
    of an answer whose other fields did not fit the model are still at hand), else ``None``.
    """

    @property
    def maybe_processed(self) -> bool:
        """True for an unreadable 2xx (it was processed) or an answer without a status."""
        return self.status is None or 200 <= self.status < 300


class NotAnApiError(MalformedResponseError):
    """The answer is not one of the REES46 API's: most likely the base URL is wrong.

    An HTML or empty 404, a 4xx that is not the API's JSON envelope: whatever answered does not
    serve the API (another site, a proxy's page, a path missing from ``base_url``). It is never
    a :class:`NotFoundError`, which means that the API has no such order or member. Not
    retryable: check ``base_url`` (``REES46_BASE_URL`` for ``from_env()`` and the command line).
    """


class OutcomeUnknownError(LoyaltyError):
    """A ``change`` (or, on a record, another call) may or may not have been applied.

    ``change`` is not safe to repeat: a second one returns ``order_total_change`` 0 and the
    refund amount of the first is lost. So it is not sent again, and every mutating call on its
    order is refused until ``await client.reconcile(order_id=...)`` finds out what happened (and
    records it: a redelivered identical call then gets the derived result). The failure that left
    the outcome unknown is ``__cause__``; ``payload`` is the payload of the answer when one
    arrived but could not be read whole (it may hold ``order_total_change``);
    ``idempotency_key`` the caller's key of the call, to pass to ``reconcile``.
    """

    def __init__(self, message: str, *, idempotency_key: str | None = None, **context: Any) -> None:
        self.idempotency_key = idempotency_key
        super().__init__(message, **context)

    @property
    def maybe_processed(self) -> bool:
        """Always true: that is what this error says."""
        return True


class IdempotencyError(LoyaltyError):
    """An idempotency key was reused with another request, or a lease wait ran out."""
