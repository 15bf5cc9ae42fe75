"""The SDK against hand-written aiohttp calls: throughput, latency and client CPU, in one run.

    python -m benchmarks.run                # the full matrix (about ten minutes on 2 idle CPUs)
    python -m benchmarks.run --quick        # a smaller one for CI-ish runs (about a minute)
    python -m benchmarks.run --every-kind   # two more kinds (orjson, the reference decode)

Kinds of client (all in this process, pinned to one CPU; the server in another, pinned to the
other CPU where the machine has two):

- ``aiohttp``: the hand-written call (``post`` + ``resp.json()``, untyped floats), the baseline;
- ``msgspec peer`` and ``pydantic peer``: hand-written calls that decode the whole answer into
  typed objects with ``Decimal`` amounts (``benchmarks/peers.py``);
- ``sdk``: the SDK with its defaults (the memory idempotency store), ``sdk, no idempotency``
  (``idempotency=None``) and ``sdk, redis store`` (a local redis-server);
- with ``--every-kind`` also ``aiohttp+orjson`` and ``sdk, no fast decode`` (the reference
  decode path, when the ``speedups`` extra is installed).

Workloads: ``cancel`` and ``change`` with 10, 200 and 2,000 lines; concurrency 1, 16 and 128
(1 and 16 with ``--quick``). Each round runs every cell with the kinds rotated, so that the
kinds of a cell are measured next to each other; a kind's ratio in a round is its req/s over
the hand-written call's in the same round and cell. The figures are medians over the rounds,
with the lowest and highest ratio of the rounds beside them (the spread).

Results go to ``benchmarks/results/`` (git-ignored): ``latest.json``, ``latest.md`` and
``latest.png`` (the chart; needs matplotlib, which ``nox -s bench`` installs).
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
from .peers import MsgspecPeer, PydanticPeer, check_result

__all__ = ["main"]

RESULTS = Path(__file__).parent / "results"
SHOP_ID, SECRET = "bench", "bench-secret"
WORKLOADS = ["cancel", *LINES]
CONCURRENCY = [1, 16, 128]
# Calls per measurement, so that each takes about the same time.
CALLS = {"cancel": 1500, "change10": 1000, "change200": 200, "change2000": 30}
BASELINE = "aiohttp"
#: The kinds of a run; ``--every-kind`` adds aiohttp+orjson and sdk, no fast decode.
MAIN_KINDS = [
    "aiohttp",
    "msgspec peer",
    "pydantic peer",
    "sdk",
    "sdk, no idempotency",
    "sdk, redis store",
]

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
        # The connect timeout (5 s by default) covers the wait for a free connection, which
        # 128 calls of 2,000 lines at once on a busy machine can exceed.
        options.setdefault("connect_timeout", 100.0)
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


def _kinds(url: str, redis_url: str, *, every: bool = False) -> dict[str, Callable[[str], Any]]:
    shop = (SHOP_ID, SECRET)
    kinds: dict[str, Callable[[str], Any]] = {
        "aiohttp": lambda w: _HandWritten(url, w, use_orjson=False),
        "msgspec peer": lambda w: MsgspecPeer(url, w, LINES.get(w, 0), shop),
        "pydantic peer": lambda w: PydanticPeer(url, w, LINES.get(w, 0), shop),
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
    if not every:
        return kinds
    kinds["aiohttp+orjson"] = lambda w: _HandWritten(url, w, use_orjson=True)
    with fast_decoding(enabled=True) as available:  # False without the speedups extra
        if available:
            kinds["sdk, no fast decode"] = lambda w: _Sdk(url, w, fast=False)
    return kinds


async def _measure(
    make: Any, calls: int, concurrency: int, lines: int | None = None
) -> dict[str, float]:
    """Run *calls* calls, *concurrency* at a time, each on a new order id.

    With *lines*, the warm-up call's result must be the whole typed answer (see
    :func:`~benchmarks.peers.check_result`).
    """
    async with make as call:
        warm = await call(f"warm-{next(_ids)}")
        if lines is not None:
            check_result(warm, lines)
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


def _keep_partial(samples: dict[tuple[str, int, str], list[dict[str, float]]]) -> None:
    """What a long run measured so far, in ``results/partial.json`` (a failure keeps it)."""
    RESULTS.mkdir(exist_ok=True)
    rows = [
        {"workload": w, "concurrency": c, "kind": k, "runs": runs}
        for (w, c, k), runs in samples.items()
    ]
    (RESULTS / "partial.json").write_text(json.dumps(rows))


def _spread(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


async def _run(
    url: str, redis_url: str, *, quick: bool, rounds: int, every: bool = False
) -> dict[str, Any]:
    kinds = _kinds(url, redis_url, every=every)
    names = list(kinds)
    typed = set(names) - {"aiohttp", "aiohttp+orjson"}
    concurrency = [1, 16] if quick else CONCURRENCY
    scale = 0.15 if quick else 1.0
    samples: dict[tuple[str, int, str], list[dict[str, float]]] = {}
    for round_number in range(rounds):
        for workload in WORKLOADS:
            for level in concurrency:
                calls = max(level, int(CALLS[workload] * scale))
                shift = (round_number + level) % len(names)
                lines = LINES.get(workload, 0)
                for name in names[shift:] + names[:shift]:
                    figures = await _measure(
                        kinds[name](workload), calls, level, lines if name in typed else None
                    )
                    samples.setdefault((workload, level, name), []).append(figures)
                _keep_partial(samples)
    cells: list[dict[str, Any]] = []
    for (workload, level, name), runs in samples.items():
        base = samples[(workload, level, BASELINE)]
        # The ratio of each round: this kind and the baseline measured next to each other.
        ratios = [run["rps"] / other["rps"] for run, other in zip(runs, base, strict=True)]
        median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        ratio, low, high = _spread(ratios)
        cells.append(
            {
                "workload": workload,
                "concurrency": level,
                "kind": name,
                **median,
                "rps_min": min(run["rps"] for run in runs),
                "rps_max": max(run["rps"] for run in runs),
                "ratio": ratio,
                "ratio_min": low,
                "ratio_max": high,
                "ratios": ratios,
            }
        )
    cells.sort(
        key=lambda c: (WORKLOADS.index(c["workload"]), c["concurrency"], names.index(c["kind"]))
    )
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
        "cpu_growth": _cpu_growth(cells, names, concurrency),
    }


def _cpu_growth(
    cells: list[dict[str, Any]], names: list[str], concurrency: list[int]
) -> list[dict[str, Any]]:
    """Client CPU per call of change 2,000 over change 200, per kind and concurrency."""
    cpu = {(c["workload"], c["concurrency"], c["kind"]): c["cpu_us"] for c in cells}
    growth = []
    for name in names:
        for level in concurrency:
            small, large = cpu.get(("change200", level, name)), cpu.get(("change2000", level, name))
            if small and large:
                growth.append(
                    {
                        "kind": name,
                        "concurrency": level,
                        "cpu_200_us": small,
                        "cpu_2000_us": large,
                        "growth": large / small,
                    }
                )
    return growth


def _ratio(cell: dict[str, Any]) -> str:
    return f"{cell['ratio']:.2f}× ({cell['ratio_min']:.2f}–{cell['ratio_max']:.2f})"


#: Kinds measured against each other (not only against the hand-written call).
PAIRS = [
    ("sdk", "msgspec peer"),
    ("sdk", "sdk, no idempotency"),
    ("sdk, redis store", "sdk, no idempotency"),
]


def _pairs_markdown(
    results: dict[str, Any], by_cell: dict[tuple[str, int], dict[str, dict[str, Any]]]
) -> list[str]:
    """req/s of one kind over another's, per round (both measured in it), median and spread."""
    pairs = [(a, b) for a, b in PAIRS if {a, b} <= set(results["kinds"])]
    if not pairs:
        return []
    lines = [
        "",
        "Kinds against each other (req/s over req/s of the same round and cell):",
        "",
        f"| workload | conc. | {' | '.join(f'{a} ÷ {b}' for a, b in pairs)} |",
        f"|---|---:|{'---:|' * len(pairs)}",
    ]
    for (workload, level), kinds in by_cell.items():
        row = [workload, str(level)]
        for a, b in pairs:
            per_round = [x / y for x, y in zip(kinds[a]["ratios"], kinds[b]["ratios"], strict=True)]
            median, low, high = _spread(per_round)
            row.append(f"{median:.2f}× ({low:.2f}–{high:.2f})")
        lines.append(f"| {' | '.join(row)} |")
    return lines


