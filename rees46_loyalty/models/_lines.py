"""The part of an order that a ``change`` is reconciled from: its lines and ``order_to_pay``.

The idempotency layer reads the order before every ``change`` and keeps that answer; an
unknown outcome is later decided from it (see ``_reconcile``). Only these fields take part,
so only these are decoded: the same types and bounds as in :class:`OrderCalculation`, at a
tenth of the cost of the whole order (the other fields of an item are most of the answer).
"""

from __future__ import annotations

from decimal import Decimal

from attrs import frozen

__all__ = ["OrderLine", "OrderLines"]

_ZERO = Decimal(0)


@frozen(kw_only=True)
class OrderLine:
    """A line of the order: what the cart holds (fields as in :class:`LineItem`)."""

    product_id: str | None = None
    quantity: Decimal = _ZERO
    price: Decimal = _ZERO
    discountable: bool | None = None
    bonusable: bool | None = None
    rewardable: bool | None = None


@frozen(kw_only=True)
class OrderLines:
    """An order's lines and the amount it leaves to pay (fields as in :class:`OrderCalculation`)."""

    order_to_pay: Decimal
    items: tuple[OrderLine, ...] = ()
