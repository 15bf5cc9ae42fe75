"""The fake server's loyalty program: small, deterministic, documented, exact.

Rules (all money in Decimal, every amount rounded to kopecks):

* Only products in the feed (``add_product``) earn discounts, bonuses and rewards; others are
  accepted at full price, as the API documents.
* Valid promo codes take their percent off each discountable line (the percents add up, capped
  at ``max_promo_percent``); unknown codes are reported in ``promo_codes_failed``.
* With ``charge_bonuses`` and a known member, bonuses pay up to ``max_bonus_share`` of each
  bonusable line after discounts, within the member's balance and ``bonuses_amount``.
* Certificates then pay what is left, line by line, within their balances.
* Rewardable lines earn ``reward_rate`` of what the buyer pays for them, in bonuses.
* ``total_after_discounts`` is the line total less its discount; bonuses and certificates are
  ways to pay, so ``order_to_pay = order_total - saved_total``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

from attrs import define, field, frozen

__all__ = ["Calculation", "CartLine", "Certificate", "LoyaltyProgram", "Member", "calculate"]

CENT = Decimal("0.01")
ZERO = Decimal(0)


def cents(amount: Decimal) -> Decimal:
    """*amount* rounded half up to kopecks."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def cents_down(amount: Decimal) -> Decimal:
    """*amount* rounded down to kopecks (for what the shop gives away)."""
    return amount.quantize(CENT, rounding=ROUND_DOWN)


@define
class Member:
    """A loyalty member and their bonus balance."""

    identifier: str
    bonuses: Decimal = ZERO


@define
class Certificate:
    """A prepaid certificate and what is left on it."""

    code: str
    balance: Decimal
    id: int = 0
    pool_id: int = 1


@frozen(kw_only=True)
class LoyaltyProgram:
    """The numbers of the program; see the module docstring for how they apply."""

    reward_rate: Decimal = Decimal("0.05")
    max_bonus_share: Decimal = Decimal("0.30")
    max_promo_percent: Decimal = Decimal(50)


@frozen(kw_only=True)
class CartLine:
    """A validated cart line of a request."""

    product_id: str
    price: Decimal
    quantity: Decimal
    discountable: bool = True
    bonusable: bool = True
    rewardable: bool = True


@frozen(kw_only=True)
class Calculation:
    """The outcome of :func:`calculate`: the API payload and the movements it implies."""

    payload: dict[str, Any]
    order_to_pay: Decimal
    bonuses_used: Decimal
    reward: Decimal
    certificates_used: Mapping[str, Decimal] = field(factory=dict)


def _per_unit(amount: Decimal, quantity: Decimal) -> Decimal:
    return cents(amount / quantity)


def _reason(in_feed: bool, *, added: bool, allowed: bool) -> str | None:
    if not in_feed:
        return "product is not in the feed"
    if added:
        return "added by a change"
    return None if allowed else "forbidden by the shop"


def _promotions(
    requested: Iterable[str], book: Mapping[str, Decimal], cap: Decimal
) -> tuple[list[str], list[dict[str, str]], Decimal]:
    applied, failed, percent = [], [], ZERO
    for code in requested:
        if code in book:
            applied.append(code)
            percent += book[code]
        else:
            failed.append({"code": code, "message": "Promo code not found"})
    return applied, failed, min(percent, cap)


def _open_certificates(
    requested: Iterable[str],
    book: Mapping[str, Certificate],
    caps: Mapping[str, Decimal] | None,
) -> tuple[dict[str, Decimal], list[dict[str, str]]]:
    """The certificates that can pay, with what each may pay; and the ones that cannot."""
    usable, failed = {}, []
    for code in requested:
        certificate = book.get(code)
        if certificate is None:
            failed.append({"code": code, "message": "Certificate not found"})
            continue
        available = (
            certificate.balance if caps is None else min(certificate.balance, caps.get(code, ZERO))
        )
        if available <= 0:
            failed.append({"code": code, "message": "Certificate balance is empty"})
        else:
            usable[code] = available
    return usable, failed


