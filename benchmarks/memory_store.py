"""How much memory the default idempotency store takes: 10,000 changes of 200 lines.

Each order's change is recorded as a client records it (a lease, then the answer's bytes), with
an answer of 200 lines whose amounts differ from order to order. It reports the growth of the
process's resident memory, the bytes the store counts against its bound, and the time per
recorded call.

    python -m benchmarks.memory_store [--records 10000] [--lines 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rees46_loyalty.idempotency import Intent, MemoryIdempotencyStore, Outcome, State

from ._server import change_answer

__all__ = ["measure"]


def _rss_mib() -> float:
    """The process's resident memory now (Linux's /proc), else its peak."""
    try:
        pages = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
    except OSError:  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return pages * resource.getpagesize() / 2**20


def _answers(lines: int, count: int, seed: int) -> list[bytes]:
    """*count* different answers of *lines* lines: amounts vary as real orders' do."""
    rng = random.Random(seed)  # noqa: S311 - varied test data, not cryptography
    template = json.loads(change_answer(lines))
    answers = []
    for n in range(count):
        payload = template["payload"]
        for number, item in enumerate(payload["items"]):
            item["product_id"] = f"SKU-{rng.randrange(10**6)}-{number}"
            item["price"] = round(rng.uniform(10, 10_000), 2)
            item["quantity"] = rng.randrange(1, 9)
            item["total"] = round(item["price"] * item["quantity"], 2)
            item["bonuses_reward"] = round(rng.uniform(0, 500), 2)
        payload["order_id"] = f"order-{n}"
        payload["order_total_change"] = round(-rng.uniform(0, 5000), 2)
        answers.append(json.dumps(template).encode())
    return answers


async def measure(records: int, lines: int) -> dict[str, float]:
    """Record *records* changes of *lines* lines; the memory and time they took."""
    pool = _answers(lines, 64, seed=7)  # 64 distinct answers, cycled: realistic to compress
    store = MemoryIdempotencyStore()
    gc.collect()
    before = _rss_mib()
    started = time.perf_counter()
    for n in range(records):
        key = f"7:shop-42:order-{n}"
        intent = Intent(operation="change", fingerprint=f"{n:032x}", safety="once")
        await store.begin(key, intent, "owner")
        answer = pool[n % len(pool)].replace(b'"order-', f'"order-{n}-'.encode(), 1)
        outcome = Outcome(state=State.SUCCEEDED, intent=intent, status=200, answer=answer)
        await store.finish(key, "owner", outcome)
    elapsed = time.perf_counter() - started
    gc.collect()
    kept = len(store)  # orders with a book: each holds its change's outcome
    return {
        "records": records,
        "kept": kept,
        "answer_bytes": len(pool[0]),
        "kept_bytes": store.kept_bytes,
        "max_bytes": store.max_bytes,
        "rss_growth_mib": _rss_mib() - before,
        "us_per_record": elapsed / records * 1e6,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the figures; exit 0 when every record was kept in at most 256 MiB."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_store")
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=200)
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(args.records, args.lines))
    print(
        f"{figures['kept']:.0f} of {figures['records']:.0f} changes of {args.lines} lines kept "
        f"(answers of {figures['answer_bytes'] / 1024:.0f} KiB); the store counts "
        f"{figures['kept_bytes'] / 2**20:.1f} MiB of its {figures['max_bytes'] / 2**20:.0f} MiB "
        f"bound; resident memory grew {figures['rss_growth_mib']:.1f} MiB; "
        f"{figures['us_per_record']:.0f} us per recorded change"
    )
    fits = figures["kept"] == figures["records"] and figures["rss_growth_mib"] <= 256
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
