"""The chaos run: worker processes, one Redis, a fake REES46 API that faults.

Workers in several OS processes share one Redis idempotency store and work through a queue of
loyalty operations, with redeliveries, against the fake REES46 server injecting faults of every
kind. Then the fake server's ledger is checked against what the workers reported.

    python -m benchmarks.chaos [--orders 250] [--workers 4] [--fault-rate 0.25] [--seed 7]

prints its figures and exits 0 only when every check holds. ``run()`` is the same as a
function, for the test suite.

The queue is a Redis list; a worker takes a job, runs it with the job id as the idempotency key,
and records what it saw. Like a real task queue, a job that fails with a retryable error goes
back to the queue, and some jobs are delivered twice at once (two workers) or again after they
succeeded. A ``change`` whose outcome is unknown is reconciled with ``details()``: if the server
has it, it is done; if not, the job clears its record and goes back to the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import random
import sys
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from attrs import define, field

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    CartItem,
    Handler,
    LoyaltyClient,
    LoyaltyError,
    MalformedResponseError,
    OrderStatusError,
    OutcomeUnknownError,
    RetryPolicy,
)
from rees46_loyalty.idempotency import RedisIdempotencyStore
from rees46_loyalty.testing import FakeRees46

__all__ = ["Report", "run"]

SHOP_ID = "chaos-shop"
SHOP_SECRET = "chaos-secret"  # noqa: S105 - the fake server's
PRICE = Decimal("1249.90")
QUEUE = "chaos:queue"
STOP = "STOP"
MAX_REDELIVERIES = 30


def _cart(quantity: int) -> list[CartItem]:
    return [
        CartItem(product_id="TEA", price=PRICE, quantity=quantity),
        CartItem(product_id="CUP", price=Decimal("350"), quantity=1),
    ]


def _job(op: str, order: int) -> dict[str, Any]:
    return {"id": f"{op}-{order}", "op": op, "order": f"C-{order}", "deliveries": 0}


# -- the worker (runs in its own process) -----------------------------------------------------


class _RetryCounter:
    """A middleware that counts the retries the SDK makes."""

    def __init__(self) -> None:
        self.retries = 0

    async def __call__(self, request: ApiRequest, call_next: Handler) -> ApiResponse:
        if request.attempt > 1:
            self.retries += 1
        return await call_next(request)


async def _run_job(client: LoyaltyClient, job: dict[str, Any]) -> dict[str, Any]:
    """Run one job; return what the worker reports (``requeue`` sends it back to the queue)."""
    op, order, key = job["op"], job["order"], job["id"]
    try:
        if op == "apply":
            result: Any = await client.apply(
                order_id=order,
                cart_items=_cart(3),
                identifier="79990001122",
                charge_bonuses=True,
                idempotency_key=key,
            )
        elif op == "confirm":
            result = await client.confirm(order_id=order, idempotency_key=key)
        elif op == "change":
            result = await client.change(order_id=order, cart_items=_cart(1), idempotency_key=key)
            return {
                "status": "ok",
                "replayed": result.replayed,
                "order_total_change": str(result.order_total_change),
            }
        else:
            result = await client.cancel(order_id=order, idempotency_key=key)
    except OutcomeUnknownError:
        return await _reconcile(client, order, key)
    except OrderStatusError as error:
        return {
            "status": "terminal",
            "message": error.message,
            "previous_outcome_unknown": error.previous_outcome_unknown,
        }
    except LoyaltyError as error:
        if error.retryable or isinstance(error, MalformedResponseError):
            return {"status": "requeue", "why": type(error).__name__}
        return {"status": "error", "error": f"{type(error).__name__}: {error.message}"}
    return {"status": "ok", "replayed": result.replayed}


async def _reconcile(client: LoyaltyClient, order: str, key: str) -> dict[str, Any]:
    """A change with an unknown outcome: look at the order; done, or clear and requeue."""
    try:
        details = await client.details(order_id=order)
        if details.order_total == PRICE + 350:  # the server has the new cart: it happened
            return {"status": "unknown-applied"}
        await client.clear_idempotency(order_id=order, idempotency_key=key)
    except LoyaltyError as error:  # details() met a fault too: look again later
        return {"status": "requeue", "why": f"reconcile: {type(error).__name__}"}
    return {"status": "requeue", "why": "unknown outcome, not applied"}


async def _worker(url: str, redis_url: str, name: str) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    store = RedisIdempotencyStore(redis, lease=5.0)
    counter = _RetryCounter()
    policy = RetryPolicy(initial_delay=0.005, max_delay=0.05, retry_budget=None)
    async with LoyaltyClient(
        SHOP_ID,
        SHOP_SECRET,
        base_url=url,
        idempotency=store,
        retry=policy,
        middlewares=[counter],
    ) as client:
        while True:
            _, raw = await redis.blpop([QUEUE])
            if raw == STOP.encode():
                break
            job = json.loads(raw)
            try:
                outcome = await _run_job(client, job)
            except Exception as exc:  # noqa: BLE001 - reported, and the job is counted
                outcome = {"status": "error", "error": repr(exc)}
            outcome |= {"job": job["id"], "worker": name}
            if outcome["status"] == "requeue" and job["deliveries"] < MAX_REDELIVERIES:
                job["deliveries"] += 1
                await redis.incr("chaos:pushed")
                await redis.rpush(QUEUE, json.dumps(job))
            await redis.rpush("chaos:outcomes", json.dumps(outcome))
            await redis.incr("chaos:done")
    await redis.incrby("chaos:retries", counter.retries)
    await redis.aclose()


def worker_main(url: str, redis_url: str, name: str) -> None:
    """The entry point of a worker process."""
    # Unknown outcomes are expected here and counted; only errors are worth a line.
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_worker(url, redis_url, name))


# -- the run ----------------------------------------------------------------------------------


@define
class Report:
    """The figures of a chaos run and the checks on them."""

    operations: int = 0
    orders: int = 0
    workers: int = 0
    redeliveries: int = 0
    faults: Counter[str] = field(factory=Counter)
    retries: int = 0
    outcomes: Counter[str] = field(factory=Counter)
    duplicated_effects: int = 0
    refunds_reported: int = 0
    refunds_matching: int = 0
    unknown_outcomes: int = 0
    unknown_reconciled: int = 0
    lost_silently: int = 0
    checks: dict[str, bool] = field(factory=dict)

    @property
    def passed(self) -> bool:
        """Whether every check held."""
        return all(self.checks.values())

    def render(self) -> str:
        """The figures, for a person."""
        lines = [
            (
                f"operations run          {self.operations} (over {self.orders} orders, "
                f"{self.workers} worker processes, {self.redeliveries} redelivered)"
            ),
            f"faults injected         {sum(self.faults.values())}: "
            + ", ".join(f"{label} {count}" for label, count in sorted(self.faults.items())),
            f"SDK retries             {self.retries}",
            "job outcomes            "
            + ", ".join(f"{name} {count}" for name, count in sorted(self.outcomes.items())),
            f"duplicated effects      {self.duplicated_effects}",
            (
                f"refunds reported        {self.refunds_reported}, equal to the ledger's: "
                f"{self.refunds_matching}"
            ),
            (
                f"unknown outcomes        {self.unknown_outcomes}, reconciled with details(): "
                f"{self.unknown_reconciled}"
            ),
            f"operations lost         {self.lost_silently}",
            "",
            *(f"[{'ok' if held else 'FAILED'}] {name}" for name, held in self.checks.items()),
        ]
        return "\n".join(lines)


async def _wait_drained(redis: Any, processes: Sequence[Any]) -> None:
    """Until every job pushed so far is done (requeued ones included)."""
    while int(await redis.get("chaos:done") or 0) < int(await redis.get("chaos:pushed") or 0):
        if not any(process.is_alive() for process in processes):
            raise RuntimeError("every worker process died")
        await asyncio.sleep(0.01)


async def _push(redis: Any, jobs: list[dict[str, Any]], rng: random.Random, twice: float) -> int:
    """Queue *jobs*; a *twice* share goes in twice, back to back, for two workers at once."""
    queued = []
    for job in jobs:
        queued.append(job)
        if rng.random() < twice:
            queued.append(job)
    await redis.incrby("chaos:pushed", len(queued))
    await redis.rpush(QUEUE, *(json.dumps(job) for job in queued))
    return len(queued) - len(jobs)


async def run(
    *,
    redis_url: str,
    orders: int = 250,
    workers: int = 4,
    fault_rate: float = 0.25,
    seed: int = 7,
) -> Report:
    """Run the chaos scenario; see the module docstring."""
    from redis.asyncio import Redis

    rng = random.Random(seed)  # noqa: S311 - reproducible chaos
    report = Report(orders=orders, workers=workers)
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    async with FakeRees46(shop_id=SHOP_ID, shop_secret=SHOP_SECRET) as fake:
        fake.add_member("79990001122", bonuses=Decimal(10**9))
        fake.add_product("TEA", "Tea")
        fake.add_product("CUP", "Cup")
        fake.faults.random(fault_rate, seed=seed)
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(target=worker_main, args=(fake.url, redis_url, f"w{n}"), daemon=True)
            for n in range(workers)
        ]
        for process in processes:
            process.start()
        numbers = list(range(orders))
        cancelled = set(rng.sample(numbers, orders // 4))
        phases = [
            [_job("apply", n) for n in numbers],
            [_job("confirm", n) for n in numbers],
            [_job("change", n) for n in numbers],
            # Jobs re-run after they succeeded, and the cancels.
            [_job("change", n) for n in rng.sample(numbers, orders // 5)]
            + [_job("cancel", n) for n in sorted(cancelled)],
        ]
        for jobs in phases:
            report.redeliveries += await _push(redis, jobs, rng, twice=0.2)
            await _wait_drained(redis, processes)
        await redis.rpush(QUEUE, *([STOP] * workers))
        for process in processes:
            await asyncio.to_thread(process.join, 60)
        report.faults = fake.faults.counts()
        report.retries = int(await redis.get("chaos:retries") or 0)
        outcomes = [json.loads(raw) for raw in await redis.lrange("chaos:outcomes", 0, -1)]
        _check(report, fake, outcomes, numbers, cancelled)
    await redis.aclose()
    return report


def _check(
    report: Report,
    fake: FakeRees46,
    outcomes: list[dict[str, Any]],
    numbers: Sequence[int],
    cancelled: set[int],
) -> None:
    ledger = fake.ledger
    report.operations = len(outcomes)
    report.outcomes = Counter(o["status"] for o in outcomes)
    effects = Counter((e.operation, e.order_id) for e in ledger.effects)
    report.duplicated_effects = sum(count - 1 for count in effects.values() if count > 1)
    final: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:  # the last word on each job (after its requeues)
        if outcome["status"] != "requeue" or outcome["job"] not in final:
            final[outcome["job"]] = outcome
    lost = 0
    for n in numbers:
        order = f"C-{n}"
        intended = ["apply", "confirm", "change"] + (["cancel"] if n in cancelled else [])
        for op in intended:
            word = final.get(f"{op}-{n}", {"status": "missing"})
            has_effect = effects[(op, order)] == 1
            if not has_effect and word["status"] in ("ok", "missing", "requeue"):
                lost += 1  # the worker believes it happened (or never heard): it did not
        change = [o for o in outcomes if o["job"] == f"change-{n}" and o["status"] == "ok"]
        for outcome in change:
            report.refunds_reported += 1
            reported = Decimal(outcome["order_total_change"])
            report.refunds_matching += reported == ledger.refunds(order)
    unknown = [o for o in outcomes if o["status"] == "unknown-applied"]
    report.unknown_outcomes = len(unknown) + sum(
        1 for o in outcomes if o.get("why") == "unknown outcome, not applied"
    )
    report.unknown_reconciled = report.unknown_outcomes  # every one went through details()
    report.lost_silently = lost
    report.checks = {
        "at least 1,000 operations over at least 200 orders": report.operations >= 1000
        and report.orders >= 200,
        "at least 20% of requests met a fault, of every kind": sum(report.faults.values())
        >= 0.2 * len(ledger.requests)
        and len(report.faults) >= 10,
        "no effect was committed twice": report.duplicated_effects == 0,
        "every refund the SDK reported equals the ledger's": report.refunds_matching
        == report.refunds_reported,
        "no operation was lost silently": report.lost_silently == 0,
        "no job ended in an unexpected error": report.outcomes["error"] == 0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chaos scenario from the command line; exit 0 when every check holds."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    parser.add_argument("--orders", type=int, default=250)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--fault-rate", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis-url", help="an existing Redis (its database is flushed)")
    args = parser.parse_args(argv)

    async def go(url: str) -> Report:
        return await run(
            redis_url=url,
            orders=args.orders,
            workers=args.workers,
            fault_rate=args.fault_rate,
            seed=args.seed,
        )

    if args.redis_url:
        report = asyncio.run(go(args.redis_url))
    else:
        from ._redis import redis_server

        with redis_server() as url:
            report = asyncio.run(go(url))
    print(report.render())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
