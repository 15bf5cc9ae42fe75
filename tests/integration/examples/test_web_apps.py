"""The web examples (docs/examples/fastapi_app.py and aiohttp_app.py): the same endpoints
and the same error mapping, each app served as its framework serves it, against the fake REES46
API on loopback."""

from __future__ import annotations

import importlib
from decimal import Decimal

import pytest

from rees46_loyalty import CartItem, OutcomeUnknownError
from rees46_loyalty.testing import FakeRees46, Fault
from tests.conftest import PHONE, SHOP_SECRET
from tests.integration.examples.conftest import ShopApi, serving

pytestmark = pytest.mark.integration

CART = {"lines": [{"product_id": "A", "price": "1000", "quantity": 4}], "identifier": PHONE}
SMALLER = [{"product_id": "A", "price": "1000", "quantity": 3}]


async def paid(http: ShopApi, order_id: str = "1001") -> None:
    assert (await http.post(f"/checkout/orders/{order_id}/pay", json=CART)).status == 200
    assert (await http.post("/webhooks/payment", json={"order_id": order_id})).status == 200


async def test_an_order_from_cart_to_partial_return(http: ShopApi, shop: FakeRees46) -> None:
    """Estimate, pay, a payment webhook delivered twice, a return clicked twice, details,
    cancel: every answer carries the fake server's amounts, and each effect happened once."""
    quote = await http.post("/checkout/estimate", json={**CART, "promo_codes": ["SALE10"]})
    assert quote.status == 200
    assert {name: Decimal(amount) for name, amount in quote.body.items()} == {
        "order_total": 4000,
        "saved_total": 400,
        "order_to_pay": 3600,
        "bonuses_reward": 180,
    }
    assert shop.ledger.effects == []

    pay = await http.post("/checkout/orders/1001/pay", json={**CART, "charge_bonuses": True})
    assert pay.status == 200
    assert Decimal(pay.body["order_to_pay"]) == shop.ledger.effects_for("apply")[0].order_to_pay

    first, again = [
        (await http.post("/webhooks/payment", json={"order_id": "1001"})).body for _ in "12"
    ]
    assert first == {"order_id": "1001", "status": "confirmed", "replayed": False}
    assert again == {**first, "replayed": True}
    assert len(shop.ledger.effects_for("confirm", "1001")) == 1

    body = {"return_id": "R-1", "lines": SMALLER}
    refunds = [(await http.post("/back-office/orders/1001/return", json=body)) for _ in "12"]
    assert [r.status for r in refunds] == [200, 200]
    assert [r.body["replayed"] for r in refunds] == [False, True]
    assert {Decimal(r.body["refund"]) for r in refunds} == {-shop.ledger.refunds("1001")}
    assert shop.ledger.refunds("1001") < 0
    assert len(shop.ledger.effects_for("change", "1001")) == 1

    details = await http.get("/back-office/orders/1001")
    assert details.body["order_total"] == "3000"

    cancel = await http.post("/back-office/orders/1001/cancel")
    assert cancel.body == {"order_id": "1001", "status": "cancelled", "replayed": False}
    assert shop.book.orders["1001"].status == "cancelled"


async def test_a_rejected_input_is_422_naming_the_field(http: ShopApi, shop: FakeRees46) -> None:
    """A phone number the SDK refuses: 422 with the field, masked, and nothing was sent."""
    answer = await http.post("/checkout/estimate", json={**CART, "identifier": "+7 999 000-11-22"})
    assert answer.status == 422
    assert answer.body["error"] == "ValidationError"
    assert answer.body["field"] == "identifier"
    assert shop.received() == 0


async def test_a_line_the_sdk_refuses_is_422_naming_its_path_in_the_body(
    http: ShopApi, shop: FakeRees46
) -> None:
    """A price of 0 passes the app's parsing and is refused by the SDK: the 422's field is the
    request body's path (lines[0].price), not the SDK's argument (cart_items[0].price)."""
    line = {"product_id": "A", "price": "0", "quantity": "1"}
    answer = await http.post("/checkout/estimate", json={"lines": [line]})
    assert answer.status == 422
    assert answer.body["field"] == "lines[0].price"
    assert shop.received() == 0


