"""The chaos run: worker processes, Redis, a fake REES46 API that faults.

Workers in several OS processes share one Redis idempotency store and work through a queue of
loyalty operations, with redeliveries, against the fake REES46 server injecting faults of every
kind. Then the fake server's ledger is checked against what the workers reported.

    python -m benchmarks.chaos [--orders 250] [--workers 4] [--fault-rate 0.25] [--seed 7]
        [--redis-chaos] [--persistence aof|none] [--kill-workers N]
        [--stale-connections RATE] [--interleave] [--keys job|order] [--all-faults]

prints its figures and exits 0 only when every check holds. ``run()`` is the same as a
function, for the test suite.

The queue is a Redis list, taken reliably (``BLMOVE`` into the worker's own list, removed from
it when the job's outcome is written): a worker takes a job, runs it (with the job id as the
idempotency key, or the order's default key with ``--keys order``) and records what it saw.
Like a real task queue, a job that fails with a retryable error goes back to the queue, and
some jobs are delivered twice at once (two workers) or again after they succeeded. An unknown
outcome is reconciled by looking at the order (``details()``, or ``history()`` for a confirm or
a cancel): if the server has it, it is done; if not, the job clears its record and goes back to
the queue.

The faults beyond the fake server's random mix are opt-in:

* ``--redis-chaos``: the idempotency store gets a Redis of its own (the queue keeps its own),
  which is flushed (``FLUSHALL``) and later restarted (``SHUTDOWN NOSAVE``, then started again
  on the same port) while the changes run. ``--persistence aof`` runs it with
  ``appendonly yes`` and ``appendfsync always`` (a restart keeps the data), ``none`` without.
* ``--kill-workers N``: N times, a worker process is SIGKILLed in the middle of the run and
  replaced; the job it held is delivered again, as a task queue redelivers an unacked job.
* ``--stale-connections RATE``: that share of the mutating requests that come on a reused
  keep-alive connection find it closed by the server (``Fault.idle_close()``): not processed.
* ``--interleave``: between a change and its redelivery, the order's confirm is delivered
  again (another job on the same order in between).

What is reported, from the ledger against the workers' reports (one intent is an operation on
an order: each job is one):

* duplicated effects: an intent committed more than once;
* silent losses: a committed intent whose result no worker reported, and for which no unknown
  outcome was reported either;
* false unknown outcomes: ``OutcomeUnknownError`` although the ledger shows nothing committed
  for the job's intent before the worker looked at the order; those of a delivery whose
  request met an idle keep-alive close are counted apart;
* refunds reported that differ from the ledger's, and operations reported done (or never
  finished) that the ledger does not have.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import itertools
import json
import logging
import multiprocessing
import os
import random
import signal
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import Any, Literal

from attrs import define, field, frozen

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    CartItem,
    Handler,
    LoyaltyClient,
    LoyaltyError,
    MalformedResponseError,
    OrderChange,
    OrderStatusError,
    OutcomeUnknownError,
    RetryPolicy,
)
from rees46_loyalty.idempotency import RedisIdempotencyStore
from rees46_loyalty.testing import FakeRees46, Fault

from ._redis import PERSISTENCE, Persistence, RedisServer

__all__ = ["Options", "Report", "WorkerConfig", "run", "run_options"]

SHOP_ID = "chaos-shop"
SHOP_SECRET = "chaos-secret"  # noqa: S105 - the fake server's
MEMBER = "79990001122"
PRICE = Decimal("1249.90")
CHANGED_TOTAL = PRICE + 350
QUEUE = "chaos:queue"
STOP = "STOP"
MAX_REDELIVERIES = 30
MUTATING = ("apply", "confirm", "change", "cancel")
IDLE_CLOSE = Fault.idle_close().label

Keys = Literal["job", "order"]

# The delivery being worked on in this task: its requests carry it as X-Request-Id.
_DELIVERY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "chaos_delivery", default=None
)


def _cart(quantity: int) -> list[CartItem]:
    return [
        CartItem(product_id="TEA", price=PRICE, quantity=quantity),
        CartItem(product_id="CUP", price=Decimal("350"), quantity=1),
    ]


def _job(op: str, order: int) -> dict[str, Any]:
    return {"id": f"{op}-{order}", "op": op, "order": f"C-{order}", "deliveries": 0}


# -- the worker (runs in its own process) -----------------------------------------------------


class _Tagger:
    """A middleware that tags each attempt with its delivery and counts the SDK's retries."""

    def __init__(self) -> None:
        self.retries = 0

    async def __call__(self, request: ApiRequest, call_next: Handler) -> ApiResponse:
        if request.attempt > 1:
            self.retries += 1
        delivery = _DELIVERY.get()
        if delivery is not None:
            request = request.replace(headers={**request.headers, "X-Request-Id": delivery})
        return await call_next(request)


