"""The keyword arguments of estimate / apply / change are checked by name and by type.

Never run: ``mypy --strict`` checks this file. Each ``type: ignore[...]`` below marks a call the
type checker must refuse; were it accepted, the ignore would be unused, which ``--strict``
reports as an error. So the typed signatures of both clients stay as strict as written out.
"""

from __future__ import annotations

from decimal import Decimal

from rees46_loyalty import CartItem, LoyaltyClient, OrderCalculation, SyncLoyaltyClient

CART = [CartItem(product_id="A", price=Decimal(100), quantity=1)]


async def async_calls(client: LoyaltyClient) -> OrderCalculation:
    """Every optional field by name, then a wrong name and wrong types."""
    await client.change(
        order_id="1",
        cart_items=CART,
        identifier="79990001122",
        payment_type="card",
        promo_codes=["SALE10"],
        certificates=("C-1",),
        charge_bonuses=True,
        bonuses_amount=Decimal(5),
        use_personal_certificates=False,
        location_id="msk-1",
        stream="pos",
        current_time="09:30",
        subscription=None,
    )
    await client.estimate(cart_items=CART, locaton_id="msk-1")  # type: ignore[call-arg]
    await client.apply(order_id="1", cart_items=CART, bonuses_amount=1.5)  # type: ignore[arg-type]
    await client.change(cart_items=CART)  # type: ignore[call-arg]
    return await client.estimate(cart_items=CART, charge_bonuses="yes")  # type: ignore[arg-type]


def sync_calls(client: SyncLoyaltyClient) -> OrderCalculation:
    """The blocking client keeps the same keyword arguments."""
    client.apply(order_id="1", cart_items=CART, stream="web")
    client.estimate(cart_items=CART, stram="web")  # type: ignore[call-arg]
    return client.estimate(cart_items=CART, identifier=79990001122)  # type: ignore[arg-type]
