"""An aiohttp.web checkout on rees46_loyalty: one client per application, errors as HTTP answers.

Run it with ``python aiohttp_app.py``, with ``REES46_SHOP_ID`` and ``REES46_SHOP_SECRET`` in the
environment. Endpoints:

- ``POST /checkout/estimate``: price the cart, as often as it changes;
- ``POST /checkout/orders/{order_id}/pay``: the buyer goes to pay; reserve what the order spends
  and answer the amount to charge (``apply``);
- ``POST /webhooks/payment``: the payment provider says the order is paid (``confirm``);
- ``GET /back-office/orders/{order_id}``: the order as REES46 has it (``details``);
- ``POST /back-office/orders/{order_id}/cancel``: cancel the order (``cancel``);
- ``POST /back-office/orders/{order_id}/return``: a partial return (``change``).

Amounts travel as JSON strings ("99.90"), as exact as ``Decimal``.
"""

import json
import logging
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from rees46_loyalty import (
    DEFAULT_BASE_URL,
    APIError,
    AuthenticationError,
    BadRequestError,
    CartItem,
    IdempotencyError,
    LoyaltyClient,
    LoyaltyError,
    NotFoundError,
    OrderCalculation,
    OrderChange,
    OrderStatusError,
    OutcomeUnknownError,
    ValidationError,
)

logger = logging.getLogger(__name__)

LOYALTY = web.AppKey("loyalty", LoyaltyClient)


@dataclass(frozen=True)
class Settings:
    """Where the loyalty API is and who the shop is."""

    shop_id: str
    shop_secret: str = field(repr=False)  # never in a repr, so never in a log line
    base_url: str = DEFAULT_BASE_URL

    @classmethod
    def from_env(cls) -> "Settings":
        """``REES46_SHOP_ID``, ``REES46_SHOP_SECRET`` and, optionally, ``REES46_BASE_URL``."""
        missing = [
            name for name in ("REES46_SHOP_ID", "REES46_SHOP_SECRET") if not os.environ.get(name)
        ]
        if missing:
            raise SystemExit(f"set {' and '.join(missing)} in the environment (see the README)")
        return cls(
            shop_id=os.environ["REES46_SHOP_ID"],
            shop_secret=os.environ["REES46_SHOP_SECRET"],
            base_url=os.environ.get("REES46_BASE_URL", DEFAULT_BASE_URL),
        )


# -- reading requests, writing answers -------------------------------------------------------


def refused(
    status: type[web.HTTPClientError], detail: str, field: str | None = None
) -> web.HTTPClientError:
    """An error answer for a request the app cannot read, in JSON like every other answer.

    ``field`` is the path in the request body of the value refused (``lines[0].price``).
    """
    body = {"detail": detail} if field is None else {"detail": detail, "field": field}
    return status(text=json.dumps(body), content_type="application/json")


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; numbers with a fraction are read as ``Decimal``, not float."""
    try:
        document = await request.json(loads=partial(json.loads, parse_float=Decimal))
    except ValueError:
        raise refused(web.HTTPBadRequest, "the body is not JSON") from None
    if not isinstance(document, dict):
        raise refused(web.HTTPBadRequest, "the body is not a JSON object")
    return document


def amount(value: object, where: str) -> Decimal:
    """An amount of the request: a string such as "99.90", a whole number or a JSON decimal.

    ``true`` is refused (Python would take it for 1), and so is anything not a finite number.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise refused(web.HTTPUnprocessableEntity, 'expected an amount such as "99.90"', where)
    try:
        number = Decimal(value)
    except ArithmeticError:
        raise refused(web.HTTPUnprocessableEntity, "not a number", where) from None
    if not number.is_finite():
        raise refused(web.HTTPUnprocessableEntity, "not a finite number", where)
    return number


