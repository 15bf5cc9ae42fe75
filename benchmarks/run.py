"""The SDK against hand-written aiohttp calls: throughput, latency and client CPU, in one run.

    python -m benchmarks.run            # the full matrix (a few minutes)
    python -m benchmarks.run --quick    # a smaller one (under a minute)

Kinds of client (all in this process, pinned to one CPU; the server in another, pinned to the
other CPU where the machine has two): a hand-written aiohttp call (``post`` + ``resp.json()``),
the same with orjson, the SDK with its defaults, without the idempotency layer, with the Redis
store, and without the fast decode path (when the ``speedups`` extra is installed). Workloads:
``cancel`` and ``change`` with 10, 200 and 2,000 lines; concurrency 1, 16 and 128. Each round
runs every cell with the kinds rotated; the figures are medians over the rounds, and every
ratio is against the hand-written aiohttp call of the same run.

Results go to ``benchmarks/results/`` (git-ignored): ``latest.json``, ``latest.md`` and
``latest.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from rees46_loyalty import CartItem, LoyaltyClient, RetryPolicy
from rees46_loyalty._serialization import fast_decoding
from rees46_loyalty.idempotency import MemoryIdempotencyStore, RedisIdempotencyStore

from ._redis import redis_server
from ._server import LINES, answer_server

__all__ = ["main"]

RESULTS = Path(__file__).parent / "results"
SHOP_ID, SECRET = "bench", "bench-secret"
WORKLOADS = ["cancel", *LINES]
CONCURRENCY = [1, 16, 128]
# Calls per measurement, so that each takes about the same time.
CALLS = {"cancel": 3000, "change10": 2000, "change200": 300, "change2000": 40}
BASELINE = "aiohttp"

Call = Callable[[str], Awaitable[Any]]
_ids = itertools.count()


def _cart(workload: str) -> list[CartItem]:
    lines = LINES.get(workload, 0)
    return [
        CartItem(product_id=f"SKU-{n}", price=Decimal("1249.90"), quantity=2) for n in range(lines)
    ]


def _wire_cart(workload: str) -> list[dict[str, Any]]:
    lines = LINES.get(workload, 0)
    return [{"product_id": f"SKU-{n}", "price": 1249.9, "quantity": 2} for n in range(lines)]


class _HandWritten:
    """What a shop writes without the SDK: build the body, post it, decode the answer."""

    def __init__(self, url: str, workload: str, *, use_orjson: bool) -> None:
        self._url = (
            f"{url}/{workload}/loyalty/checkout/{'cancel' if workload == 'cancel' else 'change'}"
        )
        self._cart = _wire_cart(workload)
        self._orjson = use_orjson
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Call:
        self._session = aiohttp.ClientSession()
        return self.call

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def call(self, order_id: str) -> Any:
        assert self._session is not None
        body: dict[str, Any] = {"shop_id": SHOP_ID, "shop_secret": SECRET, "order_id": order_id}
        if self._cart:
            body["cart_items"] = self._cart
        if self._orjson:
            import orjson

            async with self._session.post(
                self._url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
            ) as response:
                return orjson.loads(await response.read())
        async with self._session.post(self._url, json=body) as response:
            return await response.json()


class _Sdk:
    """The SDK, configured as one kind."""

    def __init__(self, url: str, workload: str, *, fast: bool = True, **options: Any) -> None:
        # Long enough for 128 calls of 2,000 lines at once on one CPU: a benchmark measures
        # throughput, it does not test timeouts.
        options.setdefault("timeout", 120.0)
        options.setdefault("retry", RetryPolicy(deadline=None))
        options.setdefault("idempotency", MemoryIdempotencyStore(lease=600))
        self._client = LoyaltyClient(SHOP_ID, SECRET, base_url=f"{url}/{workload}", **options)
        self._cart = _cart(workload)
        # Entered and left in the measuring task: its calls are the only ones it decides for.
        self._decoding = fast_decoding(enabled=fast)

    async def __aenter__(self) -> Call:
        await self._client.__aenter__()
        self._decoding.__enter__()
        return self.cancel if not self._cart else self.change

    async def __aexit__(self, *exc: object) -> None:
        self._decoding.__exit__(None, None, None)
        await self._client.close()
        store = self._client.idempotency
        if isinstance(store, RedisIdempotencyStore):  # the benchmark made it: it closes it
            await store.close()

    async def cancel(self, order_id: str) -> Any:
        return await self._client.cancel(order_id=order_id)

    async def change(self, order_id: str) -> Any:
        return await self._client.change(order_id=order_id, cart_items=self._cart)


def _kinds(url: str, redis_url: str) -> dict[str, Callable[[str], Any]]:
    kinds: dict[str, Callable[[str], Any]] = {
        "aiohttp": lambda w: _HandWritten(url, w, use_orjson=False),
        "aiohttp+orjson": lambda w: _HandWritten(url, w, use_orjson=True),
        "sdk": lambda w: _Sdk(url, w),
        "sdk, no idempotency": lambda w: _Sdk(url, w, idempotency=None),
        "sdk, redis store": lambda w: _Sdk(
            url,
            w,
            idempotency=RedisIdempotencyStore(
                redis_url, namespace=f"bench-{next(_ids)}", lease=600
            ),
        ),
    }
    with fast_decoding(enabled=True) as available:  # False without the speedups extra
        if available:
            kinds["sdk, no fast decode"] = lambda w: _Sdk(url, w, fast=False)
    return kinds


async def _measure(make: Any, calls: int, concurrency: int) -> dict[str, float]:
    """Run *calls* calls, *concurrency* at a time, each on a new order id."""
    async with make as call:
        await call(f"warm-{next(_ids)}")
        orders = [f"o-{next(_ids)}" for _ in range(calls)]
        latencies: list[float] = []

        async def worker() -> None:
            while orders:
                order_id = orders.pop()
                started = time.perf_counter()
                await call(order_id)
                latencies.append(time.perf_counter() - started)

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    latencies.sort()
    return {
        "rps": calls / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "cpu_us": cpu / calls * 1e6,
    }


async def _run(url: str, redis_url: str, *, quick: bool, rounds: int) -> dict[str, Any]:
    kinds = _kinds(url, redis_url)
    names = list(kinds)
    concurrency = [1, 16] if quick else CONCURRENCY
    scale = 0.15 if quick else 1.0
    samples: dict[tuple[str, int, str], list[dict[str, float]]] = {}
    for round_number in range(rounds):
        for workload in WORKLOADS:
            for level in concurrency:
                calls = max(level, int(CALLS[workload] * scale))
                shift = (round_number + level) % len(names)
                for name in names[shift:] + names[:shift]:
                    figures = await _measure(kinds[name](workload), calls, level)
                    samples.setdefault((workload, level, name), []).append(figures)
    cells: list[dict[str, Any]] = []
    for (workload, level, name), runs in samples.items():
        median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        cells.append({"workload": workload, "concurrency": level, "kind": name, **median})
    for cell in cells:
        base = next(
            c
            for c in cells
            if c["workload"] == cell["workload"]
            and c["concurrency"] == cell["concurrency"]
            and c["kind"] == BASELINE
        )
        cell["ratio"] = cell["rps"] / base["rps"]
        cell["p50_ratio"] = cell["p50_ms"] / base["p50_ms"]
    return {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"aiohttp {aiohttp.__version__}"
        ),
        "date": time.strftime("%Y-%m-%d"),
        "rounds": rounds,
        "quick": quick,
        "kinds": names,
        "cells": cells,
    }


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        (
            f"Machine: {results['machine']}; {results['date']}; medians of "
            f"{results['rounds']} rounds; ratio = req/s against the hand-written aiohttp call "
            "of the same cell."
        ),
        "",
        "| workload | conc. | kind | req/s | ratio | p50 ms | p99 ms | CPU µs/req |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for cell in results["cells"]:
        lines.append(
            f"| {cell['workload']} | {cell['concurrency']} | {cell['kind']} | {cell['rps']:.0f} | "
            f"{cell['ratio']:.2f}× | {cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} | "
            f"{cell['cpu_us']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted(
        {(c["workload"], c["concurrency"]) for c in results["cells"]},
        key=lambda wc: (WORKLOADS.index(wc[0]), wc[1]),
    )
    kinds = results["kinds"]
    width = 0.8 / len(kinds)
    figure, axes = plt.subplots(figsize=(max(8, len(cells) * 1.1), 4.8))
    for index, kind in enumerate(kinds):
        ratios = [
            next(
                c["ratio"]
                for c in results["cells"]
                if (c["workload"], c["concurrency"]) == cell and c["kind"] == kind
            )
            for cell in cells
        ]
        axes.bar([n + index * width for n in range(len(cells))], ratios, width, label=kind)
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks([n + width * (len(kinds) - 1) / 2 for n in range(len(cells))])
    axes.set_xticklabels([f"{w}\nc={c}" for w, c in cells], fontsize=8)
    axes.set_ylabel("req/s ÷ hand-written aiohttp")
    axes.set_title(f"rees46_loyalty throughput ratio ({results['machine']})", fontsize=9)
    axes.legend(fontsize=8, ncols=3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix and write the results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[-1] if len(cpus) > 1 else None
    with answer_server(cpu=server_cpu) as url, redis_server() as redis_url:
        if len(cpus) > 1:
            os.sched_setaffinity(0, {cpus[0]})
        results = asyncio.run(_run(url, redis_url, quick=args.quick, rounds=rounds))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    table = _markdown(results)
    (RESULTS / "latest.md").write_text(table)
    try:
        _chart(results, RESULTS / "latest.png")
    except ImportError:
        print("(no chart: matplotlib is not installed)", file=sys.stderr)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
