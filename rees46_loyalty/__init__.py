"""rees46_loyalty: an async SDK for the REES46 loyalty checkout API.

Example::

    async with LoyaltyClient(shop_id="...", shop_secret="...") as client:
        cart = [CartItem(product_id="A", price=Decimal("1000"), quantity=4)]
        calc = await client.estimate(cart_items=cart)
"""

import logging as _logging

from ._client import DEFAULT_BASE_URL, LoyaltyClient
from ._clock import Clock, SystemClock
from ._hooks import Hooks, RequestRecord, ResponseRecord, RetryRecord
from ._http import ApiRequest, ApiResponse, Handler, Middleware, Transport
from ._operations import Operation, RetrySafety
from ._policy import RetryPolicy
from ._reconcile import Reconciliation
from ._sync import SyncLoyaltyClient
from ._version import VERSION as _VERSION
from .errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConnectError,
    IdempotencyError,
    LoyaltyError,
    MalformedResponseError,
    NotAnApiError,
    NotFoundError,
    OrderStatusError,
    OutcomeUnknownError,
    RateLimitError,
    ServerError,
    TimeoutError,  # noqa: A004 - the SDK's own, re-exported on purpose
    TransportError,
    ValidationError,
)
from .models import (
    CartItem,
    CheckoutFields,
    FailedCode,
    HistoryItem,
    HistoryOrder,
    ItemCertificate,
    LineItem,
    OrderCalculation,
    OrderChange,
    OrderHistory,
    OrderRef,
    ReferralReward,
    RewardShare,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "APIError",
    "ApiRequest",
    "ApiResponse",
    "AuthenticationError",
    "BadRequestError",
    "CartItem",
    "CheckoutFields",
    "Clock",
    "ConnectError",
    "FailedCode",
    "Handler",
    "HistoryItem",
    "HistoryOrder",
    "Hooks",
    "IdempotencyError",
    "ItemCertificate",
    "LineItem",
    "LoyaltyClient",
    "LoyaltyError",
    "MalformedResponseError",
    "Middleware",
    "NotAnApiError",
    "NotFoundError",
    "Operation",
    "OrderCalculation",
    "OrderChange",
    "OrderHistory",
    "OrderRef",
    "OrderStatusError",
    "OutcomeUnknownError",
    "RateLimitError",
    "Reconciliation",
    "ReferralReward",
    "RequestRecord",
    "ResponseRecord",
    "RetryPolicy",
    "RetryRecord",
    "RetrySafety",
    "RewardShare",
    "ServerError",
    "SyncLoyaltyClient",
    "SystemClock",
    "TimeoutError",
    "Transport",
    "TransportError",
    "ValidationError",
]

#: The installed version of the SDK (``"0"`` in a source tree that is not installed).
__version__ = _VERSION

# A library's loggers print nothing until the application configures logging (Python's
# logging HOWTO): without this, Python's last-resort handler would write WARNINGs to stderr.
_logging.getLogger("rees46_loyalty").addHandler(_logging.NullHandler())