@define
class _Totals:
    quantity: Decimal = ZERO
    total: Decimal = ZERO
    discounts: Decimal = ZERO
    bonuses: Decimal = ZERO
    certificates: Decimal = ZERO
    reward: Decimal = ZERO


@define
class _Pricing:
    """What one calculation spends as it goes down the cart."""

    program: LoyaltyProgram
    feed: Mapping[str, str]
    book: Mapping[str, Certificate]
    member: Member | None
    percent: Decimal
    bonus_budget: Decimal
    certificates_left: dict[str, Decimal]
    order_id: str | None
    #: For a change: the reward each product first earned, its most; other products get none.
    reward_caps: Mapping[str, Decimal] | None = None
    totals: _Totals = field(factory=_Totals)
    certificates_used: dict[str, Decimal] = field(factory=dict)

    def line(self, line: CartLine) -> dict[str, Any]:
        in_feed = line.product_id in self.feed
        added = self.reward_caps is not None and line.product_id not in self.reward_caps
        eligible = in_feed and not added
        discountable = eligible and line.discountable
        bonusable = eligible and line.bonusable
        rewardable = eligible and line.rewardable and self.member is not None
        total = line.price * line.quantity
        discount = cents_down(total * self.percent / 100) if discountable else ZERO
        after_discounts = total - discount
        max_bonuses = (
            cents_down(after_discounts * self.program.max_bonus_share) if bonusable else ZERO
        )
        bonuses = min(max_bonuses, self.bonus_budget)
        self.bonus_budget -= bonuses
        left, line_certificates = self._pay_with_certificates(after_discounts - bonuses, line)
        paid_with_certificates = sum((c["amount"] for c in line_certificates.values()), ZERO)
        reward = cents_down(left * self.program.reward_rate) if rewardable else ZERO
        if self.reward_caps is not None and rewardable:
            # The seed of `change`: more units of a product earn no more than it first did.
            reward = min(reward, self.reward_caps[line.product_id])
        totals = self.totals
        totals.quantity += line.quantity
        totals.total += total
        totals.discounts += discount
        totals.bonuses += bonuses
        totals.certificates += paid_with_certificates
        totals.reward += reward
        quantity = line.quantity
        return {
            "product_id": line.product_id,
            "uniqid": f"{self.order_id or 'estimate'}:{line.product_id}",
            "quantity": quantity,
            "price": line.price,
            "total": total,
            "discountable": discountable,
            "discountable_reason": _reason(in_feed, added=added, allowed=line.discountable),
            "bonusable": bonusable,
            "bonusable_reason": _reason(in_feed, added=added, allowed=line.bonusable),
            "rewardable": rewardable,
            "rewardable_reason": _reason(in_feed, added=added, allowed=line.rewardable),
            "paid_with_offers": ZERO,
            "paid_with_offers_per_product": ZERO,
            "paid_with_referral_discounts": ZERO,
            "paid_with_referral_discounts_per_product": ZERO,
            "paid_with_discounts": discount,
            "paid_with_discounts_per_product": _per_unit(discount, quantity),
            "paid_with_bonuses": bonuses,
            "paid_with_bonuses_per_product": _per_unit(bonuses, quantity),
            "paid_with_certificates": paid_with_certificates,
            "paid_with_certificates_per_product": _per_unit(paid_with_certificates, quantity),
            "bonuses_used": bonuses,
            "bonuses_used_per_product": _per_unit(bonuses, quantity),
            "bonuses_reward": reward,
            "bonuses_reward_per_product": _per_unit(reward, quantity),
            "bonuses_reward_loyalty_program": {
                "total": reward,
                "per_product": _per_unit(reward, quantity),
            },
            "bonuses_reward_promotions": {},
            "certificates": line_certificates,
            "max_discountable_amount": total if discountable else ZERO,
            "max_discountable_amount_left": after_discounts if discountable else ZERO,
            "max_payable_by_bonuses": max_bonuses,
            "total_after_discounts": after_discounts,
            "total_after_discounts_per_product": _per_unit(after_discounts, quantity),
        }

    def _pay_with_certificates(
        self, left: Decimal, line: CartLine
    ) -> tuple[Decimal, dict[str, dict[str, Any]]]:
        paid: dict[str, dict[str, Any]] = {}
        for code, available in self.certificates_left.items():
            amount = min(left, available)
            if amount <= 0:
                continue
            self.certificates_left[code] -= amount
            self.certificates_used[code] = self.certificates_used.get(code, ZERO) + amount
            left -= amount
            certificate = self.book[code]
            paid[str(certificate.id)] = {
                "id": certificate.id,
                "code": code,
                "pool_id": certificate.pool_id,
                "amount": amount,
                "amount_per_product": _per_unit(amount, line.quantity),
            }
        return left, paid


