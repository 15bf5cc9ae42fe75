"""An arq worker that records partial returns in REES46, each job exactly once.

Run it with ``arq arq_worker.WorkerSettings`` (``REES46_SHOP_ID``, ``REES46_SHOP_SECRET`` and
``REDIS_URL`` in the environment), and enqueue a return from the shop's backend with::

    await redis.enqueue_job("refund", order_id, lines, _job_id=f"refund:{return_id}")

The job id is the idempotency key of the ``change``: however often arq delivers the job, REES46
sees one change, and every delivery returns the same refund amount.
"""

import os
from decimal import Decimal
from typing import Any

from arq import Retry
from arq.connections import RedisSettings

from rees46_loyalty import APIError, CartItem, LoyaltyClient, LoyaltyError
from rees46_loyalty.idempotency import RedisIdempotencyStore


async def startup(ctx: dict[str, Any]) -> None:
    """One client per worker process, made inside the worker's event loop."""
    # The idempotency records go to the Redis arq already uses: every worker sees them.
    ctx["loyalty"] = LoyaltyClient.from_env(idempotency=RedisIdempotencyStore(ctx["redis"]))


async def shutdown(ctx: dict[str, Any]) -> None:
    """Close the client's connection pool (the Redis connection is arq's to close)."""
    await ctx["loyalty"].close()


async def refund(ctx: dict[str, Any], order_id: str, lines: list[dict[str, str]]) -> str:
    """Record a partial return of *order_id*; return the amount to refund, as a string.

    *lines* is the whole cart that stays with the buyer, each line a dict of ``product_id``,
    ``price`` and ``quantity``, amounts as strings: plain data keeps queued jobs readable by
    the next version of this code.
    """
    loyalty: LoyaltyClient = ctx["loyalty"]
    cart = [
        CartItem(
            product_id=line["product_id"],
            price=Decimal(line["price"]),
            quantity=Decimal(line["quantity"]),
        )
        for line in lines
    ]
    try:
        change = await loyalty.change(
            order_id=order_id, cart_items=cart, idempotency_key=ctx["job_id"]
        )
    except LoyaltyError as error:
        if not error.retryable:
            # OutcomeUnknownError (reconcile with details() first), OrderStatusError, ...:
            # running the job again cannot help, a person must look at it.
            raise
        retry_after = error.retry_after if isinstance(error, APIError) else None
        raise Retry(defer=retry_after or 10) from error
    return str(-change.order_total_change)


class WorkerSettings:
    """``arq arq_worker.WorkerSettings``."""

    functions = (refund,)
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://localhost:6379"))
