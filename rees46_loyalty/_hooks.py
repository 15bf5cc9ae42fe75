"""Instrumentation hooks: plain callables that receive a frozen record of what the SDK did.

Count retries in Prometheus, time attempts in StatsD or feed a dashboard without subclassing
anything::

    def count_retry(record: RetryRecord) -> None:
        RETRIES.labels(record.operation, record.error_type).inc()

    client = LoyaltyClient(..., hooks=Hooks(on_retry=count_retry))

Records hold no secret, and their ``identifier`` is masked as ``7999***1122``. The
``error`` they carry is the SDK's exception: its message is safe to show, its ``payload`` is
the API's answer as it came.
A hook that raises is logged (at ERROR, with its traceback) and the call goes on: a broken
metrics exporter must never lose a loyalty operation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from attrs import field, frozen

from .errors import LoyaltyError

__all__ = ["HookCaller", "Hooks", "RequestRecord", "ResponseRecord", "RetryRecord", "callers"]

logger = logging.getLogger("rees46_loyalty")

RecordT = TypeVar("RecordT")


@frozen(kw_only=True)
class RequestRecord:
    """An attempt about to be sent (``on_request``).

    Attributes:
        operation: The API operation: ``"estimate"``, ``"cancel"``, ...
        order_id: The order the call is about, if any.
        identifier: The member's phone number, masked (``7999***1122``).
        attempt: 1 for the first request, 2 for the first retry, ...
        idempotency: ``"sent"`` when the idempotency layer recorded the call (a mutating call
            with the layer on); ``None`` for reads and when the layer is off. Calls answered
            from the store make no attempt, so no record.
    """

    operation: str
    order_id: str | None
    identifier: str | None
    attempt: int
    idempotency: str | None


@frozen(kw_only=True)
class ResponseRecord:
    """An attempt that got an answer or failed (``on_response``).

    Attributes:
        operation: The API operation.
        order_id: The order the call is about, if any.
        identifier: The member's phone number, masked.
        attempt: 1 for the first request, 2 for the first retry, ...
        idempotency: ``"sent"`` or ``None``, as in :class:`RequestRecord`.
        status: The HTTP status, or ``None`` when no answer came (a connection error, a
            timeout, an interruption).
        elapsed: Seconds the attempt took.
        error: The :class:`~rees46_loyalty.LoyaltyError` the attempt ended with, or ``None``
            when it succeeded or was interrupted.
        interrupted: The class name of what interrupted the attempt (``"CancelledError"``
            when the caller gave up on the call), or ``None``.
    """

    operation: str
    order_id: str | None
    identifier: str | None
    attempt: int
    idempotency: str | None
    status: int | None
    elapsed: float
    error: LoyaltyError | None
    interrupted: str | None = None


@frozen(kw_only=True)
class RetryRecord:
    """A failed attempt that will be retried after ``wait`` seconds (``on_retry``).

    Attributes:
        operation: The API operation.
        order_id: The order the call is about, if any.
        identifier: The member's phone number, masked.
        attempt: The attempt that failed.
        idempotency: ``"sent"`` or ``None``, as in :class:`RequestRecord`.
        wait: Seconds until the next attempt.
        elapsed: Seconds since the call's first attempt started.
        error: The :class:`~rees46_loyalty.LoyaltyError` of the failed attempt.
    """

    operation: str
    order_id: str | None
    identifier: str | None
    attempt: int
    idempotency: str | None
    wait: float
    elapsed: float
    error: LoyaltyError

    @property
    def error_type(self) -> str:
        """The failed attempt's error class name, a low-cardinality label for metrics."""
        return type(self.error).__name__


def _callables(value: Any) -> tuple[Callable[[Any], object], ...]:
    if value is None:
        return ()
    if callable(value):
        return (value,)
    hooks = tuple(value)
    for hook in hooks:
        if not callable(hook):
            raise TypeError(f"a hook must be callable, got {type(hook).__name__}")
    return hooks


@frozen
class Hooks:
    """The callables to run on each attempt, response and retry; each a callable or several.

    Hooks run inline on the event loop, so keep them quick (increment a counter, append to a
    buffer) and never block. A hook that raises is logged and the call goes on.

    Attributes:
        on_request: Called with a :class:`RequestRecord` before each attempt is sent.
        on_response: Called with a :class:`ResponseRecord` after each attempt.
        on_retry: Called with a :class:`RetryRecord` before the wait of each retry.
    """

    on_request: tuple[Callable[[RequestRecord], object], ...] = field(
        default=(), converter=_callables
    )
    on_response: tuple[Callable[[ResponseRecord], object], ...] = field(
        default=(), converter=_callables
    )
    on_retry: tuple[Callable[[RetryRecord], object], ...] = field(default=(), converter=_callables)


class HookCaller(Generic[RecordT]):
    """Runs a group of hooks; a hook's failure is logged, never passed to the caller."""

    __slots__ = ("_hooks", "_name")

    def __init__(self, name: str, hooks: Iterable[Callable[[RecordT], object]]) -> None:
        self._name = name
        self._hooks = tuple(hooks)

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def __call__(self, record: RecordT) -> None:
        for hook in self._hooks:
            try:
                hook(record)
            except Exception:  # noqa: PERF203 - one failing hook must not stop the others
                logger.exception("an %s hook raised; the call goes on", self._name)


def callers(
    hooks: Hooks | None,
) -> tuple[HookCaller[RequestRecord], HookCaller[ResponseRecord], HookCaller[RetryRecord]]:
    """The three hook groups of *hooks*, ready to call."""
    hooks = Hooks() if hooks is None else hooks
    return (
        HookCaller("on_request", hooks.on_request),
        HookCaller("on_response", hooks.on_response),
        HookCaller("on_retry", hooks.on_retry),
    )


def elapsed_ms(seconds: float) -> float:
    """*seconds* as milliseconds, rounded for a log record."""
    return round(seconds * 1000, 3)
