"""Local validation: a request the API would refuse is refused here, before anything is sent.

Each check raises :class:`~rees46_loyalty.errors.ValidationError` naming the field, in the
API's own words where the API documents the rule.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import NoReturn

import aiohttp
from yarl import URL

from ._hooks import Hooks
from ._policy import RetryPolicy
from ._redact import mask_identifier
from .errors import ValidationError
from .models import CartItem, CheckoutRequest

__all__ = [
    "base_url",
    "checkout_request",
    "client_options",
    "idempotency_key",
    "identifier",
    "order_id",
]

# Phone numbers as digits, country code first: 7XXXXXXXXXX in Russia, up to 15 digits (E.164)
# for the countries the same API serves elsewhere.
# ASCII digits only: `\d` would also take Arabic-Indic or full-width digits.
_IDENTIFIER_RE = re.compile(r"[1-9][0-9]{9,14}")
_TIME_RE = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]")
#: The longest text argument sent (ids, codes, payment_type, ...), in characters.
MAX_TEXT_LENGTH = 255
# A float carries about 15.9 significant decimal digits; up to 15 always survive the JSON
# encoder's round trip unchanged.
_MAX_DIGITS = 15
_LIMIT = 10**_MAX_DIGITS
# Below about 1e-307 a float loses digits (subnormals).
_SMALLEST = -300


def _sendable(value: str) -> bool:
    """Whether *value* is short enough and can be written as UTF-8 (no lone surrogates).

    A lone surrogate cannot be encoded: a POST would fail with a bare UnicodeEncodeError, and a
    GET would silently drop it and ask about another order.
    """
    if len(value) > MAX_TEXT_LENGTH:
        return False
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _refuse_text(value: object, field: str, operation: str, *, blank: bool = False) -> NoReturn:
    """Raise the ValidationError of a text argument that is not a sendable non-empty string."""
    if not isinstance(value, str) or not value or (blank and not value.strip()):
        raise ValidationError("a non-empty string is required", field=field, operation=operation)
    if len(value) > MAX_TEXT_LENGTH:
        raise ValidationError(
            f"at most {MAX_TEXT_LENGTH} characters are allowed, got {len(value)}",
            field=field,
            operation=operation,
        )
    raise ValidationError(
        "holds a lone surrogate, which cannot be sent as UTF-8", field=field, operation=operation
    )


def order_id(value: object, operation: str) -> str:
    """Check an ``order_id``: a non-empty string of at most 255 characters."""
    if not isinstance(value, str) or not value.strip() or not _sendable(value):
        _refuse_text(value, "order_id", operation, blank=True)
    return value


def idempotency_key(value: object, operation: str) -> str:
    """Check an ``idempotency_key``: a non-empty string of at most 255 characters."""
    if not isinstance(value, str) or not value or not _sendable(value):
        _refuse_text(value, "idempotency_key", operation)
    return value


def identifier(value: object, operation: str) -> str:
    """Check a member ``identifier``: a phone number as digits, country code first."""
    if not isinstance(value, str) or not _IDENTIFIER_RE.fullmatch(value):
        shown = mask_identifier(value) if isinstance(value, str) else type(value).__name__
        raise ValidationError(
            f"expected a phone number as digits with the country code first, like 7XXXXXXXXXX; "
            f"got {shown}",
            field="identifier",
            operation=operation,
        )
    return value


def _travels_exactly(value: Decimal) -> bool:
    """Whether *value* survives the JSON encoder unchanged.

    The encoder writes a fraction as the float whose shortest repr has its digits, which holds
    up to 15 significant digits within a float's range.
    """
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or exponent >= 0:  # integral as written (or not finite)
        return True
    significant = len(digits)
    while significant > _MAX_DIGITS and digits[significant - 1] == 0:  # trailing zeros
        significant -= 1
    return significant <= _MAX_DIGITS and value.adjusted() > _SMALLEST


def _amount(value: object, field: str, operation: str, *, positive: bool) -> Decimal | int:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise ValidationError(
            f"expected a Decimal or an int, got {type(value).__name__}{_amount_hint(value)}",
            field=field,
            operation=operation,
        )
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValidationError(f"{value} is not a number", field=field, operation=operation)
    if abs(value) >= _LIMIT:
        raise ValidationError(
            f"must be less than 10**{_MAX_DIGITS}", field=field, operation=operation
        )
    if isinstance(value, Decimal) and not _travels_exactly(value):
        raise ValidationError(
            f"more than {_MAX_DIGITS} significant digits cannot be sent exactly"
            + _float_origin_hint(value),
            field=field,
            operation=operation,
        )
    if value <= 0 if positive else value < 0:
        bound = "greater than 0" if positive else "0 or more"
        raise ValidationError(f"must be {bound}, got {value}", field=field, operation=operation)
    return value


def _amount_hint(value: object) -> str:
    """What to write instead of an amount of the wrong type, when the mistake is a common one."""
    if isinstance(value, float):
        return f" (write Decimal('{value!r}'): a float cannot hold it exactly)"
    if isinstance(value, str):
        try:
            Decimal(value)
        except ArithmeticError:
            return " (amounts are Decimal('99.90') or int)"
        if len(value) <= 32:
            return f" (write Decimal({value!r}): the SDK does not read amounts from text)"
        return " (write Decimal(text): the SDK does not read amounts from text)"
    return ""


def _float_origin_hint(value: Decimal) -> str:
    """Name the float a long Decimal was made from: ``Decimal(99.90)`` is not ``99.90``."""
    try:
        as_float = float(value)
    except OverflowError:  # pragma: no cover - refused earlier as too large
        return ""
    if Decimal(as_float) != value:
        return ""
    return (
        f"; it is the exact value of the float {as_float!r}, so it was most likely made "
        f"with Decimal({as_float!r}): write Decimal('{as_float!r}'), from a string"
    )


def _text(value: object, field: str, operation: str) -> str | None:
    if value is None or (isinstance(value, str) and value and _sendable(value)):
        return value
    _refuse_text(value, field, operation)


def _flag(value: object, field: str, operation: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValidationError(
        f"expected True or False, got {type(value).__name__}", field=field, operation=operation
    )


def _codes(value: object, field: str, operation: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValidationError("expected a list of strings", field=field, operation=operation)
    codes = tuple(value)
    for index, code in enumerate(codes):
        _text(code, f"{field}[{index}]", operation)
    return codes


def _cart(items: object, operation: str) -> tuple[CartItem, ...]:
    if isinstance(items, CartItem) or not isinstance(items, Iterable):
        raise ValidationError(
            "expected a list of CartItem", field="cart_items", operation=operation
        )
    cart = tuple(items)
    if not cart:
        raise ValidationError("the cart is empty", field="cart_items", operation=operation)
    seen: set[str] = set()
    for index, item in enumerate(cart):
        if _line_is_valid(item, seen):
            seen.add(item.product_id)
            continue
        _explain_line(item, index, operation)
    return cart


def _good_amount(value: object) -> bool:
    if type(value) is int:
        return bool(0 < value < _LIMIT)
    if type(value) is Decimal:
        return bool(value.is_finite() and 0 < value < _LIMIT and _travels_exactly(value))
    return False


def _line_is_valid(item: object, seen: set[str]) -> bool:
    """The common case, fast: a valid line. Anything else is explained by _explain_line."""
    if type(item) is not CartItem:
        return False
    product_id = item.product_id
    return (
        type(product_id) is str
        and product_id != ""
        and _sendable(product_id)
        and product_id not in seen
        and _good_amount(item.price)
        and _good_amount(item.quantity)
        and (item.discountable is None or type(item.discountable) is bool)
        and (item.bonusable is None or type(item.bonusable) is bool)
        and (item.rewardable is None or type(item.rewardable) is bool)
    )


def _explain_line(item: object, index: int, operation: str) -> None:
    """Raise the ValidationError of a cart line that _line_is_valid refused, naming the field."""
    where = f"cart_items[{index}]"
    if not isinstance(item, CartItem):
        raise ValidationError(
            f"expected a CartItem, got {type(item).__name__}", field=where, operation=operation
        )
    if _text(item.product_id, f"{where}.product_id", operation) is None:
        raise ValidationError("is required", field=f"{where}.product_id", operation=operation)
    _amount(item.price, f"{where}.price", operation, positive=True)
    _amount(item.quantity, f"{where}.quantity", operation, positive=True)
    for flag in ("discountable", "bonusable", "rewardable"):
        _flag(getattr(item, flag), f"{where}.{flag}", operation)
    raise ValidationError(
        f"Cart contains line items with the same product ID ({item.product_id!r})",
        field=f"{where}.product_id",
        operation=operation,
    )


def checkout_request(
    operation: str,
    *,
    cart_items: object,
    order_id_required: bool,
    order_id_value: object,
    identifier_value: object = None,
    payment_type: object = None,
    promo_codes: object = None,
    certificates: object = None,
    charge_bonuses: object = None,
    bonuses_amount: object = None,
    use_personal_certificates: object = None,
    location_id: object = None,
    stream: object = None,
    current_time: object = None,
    subscription: object = None,
) -> CheckoutRequest:
    """Check every field of an estimate / apply / change and build its request model.

    The optional fields default to ``None`` (not sent).
    """
    member = None if identifier_value is None else identifier(identifier_value, operation)
    charge = _flag(charge_bonuses, "charge_bonuses", operation)
    if charge and member is None:
        raise ValidationError(
            "charge_bonuses needs the identifier of an existing member",
            field="identifier",
            operation=operation,
        )
    time_of_sale = _text(current_time, "current_time", operation)
    if time_of_sale is not None and not _TIME_RE.fullmatch(time_of_sale):
        raise ValidationError(
            f"expected local time as HH:MM, got {time_of_sale!r}",
            field="current_time",
            operation=operation,
        )
    cap = None
    if bonuses_amount is not None:
        cap = _amount(bonuses_amount, "bonuses_amount", operation, positive=False)
    return CheckoutRequest(
        cart_items=_cart(cart_items, operation),
        order_id=(
            None
            if order_id_value is None and not order_id_required
            else order_id(order_id_value, operation)
        ),
        identifier=member,
        payment_type=_text(payment_type, "payment_type", operation),
        promo_codes=_codes(promo_codes, "promo_codes", operation),
        certificates=_codes(certificates, "certificates", operation),
        charge_bonuses=charge,
        bonuses_amount=cap,
        use_personal_certificates=_flag(
            use_personal_certificates, "use_personal_certificates", operation
        ),
        location_id=_text(location_id, "location_id", operation),
        stream=_text(stream, "stream", operation),
        current_time=time_of_sale,
        subscription=_text(subscription, "subscription", operation),
    )


def _seconds(name: str, value: object, *, zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        bound = "0 or more" if zero else "more than 0"
        raise ValueError(f"{name} must be a finite number of seconds, {bound}; got {value!r}")


def _instance(name: str, value: object, kind: type | tuple[type, ...], what: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be {what} or None, got {type(value).__name__}")


def client_options(
    *,
    base_url: object,
    timeout: object,
    connect_timeout: object,
    retry: object,
    session: object,
    middlewares: object,
    allow_insecure_http: object,
    idempotency: object,
    idempotency_wait: object,
    hooks: object,
    clock: object,
    max_response_bytes: object,
    transport: object = None,
) -> None:
    """Check the types and values of LoyaltyClient's keyword arguments.

    Raises a TypeError (wrong type) or a ValueError (wrong value) that names the argument, at
    construction rather than at the first call.
    """
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a string, got {type(base_url).__name__}")
    _seconds("timeout", timeout)
    _seconds("connect_timeout", connect_timeout)
    if idempotency_wait is not None:
        _seconds("idempotency_wait", idempotency_wait, zero=True)
    _instance("retry", retry, RetryPolicy, "a RetryPolicy")
    _instance("session", session, aiohttp.ClientSession, "an aiohttp.ClientSession")
    _instance("hooks", hooks, Hooks, "a Hooks")
    if not isinstance(allow_insecure_http, bool):
        raise TypeError(f"allow_insecure_http must be True or False, got {allow_insecure_http!r}")
    if isinstance(middlewares, str | bytes) or not isinstance(middlewares, Iterable):
        raise TypeError(
            f"middlewares must be a list of callables, got {type(middlewares).__name__}"
        )
    for index, middleware in enumerate(middlewares):
        if not callable(middleware):
            raise TypeError(
                f"middlewares[{index}] must be a callable (request, call_next), "
                f"got {type(middleware).__name__}"
            )
    if idempotency != "memory" and idempotency is not None:
        missing = [
            name for name in _STORE_METHODS if not callable(getattr(idempotency, name, None))
        ]
        if isinstance(idempotency, str) or missing or not hasattr(idempotency, "lease"):
            raise TypeError(
                "idempotency must be 'memory', None or an IdempotencyStore, "
                f"got {type(idempotency).__name__}"
            )
    if clock is not None and not callable(getattr(clock, "monotonic", None)):
        raise TypeError(f"clock must have a monotonic() method, got {type(clock).__name__}")
    if isinstance(max_response_bytes, bool) or not isinstance(max_response_bytes, int):
        raise TypeError(
            f"max_response_bytes must be an int, got {type(max_response_bytes).__name__}"
        )
    if max_response_bytes <= 0:
        raise ValueError(f"max_response_bytes must be more than 0, got {max_response_bytes}")
    _transport(transport, session)


def _transport(transport: object, session: object) -> None:
    if transport is None:
        return
    if not callable(transport):
        raise TypeError(
            "transport must be a callable async (request) -> response, "
            f"got {type(transport).__name__}"
        )
    if session is not None:
        raise ValueError(
            "transport= replaces the aiohttp transport, which is what session= is for: "
            "pass one or the other"
        )


_STORE_METHODS = ("begin", "finish", "release", "wait", "get", "forget", "close")


def base_url(value: str, allow_insecure_http: bool) -> URL:
    """Check the ``base_url`` option: http(s) with a host, no credentials, https off loopback."""
    url = URL(value)
    if url.scheme not in ("https", "http") or not url.host:
        raise ValueError(f"base_url must be an http(s) URL with a host, got {value!r}")
    if url.query_string or url.fragment or url.user or url.password:
        raise ValueError("base_url must not carry credentials, a query or a fragment")
    if url.scheme == "http" and not allow_insecure_http and not _is_loopback(url.host):
        raise ValueError(
            "base_url uses plain http on a non-loopback host, which would send the shop "
            "secret unencrypted; use https, or pass allow_insecure_http=True"
        )
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
