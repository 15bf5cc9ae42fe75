"""What is aiohttp's own in docs/examples/aiohttp_app.py: reading request bodies by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from rees46_loyalty.testing import FakeRees46
from tests.integration.examples.conftest import ShopApi, serving

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(shop: FakeRees46) -> AsyncIterator[ShopApi]:
    async with serving("aiohttp", shop) as served:
        yield served


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ([1, 2], 400),
        ({"lines": [{"product_id": "A", "price": "1000"}]}, 422),
        ({"lines": [{"product_id": "A", "price": "ten", "quantity": 1}]}, 422),
        ({"lines": "A"}, 422),
        ({"lines": [{"product_id": "A", "price": [1], "quantity": 1}]}, 422),
    ],
    ids=["not-an-object", "no-quantity", "price-not-a-number", "lines-not-a-list", "price-a-list"],
)
async def test_a_malformed_cart_is_refused_before_the_sdk(
    api: ShopApi, shop: FakeRees46, body: Any, status: int
) -> None:
    """Bodies the example cannot read: a client error, and nothing reaches REES46."""
    answer = await api.post("/checkout/estimate", json=body)
    assert answer.status == status
    assert shop.received() == 0


async def test_a_return_needs_its_id(api: ShopApi, shop: FakeRees46) -> None:
    """Without a return id a resent return could not be told from a new one: refused."""
    lines = [{"product_id": "A", "price": "1000", "quantity": 3}]
    answer = await api.post("/back-office/orders/1/return", json={"lines": lines})
    assert answer.status == 422
    assert shop.received() == 0


async def test_fractional_amounts_stay_exact(api: ShopApi, shop: FakeRees46) -> None:
    """A price sent as a JSON number with a fraction is read as Decimal, not float."""
    cart = {"lines": [{"product_id": "Z", "price": 0.1, "quantity": 3}]}
    answer = await api.post("/checkout/estimate", json=cart)
    assert answer.status == 200
    assert answer.body["order_total"] == "0.3"
