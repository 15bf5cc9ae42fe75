"""What the API computes: the order calculation of estimate / apply / change / details.

Attribute names are the API's own field names, so the API's documentation stays the SDK's.
Fields the API may leave out have defaults; the API's newer fields are ignored until modelled.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from attrs import field, frozen

from .._redact import identifier_repr, text_repr

__all__ = [
    "FailedCode",
    "ItemCertificate",
    "LineItem",
    "OrderCalculation",
    "OrderChange",
    "OrderRef",
    "ReferralReward",
    "RewardShare",
]

_ZERO = Decimal(0)


def _replayed() -> bool:
    # Not an API field: set by the SDK on a result replayed from the idempotency store. It takes
    # no part in equality, so a replayed result equals the original.
    return field(default=False, eq=False, metadata={"local": True})


@frozen(kw_only=True)
class RewardShare:
    """Bonuses earned by a line from one source: in all and per unit."""

    total: Decimal = _ZERO
    per_product: Decimal = _ZERO


@frozen(kw_only=True)
class ReferralReward:
    """Bonuses earned by a line through a referral program."""

    referral_program_id: int | None = None
    total: Decimal = _ZERO
    per_product: Decimal = _ZERO


@frozen(kw_only=True)
class ItemCertificate:
    """The part of a line paid with one prepaid certificate."""

    id: int | str | None = None
    code: str | None = None
    pool_id: int | str | None = None
    amount: Decimal = _ZERO
    amount_per_product: Decimal = _ZERO


@frozen(kw_only=True)
class FailedCode:
    """A promo code or certificate that the API did not apply, with its reason."""

    code: str
    #: The API's reason, its own words; phone numbers in it are masked in the repr.
    message: str | None = field(default=None, repr=text_repr)


@frozen(kw_only=True)
class LineItem:
    """One line of the calculated order.

    The ones a cashier needs: ``product_id``, ``total`` (price x quantity) and
    ``total_after_discounts``.
    """

    product_id: str | None = None
    uniqid: str | None = None
    quantity: Decimal = _ZERO
    price: Decimal = _ZERO
    total: Decimal = _ZERO
    discountable: bool | None = None
    discountable_reason: str | None = None
    bonusable: bool | None = None
    bonusable_reason: str | None = None
    rewardable: bool | None = None
    rewardable_reason: str | None = None
    paid_with_offers: Decimal = _ZERO
    paid_with_offers_per_product: Decimal = _ZERO
    paid_with_referral_discounts: Decimal = _ZERO
    paid_with_referral_discounts_per_product: Decimal = _ZERO
    paid_with_discounts: Decimal = _ZERO
    paid_with_discounts_per_product: Decimal = _ZERO
    paid_with_bonuses: Decimal = _ZERO
    paid_with_bonuses_per_product: Decimal = _ZERO
    paid_with_certificates: Decimal = _ZERO
    paid_with_certificates_per_product: Decimal = _ZERO
    bonuses_used: Decimal = _ZERO
    bonuses_used_per_product: Decimal = _ZERO
    bonuses_reward: Decimal = _ZERO
    bonuses_reward_per_product: Decimal = _ZERO
    bonuses_reward_loyalty_program: RewardShare | None = None
    bonuses_reward_referral_program: ReferralReward | None = None
    bonuses_reward_promotions: dict[str, RewardShare] = field(factory=dict)
    certificates: dict[str, ItemCertificate] = field(factory=dict)
    max_discountable_amount: Decimal | None = None
    max_discountable_amount_left: Decimal | None = None
    max_payable_by_bonuses: Decimal | None = None
    total_after_discounts: Decimal = _ZERO
    total_after_discounts_per_product: Decimal = _ZERO


@frozen(kw_only=True)
class OrderCalculation:
    """The order as the API computed it: the answer of estimate, apply and details.

    The amounts a cashier or buyer needs: ``order_total`` (before discounts), ``saved_total``,
    ``order_to_pay`` and ``bonuses_reward``.
    """

    order_total: Decimal
    order_to_pay: Decimal
    order_id: str | None = None
    identifier: str | None = field(default=None, repr=identifier_repr)
    payment_type: str | None = None
    products_total: Decimal = _ZERO
    saved_total: Decimal = _ZERO
    saved_by_discounts: Decimal = _ZERO
    saved_by_bonuses: Decimal = _ZERO
    saved_by_offers: Decimal = _ZERO
    saved_by_certificates: Decimal = _ZERO
    order_bonuses_to_charge: Decimal = _ZERO
    bonuses_balance: Decimal = _ZERO
    bonuses_reward: Decimal = _ZERO
    bonuses_referrer_reward: Decimal = _ZERO
    referrer_identifier: str | None = field(default=None, repr=identifier_repr)
    referral_program: int | None = None
    applied_promotions: tuple[int | str, ...] = ()
    rewarded_stickers: dict[str, Any] = field(factory=dict)
    used_stickers: dict[str, Any] = field(factory=dict)
    stickers_balance: dict[str, Any] = field(factory=dict)
    promo_codes: tuple[str, ...] = ()
    promo_codes_failed: tuple[FailedCode, ...] = ()
    certificates: tuple[str, ...] = ()
    certificates_failed: tuple[FailedCode, ...] = ()
    items: tuple[LineItem, ...] = ()
    #: True when this result was replayed from the idempotency store: nothing was sent.
    replayed: bool = _replayed()


@frozen(kw_only=True)
class OrderChange(OrderCalculation):
    """The answer of ``change``: the recalculated order plus ``order_total_change``.

    ``order_total_change`` is the money that moves because of this change: negative is the amount
    to return to the buyer, positive the amount still to take.
    """

    order_total_change: Decimal


@frozen(kw_only=True)
class OrderRef:
    """The answer of confirm and cancel."""

    order_id: str
    identifier: str | None = field(default=None, repr=identifier_repr)
    #: The API's own words; phone numbers in it are masked in the repr.
    message: str | None = field(default=None, repr=text_repr)
    #: True when this result was replayed from the idempotency store: nothing was sent.
    replayed: bool = _replayed()
