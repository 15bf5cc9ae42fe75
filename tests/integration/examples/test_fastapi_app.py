"""The FastAPI example (docs/examples/fastapi_app.py), in-process through httpx, against the
fake REES46 API on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi_app import Settings, create_app

from rees46_loyalty import RetryPolicy
from rees46_loyalty.testing import FakeRees46, Fault
from tests.conftest import PHONE, SHOP_SECRET

pytestmark = pytest.mark.integration

CART = {"lines": [{"product_id": "A", "price": "1000", "quantity": 4}], "identifier": PHONE}
SMALLER = [{"product_id": "A", "price": "1000", "quantity": 3}]


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and an HTTP client of it (ASGITransport runs no
    lifespan of its own)."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop") as http,
    ):
        yield http


def app_of(shop: FakeRees46, **client_options: Any) -> FastAPI:
    settings = Settings(shop_id=shop.shop_id, shop_secret=shop.shop_secret, base_url=shop.url)
    return create_app(settings, **client_options)


@pytest.fixture
async def http(shop: FakeRees46) -> AsyncIterator[httpx.AsyncClient]:
    """The shop's API; its client does not retry, so every fault reaches the error mapping."""
    async with serving(app_of(shop, retry=RetryPolicy.disabled())) as client:
        yield client


async def paid(http: httpx.AsyncClient, order_id: str = "1001") -> None:
    assert (await http.post(f"/checkout/orders/{order_id}/pay", json=CART)).status_code == 200
    assert (await http.post("/webhooks/payment", json={"order_id": order_id})).status_code == 200


async def test_an_order_from_cart_to_partial_return(
    http: httpx.AsyncClient, shop: FakeRees46
) -> None:
    """Estimate, pay, a payment webhook delivered twice, a return clicked twice, details,
    cancel: every answer carries the fake server's amounts, and each effect happened once."""
    quote = await http.post("/checkout/estimate", json={**CART, "promo_codes": ["SALE10"]})
    assert quote.status_code == 200
    assert {name: Decimal(amount) for name, amount in quote.json().items()} == {
        "order_total": 4000,
        "saved_total": 400,
        "order_to_pay": 3600,
        "bonuses_reward": 180,
    }
    assert shop.ledger.effects == []

    pay = await http.post("/checkout/orders/1001/pay", json={**CART, "charge_bonuses": True})
    assert pay.status_code == 200
    assert Decimal(pay.json()["order_to_pay"]) == shop.ledger.effects_for("apply")[0].order_to_pay

    first, again = [
        (await http.post("/webhooks/payment", json={"order_id": "1001"})).json() for _ in "12"
    ]
    assert first == {"order_id": "1001", "status": "confirmed", "replayed": False}
    assert again == {**first, "replayed": True}
    assert len(shop.ledger.effects_for("confirm", "1001")) == 1

    body = {"return_id": "R-1", "lines": SMALLER}
    refunds = [(await http.post("/back-office/orders/1001/return", json=body)) for _ in "12"]
    assert [r.status_code for r in refunds] == [200, 200]
    assert [r.json()["replayed"] for r in refunds] == [False, True]
    assert {Decimal(r.json()["refund"]) for r in refunds} == {-shop.ledger.refunds("1001")}
    assert shop.ledger.refunds("1001") < 0
    assert len(shop.ledger.effects_for("change", "1001")) == 1

    details = await http.get("/back-office/orders/1001")
    assert details.json()["order_total"] == "3000"

    cancel = await http.post("/back-office/orders/1001/cancel")
    assert cancel.json() == {"order_id": "1001", "status": "cancelled", "replayed": False}
    assert shop.book.orders["1001"].status == "cancelled"


async def test_the_lifespan_creates_one_client_and_closes_it(shop: FakeRees46) -> None:
    """Every request gets the client the lifespan made; leaving the lifespan closes it."""
    app = app_of(shop)
    async with serving(app) as http:
        client = app.state.loyalty
        await http.post("/checkout/estimate", json=CART)
        await http.post("/checkout/estimate", json=CART)
        assert app.state.loyalty is client
        assert not client.closed
    assert client.closed