def cart_items(document: dict[str, Any]) -> list[CartItem]:
    """The ``lines`` of a request as the SDK takes them; the SDK checks the values further."""
    lines = document.get("lines")
    if not isinstance(lines, list) or not lines:
        raise refused(
            web.HTTPUnprocessableEntity,
            "a non-empty list of {product_id, price, quantity}",
            "lines",
        )
    items = []
    for index, line in enumerate(lines):
        where = f"lines[{index}]"
        if not isinstance(line, dict) or not isinstance(line.get("product_id"), str):
            raise refused(
                web.HTTPUnprocessableEntity, "expected {product_id, price, quantity}", where
            )
        items.append(
            CartItem(
                product_id=line["product_id"],
                price=amount(line.get("price"), f"{where}.price"),
                quantity=amount(line.get("quantity"), f"{where}.quantity"),
            )
        )
    return items


def quote(calculation: OrderCalculation) -> dict[str, str]:
    """What a cart costs with the loyalty program applied."""
    return {
        "order_total": str(calculation.order_total),
        "saved_total": str(calculation.saved_total),
        "order_to_pay": str(calculation.order_to_pay),
        "bonuses_reward": str(calculation.bonuses_reward),
    }


# -- the endpoints ---------------------------------------------------------------------------

routes = web.RouteTableDef()


@routes.post("/checkout/estimate")
async def estimate(request: web.Request) -> web.Response:
    """Price the cart; nothing changes on the server."""
    cart = await read_json(request)
    calculation = await request.app[LOYALTY].estimate(
        cart_items=cart_items(cart),
        identifier=cart.get("identifier"),
        promo_codes=cart.get("promo_codes"),
        charge_bonuses=cart.get("charge_bonuses"),
    )
    return web.json_response(quote(calculation))


@routes.post("/checkout/orders/{order_id}/pay")
async def pay(request: web.Request) -> web.Response:
    """Create the order in REES46 and reserve its bonuses and codes; charge ``order_to_pay``."""
    cart = await read_json(request)
    calculation = await request.app[LOYALTY].apply(
        order_id=request.match_info["order_id"],
        cart_items=cart_items(cart),
        identifier=cart.get("identifier"),
        promo_codes=cart.get("promo_codes"),
        charge_bonuses=cart.get("charge_bonuses"),
    )
    return web.json_response(quote(calculation))


@routes.post("/webhooks/payment")
async def payment_succeeded(request: web.Request) -> web.Response:
    """Confirm the paid order, so that its rewards are granted.

    Providers resend webhooks; a repeated confirm is answered from the idempotency record.
    """
    event = await read_json(request)
    confirmed = await request.app[LOYALTY].confirm(order_id=event.get("order_id", ""))
    return web.json_response(
        {"order_id": confirmed.order_id, "status": "confirmed", "replayed": confirmed.replayed}
    )


@routes.get("/back-office/orders/{order_id}")
async def order_details(request: web.Request) -> web.Response:
    """The order as REES46 has it now: what to look at to reconcile an unknown outcome."""
    calculation = await request.app[LOYALTY].details(order_id=request.match_info["order_id"])
    return web.json_response(quote(calculation))


@routes.post("/back-office/orders/{order_id}/cancel")
async def cancel_order(request: web.Request) -> web.Response:
    """Cancel the order: spent bonuses and codes come back, its rewards go."""
    cancelled = await request.app[LOYALTY].cancel(order_id=request.match_info["order_id"])
    return web.json_response(
        {"order_id": cancelled.order_id, "status": "cancelled", "replayed": cancelled.replayed}
    )