class _ErrorCount(logging.Handler):
    """Counts the SDK's ERROR log lines (the store failing to record, ...)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:  # noqa: ARG002 - counted, not shown
        self.count += 1


async def _run_job(client: LoyaltyClient, job: dict[str, Any], keys: Keys) -> dict[str, Any]:
    """Run one job; return what the worker reports (``requeue`` sends it back to the queue)."""
    op, order = job["op"], job["order"]
    key = job["id"] if keys == "job" else None
    try:
        if op == "apply":
            result: Any = await client.apply(
                order_id=order,
                cart_items=_cart(3),
                identifier=MEMBER,
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
    except OutcomeUnknownError as error:
        return {"unknown": True} | await _reconcile(client, op, order, key, error)
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


async def _reconcile(
    client: LoyaltyClient, op: str, order: str, key: str | None, error: OutcomeUnknownError
) -> dict[str, Any]:
    """An unknown outcome: ``client.reconcile()`` finds out, records it, and says.

    The one place that decides what a worker does after ``OutcomeUnknownError``. The error
    names the call to reconcile (this job's, or another job's that blocks the order); once it
    is decided, this job is done (its own call was applied) or goes back to the queue.
    """
    try:
        found = await client.reconcile(order_id=order, idempotency_key=error.idempotency_key)
    except OutcomeUnknownError as undecided:  # a person would look; the queue tries again
        return {"status": "requeue", "why": f"reconcile: {undecided.message}", "unresolved": True}
    except LoyaltyError as failure:  # the look met a fault too: look again later
        return {"status": "requeue", "why": f"reconcile: {type(failure).__name__}"}
    mine = found.operation == op and found.idempotency_key == key
    if not (mine and found.applied):
        return {"status": "requeue", "why": "reconciled, to be sent again", "reconciled": True}
    outcome: dict[str, Any] = {"status": "unknown-applied", "reconciled": True}
    if isinstance(found.result, OrderChange):
        outcome["order_total_change"] = str(found.result.order_total_change)
    return outcome


async def _deliver(client: LoyaltyClient, job: dict[str, Any], keys: Keys) -> dict[str, Any]:
    """One delivery of *job*, its requests tagged; any failure is reported, never raised."""
    delivery = f"{job['id']}~{uuid.uuid4().hex[:12]}"
    token = _DELIVERY.set(delivery)
    try:
        outcome = await _run_job(client, job, keys)
    except (OSError, ConnectionError) as exc:  # the store's Redis is away: a queue redelivers
        outcome = {"status": "requeue", "why": type(exc).__name__}
    except Exception as exc:  # noqa: BLE001 - reported, and the job is counted
        if type(exc).__module__.startswith("redis"):
            outcome = {"status": "requeue", "why": type(exc).__name__}
        else:
            outcome = {"status": "error", "error": repr(exc)}
    finally:
        _DELIVERY.reset(token)
    return outcome | {"delivery": delivery}


@frozen
class WorkerConfig:
    """What a worker process needs: the fake API, the queue's Redis, the store's Redis."""

    url: str
    queue_url: str
    store_url: str
    keys: Keys = "job"
    lease: float = 5.0


async def _worker(config: WorkerConfig, name: str) -> None:
    from redis.asyncio import Redis

    errors = _ErrorCount()
    logging.getLogger("rees46_loyalty").addHandler(errors)
    keys = config.keys
    redis = Redis.from_url(config.queue_url)
    store_redis = Redis.from_url(config.store_url)
    store = RedisIdempotencyStore(store_redis, lease=config.lease)
    tagger = _Tagger()
    policy = RetryPolicy(initial_delay=0.005, max_delay=0.05, retry_budget=None)
    processing = f"chaos:processing:{name}"
    async with LoyaltyClient(
        SHOP_ID,
        SHOP_SECRET,
        base_url=config.url,
        # A change starts only with its whole timeout inside 90% of the lease.
        timeout=min(10.0, config.lease * 0.8),
        idempotency=store,
        retry=policy,
        middlewares=[tagger],
    ) as client:
        while True:
            raw = await redis.blmove(QUEUE, processing, 0, "LEFT", "RIGHT")
            if raw == STOP.encode():
                await redis.lrem(processing, 1, raw)
                break
            job = json.loads(raw)
            outcome = await _deliver(client, job, keys)
            outcome |= {"job": job["id"], "worker": name}
            async with redis.pipeline(transaction=True) as pipe:  # all of it or none
                if outcome["status"] == "requeue" and job["deliveries"] < MAX_REDELIVERIES:
                    job["deliveries"] += 1
                    pipe.incr("chaos:pushed")
                    pipe.rpush(QUEUE, json.dumps(job))
                pipe.rpush("chaos:outcomes", json.dumps(outcome))
                pipe.incr("chaos:done")
                pipe.lrem(processing, 1, raw)
                await pipe.execute()
    await redis.incrby("chaos:retries", tagger.retries)
    await redis.incrby("chaos:error_logs", errors.count)
    await redis.aclose()
    await store_redis.aclose()


def worker_main(config: WorkerConfig, name: str) -> None:
    """The entry point of a worker process."""
    # Unknown outcomes are expected here and counted; the SDK's ERROR lines are counted too.
    logging.basicConfig(level=logging.CRITICAL)
    asyncio.run(_worker(config, name))


# -- the run ----------------------------------------------------------------------------------


@define
class Report:
    """The figures of a chaos run and the checks on them."""

    operations: int = 0
    orders: int = 0
    workers: int = 0
    redeliveries: int = 0
    setup: str = ""
    faults: Counter[str] = field(factory=Counter)
    retries: int = 0
    error_logs: int = 0
    outcomes: Counter[str] = field(factory=Counter)
    duplicated_effects: int = 0
    refunds_reported: int = 0
    refunds_matching: int = 0
    refunds_expected: int = 0
    refunds_known: int = 0
    refunds_lost_with_store: int = 0
    unresolved: int = 0
    unknown_outcomes: int = 0
    unknown_reconciled: int = 0
    false_unknowns: int = 0
    false_unknowns_keepalive: int = 0
    #: The faults the delivery's requests met, for each false unknown outcome.
    false_unknown_causes: Counter[str] = field(factory=Counter)
    silent_losses: int = 0
    lost_silently: int = 0
    workers_killed: int = 0
    jobs_redelivered_after_kill: int = 0
    redis_events: list[str] = field(factory=list)
    #: The ledger's length each time the store lost its records (FLUSHALL, a restart without
    #: persistence): a record finished before may be gone, and its job sent again.
    store_wipes: list[int] = field(factory=list)
    duplicated_after_store_loss: int = 0
    refunds_wrong_after_store_loss: int = 0
    checks: dict[str, bool] = field(factory=dict)

    @property
    def passed(self) -> bool:
        """Whether every check held."""
        return all(self.checks.values())

    def render(self) -> str:
        """The figures, for a person."""
        lines = [
            f"setup                   {self.setup}",
            (
                f"operations run          {self.operations} (over {self.orders} orders, "
                f"{self.workers} worker processes, {self.redeliveries} redelivered)"
            ),
            f"faults injected         {sum(self.faults.values())}: "
            + ", ".join(f"{label} {count}" for label, count in sorted(self.faults.items())),
            (
                f"workers SIGKILLed       {self.workers_killed}, their jobs delivered again: "
                f"{self.jobs_redelivered_after_kill}"
            ),
            f"store Redis events      {', '.join(self.redis_events) or 'none'}",
            f"SDK retries             {self.retries} (by the workers not killed)",
            f"SDK ERROR log lines     {self.error_logs}",
            "job outcomes            "
            + ", ".join(f"{name} {count}" for name, count in sorted(self.outcomes.items())),
            (
                f"duplicated effects      {self.duplicated_effects}, of which the store had "
                f"lost the record: {self.duplicated_after_store_loss}"
            ),
            f"silent losses           {self.silent_losses}",
            (
                f"false unknown outcomes  {self.false_unknowns}, from idle keep-alive closes: "
                f"{self.false_unknowns_keepalive}"
            ),
            "  faults they met       "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.false_unknown_causes.items())),
            (
                f"refunds reported        {self.refunds_reported}, equal to the ledger's: "
                f"{self.refunds_matching} (others after the store lost the record: "
                f"{self.refunds_wrong_after_store_loss})"
            ),
            (
                f"refunds known           {self.refunds_known} of the {self.refunds_expected} "
                "orders with a committed change (answered or reconciled); lost with the "
                f"store's records: {self.refunds_lost_with_store}"
            ),
            f"unknown, unreconciled   {self.unresolved}",
            (
                f"unknown outcomes        {self.unknown_outcomes}, reconciled: "
                f"{self.unknown_reconciled}"
            ),
            f"operations lost         {self.lost_silently}",
            "",
            *(f"[{'ok' if held else 'FAILED'}] {name}" for name, held in self.checks.items()),
        ]
        return "\n".join(lines)


@define
class _Fleet:
    """The worker processes, and what the run needs to start (and replace) one."""

    config: WorkerConfig
    processes: dict[str, Any] = field(factory=dict)
    started: int = 0

    def start(self) -> None:
        name = f"w{self.started}"
        self.started += 1
        context = multiprocessing.get_context("spawn")
        process = context.Process(
            target=worker_main,
            args=(self.config, name),
            daemon=True,
        )
        process.start()
        self.processes[name] = process

    def alive(self) -> bool:
        return any(process.is_alive() for process in self.processes.values())


async def _wait_drained(redis: Any, fleet: _Fleet) -> None:
    """Until every job pushed so far is done (requeued ones included)."""
    while int(await redis.get("chaos:done") or 0) < int(await redis.get("chaos:pushed") or 0):
        if not fleet.alive():
            raise RuntimeError("every worker process died")
        await asyncio.sleep(0.01)


async def _push(redis: Any, jobs: list[dict[str, Any]], rng: random.Random, twice: float) -> int:
    """Queue *jobs*; a *twice* share goes in twice, back to back, for two workers at once."""
    queued = []
    for job in jobs:
        queued.append(job)
        if rng.random() < twice:
            queued.append(job)
    if not queued:
        return 0
    await redis.incrby("chaos:pushed", len(queued))
    await redis.rpush(QUEUE, *(json.dumps(job) for job in queued))
    return len(queued) - len(jobs)


async def _kill_one(redis: Any, fleet: _Fleet, rng: random.Random, report: Report) -> None:
    """SIGKILL a live worker, deliver again the job it held, and start a replacement."""
    alive = sorted(name for name, process in fleet.processes.items() if process.is_alive())
    if not alive:
        return
    name = rng.choice(alive)
    process = fleet.processes.pop(name)
    os.kill(process.pid, signal.SIGKILL)
    await asyncio.to_thread(process.join, 10)
    report.workers_killed += 1
    # What it held was never acknowledged: back to the head of the queue, as a broker does.
    while await redis.lmove(f"chaos:processing:{name}", QUEUE, "RIGHT", "LEFT") is not None:
        report.jobs_redelivered_after_kill += 1
    fleet.start()


async def _chaos(
    redis: Any,
    fleet: _Fleet,
    store: RedisServer | None,
    kills: int,
    *,
    fake: FakeRees46,
    rng: random.Random,
    report: Report,
) -> None:
    """The events of a phase, each when a share of its jobs is done."""
    done = int(await redis.get("chaos:done") or 0)
    total = int(await redis.get("chaos:pushed") or 0) - done
    events = [(0.15 + 0.7 * (i + 0.5) / kills, "kill") for i in range(kills)]
    if store is not None:
        events += [(0.3, "flushall"), (0.6, "restart")]
    for share, event in sorted(events):
        # The progress is a counter in Redis, written by other processes: it is polled.
        while int(await redis.get("chaos:done") or 0) - done < share * total:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        if event == "kill":
            await _kill_one(redis, fleet, rng, report)
        elif event == "flushall" and store is not None:
            await asyncio.to_thread(store.flushall)
            report.redis_events.append("FLUSHALL")
            report.store_wipes.append(len(fake.ledger.requests))
        elif store is not None:
            await asyncio.to_thread(store.restart)
            report.redis_events.append(f"restart ({store.persistence})")
            if store.persistence == "none":
                report.store_wipes.append(len(fake.ledger.requests))


@frozen(kw_only=True)
class Options:
    """The knobs of a run; see :func:`run`."""

    orders: int = 250
    workers: int = 4
    fault_rate: float = 0.25
    seed: int = 7
    redis_chaos: bool = False
    persistence: Persistence = "none"
    kill_workers: int = 0
    stale_connections: float = 0.0
    interleave: bool = False
    keys: Keys = "job"

    def __attrs_post_init__(self) -> None:
        if self.persistence not in PERSISTENCE:
            raise ValueError(f"persistence must be one of {PERSISTENCE}, got {self.persistence!r}")
        if self.keys not in ("job", "order"):
            raise ValueError(f"keys must be 'job' or 'order', got {self.keys!r}")
        if not 0.0 <= self.stale_connections <= 1.0:
            raise ValueError(
                f"stale_connections must be between 0 and 1, got {self.stale_connections}"
            )
        if self.kill_workers < 0:
            raise ValueError(f"kill_workers must be >= 0, got {self.kill_workers}")
        if self.orders < 1 or self.workers < 1:
            raise ValueError("orders and workers must be at least 1")

    @property
    def setup(self) -> str:
        """The faults of the run, in words."""
        words = [f"keys={self.keys}", f"fault rate {self.fault_rate:g}"]
        if self.redis_chaos:
            words.append(f"store Redis flushed and restarted (persistence {self.persistence})")
        if self.kill_workers:
            words.append(f"{self.kill_workers} workers SIGKILLed")
        if self.stale_connections:
            words.append(f"idle keep-alive closes {self.stale_connections:g}")
        if self.interleave:
            words.append("other jobs redelivered in between")
        return ", ".join(words)


async def run(
    *,
    redis_url: str,
    orders: int = 250,
    workers: int = 4,
    fault_rate: float = 0.25,
    seed: int = 7,
    redis_chaos: bool = False,
    persistence: Persistence = "none",
    kill_workers: int = 0,
    stale_connections: float = 0.0,
    interleave: bool = False,
    keys: Keys = "job",
) -> Report:
    """Run the chaos scenario; see the module docstring.

    *redis_url* holds the queue (its database is flushed); the idempotency store shares it,
    unless *redis_chaos* starts a Redis of its own for the store (with *persistence*).
    """
    options = Options(
        orders=orders,
        workers=workers,
        fault_rate=fault_rate,
        seed=seed,
        redis_chaos=redis_chaos,
        persistence=persistence,
        kill_workers=kill_workers,
        stale_connections=stale_connections,
        interleave=interleave,
        keys=keys,
    )
    return await run_options(redis_url, options)


async def run_options(redis_url: str, options: Options) -> Report:
    """:func:`run` with its knobs in one :class:`Options`."""
    from redis.asyncio import Redis

    rng = random.Random(options.seed)  # noqa: S311 - reproducible chaos
    report = Report(orders=options.orders, workers=options.workers, setup=options.setup)
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    async with AsyncExitStack() as stack:
        store: RedisServer | None = None
        store_url = redis_url
        if options.redis_chaos:
            store = stack.enter_context(RedisServer(persistence=options.persistence))
            store_url = store.url
        fake = await stack.enter_async_context(FakeRees46(shop_id=SHOP_ID, shop_secret=SHOP_SECRET))
        _prepare(fake, options, rng)
        # A killed worker's lease must run out within the run.
        lease = 2.0 if options.kill_workers else 5.0
        fleet = _Fleet(WorkerConfig(fake.url, redis_url, store_url, options.keys, lease))
        for _ in range(options.workers):
            fleet.start()
        numbers = list(range(options.orders))
        cancelled = set(rng.sample(numbers, options.orders // 4))
        for jobs, kills, store_events in _phases(options, numbers, cancelled, rng):
            report.redeliveries += await _push(redis, jobs, rng, twice=0.2)
            events = asyncio.ensure_future(
                _chaos(
                    redis,
                    fleet,
                    store if store_events else None,
                    kills,
                    fake=fake,
                    rng=rng,
                    report=report,
                )
            )
            try:
                await _wait_drained(redis, fleet)
            finally:
                events.cancel()
        await redis.rpush(QUEUE, *([STOP] * len(fleet.processes)))
        for process in fleet.processes.values():
            await asyncio.to_thread(process.join, 60)
        report.faults = fake.faults.counts()
        report.retries = int(await redis.get("chaos:retries") or 0)
        report.error_logs = int(await redis.get("chaos:error_logs") or 0)
        outcomes = [json.loads(raw) for raw in await redis.lrange("chaos:outcomes", 0, -1)]
        _check(report, fake, outcomes, numbers, cancelled)
    await redis.aclose()
    return report


def _prepare(fake: FakeRees46, options: Options, rng: random.Random) -> None:
    """The member, the feed and the faults of the run."""
    fake.add_member(MEMBER, bonuses=Decimal(10**9))
    fake.add_product("TEA", "Tea")
    fake.add_product("CUP", "Cup")
    fake.faults.random(options.fault_rate, seed=options.seed)
    if options.stale_connections:
        for op in MUTATING:
            numbers = range(1, 8 * options.orders)
            hit = {n for n in numbers if rng.random() < options.stale_connections}
            fake.faults.on(op, Fault.idle_close(), at=hit)


def _phases(
    options: Options, numbers: list[int], cancelled: set[int], rng: random.Random
) -> list[tuple[list[dict[str, Any]], int, bool]]:
    """The phases of the run, each started when the one before is done.

    Each is its jobs, the workers to kill during it, and whether the store's Redis is flushed
    and restarted during it.
    """
    rerun = rng.sample(numbers, options.orders // 5)
    later_kills = options.kill_workers // 2
    changes = [_job("change", n) for n in numbers]
    phases = [
        ([_job("apply", n) for n in numbers], 0, False),
        ([_job("confirm", n) for n in numbers], 0, False),
        (changes, options.kill_workers - later_kills, options.redis_chaos),
    ]
    if options.interleave:  # another job on the order between a change and its redelivery
        phases.append(([_job("confirm", n) for n in rerun], 0, False))
    # Jobs re-run after they succeeded, and the cancels.
    again = [_job("change", n) for n in rerun] + [_job("cancel", n) for n in sorted(cancelled)]
    phases.append((again, later_kills, False))
    return phases


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
    lost_records = _duplicates_after_store_loss(report, fake)
    report.duplicated_after_store_loss = sum(lost_records.values())
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for outcome in outcomes:
        by_job[outcome["job"]].append(outcome)
    final: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:  # the last word on each job (after its requeues)
        if outcome["status"] != "requeue" or outcome["job"] not in final:
            final[outcome["job"]] = outcome
    lost = silent = 0
    for n in numbers:
        order = f"C-{n}"
        intended = ["apply", "confirm", "change"] + (["cancel"] if n in cancelled else [])
        for op in intended:
            job = f"{op}-{n}"
            word = final.get(job, {"status": "missing"})
            if not effects[(op, order)] and word["status"] in ("ok", "missing", "requeue"):
                lost += 1  # the worker believes it happened (or never heard): it did not
            if effects[(op, order)] and not any(_knows(o) for o in by_job[job]):
                silent += 1  # committed, and nobody heard of it, not even as unknown
    _count_refunds(report, fake, by_job, numbers, lost_records)
    _count_unknowns(report, fake, outcomes)
    report.lost_silently = lost
    report.silent_losses = silent
    report.checks = {
        "at least 20% of requests met a fault, of every kind": sum(report.faults.values())
        >= 0.2 * len(ledger.requests)
        and len(report.faults) >= 10,
        "no effect was committed twice (but after the store lost its record)": (
            report.duplicated_effects == report.duplicated_after_store_loss
        ),
        "every refund the SDK reported equals the ledger's (but after the store lost its "
        "record)": report.refunds_matching + report.refunds_wrong_after_store_loss
        == report.refunds_reported,
        "no operation was lost silently": report.lost_silently == 0,
        "every committed refund is known to the shop (answered or reconciled), but where "
        "the store lost its records": (
            report.refunds_known + report.refunds_lost_with_store == report.refunds_expected
        ),
        "every unknown outcome was reconciled": report.unresolved == 0,
        "no committed effect went unreported": report.silent_losses == 0,
        "no false unknown outcome from an idle keep-alive close": (
            report.false_unknowns_keepalive == 0
        ),
        "no job ended in an unexpected error": report.outcomes["error"] == 0,
    }


def _count_refunds(
    report: Report,
    fake: FakeRees46,
    by_job: dict[str, list[dict[str, Any]]],
    numbers: Sequence[int],
    lost_records: Counter[tuple[str, str]],
) -> None:
    """Refunds the workers reported (answers and reconciliations) against the ledger's."""
    ledger = fake.ledger
    effects = Counter((e.operation, e.order_id) for e in ledger.effects)
    for n in numbers:
        order = f"C-{n}"
        if effects[("change", order)]:
            report.refunds_expected += 1
            known = {
                Decimal(o["order_total_change"])
                for o in by_job[f"change-{n}"]
                if "order_total_change" in o
            }
            if ledger.refunds(order) in known:
                report.refunds_known += 1
            elif any(
                r.seq < wipe
                for r in ledger.requests
                if r.committed and r.operation == "change" and r.order_id == order
                for wipe in report.store_wipes
            ):
                # Committed, its answer lost, and then the store lost everything it had noted
                # of the order: no client can derive the amount any more.
                report.refunds_lost_with_store += 1
        for outcome in by_job[f"change-{n}"]:
            if "order_total_change" in outcome:
                report.refunds_reported += 1
                reported = Decimal(outcome["order_total_change"])
                if reported == ledger.refunds(order):
                    report.refunds_matching += 1
                elif lost_records[("change", order)]:
                    report.refunds_wrong_after_store_loss += 1


