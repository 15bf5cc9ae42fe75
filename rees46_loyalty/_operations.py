"""The operation table: one declaration per API method, read by the client and the middlewares."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from attrs import frozen

from .models import OrderCalculation, OrderChange, OrderHistory, OrderRef
from .models._lines import OrderLines

if TYPE_CHECKING:
    from yarl import URL

__all__ = [
    "APPLY",
    "CANCEL",
    "CHANGE",
    "CONFIRM",
    "DETAILS",
    "ESTIMATE",
    "HISTORY",
    "OPERATIONS",
    "ORDER_LINES",
    "Operation",
    "ResultT",
    "RetrySafety",
]


class RetrySafety(enum.Enum):
    """What it costs to send an operation twice; the retry middleware decides from it."""

    #: A duplicate has no effect: retried on any transient failure.
    SAFE = "safe"
    #: Like SAFE, but a duplicate of a processed cancel fails with OrderStatusError.
    CANCEL = "cancel"
    #: A duplicate does harm: resent only when the first request provably never arrived.
    ONCE = "once"


ResultT = TypeVar("ResultT")


@frozen
class Operation(Generic[ResultT]):
    """One method of the checkout API."""

    name: str
    method: str
    path: str
    result_type: type[ResultT]
    safety: RetrySafety
    #: Whether the operation changes state on the server (what the idempotency layer records).
    mutating: bool

    def url(self, base_url: URL) -> URL:
        """The operation's URL under *base_url*, whose path (a proxy's prefix) is kept."""
        return base_url.with_path(base_url.path.rstrip("/") + self.path)


_PREFIX = "/loyalty/checkout/"
_SAFE, _CANCEL, _ONCE = RetrySafety.SAFE, RetrySafety.CANCEL, RetrySafety.ONCE

ESTIMATE = Operation(
    "estimate", "POST", _PREFIX + "estimate", OrderCalculation, _SAFE, mutating=False
)
APPLY = Operation("apply", "POST", _PREFIX + "apply", OrderCalculation, _SAFE, mutating=True)
CONFIRM = Operation("confirm", "POST", _PREFIX + "confirm", OrderRef, _SAFE, mutating=True)
CANCEL = Operation("cancel", "POST", _PREFIX + "cancel", OrderRef, _CANCEL, mutating=True)
CHANGE = Operation("change", "POST", _PREFIX + "change", OrderChange, _ONCE, mutating=True)
DETAILS = Operation("details", "GET", _PREFIX + "details", OrderCalculation, _SAFE, mutating=False)
#: ``details`` as the idempotency layer reads it before a ``change``: decoded into the lines and
#: ``order_to_pay`` only, all that the change's guard and its reconciliation read.
ORDER_LINES = Operation("details", "GET", _PREFIX + "details", OrderLines, _SAFE, mutating=False)
HISTORY = Operation("history", "GET", _PREFIX + "history", OrderHistory, _SAFE, mutating=False)

OPERATIONS: dict[str, Operation[Any]] = {
    op.name: op for op in (ESTIMATE, APPLY, CONFIRM, CANCEL, CHANGE, DETAILS, HISTORY)
}