@routes.post("/back-office/orders/{order_id}/return")
async def return_items(request: web.Request) -> web.Response:
    """Record a partial return (``lines``: the whole cart that stays) and answer the refund."""
    body = await read_json(request)
    return_id = body.get("return_id")
    if not isinstance(return_id, str) or not return_id:
        raise refused(web.HTTPUnprocessableEntity, "return_id is required")
    order_id = request.match_info["order_id"]
    loyalty = request.app[LOYALTY]
    key = f"return:{return_id}"
    try:
        change = await loyalty.change(
            order_id=order_id,
            cart_items=cart_items(body),
            # A double click or a resent request with the same return id gets the first answer
            # back: a second change would answer 0 and the refund amount would be lost.
            idempotency_key=key,
        )
    except OutcomeUnknownError as unknown:
        # Never a 2xx for an unknown outcome: reconcile it here (see the FastAPI example).
        found = await loyalty.reconcile(order_id=order_id, idempotency_key=unknown.idempotency_key)
        if found.applied and found.idempotency_key == key and isinstance(found.result, OrderChange):
            return web.json_response(
                {
                    "order_id": order_id,
                    "refund": str(-found.result.order_total_change),
                    "order_to_pay": str(found.result.order_to_pay),
                    "replayed": False,
                    "reconciled": True,
                }
            )
        return web.json_response(
            {
                "error": "NotApplied",
                "detail": f"the return was not applied to order {order_id}: send it again",
            },
            status=503,
            headers={"Retry-After": "1"},
        )
    return web.json_response(
        {
            "order_id": order_id,
            "refund": str(-change.order_total_change),
            "order_to_pay": str(change.order_to_pay),
            "replayed": change.replayed,
            "reconciled": False,
        }
    )


# -- errors as HTTP answers ------------------------------------------------------------------


def reconcile_command(error: OutcomeUnknownError) -> str:
    """The operator command that decides *error*'s unknown outcome from the workers' store."""
    command = f"python -m rees46_loyalty reconcile {error.order_id}"
    if error.idempotency_key is not None:
        command += f" --idempotency-key {error.idempotency_key}"
    return command


def http_answer(error: LoyaltyError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The HTTP status, JSON body and headers that answer a failed loyalty call.

    Messages are safe to show: they never hold the shop secret, and phone numbers are masked.
    """
    body: dict[str, Any] = {"error": type(error).__name__, "detail": error.message}
    headers: dict[str, str] = {}
    if isinstance(error, ValidationError):
        status = 422  # rejected before anything was sent
        # The SDK names its own argument (cart_items[0].price); the client sent `lines`.
        body["field"] = error.field.replace("cart_items", "lines", 1)
    elif isinstance(error, NotFoundError):
        status = 404
    elif isinstance(error, OrderStatusError):
        status = 409  # terminal: the order's state does not allow it, retrying never helps
    elif isinstance(error, OutcomeUnknownError):
        # Never a 2xx: reconcile() could not decide, or the order is blocked by another call's
        # unknown outcome; for a person to settle.
        status = 409
        body["reconcile"] = reconcile_command(error)
    elif isinstance(error, IdempotencyError) and not error.retryable:
        status = 409  # the same return id was used for another return
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
    return status, body, headers


@web.middleware
async def loyalty_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a :class:`LoyaltyError` raised by a handler."""
    try:
        return await handler(request)
    except LoyaltyError as error:
        status, body, headers = http_answer(error)
        return web.json_response(body, status=status, headers=headers)


# -- the application -------------------------------------------------------------------------


def create_app(settings: Settings | None = None, **client_options: Any) -> web.Application:
    """The application, talking to REES46 as *settings* say (default: from the environment).

    *client_options* go to :class:`LoyaltyClient`: a retry policy, a Redis idempotency store
    shared by several worker processes, ...
    """
    settings = Settings.from_env() if settings is None else settings

    async def loyalty_client(app: web.Application) -> AsyncIterator[None]:
        # One client for the whole application: it holds the connection pool and the
        # idempotency records. It is created on startup, inside the server's event loop, and
        # closed on cleanup.
        async with LoyaltyClient(
            settings.shop_id, settings.shop_secret, base_url=settings.base_url, **client_options
        ) as client:
            app[LOYALTY] = client
            yield

    app = web.Application(middlewares=[loyalty_errors])
    app.cleanup_ctx.append(loyalty_client)
    app.add_routes(routes)
    return app


if __name__ == "__main__":
    web.run_app(create_app())
