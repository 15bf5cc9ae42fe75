"""A taskiq task that records partial returns in REES46, each task exactly once.

The broker is taskiq's ``InMemoryBroker`` so that this file runs as it is; in production, use a
real one (``taskiq_redis.ListQueueBroker``, ``taskiq_aio_pika.AioPikaBroker``, ...): nothing
else changes. Kick a return from the shop's backend with the return's id as the task id::

    await refund.kicker().with_task_id(f"refund:{return_id}").kiq(order_id, lines)

The task id is the idempotency key of the ``change``: however often the task is delivered (or
retried by taskiq's retry middlewares, which keep the id), REES46 sees one change, and every
delivery returns the same refund amount. When the answer of the change is lost
(``OutcomeUnknownError``), the task reconciles it: applied, it returns the refund the lost answer
would have carried; not applied, it raises ``SendAgainError``, which taskiq's
``SimpleRetryMiddleware`` retries under the same task id, and the retry sends the change.
"""

import os
from decimal import Decimal
from typing import Annotated

from taskiq import (
    Context,
    InMemoryBroker,
    SimpleRetryMiddleware,
    TaskiqDepends,
    TaskiqEvents,
    TaskiqState,
)

from rees46_loyalty import CartItem, LoyaltyClient, OrderChange, OutcomeUnknownError
from rees46_loyalty.idempotency import RedisIdempotencyStore


class SendAgainError(Exception):
    """The change was not applied (its outcome is now recorded): deliver the task again."""


# The retry middleware kicks the task again, with its task id, on SendAgainError only: any other
# error fails the task as before.
broker = InMemoryBroker().with_middlewares(
    SimpleRetryMiddleware(default_retry_count=5, types_of_exceptions=(SendAgainError,))
)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def startup(state: TaskiqState) -> None:
    """One client per worker process, made inside the worker's event loop."""
    # A Redis store: the workers of every process and machine see each other's records.
    state.loyalty_store = RedisIdempotencyStore(os.environ.get("REDIS_URL", "redis://localhost"))
    state.loyalty = LoyaltyClient.from_env(idempotency=state.loyalty_store)


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def shutdown(state: TaskiqState) -> None:
    """Close the client, then the store (the client never closes a store it was given)."""
    await state.loyalty.close()
    await state.loyalty_store.close()


@broker.task(retry_on_error=True)
async def refund(
    order_id: str, lines: list[dict[str, str]], context: Annotated[Context, TaskiqDepends()]
) -> str:
    """Record a partial return of *order_id*; return the amount to refund, as a string.

    *lines* is the whole cart that stays with the buyer, each line a dict of ``product_id``,
    ``price`` and ``quantity``, amounts as strings (JSON has no exact decimals).
    An ``OutcomeUnknownError`` is reconciled: this task's change applied returns its derived
    refund; not applied (or another call that blocked the order, now decided) raises
    ``SendAgainError``; an order someone else changed meanwhile fails the task, for a person.
    """
    loyalty: LoyaltyClient = context.state.loyalty
    cart = [
        CartItem(
            product_id=line["product_id"],
            price=Decimal(line["price"]),
            quantity=Decimal(line["quantity"]),
        )
        for line in lines
    ]
    task_id = context.message.task_id
    try:
        change = await loyalty.change(order_id=order_id, cart_items=cart, idempotency_key=task_id)
    except OutcomeUnknownError as unknown:
        found = await loyalty.reconcile(order_id=order_id, idempotency_key=unknown.idempotency_key)
        if (
            found.applied
            and found.idempotency_key == task_id
            and isinstance(found.result, OrderChange)
        ):
            return str(-found.result.order_total_change)
        raise SendAgainError(f"the change of order {order_id} was not applied") from unknown
    return str(-change.order_total_change)
