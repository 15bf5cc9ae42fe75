"""Tests of your own checkout code with no server: a function answers for the API.

``pay_for()`` stands for code of your application; the tests below give its client a
``transport=`` function, which sees each request as it would go on the wire and returns the
answer the API would give.
"""

import json
from decimal import Decimal

import pytest

from rees46_loyalty import ApiRequest, ApiResponse, CartItem, LoyaltyClient, OrderStatusError
from rees46_loyalty.testing import json_response


async def pay_for(client: LoyaltyClient, order_id: str, cart: list[CartItem]) -> Decimal:
    """Your code: create the order and return what is left for the buyer to pay."""
    calculation = await client.apply(order_id=order_id, cart_items=cart)
    return calculation.order_to_pay


CART = [CartItem(product_id="A", price=Decimal(100), quantity=2)]


async def test_pay_for_returns_what_is_left_to_pay() -> None:
    """The API grants 50 off: pay_for returns 150, and the request carried the cart."""
    sent: list[ApiRequest] = []

    async def api(request: ApiRequest) -> ApiResponse:
        sent.append(request)
        payload = {"order_id": "1001", "order_total": 200, "order_to_pay": 150}
        return json_response({"status": "success", "payload": payload})

    async with LoyaltyClient("shop-1", "secret-of-shop-1", transport=api) as client:
        assert await pay_for(client, "1001", CART) == Decimal(150)

    (request,) = sent
    assert (request.method, request.path) == ("POST", "/loyalty/checkout/apply")
    assert request.body is not None
    body = json.loads(request.body)  # the body as it goes on the wire, credentials included
    assert body["shop_id"] == "shop-1"
    assert body["cart_items"] == [{"product_id": "A", "price": 100, "quantity": 2}]


async def test_pay_for_passes_the_apis_refusal_on() -> None:
    """The API refuses the order: the SDK's typed error reaches the caller."""

    async def api(request: ApiRequest) -> ApiResponse:
        assert request.order_id == "1001"
        message = "Could not apply order in its current status"
        return json_response({"status": "error", "payload": {"message": message}}, status=400)

    async with LoyaltyClient("shop-1", "secret-of-shop-1", transport=api) as client:
        with pytest.raises(OrderStatusError):
            await pay_for(client, "1001", CART)
