"""The two types that travel the middleware chain, and the shape of a middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from attrs import field, frozen

from ._operations import Operation
from ._redact import identifier_repr, mask_identifier

__all__ = ["ApiRequest", "ApiResponse", "Handler", "Middleware", "SendTrace"]


class SendTrace:
    """What happened to one call so far, for the layers outside the one that knows.

    ``writing`` is set by the transport as the current attempt starts writing its request (and
    cleared when an attempt ends in a failure that proves nothing was processed); ``unknown`` is
    set by the retry middleware when a finished attempt may have been processed. An outer layer
    tells "nothing was processed" from "unknown" by :attr:`maybe_processed`, also when the call
    is cancelled half-way. ``attempts`` counts the attempts begun (the retry middleware keeps
    it); ``idempotency`` is what the idempotency layer did with the call (``"sent"``,
    ``"replayed"`` or ``"waited"``). Logs, hooks and spans read them.
    """

    __slots__ = ("attempts", "idempotency", "unknown", "writing")

    def __init__(self) -> None:
        self.writing = False
        self.unknown = False
        self.attempts = 0
        self.idempotency: str | None = None

    @property
    def maybe_processed(self) -> bool:
        """Whether any attempt of the call, the current one included, may have been processed."""
        return self.writing or self.unknown

    def attempt_failed(self, maybe_processed: bool) -> None:
        """An attempt ended in a failure; *maybe_processed* says whether it may have had effect."""
        self.unknown = self.unknown or maybe_processed
        self.writing = False


@frozen(kw_only=True)
class ApiRequest:
    """One call of an API operation, as the middlewares see it.

    ``data`` holds the API fields (the JSON body of a POST, the query of a GET); ``body`` is
    ``data`` already encoded as the JSON of a POST, so that it is encoded once. Replacing
    ``data`` drops ``body`` (the transport then encodes ``data``). The shop's credentials are
    added by the innermost middleware, so no other middleware ever holds the secret;
    ``secrets`` lists the values that must be redacted from anything shown.
    Change a request with :meth:`replace` (or :func:`attrs.evolve`).
    """

    operation: Operation[Any]
    data: Mapping[str, Any] = field(repr=False)
    body: bytes | None = field(default=None, repr=False)
    order_id: str | None = None
    identifier: str | None = field(default=None, repr=identifier_repr)
    idempotency_key: str | None = None
    #: 1 for the first request sent, 2 for the first retry, ...
    attempt: int = 1
    #: Seconds allowed for one attempt.
    timeout: float | None = None
    #: The moment (on the client's monotonic clock) after which no attempt may run.
    deadline: float | None = None
    headers: Mapping[str, str] = field(factory=dict)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    trace: SendTrace | None = field(default=None, repr=False, eq=False)

    def replace(self, **changes: Any) -> ApiRequest:
        """A copy with *changes*: :func:`attrs.evolve`, without its introspection per call."""
        fields: dict[str, Any] = {
            "operation": self.operation,
            "data": self.data,
            "body": self.body if "data" not in changes else None,
            "order_id": self.order_id,
            "identifier": self.identifier,
            "idempotency_key": self.idempotency_key,
            "attempt": self.attempt,
            "timeout": self.timeout,
            "deadline": self.deadline,
            "headers": self.headers,
            "secrets": self.secrets,
            "trace": self.trace,
        }
        fields.update(changes)
        return ApiRequest(**fields)

    @property
    def idempotency(self) -> str | None:
        """What the idempotency layer did with this call so far (see :class:`SendTrace`)."""
        return self.trace.idempotency if self.trace is not None else None

    def shown_fields(self, attempt: int | None = None) -> dict[str, Any]:
        """The fields of this request that log and hook records show.

        Never the secret; the member's phone masked. ``attempt`` is included when given.
        """
        fields: dict[str, Any] = {
            "operation": self.operation.name,
            "order_id": self.order_id,
            "identifier": mask_identifier(self.identifier),
            "idempotency": self.idempotency,
        }
        if attempt is not None:
            fields["attempt"] = attempt
        return fields

    @property
    def method(self) -> str:
        """The HTTP method of the operation."""
        return self.operation.method

    @property
    def path(self) -> str:
        """The URL path of the operation."""
        return self.operation.path


@frozen(kw_only=True)
class ApiResponse:
    """An HTTP answer; ``result`` is the decoded result model once the errors middleware ran."""

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    result: Any = None

    def replace(self, **changes: Any) -> ApiResponse:
        """A copy with *changes* (see :meth:`ApiRequest.replace`)."""
        fields: dict[str, Any] = {
            "status": self.status,
            "headers": self.headers,
            "body": self.body,
            "result": self.result,
        }
        fields.update(changes)
        return ApiResponse(**fields)


#: The next step of the chain: takes a request, returns its response.
Handler = Callable[[ApiRequest], Awaitable[ApiResponse]]
#: ``async (request, call_next) -> response``, the shape of aiohttp's own middlewares.
Middleware = Callable[[ApiRequest, Handler], Awaitable[ApiResponse]]
