"""The two types that travel the middleware chain, and the shape of a middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from attrs import field, frozen

from ._operations import Operation
from ._redact import identifier_repr, mask_identifier

__all__ = ["ApiRequest", "ApiResponse", "Handler", "Middleware", "SendRecord", "Transport"]


class SendRecord:
    """Whether one call may have had an effect on the server so far, for the idempotency layer.

    The one mutable thing that travels the chain, and only downwards: the idempotency middleware
    makes one per mutating call and passes it on the request (:attr:`ApiRequest.send_record`).
    ``writing`` is set by the transport as the attempt in flight may start writing its request
    (aiohttp's request signals narrow it to the moment the first byte goes); ``unknown`` by the
    retry middleware when a finished attempt may have been processed, which the attempt's error
    says (:attr:`~rees46_loyalty.errors.LoyaltyError.maybe_processed`).

    Everything else an attempt learns is in what it returns or raises. This cannot be: a call
    cancelled half-way raises the caller's ``CancelledError``, which carries nothing, and a
    middleware of the caller's may replace any exception on its way up; yet the idempotency
    layer must still tell "no byte was written" (the change may be sent again) from "some may
    have been" (its outcome is unknown).
    """

    __slots__ = ("unknown", "writing")

    def __init__(self) -> None:
        self.writing = False
        self.unknown = False

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
    #: What the idempotency layer did with the call: ``"sent"`` for a call it recorded.
    idempotency: str | None = None
    #: Whether the call may have had an effect so far (a mutating call with the layer on).
    send_record: SendRecord | None = field(default=None, repr=False, eq=False)

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
            "idempotency": self.idempotency,
            "send_record": self.send_record,
        }
        fields.update(changes)
        return ApiRequest(**fields)

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
    """An HTTP answer; ``result`` is the decoded result model once the errors middleware ran.

    ``attempts`` and ``idempotency`` say how the call got it, for the layers above the retry
    and idempotency middlewares (the call's span): the attempts made, and for an answer from
    the idempotency store ``"replayed"`` or ``"waited"`` (with 0 attempts). A call the layer
    recorded and sent keeps ``idempotency=None``: no copy of each answer is made to say so.
    """

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    result: Any = None
    attempts: int = 1
    idempotency: str | None = None

    def replace(self, **changes: Any) -> ApiResponse:
        """A copy with *changes* (see :meth:`ApiRequest.replace`)."""
        fields: dict[str, Any] = {
            "status": self.status,
            "headers": self.headers,
            "body": self.body,
            "result": self.result,
            "attempts": self.attempts,
            "idempotency": self.idempotency,
        }
        fields.update(changes)
        return ApiResponse(**fields)


#: The next step of the chain: takes a request, returns its response.
Handler = Callable[[ApiRequest], Awaitable[ApiResponse]]
#: ``async (request, call_next) -> response``, the shape of aiohttp's own middlewares.
Middleware = Callable[[ApiRequest, Handler], Awaitable[ApiResponse]]
#: The last handler: ``async (request) -> response``, the ``transport=`` of a client. It gets
#: the request as it goes on the wire (``body`` and ``data`` with the shop's credentials) and
#: returns the answer as it came; see the testing page.
Transport = Callable[[ApiRequest], Awaitable[ApiResponse]]
