"""Local validation: a request the API would refuse is refused here, before anything is sent.

Each check raises :class:`~rees46_loyalty.errors.ValidationError` naming the field, in the
API's own words where the API documents the rule. Each rule has one owner here, a function that
says what is wrong with a value (or ``None``); the callers name the field. A checkout request is
checked by walking the fields of :class:`~rees46_loyalty.models.CheckoutRequest`, each by the
rule its declaration names, and its body is built in the same walk.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

import aiohttp
import attrs
from yarl import URL

from ._hooks import Hooks
from ._policy import RetryPolicy
from ._redact import mask_identifier
from ._serialization import wire_number
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


def _text_problem(value: object, *, blank: bool = False) -> str | None:
    """What is wrong with a text argument (*blank*: only spaces is wrong too), or ``None``.

    A lone surrogate cannot be written as UTF-8: a POST would fail with a bare
    UnicodeEncodeError, and a GET would silently drop it and ask about another order.
    """
    if (
        isinstance(value, str)
        and value
        and len(value) <= MAX_TEXT_LENGTH
        and (value.isascii() or _encodable(value))
        and not (blank and value.isspace())
    ):
        return None
    if not isinstance(value, str) or not value or (blank and value.isspace()):
        return "a non-empty string is required"
    if len(value) > MAX_TEXT_LENGTH:
        return f"at most {MAX_TEXT_LENGTH} characters are allowed, got {len(value)}"
    return "holds a lone surrogate, which cannot be sent as UTF-8"


def _encodable(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _flag_problem(value: object) -> str | None:
    """What is wrong with a flag, or ``None``."""
    if type(value) is bool:
        return None
    return f"expected True or False, got {type(value).__name__}"


def _amount_problem(value: object, *, positive: bool) -> str | None:
    """What is wrong with an amount (*positive*: 0 is wrong too), or ``None``."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            return f"{value} is not a number"
        # Decimal bounds: a Decimal compared with an int converts the int every time.
        low = value > _DECIMAL_ZERO if positive else value >= _DECIMAL_ZERO
        if low and value < _DECIMAL_LIMIT and _travels_exactly(value):
            return None
    elif isinstance(value, bool) or not isinstance(value, int):
        return f"expected a Decimal or an int, got {type(value).__name__}{_amount_hint(value)}"
    elif (value > 0 if positive else value >= 0) and value < _LIMIT:
        return None
    return _bound_problem(value, positive=positive)


def _bound_problem(value: Decimal | int, *, positive: bool) -> str:
    """What is wrong with a number that is not a sendable amount, in this order of precedence."""
    if not -_LIMIT < value < _LIMIT:
        return f"must be less than 10**{_MAX_DIGITS}"
    if isinstance(value, Decimal) and not _travels_exactly(value):
        return _digits_problem(value)
    return f"must be {'greater than 0' if positive else '0 or more'}, got {value}"


def _digits_problem(value: Decimal) -> str:
    return (
        f"more than {_MAX_DIGITS} significant digits cannot be sent exactly"
        + _float_origin_hint(value)
    )


_DECIMAL_ZERO = Decimal(0)
_DECIMAL_LIMIT = Decimal(_LIMIT)


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


def _refuse(problem: str | None, field: str, operation: str) -> None:
    if problem is not None:
        raise ValidationError(problem, field=field, operation=operation)


def order_id(value: object, operation: str) -> str:
    """Check an ``order_id``: a non-empty string of at most 255 characters, not only spaces."""
    _refuse(_text_problem(value, blank=True), "order_id", operation)
    return value  # type: ignore[return-value] # checked above


def idempotency_key(value: object, operation: str) -> str:
    """Check an ``idempotency_key``: a non-empty string of at most 255 characters."""
    _refuse(_text_problem(value), "idempotency_key", operation)
    return value  # type: ignore[return-value] # checked above


def _identifier_problem(value: object) -> str | None:
    if isinstance(value, str) and _IDENTIFIER_RE.fullmatch(value):
        return None
    shown = mask_identifier(value) if isinstance(value, str) else type(value).__name__
    return (
        "expected a phone number as digits with the country code first, like 7XXXXXXXXXX; "
        f"got {shown}"
    )


def identifier(value: object, operation: str) -> str:
    """Check a member ``identifier``: a phone number as digits, country code first."""
    _refuse(_identifier_problem(value), "identifier", operation)
    return value  # type: ignore[return-value] # checked above


# -- the checkout request: one walk of CheckoutRequest's fields checks and encodes ------------
#
# A rule takes a field's value (never None), its name and the operation, raises the
# ValidationError of a wrong value, and returns the value kept in the request model and the
# value sent (the same, but for the cart, the lists of codes and the amounts).
_Rule = Callable[[Any, str, str], tuple[Any, Any]]


def _same(problem: Callable[[Any], str | None]) -> _Rule:
    def rule(value: Any, field: str, operation: str) -> tuple[Any, Any]:
        _refuse(problem(value), field, operation)
        return value, value

    return rule


def _time_problem(value: object) -> str | None:
    problem = _text_problem(value)
    if problem is None and isinstance(value, str) and not _TIME_RE.fullmatch(value):
        return f"expected local time as HH:MM, got {value!r}"
    return problem


def _amount(value: object, field: str, operation: str) -> tuple[Any, Any]:
    _refuse(_amount_problem(value, positive=False), field, operation)
    return value, wire_number(value) if isinstance(value, Decimal) else value


