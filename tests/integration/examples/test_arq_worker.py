"""The arq example (docs/examples/arq_worker.py): arq's own Worker in burst mode on a real
redis-server, refunds against the fake REES46 API; one change in the ledger per job, however
often the job is delivered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, cast

import arq_worker
import pytest
from arq import ArqRedis, Retry, create_pool
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix, result_key_prefix
from arq.worker import Worker, create_worker

from rees46_loyalty import CartItem, OutcomeUnknownError
from rees46_loyalty.testing import FakeRees46, Fault
from tests.integration.examples.conftest import RedeliveryGate

pytestmark = pytest.mark.integration

KEPT = [{"product_id": "A", "price": "1000", "quantity": "3"}]


@pytest.fixture
def queue() -> str:
    return f"refunds-{uuid.uuid4().hex}"


@pytest.fixture
async def pool(redis_url: str, queue: str) -> AsyncIterator[ArqRedis]:
    """What the shop's backend enqueues with."""
    redis = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=queue)
    yield redis
    await redis.aclose()


def burst_worker(redis_url: str, queue: str) -> Worker:
    """The example's WorkerSettings, run until the queue is empty, taking one job at most."""
    return create_worker(
        cast("Any", arq_worker.WorkerSettings),  # a plain class, as arq's docs write them
        redis_settings=RedisSettings.from_dsn(redis_url),
        queue_name=queue,
        burst=True,
        max_burst_jobs=1,
        poll_delay=0.01,
        handle_signals=False,
    )


async def run_burst(redis_url: str, queue: str) -> Worker:
    worker = burst_worker(redis_url, queue)
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker


async def test_a_job_refunds_once_and_returns_the_amount(
    worker_env: dict[str, str], shop: FakeRees46, pool: ArqRedis, queue: str, order: str
) -> None:
    """Enqueued with the return's id, run by a burst worker: the ledger's refund, once."""
    job = await pool.enqueue_job("refund", order, KEPT, _job_id=f"refund:{uuid.uuid4().hex}")
    assert job is not None
    worker = await run_burst(worker_env["REDIS_URL"], queue)
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    result = await job.result_info()
    assert result is not None
    assert result.success
    assert Decimal(result.result) == -shop.ledger.refunds(order) == 1000
    assert len(shop.ledger.effects_for("change", order)) == 1


async def test_a_job_redelivered_while_it_runs_refunds_once(
    worker_env: dict[str, str],
    shop: FakeRees46,
    pool: ArqRedis,
    queue: str,
    order: str,
    redelivery_gate: RedeliveryGate,
) -> None:
    """The first worker is presumed dead while its change is in flight: its in-progress key is
    gone (as when it expires) and a second worker runs the job again. The redelivery waits
    for the first, then both end with the same amount and the ledger has one change."""
    job_id = f"refund:{uuid.uuid4().hex}"
    job = await pool.enqueue_job("refund", order, KEPT, _job_id=job_id)
    assert job is not None
    first = burst_worker(worker_env["REDIS_URL"], queue)
    running = asyncio.ensure_future(first.main())
    await redelivery_gate.first_call_held()  # the change is applied, its record not yet written

    await pool.delete(in_progress_key_prefix + job_id)
    second = burst_worker(worker_env["REDIS_URL"], queue)
    redelivered = asyncio.ensure_future(second.main())
    await redelivery_gate.redelivery_waiting()  # the redelivery found the job's key busy
    redelivery_gate.open()
    await asyncio.gather(running, redelivered)
    await first.close()
    await second.close()

    assert (first.jobs_complete, second.jobs_complete) == (1, 1)
    result = await job.result_info()
    assert result is not None
    assert result.job_try == 2
    assert Decimal(result.result) == -shop.ledger.refunds(order) == 1000
    assert shop.received("change") == 1
    assert len(shop.ledger.effects_for("change", order)) == 1


async def test_a_finished_job_run_again_replays_its_amount(
    worker_env: dict[str, str], shop: FakeRees46, pool: ArqRedis, queue: str, order: str
) -> None:
    """arq itself refuses the job id while it keeps the result; once the result is gone the
    job runs again, and gets the recorded amount without a second change."""
    job_id = f"refund:{uuid.uuid4().hex}"
    assert await pool.enqueue_job("refund", order, KEPT, _job_id=job_id) is not None
    await run_burst(worker_env["REDIS_URL"], queue)
    assert await pool.enqueue_job("refund", order, KEPT, _job_id=job_id) is None

    await pool.delete(result_key_prefix + job_id)  # keep_result ran out
    again = await pool.enqueue_job("refund", order, KEPT, _job_id=job_id)
    assert again is not None
    worker = await run_burst(worker_env["REDIS_URL"], queue)
    assert worker.jobs_complete == 1
    result = await again.result_info()
    assert result is not None
    assert Decimal(result.result) == 1000
    assert shop.received("change") == 1
    assert len(shop.ledger.effects_for("change", order)) == 1