def calculate(
    *,
    cart: Iterable[CartLine],
    program: LoyaltyProgram,
    feed: Mapping[str, str],
    member: Member | None,
    promo_codes: Mapping[str, Decimal],
    requested_codes: Iterable[str],
    certificates: Mapping[str, Certificate],
    requested_certificates: Iterable[str],
    charge_bonuses: bool,
    bonuses_cap: Decimal | None,
    certificate_caps: Mapping[str, Decimal] | None = None,
    reward_caps: Mapping[str, Decimal] | None = None,
    order_id: str | None,
    payment_type: str | None,
) -> Calculation:
    """Compute the order calculation of a cart; reads balances, changes nothing."""
    applied_codes, failed_codes, percent = _promotions(
        requested_codes, promo_codes, program.max_promo_percent
    )
    usable, failed_certificates = _open_certificates(
        requested_certificates, certificates, certificate_caps
    )
    budget = ZERO
    if charge_bonuses and member is not None:
        budget = max(ZERO, member.bonuses)
        if bonuses_cap is not None:
            budget = min(budget, bonuses_cap)
    pricing = _Pricing(
        program=program,
        feed=feed,
        book=certificates,
        member=member,
        percent=percent,
        bonus_budget=budget,
        certificates_left=usable,
        order_id=order_id,
        reward_caps=reward_caps,
    )
    items = [pricing.line(line) for line in cart]
    totals = pricing.totals
    saved_total = totals.discounts + totals.bonuses + totals.certificates
    order_to_pay = totals.total - saved_total
    payload: dict[str, Any] = {
        "order_id": order_id,
        "identifier": member.identifier if member is not None else None,
        "payment_type": payment_type,
        "products_total": totals.quantity,
        "order_total": totals.total,
        "saved_total": saved_total,
        "saved_by_discounts": totals.discounts,
        "saved_by_bonuses": totals.bonuses,
        "saved_by_offers": ZERO,
        "saved_by_certificates": totals.certificates,
        "order_to_pay": order_to_pay,
        "order_bonuses_to_charge": totals.bonuses,
        "bonuses_balance": member.bonuses if member is not None else ZERO,
        "bonuses_reward": totals.reward,
        "bonuses_referrer_reward": ZERO,
        "referrer_identifier": None,
        "referral_program": None,
        "applied_promotions": [],
        "rewarded_stickers": {},
        "used_stickers": {},
        "stickers_balance": {},
        "promo_codes": applied_codes,
        "promo_codes_failed": failed_codes,
        "certificates": list(usable),
        "certificates_failed": failed_certificates,
        "items": items,
    }
    return Calculation(
        payload=payload,
        order_to_pay=order_to_pay,
        bonuses_used=totals.bonuses,
        reward=totals.reward,
        certificates_used=pricing.certificates_used,
    )
