"""The quick start: the whole life of one order."""

import asyncio
from decimal import Decimal

from rees46_loyalty import CartItem, LoyaltyClient

MEMBER = "79990001122"


async def main() -> None:
    """Estimate, apply, confirm, change and read the history of order QS-1001."""
    async with LoyaltyClient.from_env() as client:
        cart = [
            CartItem(product_id="TEA-1", price=Decimal("450.00"), quantity=2),
            CartItem(product_id="CUP-2", price=Decimal("99.90"), quantity=1),
        ]

        # Price the cart; nothing changes on the server.
        calc = await client.estimate(
            cart_items=cart,
            identifier=MEMBER,
            promo_codes=["WELCOME10"],
            charge_bonuses=True,
        )
        print("estimate: to pay", calc.order_to_pay, "saved", calc.saved_total)

        # The buyer goes to payment: create the order, reserve its bonuses.
        order = await client.apply(
            order_id="QS-1001",
            cart_items=cart,
            identifier=MEMBER,
            promo_codes=["WELCOME10"],
            charge_bonuses=True,
        )
        print(
            "apply: bonuses spent",
            order.order_bonuses_to_charge,
            "reward",
            order.bonuses_reward,
        )

        # The payment went through: confirm, so that the reward is granted.
        await client.confirm(order_id="QS-1001")

        # The buyer returns the cup. `cart_items` is the whole new cart,
        # not the returned line.
        change = await client.change(order_id="QS-1001", cart_items=cart[:1])
        print("change: refund", -change.order_total_change)

        history = await client.history(identifier=MEMBER)
        orders = [(past.id, past.status, past.total) for past in history.orders]
        print("history:", orders)


if __name__ == "__main__":
    asyncio.run(main())
