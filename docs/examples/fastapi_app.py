"""A FastAPI checkout on rees46_loyalty: one client per application, errors as HTTP answers.

Run it with ``uvicorn fastapi_app:create_app --factory``, with ``REES46_SHOP_ID`` and
``REES46_SHOP_SECRET`` in the environment. Endpoints:

- ``POST /checkout/estimate``: price the cart, as often as it changes;
- ``POST /checkout/orders/{order_id}/pay``: the buyer goes to pay; reserve what the order spends
  and answer the amount to charge (``apply``);
- ``POST /webhooks/payment``: the payment provider says the order is paid (``confirm``);
- ``GET /back-office/orders/{order_id}``: the order as REES46 has it (``details``);
- ``POST /back-office/orders/{order_id}/cancel``: cancel the order (``cancel``);
- ``POST /back-office/orders/{order_id}/return``: a partial return (``change``).
"""

import logging
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

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


# -- the request and answer bodies -----------------------------------------------------------


class Line(BaseModel):
    """One cart line. Send money as a string ("99.90") to keep it exact."""

    product_id: str
    price: Decimal
    quantity: Decimal = Field(gt=0)


class Cart(BaseModel):
    """The buyer's cart, and how they want to pay with the loyalty program."""

    lines: list[Line]
    identifier: str | None = None  # the member's phone number, 7XXXXXXXXXX
    promo_codes: list[str] = Field(default_factory=list)
    charge_bonuses: bool = False


class PaymentEvent(BaseModel):
    """What the payment provider posts once an order is paid."""

    order_id: str


class Return(BaseModel):
    """A partial return: the whole cart that stays with the buyer, not the returned lines."""

    return_id: str  # the back office's id of this return: a repeated request is one return
    lines: list[Line]


class Quote(BaseModel):
    """What a cart costs with the loyalty program applied."""

    order_total: Decimal
    saved_total: Decimal
    order_to_pay: Decimal
    bonuses_reward: Decimal

    @classmethod
    def of(cls, calculation: OrderCalculation) -> "Quote":
        """The amounts of an order calculation."""
        return cls(
            order_total=calculation.order_total,
            saved_total=calculation.saved_total,
            order_to_pay=calculation.order_to_pay,
            bonuses_reward=calculation.bonuses_reward,
        )


class OrderState(BaseModel):
    """The answer of confirm and cancel."""

    order_id: str
    status: str
    replayed: bool  # true when this repeats an earlier answer: nothing was sent again


class Refund(BaseModel):
    """The answer of a return: ``refund`` is the money to give back to the buyer."""

    order_id: str
    refund: Decimal
    order_to_pay: Decimal
    replayed: bool
    # True when the change's answer was lost and the amount was derived by reconcile().
    reconciled: bool = False


def cart_items(lines: list[Line]) -> list[CartItem]:
    """Cart lines as the SDK takes them."""
    return [CartItem(product_id=x.product_id, price=x.price, quantity=x.quantity) for x in lines]


# -- the endpoints ---------------------------------------------------------------------------


def loyalty_client(request: Request) -> LoyaltyClient:
    """The application's client, created by its lifespan."""
    client: LoyaltyClient = request.app.state.loyalty
    return client


Loyalty = Annotated[LoyaltyClient, Depends(loyalty_client)]

router = APIRouter()


@router.post("/checkout/estimate")
async def estimate(cart: Cart, loyalty: Loyalty) -> Quote:
    """Price the cart; nothing changes on the server."""
    calculation = await loyalty.estimate(
        cart_items=cart_items(cart.lines),
        identifier=cart.identifier,
        promo_codes=cart.promo_codes,
        charge_bonuses=cart.charge_bonuses,
    )
    return Quote.of(calculation)


@router.post("/checkout/orders/{order_id}/pay")
async def pay(order_id: str, cart: Cart, loyalty: Loyalty) -> Quote:
    """Create the order in REES46 and reserve its bonuses and codes; charge ``order_to_pay``."""
    calculation = await loyalty.apply(
        order_id=order_id,
        cart_items=cart_items(cart.lines),
        identifier=cart.identifier,
        promo_codes=cart.promo_codes,
        charge_bonuses=cart.charge_bonuses,
    )
    return Quote.of(calculation)


