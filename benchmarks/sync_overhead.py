"""What the sync client's thread hand-off costs per call, against the async client.

The same calls (``cancel``, and ``change`` with 10 lines), each on a new order, through
``LoyaltyClient`` awaited on one event loop and through ``SyncLoyaltyClient`` called from plain
threads: one caller at a time (the latency a view or a task sees), and 8 at once (8 async tasks
against 8 threads sharing one sync client). Rounds rotate the two; the figures are medians.
The client runs pinned to one CPU, the stand-in API in another process on the other CPU.

    python -m benchmarks.sync_overhead [--calls 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from rees46_loyalty import CartItem, LoyaltyClient, SyncLoyaltyClient

from ._server import answer_server

__all__ = ["measure"]

SHOP_ID, SECRET = "bench", "bench-secret"
WORKLOADS = {"cancel": 0, "change10": 10}
CALLERS = [1, 8]
_ids = itertools.count()


def _cart(lines: int) -> list[CartItem]:
    return [
        CartItem(product_id=f"SKU-{n}", price=Decimal("1249.90"), quantity=2) for n in range(lines)
    ]


def _figures(calls: int, wall: float, cpu: float, latencies: list[float]) -> dict[str, float]:
    latencies.sort()
    return {
        "rps": calls / wall,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "cpu_us": cpu / calls * 1e6,
    }


def _async(url: str, workload: str, calls: int, callers: int) -> dict[str, float]:
    cart = _cart(WORKLOADS[workload])

    async def run() -> dict[str, float]:
        async with LoyaltyClient(SHOP_ID, SECRET, base_url=f"{url}/{workload}") as client:

            async def call(order_id: str) -> object:
                if cart:
                    return await client.change(order_id=order_id, cart_items=cart)
                return await client.cancel(order_id=order_id)

            await call(f"warm-{next(_ids)}")
            orders = [f"a-{next(_ids)}" for _ in range(calls)]
            latencies: list[float] = []

            async def worker() -> None:
                while orders:
                    order_id = orders.pop()
                    started = time.perf_counter()
                    await call(order_id)
                    latencies.append(time.perf_counter() - started)

            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(callers)))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return _figures(calls, wall, cpu, latencies)

    return asyncio.run(run())


def _sync(url: str, workload: str, calls: int, callers: int) -> dict[str, float]:
    cart = _cart(WORKLOADS[workload])
    with SyncLoyaltyClient(SHOP_ID, SECRET, base_url=f"{url}/{workload}") as client:

        def call(order_id: str) -> object:
            if cart:
                return client.change(order_id=order_id, cart_items=cart)
            return client.cancel(order_id=order_id)

        call(f"warm-{next(_ids)}")
        orders = [f"s-{next(_ids)}" for _ in range(calls)]
        lock = threading.Lock()
        latencies: list[float] = []

        def worker() -> None:
            while True:
                with lock:
                    if not orders:
                        return
                    order_id = orders.pop()
                started = time.perf_counter()
                call(order_id)
                latencies.append(time.perf_counter() - started)

        threads = [threading.Thread(target=worker) for _ in range(callers)]
        cpu, wall = time.process_time(), time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return _figures(calls, wall, cpu, latencies)


KINDS: dict[str, Callable[[str, str, int, int], dict[str, float]]] = {
    "async": _async,
    "sync": _sync,
}


def measure(url: str, calls: int, rounds: int) -> list[dict[str, Any]]:
    """Every (workload, callers, kind) cell, medians over *rounds*."""
    samples: dict[tuple[str, int, str], list[dict[str, float]]] = {}
    names = list(KINDS)
    for round_number in range(rounds):
        for workload in WORKLOADS:
            for callers in CALLERS:
                shift = round_number % len(names)
                for name in names[shift:] + names[:shift]:
                    figures = KINDS[name](url, workload, calls, callers)
                    samples.setdefault((workload, callers, name), []).append(figures)
    return [
        {
            "workload": workload,
            "callers": callers,
            "kind": name,
            **{key: statistics.median(run[key] for run in runs) for key in runs[0]},
        }
        for (workload, callers, name), runs in samples.items()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sync_overhead")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    with answer_server(cpu=cpus[-1] if len(cpus) > 1 else None) as url:
        if len(cpus) > 1:
            os.sched_setaffinity(0, {cpus[0]})
        cells = measure(url, args.calls, args.rounds)
    print("| workload | callers | kind | req/s | p50 µs | CPU µs/call | sync - async, p50 µs |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for cell in cells:
        twin = next(
            c
            for c in cells
            if (c["workload"], c["callers"], c["kind"])
            == (cell["workload"], cell["callers"], "async")
        )
        extra = cell["p50_us"] - twin["p50_us"]
        print(
            f"| {cell['workload']} | {cell['callers']} | {cell['kind']} | {cell['rps']:.0f} | "
            f"{cell['p50_us']:.0f} | {cell['cpu_us']:.0f} | "
            f"{'' if cell['kind'] == 'async' else f'{extra:+.0f}'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
