"""Answers of the API as its documentation shows them, for the unit tests."""

from __future__ import annotations

from typing import Any

from tests.conftest import PHONE

ITEM: dict[str, Any] = {
    "product_id": "A",
    "uniqid": "u-1",
    "quantity": 4,
    "price": 1000,
    "total": 4000,
    "discountable": True,
    "bonusable": True,
    "rewardable": True,
    "paid_with_offers": 0,
    "paid_with_offers_per_product": 0,
    "paid_with_referral_discounts": 0,
    "paid_with_referral_discounts_per_product": 0,
    "paid_with_discounts": 500,
    "paid_with_discounts_per_product": 100,
    "paid_with_bonuses": 500,
    "paid_with_bonuses_per_product": 100,
    "paid_with_certificates": 100,
    "paid_with_certificates_per_product": 25,
    "bonuses_reward": 400,
    "bonuses_reward_per_product": 100,
    "bonuses_reward_loyalty_program": {"total": 40, "per_product": 10},
    "bonuses_reward_referral_program": {"referral_program_id": 21, "total": 80, "per_product": 20},
    "bonuses_reward_promotions": {
        "33": {"total": 100, "per_product": 25},
        "17": {"total": 180, "per_product": 45},
    },
    "certificates": {
        "14": {"id": 14, "code": "C-14", "pool_id": 11, "amount": 100, "amount_per_product": 25},
    },
    "bonuses_used": 500,
    "bonuses_used_per_product": 125,
    "total_after_discounts": 3500,
    "total_after_discounts_per_product": 875,
}

CALCULATION: dict[str, Any] = {
    "order_id": "1001",
    "identifier": PHONE,
    "payment_type": "card",
    "products_total": 5,
    "order_total": 6000,
    "saved_total": 1100,
    "saved_by_discounts": 400,
    "saved_by_bonuses": 600,
    "saved_by_offers": 0,
    "saved_by_certificates": 100,
    "order_to_pay": 4900,
    "order_bonuses_to_charge": 500,
    "bonuses_balance": 1000,
    "bonuses_reward": 500,
    "bonuses_referrer_reward": 0,
    "referrer_identifier": None,
    "referral_program": 21,
    "applied_promotions": [33, 17],
    "rewarded_stickers": {},
    "used_stickers": {},
    "stickers_balance": {},
    "promo_codes": ["SALE10"],
    "promo_codes_failed": [{"code": "OLD", "message": "Promo code expired"}],
    "certificates": [],
    "certificates_failed": [],
    "items": [ITEM],
}

CHANGE: dict[str, Any] = {**CALCULATION, "order_total_change": -300}

REF: dict[str, Any] = {"order_id": "1001", "identifier": PHONE}

HISTORY: dict[str, Any] = {
    "orders": [
        {
            "id": "1001",
            "date": "2026-11-20 14:03:00",
            "status": "confirmed",
            "total": "4900.50",
            "items": [{"id": "A", "name": "---", "quantity": 4, "price": 875.5}],
        }
    ]
}


def status_envelope(payload: dict[str, Any], *, ok: bool = True) -> dict[str, Any]:
    """The current documentation's envelope."""
    return {"status": "success" if ok else "error", "payload": payload}


def success_envelope(payload: dict[str, Any], *, ok: bool = True) -> dict[str, Any]:
    """The seed pages' (older) envelope."""
    return {"success": ok, "payload": payload}
