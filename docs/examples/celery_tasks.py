"""A Celery task that records partial returns in REES46, each task exactly once.

Run a worker with ``celery -A celery_tasks worker`` (``REES46_SHOP_ID``, ``REES46_SHOP_SECRET``
and ``REDIS_URL`` in the environment), and send a return from the shop's backend with::

    refund.apply_async((order_id, lines), task_id=f"refund:{return_id}")

The task id is the idempotency key of the ``change``: however often the broker delivers the task,
REES46 sees one change, and every delivery returns the same refund amount. When the answer of the
change is lost (``OutcomeUnknownError``), the task reconciles it: applied, it returns the refund
the lost answer would have carried; not applied, ``self.retry`` delivers it again, and the retry
sends the change.
"""

import os
import threading
from decimal import Decimal
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_process_shutdown

from rees46_loyalty import (
    APIError,
    CartItem,
    LoyaltyError,
    OrderChange,
    OutcomeUnknownError,
    SyncLoyaltyClient,
)
from rees46_loyalty.idempotency import RedisIdempotencyStore

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")

app = Celery("celery_tasks", broker=REDIS_URL)
# A task is acknowledged once it ran: a worker that dies mid-task leaves it to be delivered
# again, and the idempotency key makes that second delivery harmless.
app.conf.task_acks_late = True
app.conf.task_reject_on_worker_lost = True

_client: SyncLoyaltyClient | None = None
_lock = threading.Lock()


def loyalty() -> SyncLoyaltyClient:
    """The worker process's one client, made on first use (after the prefork pool's fork).

    Its idempotency records are in Redis: every worker process and machine sees them.
    """
    global _client  # noqa: PLW0603 - one client per process
    with _lock:
        if _client is None:
            _client = SyncLoyaltyClient.from_env(
                idempotency=RedisIdempotencyStore(os.environ.get("REDIS_URL", REDIS_URL))
            )
        return _client


@worker_process_init.connect
def forget_inherited_client(**_: Any) -> None:
    """A prefork child starts without a client of its own (never the parent's)."""
    global _client  # noqa: PLW0603 - one client per process
    _client = None


@worker_process_shutdown.connect
def close_client(**_: Any) -> None:
    """Close the pool and the store's Redis connections when the worker process stops."""
    if _client is not None:
        _client.close()


@app.task(bind=True, max_retries=5)
def refund(self: "Task[Any, Any]", order_id: str, lines: list[dict[str, str]]) -> str:
    """Record a partial return of *order_id*; return the amount to refund, as a string.

    *lines* is the whole cart that stays with the buyer, each line a dict of ``product_id``,
    ``price`` and ``quantity``, amounts as strings.
    """
    cart = [
        CartItem(
            product_id=line["product_id"],
            price=Decimal(line["price"]),
            quantity=Decimal(line["quantity"]),
        )
        for line in lines
    ]
    task_id = str(self.request.id)
    try:
        change = loyalty().change(order_id=order_id, cart_items=cart, idempotency_key=task_id)
    except OutcomeUnknownError as unknown:
        # Decide it from the order now; an order someone else changed meanwhile raises
        # OutcomeUnknownError again and fails the task, for a person.
        found = loyalty().reconcile(order_id=order_id, idempotency_key=unknown.idempotency_key)
        if (
            found.applied
            and found.idempotency_key == task_id
            and isinstance(found.result, OrderChange)
        ):
            return str(-found.result.order_total_change)
        # Not applied (or another call blocked the order, now decided): the retry sends it.
        raise self.retry(exc=unknown, countdown=0) from unknown
    except LoyaltyError as error:
        if not error.retryable:
            # OrderStatusError, ValidationError, ...: running the task again cannot help,
            # a person must look at it.
            raise
        retry_after = error.retry_after if isinstance(error, APIError) else None
        # Celery's retry keeps the task id, so the retry has the same idempotency key.
        raise self.retry(exc=error, countdown=retry_after or 10) from error
    return str(-change.order_total_change)
