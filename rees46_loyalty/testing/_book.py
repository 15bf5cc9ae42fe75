"""The fake server's state: members, feed, codes, certificates, orders, and the state machine.

Each operation is synchronous: between reading the request and committing its effect there is
no ``await``, so concurrent requests on one event loop never interleave inside an operation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from attrs import define, evolve, frozen

from ._ledger import Effect, Ledger
from ._program import (
    ZERO,
    Calculation,
    CartLine,
    Certificate,
    LoyaltyProgram,
    Member,
    calculate,
)

__all__ = ["ApiFailure", "CheckoutParams", "Order", "OrderBook"]


class ApiFailure(Exception):  # noqa: N818 - it is an answer, not a bug
    """An error answer of the API: HTTP status and message."""

    def __init__(self, status: int, message: str, **payload: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.payload = {"message": message, **payload}


@frozen(kw_only=True)
class CheckoutParams:
    """A validated estimate / apply / change request."""

    cart: tuple[CartLine, ...]
    order_id: str | None = None
    identifier: str | None = None
    payment_type: str | None = None
    promo_codes: tuple[str, ...] = ()
    certificates: tuple[str, ...] = ()
    charge_bonuses: bool = False
    bonuses_amount: Decimal | None = None


@define
class Order:
    """An order the server knows, with what it reserved and granted."""

    order_id: str
    status: str
    params: CheckoutParams
    calculation: Calculation
    created_at: str
    rewarded: bool = False


class OrderBook:
    """The loyalty program's state and the checkout state machine of checkout.md."""

    def __init__(self, program: LoyaltyProgram, ledger: Ledger) -> None:
        self.program = program
        self.ledger = ledger
        self.members: dict[str, Member] = {}
        self.feed: dict[str, str] = {}
        self.promo_codes: dict[str, Decimal] = {}
        self.certificates: dict[str, Certificate] = {}
        self.orders: dict[str, Order] = {}

    # -- operations ---------------------------------------------------------------------

    def estimate(self, params: CheckoutParams) -> dict[str, Any]:
        """Calculate without changing anything."""
        return self._calculate(params).payload

    def apply(self, params: CheckoutParams) -> dict[str, Any]:
        """Create the order or replace the cart of a created one; reserve what it spends."""
        order_id = _required(params.order_id)
        order = self.orders.get(order_id)
        if order is not None and order.status != "created":
            raise ApiFailure(400, "Could not apply order in its current status")
        if order is not None and order.params == params:
            return order.calculation.payload  # the same cart again: nothing changes
        member = self._member_for(params)
        if order is not None:
            self._release(order)
        calculation = self._calculate(params)
        self._reserve(member, calculation)
        self.orders[order_id] = Order(
            order_id=order_id,
            status="created",
            params=params,
            calculation=calculation,
            created_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        )
        self._record("apply", self.orders[order_id], bonuses_delta=-calculation.bonuses_used)
        return calculation.payload

    def confirm(self, order_id: str) -> dict[str, Any]:
        """Confirm a created order and grant its reward; a confirmed order answers the same."""
        order = self.orders.get(order_id)
        if order is None or order.status == "cancelled":
            raise ApiFailure(400, "Could not confirm order in its current status")
        if order.status == "created":
            order.status = "confirmed"
            order.rewarded = True
            member = self._member_of(order)
            if member is not None:
                member.bonuses += order.calculation.reward
            self._record("confirm", order, bonuses_delta=order.calculation.reward)
        return {"order_id": order_id, "identifier": order.params.identifier}

    def cancel(self, order_id: str) -> dict[str, Any]:
        """Cancel a created or confirmed order: give back what it spent, take back its reward."""
        order = self.orders.get(order_id)
        if order is None or order.status not in ("created", "confirmed"):
            raise ApiFailure(400, "Could not cancel order in its current status")
        bonuses_delta = self._release(order)
        order.status = "cancelled"
        self._record("cancel", order, bonuses_delta=bonuses_delta)
        return {"order_id": order_id, "identifier": order.params.identifier}

    def change(self, params: CheckoutParams) -> dict[str, Any]:
        """Replace the cart of a confirmed order; answer with ``order_total_change``.

        The new cart is calculated with the order's own codes, certificates and bonus settings,
        spending no more bonuses or certificate money than the order first did, so a repeated
        change finds nothing left to move and answers ``order_total_change`` 0. As the API's
        page says, added products get no discounts or rewards, and added units of a product
        earn no more reward than the product first did.
        """
        order_id = _required(params.order_id)
        order = self.orders.get(order_id)
        if order is None or order.status != "confirmed":
            raise ApiFailure(400, "Could not change order in its current status")
        old = order.calculation
        new_params = evolve(order.params, cart=params.cart)
        bonuses_delta = self._release(order)
        first_rewards = {
            item["product_id"]: item["bonuses_reward"] for item in old.payload["items"]
        }
        new = self._calculate(
            new_params,
            bonuses_cap=old.bonuses_used,
            certificate_caps=old.certificates_used,
            reward_caps=first_rewards,
        )
        member = self._member_of(order)
        self._reserve(member, new)
        if member is not None:
            member.bonuses += new.reward
        bonuses_delta += new.reward - new.bonuses_used
        order.params = new_params
        order.calculation = new
        change = new.order_to_pay - old.order_to_pay
        self._record("change", order, bonuses_delta=bonuses_delta, order_total_change=change)
        return {**new.payload, "order_total_change": change}

    def details(self, order_id: str) -> dict[str, Any]:
        """The order's current calculation."""
        order = self.orders.get(order_id)
        if order is None:
            raise ApiFailure(404, f"Order {order_id} not found")
        return order.calculation.payload

    def history(self, identifier: str) -> dict[str, Any]:
        """The member's orders, oldest first."""
        if identifier not in self.members:
            raise ApiFailure(404, "Loyalty program member is not found")
        orders = [o for o in self.orders.values() if o.params.identifier == identifier]
        return {
            "orders": [
                {
                    "id": order.order_id,
                    "date": order.created_at,
                    "status": order.status,
                    "total": str(order.calculation.order_to_pay),
                    "items": [
                        {
                            "id": item["product_id"],
                            "name": self.feed.get(item["product_id"], "---"),
                            "quantity": item["quantity"],
                            "price": item["total_after_discounts_per_product"],
                        }
                        for item in order.calculation.payload["items"]
                    ],
                }
                for order in orders
            ]
        }

    # -- bookkeeping --------------------------------------------------------------------

    def _member_for(self, params: CheckoutParams) -> Member | None:
        member = self.members.get(params.identifier) if params.identifier else None
        if params.charge_bonuses and member is None:
            raise ApiFailure(
                400, "charge_bonuses needs an existing loyalty program member", identifier=None
            )
        return member

    def _member_of(self, order: Order) -> Member | None:
        identifier = order.params.identifier
        return self.members.get(identifier) if identifier else None

    def _calculate(
        self,
        params: CheckoutParams,
        *,
        bonuses_cap: Decimal | None = None,
        certificate_caps: Mapping[str, Decimal] | None = None,
        reward_caps: Mapping[str, Decimal] | None = None,
    ) -> Calculation:
        member = self._member_for(params)
        cap = params.bonuses_amount
        if bonuses_cap is not None:
            cap = bonuses_cap if cap is None else min(cap, bonuses_cap)
        return calculate(
            cart=params.cart,
            program=self.program,
            feed=self.feed,
            member=member,
            promo_codes=self.promo_codes,
            requested_codes=params.promo_codes,
            certificates=self.certificates,
            requested_certificates=params.certificates,
            charge_bonuses=params.charge_bonuses,
            bonuses_cap=cap,
            certificate_caps=certificate_caps,
            reward_caps=reward_caps,
            order_id=params.order_id,
            payment_type=params.payment_type,
        )

    def _reserve(self, member: Member | None, calculation: Calculation) -> None:
        if member is not None:
            member.bonuses -= calculation.bonuses_used
        for code, used in calculation.certificates_used.items():
            self.certificates[code].balance -= used

    def _release(self, order: Order) -> Decimal:
        """Give back what *order* spent and take back its reward; return the bonus delta."""
        member = self._member_of(order)
        calculation = order.calculation
        delta = calculation.bonuses_used - (calculation.reward if order.rewarded else ZERO)
        if member is not None:
            member.bonuses += delta
        for code, used in calculation.certificates_used.items():
            self.certificates[code].balance += used
        return delta

    def _record(
        self,
        operation: str,
        order: Order,
        *,
        bonuses_delta: Decimal,
        order_total_change: Decimal = ZERO,
    ) -> None:
        self.ledger.effects.append(
            Effect(
                seq=len(self.ledger.effects) + 1,
                operation=operation,
                order_id=order.order_id,
                identifier=order.params.identifier,
                order_to_pay=order.calculation.order_to_pay,
                order_total_change=order_total_change,
                bonuses_delta=bonuses_delta,
                certificates_delta=-sum(order.calculation.certificates_used.values(), ZERO),
            )
        )


def _required(order_id: str | None) -> str:
    if not order_id:
        raise ApiFailure(400, "order_id is required")
    return order_id