@pytest.fixture
async def ctx(worker_env: dict[str, str], pool: ArqRedis) -> AsyncIterator[dict[str, Any]]:
    """The context arq gives a job: its Redis, the example's startup, a job id."""
    context: dict[str, Any] = {"redis": pool}
    await arq_worker.startup(context)
    context["job_id"] = f"refund:{uuid.uuid4().hex}"
    yield context
    await arq_worker.shutdown(context)


async def test_the_job_function_called_twice_with_one_job_id(
    ctx: dict[str, Any], shop: FakeRees46, order: str, redelivery_gate: RedeliveryGate
) -> None:
    """Two calls at once with the same ctx["job_id"], then a third after them: one change,
    three equal amounts."""
    first = asyncio.ensure_future(arq_worker.refund(ctx, order, KEPT))
    await redelivery_gate.first_call_held()
    second = asyncio.ensure_future(arq_worker.refund(ctx, order, KEPT))
    await redelivery_gate.redelivery_waiting()
    redelivery_gate.open()
    amounts = [*await asyncio.gather(first, second), await arq_worker.refund(ctx, order, KEPT)]
    assert amounts == ["1000", "1000", "1000"]
    assert shop.received("change") == 1
    assert len(shop.ledger.effects_for("change", order)) == 1


async def test_a_lost_answer_is_reconciled_to_the_ledgers_refund(
    ctx: dict[str, Any], shop: FakeRees46, order: str
) -> None:
    """The change was applied but its answer lost: the job reconciles and returns the ledger's
    exact refund; its redelivery returns it too, and the change was sent once."""
    shop.faults.on("change", Fault.drop_after_commit())
    amount = await arq_worker.refund(ctx, order, KEPT)
    again = await arq_worker.refund(ctx, order, KEPT)
    assert Decimal(amount) == Decimal(again) == -shop.ledger.refunds(order) == 1000
    assert shop.received("change") == 1
    assert len(shop.ledger.effects_for("change", order)) == 1


async def test_a_change_never_processed_is_retried_and_sent_once(
    ctx: dict[str, Any], shop: FakeRees46, order: str
) -> None:
    """A 504 before the server processed the change: reconcile finds it not applied, the job
    raises arq's Retry, and the retry sends the change once and returns its refund."""
    shop.faults.on("change", Fault.gateway_timeout())
    with pytest.raises(Retry) as retry:
        await arq_worker.refund(ctx, order, KEPT)
    assert isinstance(retry.value.__cause__, OutcomeUnknownError)
    assert shop.ledger.effects_for("change") == []
    assert await arq_worker.refund(ctx, order, KEPT) == "1000"
    assert shop.received("change") == 2  # the unprocessed one and the retry's
    assert len(shop.ledger.effects_for("change", order)) == 1
    assert shop.ledger.refunds(order) == -1000


async def test_an_order_changed_by_someone_else_fails_the_job(
    ctx: dict[str, Any], shop: FakeRees46, order: str
) -> None:
    """The answer was lost and then another system changed the order: reconcile cannot
    decide, the job fails with OutcomeUnknownError for a person, and nothing more is sent."""
    shop.faults.on("change", Fault.drop_after_commit())
    async with shop.client(idempotency=None) as other_system:
        with pytest.raises(OutcomeUnknownError):
            await ctx["loyalty"].change(
                order_id=order,
                cart_items=[CartItem(product_id="A", price=Decimal(1000), quantity=3)],
                idempotency_key=ctx["job_id"],
            )
        shop.faults.clear()
        await other_system.change(
            order_id=order, cart_items=[CartItem(product_id="A", price=Decimal(1000), quantity=1)]
        )
    with pytest.raises(OutcomeUnknownError, match="someone else changed it"):
        await arq_worker.refund(ctx, order, KEPT)
    assert shop.received("change") == 2


async def test_a_rate_limited_job_is_retried_when_the_api_says(
    ctx: dict[str, Any], shop: FakeRees46, order: str
) -> None:
    """A 429 with a Retry-After too long to wait in the job: arq's Retry, deferred as long."""
    shop.faults.on("change", Fault.rate_limited(retry_after="120"))
    with pytest.raises(Retry) as retry:
        await arq_worker.refund(ctx, order, KEPT)
    assert retry.value.defer_score == 120_000
    assert shop.ledger.effects_for("change") == []


async def test_a_job_redelivered_after_a_later_return_of_its_order_replays(
    ctx: dict[str, Any], shop: FakeRees46, order: str
) -> None:
    """Return 1 keeps 3 items, return 2 keeps 2, then return 1 is delivered again: keyed by the
    order alone it would be sent and put an item back; keyed by its job id it replays."""
    first_job, second_job = ctx["job_id"], f"refund:{uuid.uuid4().hex}"
    fewer = [{**KEPT[0], "quantity": "2"}]
    assert await arq_worker.refund(ctx, order, KEPT) == "1000"
    assert await arq_worker.refund({**ctx, "job_id": second_job}, order, fewer) == "1000"
    assert await arq_worker.refund({**ctx, "job_id": first_job}, order, KEPT) == "1000"
    assert shop.received("change") == 2
    assert shop.ledger.refunds(order) == -2000