async def test_a_rejected_input_is_422_naming_the_field(
    http: httpx.AsyncClient, shop: FakeRees46
) -> None:
    """A phone number the SDK refuses: 422 with the field, masked, and nothing was sent."""
    answer = await http.post("/checkout/estimate", json={**CART, "identifier": "+7 999 000-11-22"})
    assert answer.status_code == 422
    assert answer.json()["error"] == "ValidationError"
    assert answer.json()["field"] == "identifier"
    assert shop.received() == 0


async def test_an_unknown_order_is_404(http: httpx.AsyncClient) -> None:
    """Details of an order REES46 does not know."""
    answer = await http.get("/back-office/orders/nope")
    assert answer.status_code == 404
    assert answer.json()["error"] == "NotFoundError"


async def test_confirming_a_cancelled_order_is_409(
    http: httpx.AsyncClient, shop: FakeRees46
) -> None:
    """A payment webhook for an order cancelled meanwhile: a conflict, not a server error."""
    await http.post("/checkout/orders/1001/pay", json=CART)
    await http.post("/back-office/orders/1001/cancel")
    answer = await http.post("/webhooks/payment", json={"order_id": "1001"})
    assert answer.status_code == 409
    assert answer.json()["error"] == "OrderStatusError"
    assert shop.ledger.effects_for("confirm") == []


async def test_a_return_whose_answer_was_lost_is_202_with_a_reconcile_hint(
    http: httpx.AsyncClient, shop: FakeRees46
) -> None:
    """The change was applied but its answer lost: 202 pointing at the order's details; the
    same return clicked again sends nothing and answers the same."""
    await paid(http)
    shop.faults.on("change", Fault.drop_after_commit())
    body = {"return_id": "R-1", "lines": SMALLER}
    answers = [await http.post("/back-office/orders/1001/return", json=body) for _ in "12"]
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json()["error"] == "OutcomeUnknownError"
    assert answers[0].json()["reconcile"] == "GET /back-office/orders/1001"
    assert shop.received("change") == 1
    assert len(shop.ledger.effects_for("change", "1001")) == 1


async def test_a_return_id_reused_for_another_return_is_409(
    http: httpx.AsyncClient, shop: FakeRees46
) -> None:
    """Same return id, other lines: refused without sending."""
    await paid(http)
    await http.post("/back-office/orders/1001/return", json={"return_id": "R-1", "lines": SMALLER})
    other = [{"product_id": "A", "price": "1000", "quantity": 2}]
    answer = await http.post(
        "/back-office/orders/1001/return", json={"return_id": "R-1", "lines": other}
    )
    assert answer.status_code == 409
    assert answer.json()["error"] == "IdempotencyError"
    assert shop.received("change") == 1


@pytest.mark.parametrize(
    ("fault", "status", "retry_after"),
    [
        (Fault.rate_limited(retry_after="7"), 503, "7"),
        (Fault.unavailable(), 503, None),
        (Fault.close_before_answer(), 503, None),
        (Fault.invalid_json(), 502, None),
    ],
    ids=["429", "503", "connection-closed", "invalid-json"],
)
async def test_upstream_failures(
    http: httpx.AsyncClient, shop: FakeRees46, fault: Fault, status: int, retry_after: str | None
) -> None:
    """Transient failures are 503 with the server's Retry-After when it sent one; an answer
    that makes no sense is 502."""
    shop.faults.on("estimate", fault)
    answer = await http.post("/checkout/estimate", json=CART)
    assert answer.status_code == status
    assert answer.headers.get("Retry-After") == retry_after


async def test_a_request_the_api_refuses_is_400(http: httpx.AsyncClient) -> None:
    """Paying with bonuses as somebody who is not a member."""
    cart = {**CART, "identifier": "79990009999", "charge_bonuses": True}
    answer = await http.post("/checkout/estimate", json=cart)
    assert answer.status_code == 400
    assert answer.json()["error"] == "BadRequestError"


async def test_wrong_credentials_are_500_and_never_shown(shop: FakeRees46) -> None:
    """A wrong shop secret is the shop's fault, not the buyer's: 500, without the secret."""
    settings = Settings(shop_id=shop.shop_id, shop_secret="wrong-" + SHOP_SECRET, base_url=shop.url)
    assert SHOP_SECRET not in repr(settings)
    async with serving(create_app(settings)) as http:
        answer = await http.post("/checkout/estimate", json=CART)
    assert answer.status_code == 500
    assert answer.json()["error"] == "AuthenticationError"
    assert SHOP_SECRET not in answer.text
