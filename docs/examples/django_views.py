"""Django views on rees46_loyalty's SyncLoyaltyClient: one client per process, errors as JSON.

Add ``path("", include("django_views"))`` to your project's ``urls.py`` (or copy the views), with
``REES46_SHOP_ID`` and ``REES46_SHOP_SECRET`` in the environment. Endpoints:

- ``POST /checkout/estimate``: price the cart, as often as it changes;
- ``POST /checkout/orders/<order_id>/pay``: reserve what the order spends and answer the amount
  to charge (``apply``);
- ``POST /back-office/orders/<order_id>/return``: a partial return (``change``), keyed by the
  return's id so that a double click refunds once.

Amounts travel as JSON strings ("99.90") or whole numbers, as exact as ``Decimal``.
"""

import atexit
import functools
import json
import logging
import math
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from rees46_loyalty import (
    APIError,
    AuthenticationError,
    BadRequestError,
    CartItem,
    IdempotencyError,
    LoyaltyError,
    NotFoundError,
    OrderCalculation,
    OrderChange,
    OrderStatusError,
    OutcomeUnknownError,
    SyncLoyaltyClient,
    ValidationError,
)

logger = logging.getLogger(__name__)


@functools.cache
def loyalty() -> SyncLoyaltyClient:
    """The process's one client, made on first use and shared by every request thread.

    Made lazily, so in each worker process of gunicorn or uWSGI (after their fork), never in
    the master; closed when the process exits.
    """
    client = SyncLoyaltyClient.from_env()
    atexit.register(client.close)
    return client


class BadInputError(Exception):
    """A request body the view cannot read; answered with 400 or 422."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


def read_json(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object; numbers with a fraction are read as ``Decimal``, not float."""
    try:
        document = json.loads(request.body, parse_float=Decimal)
    except ValueError:
        raise BadInputError(400, "the body is not JSON") from None
    if not isinstance(document, dict):
        raise BadInputError(400, "the body is not a JSON object")
    return document


def amount(value: object, where: str) -> Decimal:
    """An amount of the request: a string such as "99.90", a whole number or a JSON decimal.

    ``true`` is refused (Python would take it for 1), and so is anything not a finite number.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise BadInputError(422, 'expected an amount such as "99.90"', where)
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise BadInputError(422, f"not a number: {value!r}", where) from None
    if not number.is_finite():
        raise BadInputError(422, "not a finite number", where)
    return number


def cart_items(document: dict[str, Any]) -> list[CartItem]:
    """The ``lines`` of a request as the SDK takes them; the SDK checks the values further."""
    lines = document.get("lines")
    if not isinstance(lines, list) or not lines:
        raise BadInputError(422, "a non-empty list of {product_id, price, quantity}", "lines")
    items = []
    for index, line in enumerate(lines):
        where = f"lines[{index}]"
        if not isinstance(line, dict) or not isinstance(line.get("product_id"), str):
            raise BadInputError(422, "expected {product_id, price, quantity}", where)
        items.append(
            CartItem(
                product_id=line["product_id"],
                price=amount(line.get("price"), f"{where}.price"),
                quantity=amount(line.get("quantity"), f"{where}.quantity"),
            )
        )
    return items


def body_field(field: str) -> str:
    """The request body's path of a field the SDK names (``cart_items[0].price``)."""
    return field.replace("cart_items", "lines", 1)


def quote(calculation: OrderCalculation) -> dict[str, str]:
    """What a cart costs with the loyalty program applied."""
    return {
        "order_total": str(calculation.order_total),
        "saved_total": str(calculation.saved_total),
        "order_to_pay": str(calculation.order_to_pay),
        "bonuses_reward": str(calculation.bonuses_reward),
    }


