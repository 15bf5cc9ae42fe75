"""attrs models: what the shop sends (cart) and what the API answers (calculation, history)."""

from .calculation import (
    FailedCode,
    ItemCertificate,
    LineItem,
    OrderCalculation,
    OrderChange,
    OrderRef,
    ReferralReward,
    RewardShare,
)
from .cart import CartItem, CheckoutFields, CheckoutRequest, MemberRequest, OrderRequest
from .history import HistoryItem, HistoryOrder, OrderHistory

__all__ = [
    "CartItem",
    "CheckoutFields",
    "CheckoutRequest",
    "FailedCode",
    "HistoryItem",
    "HistoryOrder",
    "ItemCertificate",
    "LineItem",
    "MemberRequest",
    "OrderCalculation",
    "OrderChange",
    "OrderHistory",
    "OrderRef",
    "OrderRequest",
    "ReferralReward",
    "RewardShare",
]
