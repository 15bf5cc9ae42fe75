"""A loyalty member's orders, as the ``history`` method returns them."""

from __future__ import annotations

from decimal import Decimal

from attrs import frozen

__all__ = ["HistoryItem", "HistoryOrder", "OrderHistory"]


@frozen(kw_only=True)
class HistoryItem:
    """A line of a past order.

    ``name`` is ``"---"`` for products missing from the feed; ``price`` is the price per unit
    after discounts.
    """

    id: str
    name: str | None = None
    quantity: Decimal = Decimal(0)
    price: Decimal = Decimal(0)


@frozen(kw_only=True)
class HistoryOrder:
    """A past order; ``total`` is what the buyer paid (the order's ``order_to_pay``)."""

    id: str
    date: str | None = None
    status: str | None = None
    total: Decimal = Decimal(0)
    items: tuple[HistoryItem, ...] = ()


@frozen(kw_only=True)
class OrderHistory:
    """The orders of one loyalty member."""

    orders: tuple[HistoryOrder, ...] = ()