async def test_a_price_of_true_is_refused_not_taken_for_1(http: ShopApi, shop: FakeRees46) -> None:
    """JSON `true` as a price: 422 pointing at lines[0].price (each framework its own way)."""
    line = {"product_id": "A", "price": True, "quantity": "1"}
    answer = await http.post("/checkout/estimate", json={"lines": [line]})
    assert answer.status == 422
    if "field" in answer.body:  # aiohttp: the app's own check
        assert answer.body["field"] == "lines[0].price"
    else:  # FastAPI: pydantic's, located in the body
        assert answer.body["detail"][0]["loc"] == ["body", "lines", 0, "price"]
    assert shop.received() == 0


async def test_an_unknown_order_is_404(http: ShopApi) -> None:
    """Details of an order REES46 does not know."""
    answer = await http.get("/back-office/orders/nope")
    assert answer.status == 404
    assert answer.body["error"] == "NotFoundError"


async def test_confirming_a_cancelled_order_is_409(http: ShopApi, shop: FakeRees46) -> None:
    """A payment webhook for an order cancelled meanwhile: a conflict, not a server error."""
    await http.post("/checkout/orders/1001/pay", json=CART)
    await http.post("/back-office/orders/1001/cancel")
    answer = await http.post("/webhooks/payment", json={"order_id": "1001"})
    assert answer.status == 409
    assert answer.body["error"] == "OrderStatusError"
    assert shop.ledger.effects_for("confirm") == []


async def test_a_return_whose_answer_was_lost_is_reconciled_to_200(
    http: ShopApi, shop: FakeRees46
) -> None:
    """The change was applied but its answer lost: reconciled inline, 200 with the ledger's
    exact refund; the same return clicked again is answered the same, and nothing is resent."""
    await paid(http)
    shop.faults.on("change", Fault.drop_after_commit())
    body = {"return_id": "R-1", "lines": SMALLER}
    answers = [await http.post("/back-office/orders/1001/return", json=body) for _ in "12"]
    assert [a.status for a in answers] == [200, 200]
    assert answers[0].body["reconciled"] is True
    assert answers[1].body["replayed"] is True
    (effect,) = shop.ledger.effects_for("change", "1001")
    for answer in answers:
        assert Decimal(answer.body["refund"]) == -effect.order_total_change > 0
    to_pay = shop.book.orders["1001"].calculation.payload["order_to_pay"]
    assert Decimal(answers[0].body["order_to_pay"]) == Decimal(str(to_pay))
    assert shop.received("change") == 1


async def test_a_return_never_processed_is_503_then_sent_once(
    http: ShopApi, shop: FakeRees46
) -> None:
    """A 504 before REES46 processed the change: not applied, so 503 with Retry-After (never a
    2xx); the back office sends the return again, and that one goes through, once."""
    await paid(http)
    shop.faults.on("change", Fault.gateway_timeout())
    body = {"return_id": "R-1", "lines": SMALLER}
    first = await http.post("/back-office/orders/1001/return", json=body)
    assert first.status == 503
    assert first.headers["Retry-After"] == "1"
    assert first.body["error"] == "NotApplied"
    assert shop.ledger.effects_for("change") == []
    again = await http.post("/back-office/orders/1001/return", json=body)
    assert again.status == 200
    assert (again.body["replayed"], again.body["reconciled"]) == (False, False)
    assert Decimal(again.body["refund"]) == -shop.ledger.refunds("1001") == 1000
    assert len(shop.ledger.effects_for("change", "1001")) == 1


async def test_a_return_that_cannot_be_decided_is_409_with_the_reconcile_command(
    http: ShopApi, shop: FakeRees46
) -> None:
    """The answer was lost, then another system changed the order: reconcile cannot decide,
    and the answer is 409 (never a 2xx) naming the operator's reconcile command."""
    await paid(http)
    shop.faults.on("change", Fault.drop_after_commit())
    body = {"return_id": "R-1", "lines": SMALLER}
    async with shop.client(idempotency=None) as other_system:
        with pytest.raises(OutcomeUnknownError):
            await http.loyalty.change(
                order_id="1001",
                cart_items=[CartItem(product_id="A", price=Decimal(1000), quantity=3)],
                idempotency_key="return:R-1",
            )
        shop.faults.clear()
        await other_system.change(
            order_id="1001", cart_items=[CartItem(product_id="A", price=Decimal(1000), quantity=1)]
        )
    answer = await http.post("/back-office/orders/1001/return", json=body)
    assert answer.status == 409
    assert answer.body["error"] == "OutcomeUnknownError"
    assert "someone else changed it" in answer.body["detail"]
    assert answer.body["reconcile"] == (
        "python -m rees46_loyalty reconcile 1001 --idempotency-key return:R-1"
    )
    assert shop.received("change") == 2


