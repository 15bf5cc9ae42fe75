"""What the shop sends: cart lines and the checkout request that carries them."""

from __future__ import annotations

from decimal import Decimal

from attrs import field, frozen

from .._redact import identifier_repr

__all__ = ["CartItem", "CheckoutRequest", "MemberRequest", "OrderRequest"]


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
    """The body of ``estimate``, ``apply`` and ``change`` (without the shop's credentials)."""

    cart_items: tuple[CartItem, ...]
    order_id: str | None = None
    identifier: str | None = field(default=None, repr=identifier_repr)
    payment_type: str | None = None
    promo_codes: tuple[str, ...] | None = None
    certificates: tuple[str, ...] | None = None
    charge_bonuses: bool | None = None
    bonuses_amount: Decimal | int | None = None
    use_personal_certificates: bool | None = None
    location_id: str | None = None
    stream: str | None = None
    current_time: str | None = None
    subscription: str | None = None


@frozen(kw_only=True)
class OrderRequest:
    """The body of ``confirm`` and ``cancel``, and the query of ``details``."""

    order_id: str


@frozen(kw_only=True)
class MemberRequest:
    """The query of ``history``."""

    identifier: str = field(repr=identifier_repr)
