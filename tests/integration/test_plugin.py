"""The pytest plugin as a shop's own test suite uses it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from rees46_loyalty import CartItem, LoyaltyClient, OutcomeUnknownError
from rees46_loyalty.testing import Fault
from rees46_loyalty.testing.plugin import Rees46Fake

pytestmark = pytest.mark.integration

MEMBER = "79991234567"
LOYALTY = web.AppKey("loyalty", LoyaltyClient)
SETTINGS = web.AppKey("settings", dict)


def shop_app(settings: dict[str, str]) -> web.Application:
    """A tiny shop backend: pay for an order, and refund part of it."""

    async def loyalty_client(app: web.Application) -> AsyncIterator[None]:
        async with LoyaltyClient(
            app[SETTINGS]["shop_id"], app[SETTINGS]["shop_secret"], base_url=app[SETTINGS]["url"]
        ) as client:
            app[LOYALTY] = client
            yield

    async def pay(request: web.Request) -> web.Response:
        client = request.app[LOYALTY]
        order_id = request.match_info["order_id"]
        cart = [CartItem(product_id="A", price=Decimal(1000), quantity=2)]
        calc = await client.apply(order_id=order_id, cart_items=cart, identifier=MEMBER)
        await client.confirm(order_id=order_id)
        return web.json_response({"paid": str(calc.order_to_pay)})

    async def refund(request: web.Request) -> web.Response:
        client = request.app[LOYALTY]
        order_id = request.match_info["order_id"]
        cart = [CartItem(product_id="A", price=Decimal(1000), quantity=1)]
        try:
            change = await client.change(order_id=order_id, cart_items=cart)
        except OutcomeUnknownError:
            return web.json_response({"status": "reconcile"}, status=202)
        return web.json_response({"refund": str(-change.order_total_change)})

    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.append(loyalty_client)
    app.router.add_post("/orders/{order_id}/pay", pay)
    app.router.add_post("/orders/{order_id}/refund", refund)
    return app


@pytest.fixture
async def shop(rees46_fake: Rees46Fake) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The shop backend under test, configured to talk to the fake REES46 API."""
    server = rees46_fake.server
    server.add_member(MEMBER, bonuses=0)
    server.add_product("A", "Tea")
    settings = {"url": server.url, "shop_id": server.shop_id, "shop_secret": server.shop_secret}
    async with TestClient(TestServer(shop_app(settings))) as client:
        yield client


async def test_the_shop_refunds_exactly_what_the_ledger_shows(
    shop: TestClient[web.Request, web.Application], rees46_fake: Rees46Fake
) -> None:
    """Pay, then refund one of two items: the shop's answer matches the fake's ledger."""
    paid = await shop.post("/orders/A-1/pay")
    assert paid.status == 200
    refund = await shop.post("/orders/A-1/refund")
    assert refund.status == 200
    amount = Decimal((await refund.json())["refund"])
    assert amount == -rees46_fake.ledger.refunds("A-1")
    assert amount == Decimal(1000)
    assert [e.operation for e in rees46_fake.ledger.effects] == ["apply", "confirm", "change"]


async def test_the_shop_asks_for_reconciliation_when_a_refund_is_lost(
    shop: TestClient[web.Request, web.Application], rees46_fake: Rees46Fake
) -> None:
    """When the answer of the change is lost after commit, the shop answers 202 and the change
    is in the ledger exactly once."""
    await shop.post("/orders/A-2/pay")
    rees46_fake.faults.on("change", Fault.drop_after_commit())
    answer = await shop.post("/orders/A-2/refund")
    assert answer.status == 202
    assert len(rees46_fake.ledger.effects_for("change", "A-2")) == 1
    assert len(rees46_fake.ledger.requests_for("change", "A-2")) == 1


async def test_the_fixture_client_is_connected(rees46_fake: Rees46Fake) -> None:
    """The fixture's own client talks to the fake and its retries do not wait."""
    rees46_fake.faults.on("estimate", Fault.rate_limited(retry_after="20"))
    calc = await rees46_fake.client.estimate(
        cart_items=[CartItem(product_id="X", price=Decimal(5), quantity=1)]
    )
    assert calc.order_to_pay == Decimal(5)
    assert rees46_fake.clock.sleeps == [20.0]
    assert rees46_fake.members == {}
    assert rees46_fake.faults.injected == [("estimate", 1, "429 json Retry-After: 20")]


PLUGIN_USER_TESTS = """
import pytest
from decimal import Decimal
from rees46_loyalty import CartItem


@pytest.fixture
def rees46_fake_options():
    return {"envelope": "success", "shop_id": "my-shop"}


async def test_installed_plugin(rees46_fake):
    rees46_fake.server.add_member("79990001122", bonuses=100)
    calc = await rees46_fake.client.estimate(
        cart_items=[CartItem(product_id="A", price=Decimal(10), quantity=1)],
        identifier="79990001122",
    )
    assert calc.order_to_pay == Decimal(10)
    assert rees46_fake.server.envelope == "success"
    assert rees46_fake.server.shop_id == "my-shop"
"""


def test_installing_the_package_is_enough(pytester: pytest.Pytester) -> None:
    """A test file that imports nothing of the plugin gets the fixture through the entry point."""
    pytester.makepyfile(test_shop=PLUGIN_USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "asyncio", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=1)


def test_the_readme_example_runs_as_written(pytester: pytest.Pytester) -> None:
    """The README's plugin example, pasted into a shop's test file, passes in pytest-asyncio's
    default strict mode (it carries its own marker)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("async def test_a_lost_refund_answer_is_not_sent_twice")
    block = readme[
        readme.rindex("```python\n", 0, start) + len("```python\n") : readme.index("```", start)
    ]
    pytester.makepyfile(test_readme=block)
    result = pytester.runpytest_subprocess("-p", "asyncio", "-o", "asyncio_mode=strict")
    result.assert_outcomes(passed=1)
