"""The fake server's ledger: every request it saw and every effect it committed."""

from __future__ import annotations

from decimal import Decimal

from attrs import define, field, frozen

__all__ = ["Effect", "Ledger", "RequestRecord"]

_ZERO = Decimal(0)


@frozen(kw_only=True)
class Effect:
    """A state change the server committed: what a test counts as "it happened".

    ``bonuses_delta`` is the change of the member's bonus balance; ``order_total_change`` the
    money that moved because of a ``change`` (negative: to return to the buyer).
    """

    seq: int
    operation: str
    order_id: str
    identifier: str | None
    order_to_pay: Decimal
    order_total_change: Decimal = _ZERO
    bonuses_delta: Decimal = _ZERO
    certificates_delta: Decimal = _ZERO


@frozen(kw_only=True)
class RequestRecord:
    """A request that reached the server, and what became of it.

    ``status`` is the HTTP status sent, or ``None`` when the connection was dropped;
    ``fault`` names the injected fault, if any; ``committed`` tells whether it changed state;
    ``request_id`` is the ``X-Request-Id`` header the client sent, if any (a test's own tag, to
    tell its calls apart).
    """

    seq: int
    operation: str
    order_id: str | None
    status: int | None
    fault: str | None
    committed: bool
    request_id: str | None = None


@define
class Ledger:
    """What the fake server did, in order."""

    effects: list[Effect] = field(factory=list)
    requests: list[RequestRecord] = field(factory=list)

    def effects_for(
        self, operation: str | None = None, order_id: str | None = None
    ) -> list[Effect]:
        """The committed effects, filtered by operation and / or order id."""
        return [
            effect
            for effect in self.effects
            if (operation is None or effect.operation == operation)
            and (order_id is None or effect.order_id == order_id)
        ]

    def requests_for(
        self, operation: str | None = None, order_id: str | None = None
    ) -> list[RequestRecord]:
        """The requests received, filtered by operation and / or order id."""
        return [
            request
            for request in self.requests
            if (operation is None or request.operation == operation)
            and (order_id is None or request.order_id == order_id)
        ]

    def refunds(self, order_id: str) -> Decimal:
        """The sum of ``order_total_change`` over the committed changes of *order_id*."""
        return sum((e.order_total_change for e in self.effects_for("change", order_id)), _ZERO)
