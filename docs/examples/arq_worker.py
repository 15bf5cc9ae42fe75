"""An arq worker that records partial returns in REES46, each job exactly once.

Run it with ``arq arq_worker.WorkerSettings`` (``REES46_SHOP_ID``, ``REES46_SHOP_SECRET`` and
``REDIS_URL`` in the environment), and enqueue a return from the shop's backend with::

    await redis.enqueue_job("refund", order_id, lines, _job_id=f"refund:{return_id}")

The job id is the idempotency key of the ``change``: however often arq delivers the job, REES46
sees one change, and every delivery returns the same refund amount. When the answer of the
change is lost (``OutcomeUnknownError``), the job reconciles it: applied, it returns the refund
the lost answer would have carried; not applied, it is retried, and the retry sends the change.
"""

import os
from decimal import Decimal
from typing import Any

from arq import Retry
from arq.connections import RedisSettings

from rees46_loyalty import (
    APIError,
    CartItem,
    LoyaltyClient,
    LoyaltyError,
    OrderChange,
    OutcomeUnknownError,
)
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
    except OutcomeUnknownError as unknown:
        return await reconciled_refund(loyalty, order_id, unknown, ctx["job_id"])
    except LoyaltyError as error:
        if not error.retryable:
            # OrderStatusError, ValidationError, ...: running the job again cannot help,
            # a person must look at it.
            raise
        retry_after = error.retry_after if isinstance(error, APIError) else None
        raise Retry(defer=retry_after or 10) from error
    return str(-change.order_total_change)


async def reconciled_refund(
    loyalty: LoyaltyClient, order_id: str, unknown: OutcomeUnknownError, job_id: str
) -> str:
    """The refund of this job's change whose answer was lost, or arq's ``Retry``.

    ``reconcile`` reads the order and records what it finds. If this job's change was applied,
    its refund is derived (the order's ``order_to_pay`` now minus before) and returned. If it was
    not applied, or another call blocked the order and is now decided, the job is retried: the
    retry sends the change (or is answered from its record). An order that cannot be decided
    (someone else changed it meanwhile) raises ``OutcomeUnknownError``: for a person.
    """
    try:
        found = await loyalty.reconcile(order_id=order_id, idempotency_key=unknown.idempotency_key)
    except LoyaltyError as error:
        if not error.retryable:
            raise
        raise Retry(defer=10) from error  # the API or the store was busy: reconcile on the retry
    if found.applied and found.idempotency_key == job_id and isinstance(found.result, OrderChange):
        return str(-found.result.order_total_change)
    raise Retry(defer=0) from unknown


class WorkerSettings:
    """``arq arq_worker.WorkerSettings``."""

    functions = (refund,)
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://localhost:6379"))