def http_answer(error: LoyaltyError) -> JsonResponse:
    """The answer to a failed loyalty call. Its messages never hold the shop secret."""
    body: dict[str, Any] = {"error": type(error).__name__, "detail": error.message}
    headers: dict[str, str] = {}
    if isinstance(error, ValidationError):
        status = 422  # rejected before anything was sent
        body["field"] = body_field(error.field)
    elif isinstance(error, NotFoundError):
        status = 404
    elif isinstance(error, OrderStatusError | IdempotencyError) and not error.retryable:
        status = 409  # the order's state does not allow it / the key was used for another return
    elif isinstance(error, OutcomeUnknownError):
        # Never a 2xx: reconcile() could not decide (someone else changed the order), or the
        # order is blocked by another call's unknown outcome; for a person to settle.
        status = 409
        body["reconcile"] = f"python -m rees46_loyalty reconcile {error.order_id}" + (
            f" --idempotency-key {error.idempotency_key}" if error.idempotency_key else ""
        )
    elif isinstance(error, BadRequestError):
        status = 400
    elif isinstance(error, AuthenticationError):
        status = 500  # our credentials are wrong: the buyer can do nothing about it
    elif error.retryable:  # 429, 5xx, no connection, timeouts, a busy idempotency store
        status = 503
        if isinstance(error, APIError) and error.retry_after is not None:
            headers["Retry-After"] = str(math.ceil(error.retry_after))
    else:
        status = 502  # an answer that made no sense
    if status >= 500:
        logger.error("loyalty call failed: %s", error)
    return JsonResponse(body, status=status, headers=headers)


def loyalty_view(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    """A JSON POST endpoint: bad input and loyalty errors become JSON answers."""

    @csrf_exempt  # a JSON API authenticated otherwise; keep CSRF for your HTML forms
    @require_POST
    @functools.wraps(view)
    def endpoint(request: HttpRequest, **kwargs: Any) -> JsonResponse:
        try:
            return view(request, **kwargs)
        except BadInputError as bad:
            body = {"error": "BadInput", "detail": bad.detail}
            if bad.field is not None:
                body["field"] = bad.field
            return JsonResponse(body, status=bad.status)
        except LoyaltyError as error:
            return http_answer(error)

    return endpoint


@loyalty_view
def estimate(request: HttpRequest) -> JsonResponse:
    """Price the cart; nothing changes on the server."""
    cart = read_json(request)
    calculation = loyalty().estimate(
        cart_items=cart_items(cart),
        identifier=cart.get("identifier"),
        promo_codes=cart.get("promo_codes"),
    )
    return JsonResponse(quote(calculation))


@loyalty_view
def pay(request: HttpRequest, order_id: str) -> JsonResponse:
    """Create the order in REES46 and reserve its bonuses and codes; charge ``order_to_pay``."""
    cart = read_json(request)
    calculation = loyalty().apply(
        order_id=order_id,
        cart_items=cart_items(cart),
        identifier=cart.get("identifier"),
        promo_codes=cart.get("promo_codes"),
    )
    return JsonResponse(quote(calculation))


@loyalty_view
def return_items(request: HttpRequest, order_id: str) -> JsonResponse:
    """Record a partial return (``lines``: the whole cart that stays) and answer the refund."""
    body = read_json(request)
    return_id = body.get("return_id")
    if not isinstance(return_id, str) or not return_id:
        raise BadInputError(422, "return_id is required", "return_id")
    key = f"return:{return_id}"
    try:
        change = loyalty().change(
            order_id=order_id,
            cart_items=cart_items(body),
            # The same return sent twice gets the first answer back, never a second change.
            idempotency_key=key,
        )
    except OutcomeUnknownError as unknown:
        # Never a 2xx for an unknown outcome: reconcile it now. Applied: its derived refund.
        found = loyalty().reconcile(order_id=order_id, idempotency_key=unknown.idempotency_key)
        if found.applied and found.idempotency_key == key and isinstance(found.result, OrderChange):
            return JsonResponse(
                {
                    "order_id": order_id,
                    "refund": str(-found.result.order_total_change),
                    "replayed": False,
                    "reconciled": True,
                }
            )
        # Not applied (now recorded so): the back office sends the return again.
        response = JsonResponse(
            {
                "error": "NotApplied",
                "detail": f"the return was not applied to order {order_id}: send it again",
            },
            status=503,
        )
        response["Retry-After"] = "1"
        return response
    return JsonResponse(
        {
            "order_id": order_id,
            "refund": str(-change.order_total_change),
            "replayed": change.replayed,
            "reconciled": False,
        }
    )


urlpatterns = [
    path("checkout/estimate", estimate),
    path("checkout/orders/<str:order_id>/pay", pay),
    path("back-office/orders/<str:order_id>/return", return_items),
]
