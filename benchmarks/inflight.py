"""10,000 calls in flight on one client: do they all complete, and what does it cost in memory?

python -m benchmarks.inflight [--calls 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from collections.abc import Sequence

from rees46_loyalty import LoyaltyClient, RetryPolicy

from ._server import answer_server

__all__ = ["main", "measure"]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(url: str, calls: int) -> dict[str, float]:
    """Start *calls* cancels at once on one client; wait for all; report time and memory."""
    before = _peak_rss_mib()
    async with LoyaltyClient(
        "bench",
        "bench-secret",
        base_url=f"{url}/cancel",
        timeout=300.0,
        retry=RetryPolicy(deadline=None),
    ) as client:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(client.cancel(order_id=f"inflight-{n}") for n in range(calls)),
            return_exceptions=True,
        )
        elapsed = time.perf_counter() - started
    failed = sum(isinstance(result, BaseException) for result in results)
    return {
        "calls": calls,
        "completed": calls - failed,
        "seconds": elapsed,
        "peak_rss_growth_mib": _peak_rss_mib() - before,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the figures; exit 0 when every call completed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inflight")
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args(argv)
    with answer_server() as url:
        figures = asyncio.run(measure(url, args.calls))
    print(
        f"{figures['completed']:.0f} of {figures['calls']:.0f} calls in flight at once completed "
        f"in {figures['seconds']:.1f} s; peak RSS grew by {figures['peak_rss_growth_mib']:.1f} MiB"
    )
    return 0 if figures["completed"] == figures["calls"] else 1


if __name__ == "__main__":
    sys.exit(main())
