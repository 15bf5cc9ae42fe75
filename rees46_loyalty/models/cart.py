"""What the shop sends: cart lines and the requests that carry them.

A checkout request's fields are declared once, here: :class:`CheckoutRequest` names each field
with its rule (``metadata={"rule": ...}``, which ``_validation`` walks to check and encode a
request in one pass), and :class:`CheckoutFields` gives the client methods their typed keyword
arguments. A new optional field is a line in each, side by side below; a test holds the two to
the same names.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TypedDict

from attrs import field, frozen

from .._redact import identifier_repr

__all__ = ["CartItem", "CheckoutFields", "CheckoutRequest", "MemberRequest", "OrderRequest"]


@frozen(kw_only=True)
class CartItem:
    """One line of a cart.

    ``price`` is the price of one unit before any discount. Money and quantities are
    :class:`~decimal.Decimal` (or ``int``); a ``float`` is refused because it cannot hold kopecks
    exactly. ``discountable`` / ``bonusable`` / ``rewardable`` set to ``False`` forbid discounts,
    paying with bonuses or earning bonuses for this line; ``None`` leaves the API's default.
    """

    product_id: str
    price: Decimal | int
    quantity: Decimal | int
    discountable: bool | None = None
    bonusable: bool | None = None
    rewardable: bool | None = None


@frozen(kw_only=True)
class CheckoutRequest:
    """The body of ``estimate``, ``apply`` and ``change`` (without the shop's credentials).

    Each field names the rule that checks it (``metadata={"rule": ...}``); they are sent in
    this order, each left out when ``None``.
    """

    cart_items: tuple[CartItem, ...] = field(metadata={"rule": "cart"})
    order_id: str | None = field(default=None, metadata={"rule": "order_id"})
    identifier: str | None = field(
        default=None, repr=identifier_repr, metadata={"rule": "identifier"}
    )
    payment_type: str | None = field(default=None, metadata={"rule": "text"})
    promo_codes: tuple[str, ...] | None = field(default=None, metadata={"rule": "codes"})
    certificates: tuple[str, ...] | None = field(default=None, metadata={"rule": "codes"})
    charge_bonuses: bool | None = field(default=None, metadata={"rule": "flag"})
    bonuses_amount: Decimal | int | None = field(default=None, metadata={"rule": "amount"})
    use_personal_certificates: bool | None = field(default=None, metadata={"rule": "flag"})
    location_id: str | None = field(default=None, metadata={"rule": "text"})
    stream: str | None = field(default=None, metadata={"rule": "text"})
    current_time: str | None = field(default=None, metadata={"rule": "time"})
    subscription: str | None = field(default=None, metadata={"rule": "text"})


class CheckoutFields(TypedDict, total=False):
    """The optional keyword arguments of ``estimate``, ``apply`` and ``change``.

    Each may be left out or given as ``None``: not sent. The operation pages say what each
    field means to the API.
    """

    identifier: str | None
    """The loyalty member: a phone number as digits, country code first (``7XXXXXXXXXX``)."""
    payment_type: str | None
    """How the buyer pays, for example ``cash``, ``card``, ``sbp``."""
    promo_codes: Iterable[str] | None
    """Promo codes to apply (a list: a single string is refused)."""
    certificates: Iterable[str] | None
    """Prepaid certificate codes to apply."""
    charge_bonuses: bool | None
    """``True`` pays part of the order with the member's bonuses; needs ``identifier``."""
    bonuses_amount: Decimal | int | None
    """The most bonuses to spend, 0 or more."""
    use_personal_certificates: bool | None
    """Apply the member's personal certificates."""
    location_id: str | None
    """City or store, as in the product feed."""
    stream: str | None
    """Sales channel, for example ``pos``, ``web``, ``app``."""
    current_time: str | None
    """Local time at the point of sale, ``HH:MM`` (24-hour)."""
    subscription: str | None
    """The member's subscription code."""


@frozen(kw_only=True)
class OrderRequest:
    """The body of ``confirm`` and ``cancel``, and the query of ``details``."""

    order_id: str


@frozen(kw_only=True)
class MemberRequest:
    """The query of ``history``."""

    identifier: str = field(repr=identifier_repr)
