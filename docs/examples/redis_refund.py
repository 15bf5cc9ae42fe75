"""A refund job keyed by its job id, records in Redis: delivered twice, changed once.

Against ``serve-fake`` (``REES46_*`` in the environment) and a local Redis (``REDIS_URL``, by
default ``redis://localhost:6379/0``): it creates and confirms order ``REDIS-1``, then runs
the same refund job twice, as a queue that delivers it twice would.
"""

import asyncio
import os
from decimal import Decimal

from rees46_loyalty import CartItem, LoyaltyClient
from rees46_loyalty.idempotency import RedisIdempotencyStore


async def refund_job(
    client: LoyaltyClient, job_id: str, order_id: str, kept: list[CartItem]
) -> Decimal:
    """One delivery of a refund job: the job id is the key, so a redelivery sends nothing."""
    change = await client.change(order_id=order_id, cart_items=kept, idempotency_key=job_id)
    return -change.order_total_change


async def main() -> None:
    """Make an order, then deliver its refund job twice."""
    # Shared by every worker process and machine; the store you make, you close.
    store = RedisIdempotencyStore(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
    try:
        async with LoyaltyClient.from_env(idempotency=store) as client:
            cart = [CartItem(product_id="TEA-1", price=Decimal("450.00"), quantity=4)]
            await client.apply(order_id="REDIS-1", cart_items=cart)
            await client.confirm(order_id="REDIS-1")
            kept = [CartItem(product_id="TEA-1", price=Decimal("450.00"), quantity=3)]
            for delivery in (1, 2):
                refund = await refund_job(client, "refund:R-77", "REDIS-1", kept)
                print(f"delivery {delivery}: refund {refund}")
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
