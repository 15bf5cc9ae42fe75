"""The Django example (docs/examples/django_views.py): its views served by Django's own test
client, calling the fake REES46 API through SyncLoyaltyClient."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import django
import pytest
from django.conf import settings
from django.test import Client

from rees46_loyalty import CartItem, SyncLoyaltyClient
from rees46_loyalty.testing import FakeRees46, Fault
from tests.conftest import PHONE

pytestmark = pytest.mark.integration

if not settings.configured:
    settings.configure(
        ROOT_URLCONF="django_views",
        ALLOWED_HOSTS=["testserver"],
        SECRET_KEY="only-for-the-tests",
        DEBUG=False,
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        INSTALLED_APPS=[],
        DATABASES={},
    )
    django.setup()

import django_views  # noqa: E402 - Django's settings first

LINES = [{"product_id": "A", "price": "1000", "quantity": 4}]


@pytest.fixture
def browser(threaded_shop: FakeRees46, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """Django's test client, with the example's client pointed at the fake API."""
    monkeypatch.setenv("REES46_SHOP_ID", threaded_shop.shop_id)
    monkeypatch.setenv("REES46_SHOP_SECRET", threaded_shop.shop_secret)
    monkeypatch.setenv("REES46_BASE_URL", threaded_shop.url)
    django_views.loyalty.cache_clear()
    yield Client()
    if django_views.loyalty.cache_info().currsize:
        django_views.loyalty().close()
    django_views.loyalty.cache_clear()


def post(browser: Client, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    answer = browser.post(path, body, content_type="application/json")
    return answer.status_code, answer.json()


def confirmed_order(shop: FakeRees46, order_id: str) -> str:
    with SyncLoyaltyClient(shop.shop_id, shop.shop_secret, base_url=shop.url) as client:
        client.apply(
            order_id=order_id, cart_items=[CartItem(product_id="A", price=1000, quantity=4)]
        )
        client.confirm(order_id=order_id)
    return order_id


def test_estimate_answers_the_price(browser: Client, threaded_shop: FakeRees46) -> None:
    """A cart priced through the view: the fake API's figures, as strings."""
    status, body = post(browser, "/checkout/estimate", {"lines": LINES, "identifier": PHONE})
    assert status == 200
    assert body["order_to_pay"] == "4000"
    assert threaded_shop.received("estimate") == 1


def test_requests_share_one_client(browser: Client, threaded_shop: FakeRees46) -> None:
    """Two requests, one SyncLoyaltyClient: the process's client is made once."""
    post(browser, "/checkout/estimate", {"lines": LINES})
    first = django_views.loyalty()
    status, _ = post(browser, "/checkout/orders/D-1/pay", {"lines": LINES})
    assert status == 200
    assert django_views.loyalty() is first
    assert threaded_shop.book.orders["D-1"].status == "created"


def test_a_return_sent_twice_refunds_once(browser: Client, threaded_shop: FakeRees46) -> None:
    """The same return id posted twice: one change in the ledger, the same refund twice."""
    order = confirmed_order(threaded_shop, "D-2")
    body = {"return_id": "R-1", "lines": [{"product_id": "A", "price": "1000", "quantity": 3}]}
    first = post(browser, f"/back-office/orders/{order}/return", body)
    second = post(browser, f"/back-office/orders/{order}/return", body)
    assert first == (
        200,
        {"order_id": order, "refund": "1000", "replayed": False, "reconciled": False},
    )
    assert second == (
        200,
        {"order_id": order, "refund": "1000", "replayed": True, "reconciled": False},
    )
    assert len(threaded_shop.ledger.effects_for("change", order)) == 1


def test_a_return_whose_answer_was_lost_is_reconciled_to_200(
    browser: Client, threaded_shop: FakeRees46
) -> None:
    """The change was applied but its answer lost: the view reconciles and answers 200 with
    the ledger's exact refund (never a 2xx without it); the change was sent once."""
    order = confirmed_order(threaded_shop, "D-5")
    threaded_shop.faults.on("change", Fault.drop_after_commit())
    body = {"return_id": "R-5", "lines": [{"product_id": "A", "price": "1000", "quantity": 3}]}
    status, answer = post(browser, f"/back-office/orders/{order}/return", body)
    assert status == 200
    assert answer["reconciled"] is True
    assert Decimal(answer["refund"]) == -threaded_shop.ledger.refunds(order) == 1000
    assert threaded_shop.received("change") == 1


def test_a_return_never_processed_is_503_then_sent_once(
    browser: Client, threaded_shop: FakeRees46
) -> None:
    """A 504 before REES46 processed the change: 503 with Retry-After; sent again by the back
    office, the return goes through once."""
    order = confirmed_order(threaded_shop, "D-6")
    threaded_shop.faults.on("change", Fault.gateway_timeout())
    body = {"return_id": "R-6", "lines": [{"product_id": "A", "price": "1000", "quantity": 3}]}
    answer = browser.post(
        f"/back-office/orders/{order}/return", body, content_type="application/json"
    )
    assert answer.status_code == 503
    assert answer["Retry-After"] == "1"
    assert threaded_shop.ledger.effects_for("change") == []
    status, again = post(browser, f"/back-office/orders/{order}/return", body)
    assert (status, again["refund"], again["replayed"]) == (200, "1000", False)
    assert len(threaded_shop.ledger.effects_for("change", order)) == 1


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ({"product_id": "A", "price": True, "quantity": 1}, "lines[0].price"),
        ({"product_id": "A", "price": 12.5, "quantity": 1}, None),
        ({"product_id": "A", "price": "abc", "quantity": 1}, "lines[0].price"),
        ({"product_id": "A", "price": "10", "quantity": "-1"}, "lines[0].quantity"),
        ({"price": "10", "quantity": 1}, "lines[0]"),
    ],
)
def test_bad_lines_are_refused_naming_the_body_path(
    browser: Client, threaded_shop: FakeRees46, line: dict[str, Any], field: str | None
) -> None:
    """``true`` is no price, a negative quantity is refused by the SDK: 422 naming the line's
    path in the request body; nothing is sent. A JSON decimal is read exactly and accepted."""
    status, body = post(browser, "/checkout/estimate", {"lines": [line]})
    if field is None:
        assert status == 200
        assert body["order_total"] == "12.5"
        return
    assert status == 422
    assert body["field"] == field
    assert threaded_shop.received("estimate") == 0


def test_api_errors_become_json_answers(browser: Client, threaded_shop: FakeRees46) -> None:
    """A return of an order that is not confirmed: 409 with the API's message."""
    post(browser, "/checkout/orders/D-3/pay", {"lines": LINES})
    kept = [{**LINES[0], "quantity": 3}]
    status, body = post(
        browser, "/back-office/orders/D-3/return", {"return_id": "R-3", "lines": kept}
    )
    assert status == 409
    assert body["error"] == "OrderStatusError"
    assert "current status" in body["detail"]
    assert threaded_shop.ledger.effects_for("change", "D-3") == []
