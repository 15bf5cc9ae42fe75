"""The benchmarks still run (at a tiny scale: figures here mean nothing, only that they come)."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest

# The benchmarks' typed peer decodes with msgspec (the speedups extra): without it (the run of
# the suite without speedups) there is nothing to run here.
pytest.importorskip("msgspec")

from benchmarks import decode, inflight, redis_clients, run, sync_overhead
from benchmarks._redis import Persistence, RedisServer
from benchmarks._server import answer_server
from benchmarks.peers import MsgspecPeer, PydanticPeer, check_result

pytestmark = pytest.mark.integration


async def test_the_benchmark_matrix_runs_and_reports(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every kind, the typed peers among them, measures every cell, with ratios to the
    hand-written call of the same round and their spread, and a table."""
    monkeypatch.setattr(run, "WORKLOADS", ["cancel", "change10"])
    monkeypatch.setattr(run, "CALLS", {"cancel": 20, "change10": 20})
    with answer_server() as url:
        results = await run._run(url, redis_url, quick=True, rounds=2)
    assert results["kinds"] == run.MAIN_KINDS
    assert len(results["cells"]) == len(run.MAIN_KINDS) * 2 * 2  # 2 workloads x conc. 1 and 16
    baseline = [c for c in results["cells"] if c["kind"] == "aiohttp"]
    assert all(c["ratios"] == [1.0, 1.0] for c in baseline)
    for cell in results["cells"]:
        assert cell["rps"] > 0
        assert cell["p99_ms"] >= cell["p50_ms"]
        assert cell["ratio_min"] <= cell["ratio"] <= cell["ratio_max"]
    table = run._markdown(results)
    # The summary and the pairs (a row per workload and concurrency), the full table (per cell).
    assert table.count("\n| ") == 2 * (2 * 2 + 1) + len(results["cells"]) + 1
    assert "msgspec peer" in table
    assert "pydantic peer" in table


@pytest.mark.parametrize("lines", [0, 10])
@pytest.mark.parametrize("peer", [MsgspecPeer, PydanticPeer])
async def test_the_typed_peers_decode_the_whole_answer_exactly(
    peer: type[MsgspecPeer | PydanticPeer], lines: int
) -> None:
    """A typed peer's result is the whole answer: every line, nested shares, exact Decimals."""
    workload = "change10" if lines else "cancel"
    with answer_server() as url:
        async with peer(url, workload, lines, ("bench", "bench-secret")) as call:
            result = await call("order-1")
    check_result(result, lines)
    if lines:
        assert result.items[0].price == Decimal("1249.9")
        assert isinstance(result.items[0].bonuses_reward_loyalty_program.total, Decimal)


def test_a_result_missing_its_lines_fails_the_check() -> None:
    """The warm-up check refuses a result with fewer lines than the answer has."""
    with pytest.raises(AssertionError, match="lines of"):
        check_result(SimpleNamespace(items=(), order_total_change=Decimal(0)), 10)


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


async def test_the_redis_clients_benchmark_measures_each_installed_client(redis_url: str) -> None:
    """Each installed client has every mode at both concurrencies; a missing one is named."""
    port = int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    results = await redis_clients.measure(port, ops=10, rounds=1)
    measured = {c["client"] for c in results["cells"]}
    assert {"redis-py + hiredis", "redis-py (Python parser)", "minimal RESP (floor)"} <= measured
    assert measured | set(results["missing"]) == set(redis_clients.CLIENTS)
    assert len(results["cells"]) == len(measured) * len(redis_clients.MODES) * 2
    assert all(c["ops_per_s"] > 0 and c["cpu_us"] >= 0 for c in results["cells"])
    table = redis_clients.markdown(results)
    assert table.count("| redis-py + hiredis |") == 2


async def test_many_calls_of_each_kind_in_flight_all_complete_and_report_memory() -> None:
    """Hundreds of changes at once, SDK and hand-written: all complete, and were all waiting at
    once when the memory was read."""
    with answer_server() as url:
        for kind in inflight.KINDS:
            figures = await inflight.measure(url, 300, kind, "change10")
            assert figures["completed"] == figures["calls"] == 300
            assert figures["pending_at_launch"] > 250  # the read came before most answers
