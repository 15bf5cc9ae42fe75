"""The middleware chain.

A middleware is ``async (request, call_next) -> response`` over :class:`ApiRequest` and
:class:`ApiResponse`, the shape of aiohttp's own middlewares; the first one listed is the
outermost. The client's chain, outermost first::

    call span  ->  idempotency  ->  retry                   (once per call)
      ->  attempt span  ->  your middlewares  ->  logging  ->  errors  ->  auth  ->  transport
                                                              (once per attempt)

The spans are there with ``tracing=`` on, the idempotency layer unless ``idempotency=None``.
So your middlewares run once per attempt (never for a call answered from the idempotency
store), see typed errors, and never see the shop secret.
"""

from __future__ import annotations

from collections.abc import Sequence as _Sequence

from .._http import ApiRequest, ApiResponse, Handler, Middleware
from .auth import AuthMiddleware
from .errors import errors_middleware
from .logging import LoggingMiddleware
from .retry import RetryBudget, RetryMiddleware

__all__ = [
    "ApiRequest",
    "ApiResponse",
    "AuthMiddleware",
    "Handler",
    "LoggingMiddleware",
    "Middleware",
    "RetryBudget",
    "RetryMiddleware",
    "compose",
    "errors_middleware",
]


def compose(middlewares: _Sequence[Middleware], handler: Handler) -> Handler:
    """Wrap *handler* in *middlewares*, the first listed outermost. Built once, called often."""
    for middleware in reversed(middlewares):
        handler = _bind(middleware, handler)
    return handler


def _bind(middleware: Middleware, call_next: Handler) -> Handler:
    # A lambda, not a coroutine function: the middleware's own coroutine is the only frame.
    return lambda request: middleware(request, call_next)
