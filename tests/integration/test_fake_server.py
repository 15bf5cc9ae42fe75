"""SDK -> fake REES46 server -> SDK over real HTTP: operations, documented errors, the program."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from rees46_loyalty import (
    AuthenticationError,
    BadRequestError,
    CartItem,
    LoyaltyClient,
    LoyaltyError,
    NotFoundError,
    OrderStatusError,
)
from rees46_loyalty.testing import FakeClock, FakeRees46, Fault, Faults
from rees46_loyalty.testing._book import ApiFailure, CheckoutParams, OrderBook
from rees46_loyalty.testing._ledger import Ledger
from rees46_loyalty.testing._program import CartLine, LoyaltyProgram
from tests.conftest import PHONE, SHOP_ID, SHOP_SECRET

pytestmark = pytest.mark.integration

CART = [
    CartItem(product_id="A", price=Decimal("1000"), quantity=4),
    CartItem(product_id="B", price=Decimal("99.90"), quantity=1),
]
SMALLER = [CartItem(product_id="A", price=Decimal("1000"), quantity=3)]


async def test_the_whole_life_cycle(fake: FakeRees46, sdk: LoyaltyClient) -> None:
    """estimate, apply, confirm, change, details, history, cancel: each answer and each effect."""
    member = fake.members[PHONE]
    estimate = await sdk.estimate(
        cart_items=CART, identifier=PHONE, charge_bonuses=True, promo_codes=["SALE10", "NOPE"]
    )
    assert estimate.order_total == Decimal("4099.90")
    assert estimate.saved_by_discounts == Decimal("409.99")
    assert estimate.saved_by_bonuses == Decimal("1000")  # the whole balance, under the 30% cap
    assert estimate.order_to_pay == estimate.order_total - estimate.saved_total
    assert [f.code for f in estimate.promo_codes_failed] == ["NOPE"]
    assert fake.ledger.effects == []  # estimate changes nothing

    applied = await sdk.apply(
        order_id="1001",
        cart_items=CART,
        identifier=PHONE,
        charge_bonuses=True,
        promo_codes=["SALE10"],
        certificates=["GIFT"],
    )
    assert applied.saved_by_certificates == Decimal("300")
    assert member.bonuses == Decimal(0)  # reserved

    confirmed = await sdk.confirm(order_id="1001")
    assert confirmed.order_id == "1001"
    assert confirmed.identifier == PHONE
    assert member.bonuses == applied.bonuses_reward

    changed = await sdk.change(order_id="1001", cart_items=SMALLER)
    details = await sdk.details(order_id="1001")
    assert changed.order_total_change == details.order_to_pay - applied.order_to_pay
    assert changed.order_total_change < 0
    assert fake.ledger.refunds("1001") == changed.order_total_change

    history = await sdk.history(identifier=PHONE)
    (order,) = history.orders
    assert (order.id, order.status, order.total) == ("1001", "confirmed", details.order_to_pay)
    assert order.items[0].name == "Tea"
    assert order.items[0].price == details.items[0].total_after_discounts_per_product

    cancelled = await sdk.cancel(order_id="1001")
    assert cancelled.order_id == "1001"
    assert member.bonuses == Decimal(1000)  # spent bonuses back, rewards taken back
    assert fake.book.certificates["GIFT"].balance == Decimal(300)
    assert [e.operation for e in fake.ledger.effects] == ["apply", "confirm", "change", "cancel"]
    assert sum(e.bonuses_delta for e in fake.ledger.effects) == 0


async def test_amounts_add_up(fake: FakeRees46, sdk: LoyaltyClient) -> None:
    """Item totals sum to the order totals; per-product amounts are totals over quantity."""
    calc = await sdk.estimate(
        cart_items=CART,
        identifier=PHONE,
        charge_bonuses=True,
        promo_codes=["SALE10"],
        certificates=["GIFT"],
    )
    assert sum(i.total for i in calc.items) == calc.order_total
    assert sum(i.paid_with_discounts for i in calc.items) == calc.saved_by_discounts
    assert sum(i.paid_with_bonuses for i in calc.items) == calc.saved_by_bonuses
    assert sum(i.paid_with_certificates for i in calc.items) == calc.saved_by_certificates
    assert sum(i.bonuses_reward for i in calc.items) == calc.bonuses_reward
    assert calc.products_total == 5
    for item in calc.items:
        assert item.total_after_discounts == item.total - item.paid_with_discounts
        assert (
            abs(item.total_after_discounts_per_product * item.quantity - item.total_after_discounts)
            < Decimal("0.01") * item.quantity
        )


async def test_products_outside_the_feed_get_nothing(fake: FakeRees46, sdk: LoyaltyClient) -> None:
    """An unknown product is accepted at full price, with no discount, bonus or reward."""
    calc = await sdk.estimate(
        cart_items=[CartItem(product_id="ZZZ", price=Decimal(500), quantity=1)],
        identifier=PHONE,
        charge_bonuses=True,
        promo_codes=["SALE10"],
    )
    (item,) = calc.items
    assert calc.order_to_pay == Decimal(500)
    assert item.discountable is False
    assert item.discountable_reason == "product is not in the feed"
    assert item.bonuses_reward == 0


async def test_repeating_a_change_returns_zero(fake: FakeRees46, sdk: LoyaltyClient) -> None:
    """The documented trap: a second identical change answers 0 and the first amount is gone."""
    await sdk.apply(order_id="7", cart_items=CART, identifier=PHONE)
    await sdk.confirm(order_id="7")
    first = await sdk.change(order_id="7", cart_items=SMALLER)
    second = await sdk.change(order_id="7", cart_items=SMALLER)
    assert first.order_total_change < 0
    assert second.order_total_change == 0
    assert len(fake.ledger.effects_for("change", "7")) == 2


async def test_apply_again_replaces_the_cart(fake: FakeRees46, sdk: LoyaltyClient) -> None:
    """A created order can be applied again; its reservation is replaced, not added."""
    await sdk.apply(order_id="8", cart_items=CART, identifier=PHONE, charge_bonuses=True)
    again = await sdk.apply(order_id="8", cart_items=SMALLER, identifier=PHONE, charge_bonuses=True)
    assert fake.members[PHONE].bonuses == Decimal(1000) - again.saved_by_bonuses


async def test_confirm_twice_rewards_once(fake: FakeRees46, sdk: LoyaltyClient) -> None:
    """Confirming a confirmed order answers the same and grants no second reward."""
    applied = await sdk.apply(order_id="9", cart_items=CART, identifier=PHONE)
    first = await sdk.confirm(order_id="9")
    second = await sdk.confirm(order_id="9")
    assert first == second
    assert len(fake.ledger.effects_for("confirm")) == 1
    assert fake.members[PHONE].bonuses == Decimal(1000) + applied.bonuses_reward


@pytest.mark.parametrize(
    ("setup", "call", "error_type", "message"),
    [
        ([], lambda c: c.cancel(order_id="404"), OrderStatusError, "Could not cancel order"),
        (
            ["apply", "cancel"],
            lambda c: c.cancel(order_id="1"),
            OrderStatusError,
            "Could not cancel order",
        ),
        (
            ["apply", "cancel"],
            lambda c: c.confirm(order_id="1"),
            OrderStatusError,
            "Could not confirm order",
        ),
        ([], lambda c: c.confirm(order_id="404"), OrderStatusError, "Could not confirm order"),
        (
            ["apply", "confirm"],
            lambda c: c.apply(order_id="1", cart_items=CART),
            OrderStatusError,
            "Could not apply order",
        ),
        (
            ["apply"],
            lambda c: c.change(order_id="1", cart_items=SMALLER),
            OrderStatusError,
            "Could not change order",
        ),
        ([], lambda c: c.details(order_id="ABC"), NotFoundError, "Order ABC not found"),
        (
            [],
            lambda c: c.history(identifier="79995550000"),
            NotFoundError,
            "Loyalty program member is not found",
        ),
        (
            [],
            lambda c: c.estimate(cart_items=CART, identifier="79995550000", charge_bonuses=True),
            BadRequestError,
            "charge_bonuses needs an existing loyalty program member",
        ),
    ],
)
async def test_documented_errors_round_trip(
    fake: FakeRees46,
    sdk: LoyaltyClient,
    setup: list[str],
    call: Callable[[LoyaltyClient], Awaitable[object]],
    error_type: type[LoyaltyError],
    message: str,
) -> None:
    """Each documented failure comes back as its class and message, after one request."""
    for step in setup:
        if step == "apply":
            await sdk.apply(order_id="1", cart_items=CART)
        else:
            await getattr(sdk, step)(order_id="1")
    before = len(fake.ledger.requests)
    with pytest.raises(error_type) as caught:
        await call(sdk)
    assert message in caught.value.message
    assert len(fake.ledger.requests) == before + 1


@pytest.mark.parametrize(
    ("shop_id", "shop_secret", "status"),
    [("someone-else", SHOP_SECRET, 401), (SHOP_ID, "wrong-secret", 403)],
)
async def test_wrong_credentials(
    fake: FakeRees46, shop_id: str, shop_secret: str, status: int
) -> None:
    """An unknown shop is a 401, a wrong secret a 403: both AuthenticationError, not retried."""
    async with LoyaltyClient(shop_id, shop_secret, base_url=fake.url, clock=FakeClock()) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.details(order_id="1")
    assert caught.value.status == status
    assert len(fake.ledger.requests) == 1
    assert "wrong-secret" not in str(caught.value)


async def test_the_server_enforces_the_cart_rules(fake: FakeRees46) -> None:
    """What the SDK refuses locally, the fake refuses too (seen with a hand-made request)."""
    async with aiohttp.ClientSession() as session:
        body = {
            "shop_id": SHOP_ID,
            "shop_secret": SHOP_SECRET,
            "cart_items": [
                {"product_id": "A", "price": 1, "quantity": 1},
                {"product_id": "A", "price": 2, "quantity": 1},
            ],
        }
        async with session.post(f"{fake.url}/loyalty/checkout/estimate", json=body) as answer:
            document = await answer.json()
        assert answer.status == 400
        assert document["payload"]["message"] == "Cart contains line items with the same product ID"
        cases: list[tuple[dict[str, Any], str]] = [
            ({"cart_items": []}, "cart_items must be a non-empty list"),
            ({"cart_items": [{"price": 1, "quantity": 1}]}, "product_id is required"),
            (
                {"cart_items": [{"product_id": "A", "price": 0, "quantity": 1}]},
                "price must be greater than 0",
            ),
            (
                {"cart_items": [{"product_id": "A", "price": "x", "quantity": 1}]},
                "price must be a number",
            ),
            (
                {"cart_items": [{"product_id": "A", "price": 1, "quantity": True}]},
                "quantity must be a number",
            ),
            (
                {
                    "cart_items": [{"product_id": "A", "price": 1, "quantity": 1}],
                    "current_time": "25:00",
                },
                "HH:MM",
            ),
        ]
        for broken, message in cases:
            async with session.post(
                f"{fake.url}/loyalty/checkout/estimate",
                json={"shop_id": SHOP_ID, "shop_secret": SHOP_SECRET, **broken},
            ) as answer:
                assert answer.status == 400
                assert message in (await answer.json())["payload"]["message"]
        async with session.post(
            f"{fake.url}/loyalty/checkout/apply",
            json={**body, "cart_items": body["cart_items"][:1]},  # no order_id
        ) as answer:
            assert (await answer.json())["payload"]["message"] == "order_id is required"
        async with session.post(
            f"{fake.url}/loyalty/checkout/confirm", data=b"order_id=1"
        ) as answer:
            assert answer.status == 406
        async with session.get(f"{fake.url}/loyalty/checkout/confirm") as answer:
            assert answer.status == 405
        async with session.get(f"{fake.url}/loyalty/checkout/unknown") as answer:
            assert answer.status == 404


async def test_the_fake_needs_starting(fake: FakeRees46) -> None:
    """A fake that was never started has no URL; a bad envelope name is refused."""
    assert "envelope" in repr(fake)
    with pytest.raises(RuntimeError, match="not started"):
        _ = FakeRees46().url
    with pytest.raises(ValueError, match="envelope"):
        FakeRees46(envelope="xml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("operation", "method", "data", "status", "message"),
    [
        ("confirm", "POST", b"{not json", 406, "Format is not JSON"),
        ("confirm", "POST", b"[1, 2]", 406, "Format is not JSON"),
        ("confirm", "POST", b"{}", 401, "Wrong API key"),
        ("confirm", "POST", None, 400, "order_id is required"),
        ("history", "GET", None, 400, "identifier is required"),
        ("estimate", "POST", {"cart_items": ["A"]}, 400, "cart_items must be objects"),
    ],
)
async def test_malformed_requests_get_the_documented_statuses(
    fake: FakeRees46, operation: str, method: str, data: object, status: int, message: str
) -> None:
    """Bodies that are not JSON objects, and requests missing their key field."""
    credentials = {"shop_id": SHOP_ID, "shop_secret": SHOP_SECRET}
    url = f"{fake.url}/loyalty/checkout/{operation}"
    async with aiohttp.ClientSession() as session:
        if method == "GET":
            answer = await session.get(url, params=credentials)
        elif isinstance(data, bytes):
            answer = await session.post(
                url, data=data, headers={"Content-Type": "application/json"}
            )
        else:
            answer = await session.post(url, json={**credentials, **(data or {})})  # type: ignore[dict-item]
        async with answer:
            assert answer.status == status
            assert (await answer.json())["payload"]["message"] == message


async def test_certificates_that_cannot_pay_are_reported(
    fake: FakeRees46, sdk: LoyaltyClient
) -> None:
    """An unknown certificate and an empty one appear in certificates_failed with a reason."""
    fake.add_certificate("EMPTY", 0)
    calc = await sdk.estimate(cart_items=CART, certificates=["NOPE", "EMPTY", "GIFT"])
    assert calc.certificates == ("GIFT",)
    assert {(f.code, f.message) for f in calc.certificates_failed} == {
        ("NOPE", "Certificate not found"),
        ("EMPTY", "Certificate balance is empty"),
    }


def test_the_book_refuses_an_apply_without_an_order_id() -> None:
    """The order book checks its own input too, not only the HTTP layer."""
    book = OrderBook(LoyaltyProgram(), Ledger())
    line = CartLine(product_id="A", price=Decimal(1), quantity=Decimal(1))
    with pytest.raises(ApiFailure, match="order_id is required"):
        book.apply(CheckoutParams(cart=(line,)))


def test_fault_plans() -> None:
    """Rates outside [0, 1] are refused; clear() empties the plan; operations limit the rate."""
    faults = Faults()
    with pytest.raises(ValueError, match="between 0 and 1"):
        faults.random(1.5)
    faults.random(1.0, seed=1, operations=["change"])
    assert faults.pick("confirm", 1) is None
    assert faults.pick("change", 1) is not None
    faults.on("*", Fault.drop_after_commit(), times=2)
    faults.clear()
    assert faults.pick("change", 2) is None
    assert faults.pick("estimate", 1) is None


async def test_an_increasing_change_earns_nothing_more(
    fake: FakeRees46, sdk: LoyaltyClient
) -> None:
    """The change page: added products get no rewards, added units earn no more than before."""
    await sdk.apply(
        order_id="up",
        cart_items=[CartItem(product_id="A", price=Decimal(1000), quantity=2)],
        identifier=PHONE,
    )
    first = await sdk.confirm(order_id="up")
    before = (await sdk.details(order_id="up")).bonuses_reward
    bigger = [
        CartItem(product_id="A", price=Decimal(1000), quantity=4),
        CartItem(product_id="B", price=Decimal(500), quantity=1),
    ]
    changed = await sdk.change(order_id="up", cart_items=bigger)
    assert first.order_id == "up"
    assert changed.order_total_change == Decimal(2500)  # more to take from the buyer
    assert changed.bonuses_reward == before
    added = changed.items[1]
    assert (added.bonuses_reward, added.rewardable_reason) == (Decimal(0), "added by a change")
    assert fake.members[PHONE].bonuses == Decimal(1000) + before


async def test_a_zero_bonus_cap_is_accepted(sdk: LoyaltyClient) -> None:
    """bonuses_amount=0 means "spend none", for the fake as for the SDK."""
    calc = await sdk.estimate(
        cart_items=CART, identifier=PHONE, charge_bonuses=True, bonuses_amount=0
    )
    assert calc.saved_by_bonuses == 0


async def test_applying_the_same_cart_again_changes_nothing(
    fake: FakeRees46, sdk: LoyaltyClient
) -> None:
    """A repeated apply with the same cart answers the same and commits no second effect."""
    first = await sdk.apply(order_id="same", cart_items=CART, identifier=PHONE, charge_bonuses=True)
    again = await sdk.apply(order_id="same", cart_items=CART, identifier=PHONE, charge_bonuses=True)
    assert again == first
    assert len(fake.ledger.effects_for("apply", "same")) == 1
    assert fake.members[PHONE].bonuses == Decimal(1000) - first.saved_by_bonuses