def _codes(value: object, field: str, operation: str) -> tuple[Any, Any]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValidationError("expected a list of strings", field=field, operation=operation)
    codes = tuple(value)
    for index, code in enumerate(codes):
        _refuse(_text_problem(code), f"{field}[{index}]", operation)
    return codes, list(codes)


def _cart(value: object, field: str, operation: str) -> tuple[Any, Any]:
    if isinstance(value, CartItem) or not isinstance(value, Iterable):
        raise ValidationError("expected a list of CartItem", field=field, operation=operation)
    cart = tuple(value)
    if not cart:
        raise ValidationError("the cart is empty", field=field, operation=operation)
    seen: set[str] = set()
    return cart, [_line(item, index, seen, operation) for index, item in enumerate(cart)]


def _line(item: object, index: int, seen: set[str], operation: str) -> dict[str, Any]:
    """The wire form of one cart line; the ValidationError of a wrong one names its field.

    Called once per line (2,000 times for a large cart): no loop over names, no getattr.
    """
    if not isinstance(item, CartItem):
        raise ValidationError(
            f"expected a CartItem, got {type(item).__name__}",
            field=f"cart_items[{index}]",
            operation=operation,
        )
    product_id = item.product_id
    problem = "is required" if product_id is None else _text_problem(product_id)
    if problem is not None:
        _refuse(problem, f"cart_items[{index}].product_id", operation)
    price, quantity = item.price, item.quantity
    problem = _amount_problem(price, positive=True)
    if problem is not None:
        _refuse(problem, f"cart_items[{index}].price", operation)
    problem = _amount_problem(quantity, positive=True)
    if problem is not None:
        _refuse(problem, f"cart_items[{index}].quantity", operation)
    line: dict[str, Any] = {
        "product_id": product_id,
        "price": wire_number(price) if isinstance(price, Decimal) else price,
        "quantity": wire_number(quantity) if isinstance(quantity, Decimal) else quantity,
    }
    discountable, bonusable, rewardable = item.discountable, item.bonusable, item.rewardable
    if discountable is not None:
        line["discountable"] = _line_flag(discountable, index, "discountable", operation)
    if bonusable is not None:
        line["bonusable"] = _line_flag(bonusable, index, "bonusable", operation)
    if rewardable is not None:
        line["rewardable"] = _line_flag(rewardable, index, "rewardable", operation)
    if product_id in seen:
        _refuse(
            f"Cart contains line items with the same product ID ({product_id!r})",
            f"cart_items[{index}].product_id",
            operation,
        )
    seen.add(product_id)
    return line


def _line_flag(value: object, index: int, name: str, operation: str) -> object:
    problem = _flag_problem(value)
    if problem is not None:
        _refuse(problem, f"cart_items[{index}].{name}", operation)
    return value


_RULES: dict[str, _Rule] = {
    "cart": _cart,
    "order_id": _same(lambda value: _text_problem(value, blank=True)),
    "identifier": _same(_identifier_problem),
    "text": _same(_text_problem),
    "codes": _codes,
    "flag": _same(_flag_problem),
    "amount": _amount,
    "time": _same(_time_problem),
}
# (name, rule, whether None means "not sent"), in the order of the fields sent.
_CHECKOUT_FIELDS = tuple(
    (a.name, _RULES[a.metadata["rule"]], a.default is None) for a in attrs.fields(CheckoutRequest)
)
_CHECKOUT_NAMES = frozenset(name for name, _, _ in _CHECKOUT_FIELDS)


def _checkout(
    operation: str, values: Mapping[str, object], *, order_id_required: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check an estimate / apply / change: the fields of its model, and its body's fields."""
    unknown = values.keys() - _CHECKOUT_NAMES
    if unknown:
        raise TypeError(f"{operation}() got an unexpected keyword argument {min(unknown)!r}")
    if order_id_required and values.get("order_id") is None:
        order_id(None, operation)
    kept: dict[str, Any] = {}
    body: dict[str, Any] = {}
    for name, rule, optional in _CHECKOUT_FIELDS:
        value = values.get(name)
        if value is None and optional:
            continue
        kept[name], body[name] = rule(value, name, operation)
    if body.get("charge_bonuses") and "identifier" not in body:
        raise ValidationError(
            "charge_bonuses needs the identifier of an existing member",
            field="identifier",
            operation=operation,
        )
    return kept, body


def checkout_body(
    operation: str,
    *,
    cart_items: object,
    order_id: object,
    order_id_required: bool,
    fields: Mapping[str, object],
) -> dict[str, Any]:
    """Check an estimate / apply / change; the fields of its body, ready to encode.

    *fields* are the optional fields (:class:`~rees46_loyalty.models.CheckoutFields`); those
    left out or ``None`` are not sent.
    """
    values = {"cart_items": cart_items, "order_id": order_id, **fields}
    return _checkout(operation, values, order_id_required=order_id_required)[1]


def checkout_request(
    operation: str,
    *,
    cart_items: object,
    order_id_required: bool,
    order_id_value: object,
    **fields: object,
) -> CheckoutRequest:
    """Check an estimate / apply / change, as :func:`checkout_body`; its request model."""
    values = {"cart_items": cart_items, "order_id": order_id_value, **fields}
    return CheckoutRequest(**_checkout(operation, values, order_id_required=order_id_required)[0])


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
