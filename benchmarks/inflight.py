"""10,000 calls in flight on one client: do they all complete, and what does each hold?

    python -m benchmarks.inflight [--calls N] [--workloads cancel change200]

Cancels: 10,000 calls; changes of 200 lines: 2,000 (10,000 of them take minutes of CPU to
decode on a small machine, and what a call holds does not depend on how many there are);
``--calls`` sets both.

For the SDK (its defaults) and the hand-written aiohttp call, each workload: start every call
at once on one client, let each run until it waits (for one of the connection pool's
connections, or its answer), and read the process's resident memory then: its growth over the
calls still pending is the memory per call in flight. Then wait for all of them and count the
ones that completed. Each case runs in a process of its own, so that one case's freed memory
does not hide the next one's growth. Results are not kept (a call returns nothing), so the
figure is what a call holds while it is in flight, not what its result weighs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rees46_loyalty.idempotency import MemoryIdempotencyStore

from ._server import LINES, answer_server
from .run import _HandWritten, _Sdk

__all__ = ["KINDS", "main", "measure"]

KINDS = ["aiohttp", "sdk"]
#: The workloads and their calls in flight at once.
WORKLOADS = {"cancel": 10_000, "change200": 2_000}


def _rss_mib() -> float:
    """The process's resident memory now (Linux's /proc), else its peak."""
    try:
        pages = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
    except OSError:  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return pages * resource.getpagesize() / 2**20


def _client(url: str, kind: str, workload: str) -> Any:
    if kind == "aiohttp":
        return _HandWritten(url, workload, use_orjson=False)
    if kind == "sdk":
        # The connect timeout (5 s by default) covers the wait for one of the pool's 100
        # connections, and a change needs its whole timeout inside 90% of the store's lease:
        # 10,000 calls queue for minutes, and this measures memory, not timeouts.
        return _Sdk(
            url,
            workload,
            timeout=1500.0,
            connect_timeout=1500.0,
            idempotency=MemoryIdempotencyStore(lease=3600),
        )
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


async def measure(
    url: str, calls: int, kind: str = "sdk", workload: str = "cancel"
) -> dict[str, Any]:
    """Start *calls* calls of *workload* at once on one *kind* client; wait for all.

    The memory per call in flight is the growth of resident memory once every call waits,
    over the calls still pending then.
    """
    async with _client(url, kind, workload) as call:
        await call("inflight-warm")  # the session, its connection and the code paths are warm

        async def one(n: int) -> None:
            await call(f"inflight-{n}")

        gc.collect()
        before = _rss_mib()
        started = time.perf_counter()
        tasks = [asyncio.ensure_future(one(n)) for n in range(calls)]
        for _ in range(3):  # every task runs to the point where it waits
            await asyncio.sleep(0)
        launched = _rss_mib()
        pending = sum(not task.done() for task in tasks)
        peak = launched

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, _rss_mib())
                await asyncio.sleep(0.01)

        watcher = asyncio.ensure_future(watch())
        results = await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.perf_counter() - started
        watcher.cancel()
    failed = [result for result in results if isinstance(result, BaseException)]
    return {
        "kind": kind,
        "workload": workload,
        "calls": calls,
        "completed": calls - len(failed),
        "first_error": repr(failed[0]) if failed else None,
        "seconds": elapsed,
        "pending_at_launch": pending,
        "kib_per_call_in_flight": (launched - before) * 1024 / max(1, pending),
        "peak_rss_growth_mib": peak - before,
    }


def _one_case(url: str, calls: int, kind: str, workload: str) -> dict[str, Any]:
    """Run a case in a process of its own; its figures."""
    done = subprocess.run(  # noqa: S603 - this interpreter, this module, our arguments
        [
            sys.executable,
            "-m",
            "benchmarks.inflight",
            "--case",
            url,
            kind,
            workload,
            "--calls",
            str(calls),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Print the figures; exit 0 when every call of every case completed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inflight", description=__doc__)
    parser.add_argument("--calls", type=int, default=None, help="calls of every workload")
    parser.add_argument(
        "--workloads", nargs="+", default=list(WORKLOADS), choices=["cancel", *LINES]
    )
    parser.add_argument(
        "--case", nargs=3, metavar=("URL", "KIND", "WORKLOAD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.case:
        url, kind, workload = args.case
        print(json.dumps(asyncio.run(measure(url, args.calls or 10_000, kind, workload))))
        return 0
    cases = []
    with answer_server() as url:
        for workload in args.workloads:
            for kind in KINDS:
                calls = args.calls or WORKLOADS.get(workload, 10_000)
                cases.append(_one_case(url, calls, kind, workload))
    print("Calls in flight at once on one client:\n")
    print(
        "| workload | kind | completed | seconds | KiB per call in flight | peak RSS growth MiB |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for case in cases:
        print(
            f"| {case['workload']} | {case['kind']} | {case['completed']} of {case['calls']} | "
            f"{case['seconds']:.1f} | {case['kib_per_call_in_flight']:.1f} | "
            f"{case['peak_rss_growth_mib']:.0f} |"
        )
        if case["first_error"]:
            print(f"  first error: {case['first_error']}")
    return 0 if all(case["completed"] == case["calls"] for case in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