@router.post("/webhooks/payment")
async def payment_succeeded(event: PaymentEvent, loyalty: Loyalty) -> OrderState:
    """Confirm the paid order, so that its rewards are granted.

    Providers resend webhooks; a repeated confirm is answered from the idempotency record.
    """
    confirmed = await loyalty.confirm(order_id=event.order_id)
    return OrderState(order_id=confirmed.order_id, status="confirmed", replayed=confirmed.replayed)


@router.get("/back-office/orders/{order_id}")
async def order_details(order_id: str, loyalty: Loyalty) -> Quote:
    """The order as REES46 has it now: what to look at to reconcile an unknown outcome."""
    return Quote.of(await loyalty.details(order_id=order_id))


@router.post("/back-office/orders/{order_id}/cancel")
async def cancel_order(order_id: str, loyalty: Loyalty) -> OrderState:
    """Cancel the order: spent bonuses and codes come back, its rewards go."""
    cancelled = await loyalty.cancel(order_id=order_id)
    return OrderState(order_id=cancelled.order_id, status="cancelled", replayed=cancelled.replayed)


@router.post("/back-office/orders/{order_id}/return", response_model=Refund)
async def return_items(order_id: str, body: Return, loyalty: Loyalty) -> Refund | JSONResponse:
    """Record a partial return and answer the amount to refund.

    An unknown outcome is never answered 2xx: it is reconciled here. Applied: 200 with the
    derived refund. Not applied: 503 with ``Retry-After``, and the back office sends the return
    again (then it goes to REES46). Undecidable: ``OutcomeUnknownError``, 409 (see below).
    """
    key = f"return:{body.return_id}"
    try:
        change = await loyalty.change(
            order_id=order_id,
            cart_items=cart_items(body.lines),
            # A double click or a resent request with the same return id gets the first answer
            # back: a second change would answer 0 and the refund amount would be lost.
            idempotency_key=key,
        )
    except OutcomeUnknownError as unknown:
        found = await loyalty.reconcile(order_id=order_id, idempotency_key=unknown.idempotency_key)
        if found.applied and found.idempotency_key == key and isinstance(found.result, OrderChange):
            return Refund(
                order_id=order_id,
                refund=-found.result.order_total_change,
                order_to_pay=found.result.order_to_pay,
                replayed=False,
                reconciled=True,
            )
        return JSONResponse(
            {
                "error": "NotApplied",
                "detail": f"the return was not applied to order {order_id}: send it again",
            },
            status_code=503,
            headers={"Retry-After": "1"},
        )
    return Refund(
        order_id=order_id,
        refund=-change.order_total_change,
        order_to_pay=change.order_to_pay,
        replayed=change.replayed,
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
        # Never a 2xx: a back office that takes any 2xx as done would book an unknown refund.
        # Raised when reconcile() cannot decide (someone else changed the order meanwhile), or
        # by another call on an order blocked by an unknown outcome: for a person to settle.
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


async def loyalty_error_handler(_request: Request, error: LoyaltyError) -> JSONResponse:
    """Answer a :class:`LoyaltyError` raised by an endpoint."""
    status, body, headers = http_answer(error)
    return JSONResponse(body, status_code=status, headers=headers)


# -- the application -------------------------------------------------------------------------


def create_app(settings: Settings | None = None, **client_options: Any) -> FastAPI:
    """The application, talking to REES46 as *settings* say (default: from the environment).

    *client_options* go to :class:`LoyaltyClient`: a retry policy, a Redis idempotency store
    shared by several worker processes, ...
    """
    settings = Settings.from_env() if settings is None else settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client for the whole application: it holds the connection pool and the
        # idempotency records. It is created here, inside the server's event loop.
        async with LoyaltyClient(
            settings.shop_id, settings.shop_secret, base_url=settings.base_url, **client_options
        ) as client:
            app.state.loyalty = client
            yield

    app = FastAPI(lifespan=lifespan, exception_handlers={LoyaltyError: loyalty_error_handler})
    app.include_router(router)
    return app