def _markdown(results: dict[str, Any]) -> str:
    names: list[str] = results["kinds"]
    by_cell: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for cell in results["cells"]:
        by_cell.setdefault((cell["workload"], cell["concurrency"]), {})[cell["kind"]] = cell
    others = [name for name in names if name != BASELINE]
    lines = [
        (
            f"Machine: {results['machine']}; {results['date']}; {results['rounds']} rounds, "
            "kinds rotated within each; ratio = req/s over the hand-written aiohttp call's in "
            "the same round and cell: median (lowest–highest of the rounds)."
        ),
        "",
        f"| workload | conc. | aiohttp req/s | {' | '.join(others)} |",
        f"|---|---:|---:|{'---:|' * len(others)}",
    ]
    for (workload, level), kinds in by_cell.items():
        row = [workload, str(level), f"{kinds[BASELINE]['rps']:.0f}"]
        row += [_ratio(kinds[name]) if name in kinds else "" for name in others]
        lines.append(f"| {' | '.join(row)} |")
    lines += _pairs_markdown(results, by_cell)
    if results.get("cpu_growth"):
        lines += [
            "",
            "Client CPU per call, change 2,000 lines over change 200 (linear would be 10×):",
            "",
            "| kind | conc. | CPU µs/call at 200 | at 2,000 | growth |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in results["cpu_growth"]:
            lines.append(
                f"| {row['kind']} | {row['concurrency']} | {row['cpu_200_us']:.0f} | "
                f"{row['cpu_2000_us']:.0f} | {row['growth']:.1f}× |"
            )
    lines += [
        "",
        "| workload | conc. | kind | req/s (low–high) | ratio | p50 ms | p99 ms | CPU µs/req |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for cell in results["cells"]:
        lines.append(
            f"| {cell['workload']} | {cell['concurrency']} | {cell['kind']} | "
            f"{cell['rps']:.0f} ({cell['rps_min']:.0f}–{cell['rps_max']:.0f}) | {_ratio(cell)} | "
            f"{cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} | {cell['cpu_us']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _chart(results: dict[str, Any], path: Path) -> None:
    """One panel per workload: a bar per kind and concurrency, its whisker the rounds' spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = results["kinds"]
    workloads = [w for w in WORKLOADS if any(c["workload"] == w for c in results["cells"])]
    levels = sorted({c["concurrency"] for c in results["cells"]})
    cell = {(c["workload"], c["concurrency"], c["kind"]): c for c in results["cells"]}
    width = 0.84 / len(names)
    colours = plt.get_cmap("tab10").colors
    figure, panels = plt.subplots(
        1, len(workloads), figsize=(3.2 * len(workloads), 4.2), sharey=True
    )
    for panel, workload in zip(panels, workloads, strict=True):
        for index, name in enumerate(names):
            found = [cell[(workload, level, name)] for level in levels]
            ratios = [c["ratio"] for c in found]
            whiskers = [
                [c["ratio"] - c["ratio_min"] for c in found],
                [c["ratio_max"] - c["ratio"] for c in found],
            ]
            panel.bar(
                [n + (index - (len(names) - 1) / 2) * width for n in range(len(levels))],
                ratios,
                width,
                yerr=whiskers,
                error_kw={"linewidth": 0.6, "capsize": 1.5},
                color=colours[index % len(colours)],
                label=name,
            )
        panel.axhline(1.0, color="black", linewidth=0.8)
        panel.set_xticks(range(len(levels)))
        panel.set_xticklabels([f"c={level}" for level in levels], fontsize=8)
        panel.set_title(workload, fontsize=9)
        panel.tick_params(axis="y", labelsize=8)
    panels[0].set_ylabel("req/s ÷ hand-written aiohttp (same round)", fontsize=8)
    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncols=min(4, len(names)), fontsize=8)
    figure.suptitle(
        f"rees46_loyalty: throughput ratio, median of {results['rounds']} rounds "
        f"({results['machine']}, {results['date']})",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix and write the results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smaller run: concurrency 1 and 16, fewer calls, 2 rounds",
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--every-kind", action="store_true", help="add aiohttp+orjson and sdk, no fast decode"
    )
    parser.add_argument(
        "--report", type=Path, metavar="JSON", help="only write the table and chart of a run's JSON"
    )
    args = parser.parse_args(argv)
    if args.report:
        _write(json.loads(args.report.read_text()))
        return 0
    rounds = args.rounds or (2 if args.quick else 3)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[-1] if len(cpus) > 1 else None
    with answer_server(cpu=server_cpu) as url, redis_server() as redis_url:
        if len(cpus) > 1:
            os.sched_setaffinity(0, {cpus[0]})
        results = asyncio.run(
            _run(url, redis_url, quick=args.quick, rounds=rounds, every=args.every_kind)
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    _write(results)
    return 0


def _write(results: dict[str, Any]) -> None:
    """``latest.md`` and ``latest.png`` of *results*; the table printed."""
    RESULTS.mkdir(exist_ok=True)
    table = _markdown(results)
    (RESULTS / "latest.md").write_text(table)
    try:
        _chart(results, RESULTS / "latest.png")
    except ImportError:
        print("(no chart: matplotlib is not installed)", file=sys.stderr)
    print(table)


if __name__ == "__main__":
    sys.exit(main())
