"""**fields of estimate / apply / change under attack: nothing but CheckoutFields gets through."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from rees46_loyalty import CartItem, LoyaltyClient, SyncLoyaltyClient
from tests.conftest import BASE_URL, SHOP_ID, SHOP_SECRET
from tests.unit.helpers import FakeApi, count

CART = [CartItem(product_id="A", price=Decimal(100), quantity=1)]


def _arguments(operation: str, extra: dict[str, Any]) -> dict[str, Any]:
    order = {} if operation == "estimate" else {"order_id": "1001"}
    return {"cart_items": CART, **order, **extra}


@pytest.mark.parametrize("operation", ["estimate", "apply", "change"])
@pytest.mark.parametrize(
    "extra",
    [
        {"shop_secret": SHOP_SECRET},
        {"shop_id": SHOP_ID},
        {"order_id_value": "1001"},
        {"fields": {"identifier": "79990001122"}},
    ],
)
async def test_a_keyword_outside_checkout_fields_is_refused_without_its_value(
    client: LoyaltyClient, api: FakeApi, operation: str, extra: dict[str, Any]
) -> None:
    """A credential or an internal name passed as a field: TypeError naming the keyword, never
    its value (the secret); nothing is sent."""
    with pytest.raises(TypeError, match="unexpected keyword argument") as caught:
        await getattr(client, operation)(**_arguments(operation, extra))
    assert SHOP_SECRET not in f"{caught.value} {caught.value.args}"
    assert count(api) == 0


async def test_an_idempotency_key_on_estimate_is_refused(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """estimate takes no idempotency_key (it records nothing): TypeError, as before the
    fields were declared once."""
    with pytest.raises(TypeError, match="'idempotency_key'"):
        await client.estimate(cart_items=CART, idempotency_key="k")  # type: ignore[call-arg]
    assert count(api) == 0


def test_the_sync_client_refuses_an_unknown_keyword_too() -> None:
    """SyncLoyaltyClient passes **fields on: an unknown keyword is the same TypeError."""
    api = FakeApi()
    refused = pytest.raises(TypeError, match="change\\(\\) got an unexpected keyword argument")
    with (
        SyncLoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL, transport=api) as client,
        refused,
    ):
        client.change(order_id="1001", cart_items=CART, shop_secret=SHOP_SECRET)  # type: ignore[call-arg]
    assert count(api) == 0