async def test_a_return_id_reused_for_another_return_is_409(
    http: ShopApi, shop: FakeRees46
) -> None:
    """Same return id, other lines: refused without sending."""
    await paid(http)
    await http.post("/back-office/orders/1001/return", json={"return_id": "R-1", "lines": SMALLER})
    other = [{"product_id": "A", "price": "1000", "quantity": 2}]
    answer = await http.post(
        "/back-office/orders/1001/return", json={"return_id": "R-1", "lines": other}
    )
    assert answer.status == 409
    assert answer.body["error"] == "IdempotencyError"
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
    http: ShopApi, shop: FakeRees46, fault: Fault, status: int, retry_after: str | None
) -> None:
    """Transient failures are 503 with the server's Retry-After when it sent one; an answer
    that makes no sense is 502."""
    shop.faults.on("estimate", fault)
    answer = await http.post("/checkout/estimate", json=CART)
    assert answer.status == status
    assert answer.headers.get("Retry-After") == retry_after


async def test_a_request_the_api_refuses_is_400(http: ShopApi) -> None:
    """Paying with bonuses as somebody who is not a member."""
    cart = {**CART, "identifier": "79990009999", "charge_bonuses": True}
    answer = await http.post("/checkout/estimate", json=cart)
    assert answer.status == 400
    assert answer.body["error"] == "BadRequestError"


@pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])
async def test_the_app_has_one_client_and_closes_it(shop: FakeRees46, framework: str) -> None:
    """Every request goes through the client made at startup; shutting down closes it."""
    async with serving(framework, shop) as api:
        for _ in range(3):
            assert (await api.post("/checkout/estimate", json=CART)).status == 200
        open_while_serving = not api.loyalty.closed
    assert open_while_serving
    assert api.loyalty.closed
    assert shop.received("estimate") == 3


@pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])
async def test_wrong_credentials_are_500_and_never_shown(shop: FakeRees46, framework: str) -> None:
    """A wrong shop secret is the shop's fault, not the buyer's: 500, without the secret."""
    async with serving(framework, shop, shop_secret="wrong-" + SHOP_SECRET) as api:
        answer = await api.post("/checkout/estimate", json=CART)
    assert answer.status == 500
    assert answer.body["error"] == "AuthenticationError"
    assert SHOP_SECRET not in repr(answer.body)


@pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])
def test_settings_come_from_the_environment_and_hide_the_secret(
    framework: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REES46_* variables, the public base URL by default, and no secret in the repr."""
    monkeypatch.setenv("REES46_SHOP_ID", "shop-1")
    monkeypatch.setenv("REES46_SHOP_SECRET", SHOP_SECRET)
    monkeypatch.delenv("REES46_BASE_URL", raising=False)
    settings = importlib.import_module(f"{framework}_app").Settings.from_env()
    assert (settings.shop_id, settings.shop_secret) == ("shop-1", SHOP_SECRET)
    assert settings.base_url == "https://api.rees46.ru"
    assert SHOP_SECRET not in repr(settings)


@pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])
def test_without_credentials_the_app_says_which_variables_to_set(
    framework: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No REES46_SHOP_ID / REES46_SHOP_SECRET: a one-line exit naming both, not a KeyError."""
    monkeypatch.delenv("REES46_SHOP_ID", raising=False)
    monkeypatch.delenv("REES46_SHOP_SECRET", raising=False)
    example = importlib.import_module(f"{framework}_app")
    with pytest.raises(SystemExit, match="set REES46_SHOP_ID and REES46_SHOP_SECRET"):
        example.create_app()
