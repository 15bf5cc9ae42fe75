"""The benchmarks still run (at a tiny scale: figures here mean nothing, only that they come)."""

from __future__ import annotations

import pytest

from benchmarks import decode, inflight, run, sync_overhead
from benchmarks._redis import Persistence, RedisServer
from benchmarks._server import answer_server

pytestmark = pytest.mark.integration


async def test_the_benchmark_matrix_runs_and_reports(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every kind measures every cell, with ratios to the hand-written call, and a table."""
    monkeypatch.setattr(run, "WORKLOADS", ["cancel", "change10"])
    monkeypatch.setattr(run, "CALLS", {"cancel": 20, "change10": 20})
    with answer_server() as url:
        results = await run._run(url, redis_url, quick=True, rounds=1)
    kinds = set(results["kinds"])
    assert {"aiohttp", "aiohttp+orjson", "sdk", "sdk, no idempotency", "sdk, redis store"} <= kinds
    assert len(results["cells"]) == len(kinds) * 2 * 2  # 2 workloads x concurrency 1 and 16
    baseline = [c for c in results["cells"] if c["kind"] == "aiohttp"]
    assert all(c["ratio"] == 1.0 for c in baseline)
    assert all(c["rps"] > 0 and c["p99_ms"] >= c["p50_ms"] for c in results["cells"])
    table = run._markdown(results)
    assert table.count("\n| ") == len(results["cells"]) + 1


async def test_many_calls_in_flight_all_complete() -> None:
    """Hundreds of calls at once on one client all complete (the 10,000 run is a benchmark)."""
    with answer_server() as url:
        figures = await inflight.measure(url, 500)
    assert figures["completed"] == figures["calls"] == 500


def test_the_sync_overhead_benchmark_runs_and_reports() -> None:
    """Every (workload, callers, kind) cell of the sync client's benchmark has its figures."""
    with answer_server() as url:
        cells = sync_overhead.measure(url, 20, 1)
    assert {(c["workload"], c["callers"], c["kind"]) for c in cells} == {
        (workload, callers, kind)
        for workload in sync_overhead.WORKLOADS
        for callers in sync_overhead.CALLERS
        for kind in sync_overhead.KINDS
    }
    assert all(c["rps"] > 0 and c["p50_us"] > 0 for c in cells)


def test_the_decode_benchmark_reports_every_part() -> None:
    """Every (answer, kind) cell of the decode benchmark has its CPU time and its ratio to
    json.loads, and json.loads is the yardstick (1.0)."""
    rows = decode.measure(rounds=1, workloads=("cancel", "change10"))
    kinds = {"json.loads", "SDK decode", "pre-scan", "msgspec -> attrs", "msgspec -> Structs"}
    for workload in ("cancel", "change10"):
        cells = {r["kind"]: r for r in rows if r["workload"] == workload}
        assert kinds <= set(cells)
        assert all(cell["us"] > 0 for cell in cells.values())
        assert cells["json.loads"]["ratio"] == 1.0


@pytest.mark.parametrize(("persistence", "kept"), [("aof", b"$1"), ("none", b"$-1")])
def test_a_redis_restart_keeps_its_data_only_with_aof(
    persistence: Persistence, kept: bytes
) -> None:
    """SHUTDOWN NOSAVE and a start on the same port: the AOF server has its key back, the
    other has lost it; FLUSHALL empties both."""
    with RedisServer(persistence=persistence) as server:
        port = server.port
        assert server.command("SET", "k", "v") == b"+OK"
        server.restart()
        assert server.port == port
        assert server.restarts == 1
        assert server.command("GET", "k") == kept
        server.command("SET", "k", "v")
        server.flushall()
        assert server.command("GET", "k") == b"$-1"