def _duplicates_after_store_loss(report: Report, fake: FakeRees46) -> Counter[tuple[str, str]]:
    """Per intent, its repeated commits that came after the store lost the record before them.

    A record finished before a ``FLUSHALL`` (or a restart without persistence) is gone: no
    client-side record can stop the next delivery of its job. A commit that came after the
    loss (a call in flight while it happened) is not counted here: its record must survive.
    """
    commits: dict[tuple[str, str], list[int]] = defaultdict(list)
    for record in fake.ledger.requests:
        if record.committed and record.order_id is not None:
            commits[(record.operation, record.order_id)].append(record.seq)
    explained: Counter[tuple[str, str]] = Counter()
    for intent, seqs in commits.items():
        for before, after in itertools.pairwise(seqs):
            if any(before <= wipe < after for wipe in report.store_wipes):
                explained[intent] += 1
    return explained


def _knows(outcome: dict[str, Any]) -> bool:
    """Whether a worker heard of its job's effect: a result, or an unknown outcome."""
    return (
        outcome["status"] in ("ok", "unknown-applied")
        or bool(outcome.get("unknown"))
        or bool(outcome.get("previous_outcome_unknown"))
    )


def _count_unknowns(report: Report, fake: FakeRees46, outcomes: list[dict[str, Any]]) -> None:
    """Unknown outcomes, and the false ones: nothing of the intent committed before the look.

    The worker looks at the order (details / history, tagged with its delivery) right after
    the unknown outcome; the ledger's order puts that look after every commit that came first.
    """
    requests = fake.ledger.requests
    by_delivery: dict[str, list[Any]] = defaultdict(list)
    for record in requests:
        if record.request_id is not None:
            by_delivery[record.request_id].append(record)
    for outcome in outcomes:
        if not outcome.get("unknown"):
            continue
        report.unknown_outcomes += 1
        report.unresolved += bool(outcome.get("unresolved"))
        op, order = outcome["job"].split("-", 1)
        order = f"C-{order}"
        mine = by_delivery[outcome["delivery"]]
        # A change reads the order before it is sent: only a look after its first request
        # is the reconciliation's.
        sent = [r.seq for r in mine if r.operation == op]
        first = min(sent) if sent else -1
        looks = [r.seq for r in mine if r.operation in ("details", "history") and r.seq > first]
        # Looked at: by reconcile() (decided, undecided, or its look met a fault in turn).
        if (
            looks
            or outcome.get("reconciled")
            or str(outcome.get("why", "")).startswith("reconcile")
        ):
            report.unknown_reconciled += 1
        looked_at = min(looks) if looks else len(requests) + 1
        committed = any(
            r.committed and r.operation == op and r.order_id == order and r.seq < looked_at
            for r in requests
        )
        if committed:
            continue
        report.false_unknowns += 1
        met = sorted({r.fault for r in mine if r.operation == op and r.fault is not None})
        report.false_unknown_causes[
            " + ".join(met) or "none (an earlier unknown, from the store)"
        ] += 1
        if IDLE_CLOSE in met:
            report.false_unknowns_keepalive += 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chaos scenario from the command line; exit 0 when every check holds."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--orders", type=int, default=250)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--fault-rate", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis-url", help="an existing Redis for the queue (it is flushed)")
    parser.add_argument("--redis-chaos", action="store_true", help="flush and restart the store")
    parser.add_argument("--persistence", choices=PERSISTENCE, default="none")
    parser.add_argument("--kill-workers", type=int, default=0, metavar="N")
    parser.add_argument("--stale-connections", type=float, default=0.0, metavar="RATE")
    parser.add_argument("--interleave", action="store_true")
    parser.add_argument("--keys", choices=("job", "order"), default="job")
    parser.add_argument(
        "--all-faults",
        action="store_true",
        help="--redis-chaos --kill-workers 4 --stale-connections 0.2 --interleave",
    )
    args = parser.parse_args(argv)
    if args.all_faults:
        args.redis_chaos, args.interleave = True, True
        args.kill_workers = args.kill_workers or 4
        args.stale_connections = args.stale_connections or 0.2

    async def go(url: str) -> Report:
        return await run(
            redis_url=url,
            orders=args.orders,
            workers=args.workers,
            fault_rate=args.fault_rate,
            seed=args.seed,
            redis_chaos=args.redis_chaos,
            persistence=args.persistence,
            kill_workers=args.kill_workers,
            stale_connections=args.stale_connections,
            interleave=args.interleave,
            keys=args.keys,
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
