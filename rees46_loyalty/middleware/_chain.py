"""The client's chain, assembled from its options (the drawing is in this package's docstring).

The transport, the last handler, is given: it lives above the middlewares (it holds the aiohttp
session), so this module never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from yarl import URL

from .._clock import Clock
from .._hooks import HookCaller, Hooks, RetryRecord, callers
from .._http import Handler, Middleware
from .._policy import RetryPolicy
from ..idempotency import IdempotencyStore, MemoryIdempotencyStore
from . import compose
from .auth import AuthMiddleware
from .errors import errors_middleware
from .idempotency import IdempotencyMiddleware
from .logging import LoggingMiddleware
from .retry import RetryMiddleware

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["Chain", "idempotency_store"]


def idempotency_store(
    option: IdempotencyStore | Literal["memory"] | None, *, clock: Clock, timeout: float
) -> IdempotencyStore | None:
    """The store of the ``idempotency`` option, checked against the per-attempt *timeout*.

    ``"memory"`` makes a memory store whose lease outlasts an attempt, whatever the timeout.
    """
    if option == "memory":
        lease = max(60.0, timeout / 0.9 + 1.0)
        return MemoryIdempotencyStore(clock=clock, lease=lease, ttl=max(24 * 3600, lease))
    if option is not None and option.lease * 0.9 < timeout:
        # A call must end inside 90% of its lease: a change cut short there by its own
        # client would be an unknown outcome, and one that never fits is never sent.
        raise ValueError(
            f"the idempotency store's lease ({option.lease:g}s) is too short for "
            f"timeout={timeout:g}: one attempt must fit in 90% of the lease; lower "
            "timeout or give the store a longer lease"
        )
    return option


class Chain:
    """The middlewares of one client in front of its transport, composed once.

    Outermost first: the call span, idempotency, retry, then per attempt the attempt span, the
    caller's middlewares, logging, errors and auth. :meth:`with_retry` makes the chain of a
    view (``LoyaltyClient.with_options``): the same middlewares, another retry policy.
    """

    __slots__ = (
        "_clock",
        "_inner",
        "_on_retry",
        "_outer",
        "_transport",
        "auth",
        "handler",
        "retry",
    )

    def __init__(
        self,
        *,
        shop_id: str,
        shop_secret: str,
        base_url: URL,
        retry: RetryPolicy,
        middlewares: Sequence[Middleware],
        store: IdempotencyStore | None,
        idempotency_wait: float | None,
        hooks: Hooks | None,
        tracing: bool | TracerProvider | None,
        clock: Clock,
        transport: Handler,
    ) -> None:
        on_request, on_response, on_retry = callers(hooks)
        outer: list[Middleware] = []
        per_attempt: list[Middleware] = []
        if tracing is not None and tracing is not False:
            try:
                from . import tracing as spans  # noqa: PLC0415 - the otel extra
            except ImportError as exc:
                raise ImportError(
                    "tracing needs OpenTelemetry: pip install 'rees46-loyalty[otel]'"
                ) from exc
            tracer = spans.tracer_of(None if tracing is True else tracing)
            outer.append(spans.CallSpanMiddleware(tracer, idempotency=store is not None))
            per_attempt.append(spans.AttemptSpanMiddleware(tracer, base_url))
        if store is not None:
            wait = store.lease if idempotency_wait is None else idempotency_wait
            outer.append(
                IdempotencyMiddleware(store, shop_id=shop_id, clock=clock, wait_timeout=wait)
            )
        #: The innermost middleware: the client asks it whether a request holds the secret.
        self.auth = AuthMiddleware(shop_id, shop_secret)
        self._clock = clock
        self._on_retry: HookCaller[RetryRecord] = on_retry
        self._outer = outer
        self._inner: list[Middleware] = [
            *per_attempt,
            *middlewares,
            LoggingMiddleware(clock, on_request, on_response),
            errors_middleware,
            self.auth,
        ]
        self._transport = transport
        self.retry = RetryMiddleware(retry, clock=clock, on_retry=on_retry)
        self.handler = self._compose()

    def with_retry(self, retry: RetryPolicy) -> Chain:
        """The same chain with another retry policy (and a retry budget of its own)."""
        chain = object.__new__(Chain)
        for name in Chain.__slots__:
            object.__setattr__(chain, name, getattr(self, name))
        chain.retry = RetryMiddleware(retry, clock=self._clock, on_retry=self._on_retry)
        chain.handler = chain._compose()
        return chain

    def _compose(self) -> Handler:
        return compose([*self._outer, self.retry, *self._inner], self._transport)
