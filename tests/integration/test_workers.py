"""Workers in several OS processes sharing one Redis: redeliveries, a killed worker, chaos.

These start real processes (multiprocessing, spawn) and a real redis-server.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import uuid
from decimal import Decimal

import pytest

from benchmarks._redis import Persistence
from benchmarks.chaos import Report, run
from rees46_loyalty import CartItem, LoyaltyClient, OutcomeUnknownError
from rees46_loyalty.idempotency import RedisIdempotencyStore
from rees46_loyalty.testing import FakeRees46, Fault

pytestmark = pytest.mark.integration

CART = [CartItem(product_id="A", price=Decimal("1000"), quantity=4)]
SMALLER = [CartItem(product_id="A", price=Decimal("1000"), quantity=3)]


async def test_redeliveries_across_four_processes_commit_each_operation_once(
    redis_url: str,
) -> None:
    """4 worker processes, 60 orders, a fifth of the jobs delivered twice at once and some
    re-run after they succeeded, no faults: one effect per intended operation, and every
    duplicate got the first answer."""
    report = await run(redis_url=redis_url, orders=60, workers=4, fault_rate=0.0, seed=3)
    assert report.redeliveries > 10
    assert report.duplicated_effects == 0
    assert report.lost_silently == 0
    assert report.outcomes == {"ok": report.operations}
    assert report.refunds_reported == report.refunds_matching > 60


async def test_the_chaos_run(redis_url: str) -> None:
    """1,000+ operations over 250 orders, 4 processes, a quarter of all requests faulted with
    every kind of fault: nothing is applied twice, nothing is lost, every refund reported is
    the ledger's, every unknown outcome was reconciled."""
    report = await run(redis_url=redis_url, orders=250, workers=4, fault_rate=0.25, seed=7)
    assert report.passed, report.render()
    assert report.operations >= 1000
    assert report.orders >= 200
    assert report.silent_losses == 0
    assert report.unknown_outcomes > 0  # the run did meet lost answers
    assert report.unknown_reconciled == report.unknown_outcomes


# The chaos run with every exactly-once fault on, once per persistence
# setting, shared by the two tests below (one checks the faults happened, one the counts).
_EVERY_FAULT: dict[Persistence, Report] = {}


def _every_fault(redis_url: str, persistence: Persistence) -> Report:
    if persistence not in _EVERY_FAULT:
        _EVERY_FAULT[persistence] = asyncio.run(
            run(
                redis_url=redis_url,
                orders=150,
                workers=4,
                fault_rate=0.25,
                seed=11,
                redis_chaos=True,
                persistence=persistence,
                kill_workers=2,
                stale_connections=0.2,
                interleave=True,
                keys="order",
            )
        )
    return _EVERY_FAULT[persistence]


@pytest.mark.parametrize("persistence", ["aof", "none"])
def test_the_chaos_run_meets_every_fault(redis_url: str, persistence: Persistence) -> None:
    """With every fault on, the run really meets them: the store's Redis flushed and
    restarted, two workers SIGKILLed and replaced, idle keep-alive closes, other jobs in
    between; every job reaches an end and every unknown outcome is looked at."""
    report = _every_fault(redis_url, persistence)
    assert report.redis_events == ["FLUSHALL", f"restart ({persistence})"]
    assert len(report.store_wipes) == (1 if persistence == "aof" else 2)
    assert report.workers_killed == 2
    assert report.faults["idle keep-alive close"] > 0
    assert report.unknown_outcomes > 0
    assert report.unknown_reconciled == report.unknown_outcomes
    assert report.outcomes["error"] == 0, report.render()


@pytest.mark.parametrize("persistence", ["aof", "none"])
def test_the_chaos_run_with_every_fault_holds(redis_url: str, persistence: Persistence) -> None:
    """With every fault on (Redis flushed and restarted, workers SIGKILLed, idle keep-alive
    closes, other jobs redelivered in between): no effect twice at all, no silent loss, no
    false unknown outcome from an idle keep-alive close, every unknown outcome reconciled, and
    every committed refund known to the shop."""
    report = _every_fault(redis_url, persistence)
    assert report.passed, report.render()
    assert report.duplicated_effects == 0
    assert report.silent_losses == 0
    assert report.false_unknowns_keepalive == 0
    assert report.unresolved == 0
    # A change whose answer was lost just before the store lost every record of its order is
    # the one refund no client can derive (the run says how many; see docs/idempotency.md).
    assert report.refunds_known + report.refunds_lost_with_store == report.refunds_expected
    assert report.refunds_lost_with_store <= 0.02 * report.refunds_expected


def _call_in_child(url: str, redis_url: str, namespace: str, operation: str) -> None:
    """A worker process: one call with the job's key, through the shared Redis store."""

    async def call() -> None:
        store = RedisIdempotencyStore(redis_url, namespace=namespace, lease=0.5)
        # A change is started only with its whole timeout inside 90% of the lease.
        async with LoyaltyClient(
            "test-shop", "test-secret", base_url=url, idempotency=store, timeout=0.4
        ) as client:
            if operation == "change":
                await client.change(order_id="K-1", cart_items=SMALLER, idempotency_key="job-1")
            else:
                await client.cancel(order_id="K-1", idempotency_key="job-1")

    asyncio.run(call())


@pytest.mark.parametrize("operation", ["change", "cancel"])
async def test_a_worker_killed_in_the_middle_of_a_call(redis_url: str, operation: str) -> None:
    """SIGKILL while the request is on the wire. Once the lease runs out the next delivery of
    the job raises OutcomeUnknownError for a change (nothing sent again), and resends a
    cancel, which succeeds."""
    namespace = f"kill-{uuid.uuid4().hex}"
    async with FakeRees46() as fake:
        fake.add_product("A", "Tea")
        async with fake.client(idempotency=None) as setup:
            await setup.apply(order_id="K-1", cart_items=CART)
            await setup.confirm(order_id="K-1")
        fake.faults.on(operation, Fault.hold())
        child = multiprocessing.get_context("spawn").Process(
            target=_call_in_child, args=(fake.url, redis_url, namespace, operation)
        )
        child.start()
        await asyncio.wait_for(fake.wait_received(operation), timeout=30)
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.to_thread(child.join, 10)
        assert child.exitcode == -signal.SIGKILL

        store = RedisIdempotencyStore(redis_url, namespace=namespace, lease=0.5)
        async with fake.client(idempotency=store, timeout=0.4) as client:
            if operation == "change":
                with pytest.raises(OutcomeUnknownError):
                    await client.change(order_id="K-1", cart_items=SMALLER, idempotency_key="job-1")
                assert fake.received("change") == 1
            else:
                cancelled = await client.cancel(order_id="K-1", idempotency_key="job-1")
                assert cancelled.order_id == "K-1"
                assert fake.received("cancel") == 2
                assert len(fake.ledger.effects_for("cancel")) == 1
        await store.close()
