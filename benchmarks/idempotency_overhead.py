"""What the idempotency layer costs: cancel calls per second with and without a store.

No store, the memory store and a Redis store (a local redis-server), in one run, rounds rotated,
medians.

    python -m benchmarks.idempotency_overhead [--calls 3000] [--concurrency 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import time
from collections.abc import Sequence

from rees46_loyalty import LoyaltyClient
from rees46_loyalty.idempotency import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
)

from ._redis import redis_server
from ._server import answer_server

__all__ = ["measure"]

_ids = itertools.count()


async def _rate(url: str, store: IdempotencyStore | None, calls: int, concurrency: int) -> float:
    """Calls per second of *calls* cancels on distinct orders, *concurrency* at a time."""
    async with LoyaltyClient(
        "bench", "bench-secret", base_url=f"{url}/cancel", idempotency=store
    ) as client:
        await client.cancel(order_id=f"warm-{next(_ids)}")
        queue = [f"o-{next(_ids)}" for _ in range(calls)]

        async def worker() -> None:
            while queue:
                await client.cancel(order_id=queue.pop())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return calls / (time.perf_counter() - started)


async def measure(
    url: str, redis_url: str, *, calls: int, concurrency: int, rounds: int
) -> dict[str, float]:
    """Median calls per second of each kind over *rounds*, kinds rotated within each round."""
    redis_store = RedisIdempotencyStore(redis_url, namespace=f"bench-{os.getpid()}")
    kinds: dict[str, IdempotencyStore | None] = {
        "none": None,
        "memory": MemoryIdempotencyStore(max_records=10**7),
        "redis": redis_store,
    }
    samples: dict[str, list[float]] = {name: [] for name in kinds}
    names = list(kinds)
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(await _rate(url, kinds[name], calls, concurrency))
    await redis_store.close()
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the medians and the ratios to no store."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idempotency_overhead")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[0]})
    with answer_server(cpu=cpus[-1] if len(cpus) > 1 else None) as url, redis_server() as redis:
        rates = asyncio.run(
            measure(url, redis, calls=args.calls, concurrency=args.concurrency, rounds=args.rounds)
        )
    print(f"cancel, concurrency {args.concurrency}, {args.calls} calls x {args.rounds} rounds")
    for name, rate in rates.items():
        print(f"  {name:<7} {rate:8.0f} calls/s   {rate / rates['none']:.2f}x of no store")
    return 0


if __name__ == "__main__":
    sys.exit(main())
