"""Redis clients side by side, doing what the Redis idempotency store does for one call.

    python -m benchmarks.redis_clients [--quick] [--ops 2000] [--rounds 3]

The store sends two commands per mutating call: an ``EVALSHA`` of its begin script (read the
order's book, take the lease) before the request and one of its finish script (record the
outcome with the answer) after it. For each client this measures, against a local
redis-server:

- ``ping``: one ``PING`` per operation, the fixed cost of a command on that client;
- ``two round trips``: the begin then the finish script, each awaited (what a call costs now);
- ``one round trip``: the same two scripts sent together in one pipeline (what a call would
  cost if its two commands travelled together).

Every operation is on a new order key, with the store's own scripts and arguments of its shape
(a cancel's intent, a 200-byte answer). Clients: the store's own (``_resp.RespClient``, what a
store made from a URL uses), redis-py (what a store given a client of yours uses) with the
hiredis parser and with its pure-Python one, coredis, valkey-glide (when installed), and a minimal
RESP client written here (one connection per task, no pool, no retries): a floor, not a
candidate. Concurrency 1 and 16; the clients are rotated within each round; figures are
medians over the rounds with the lowest and highest beside them. Client CPU is the process's
(valkey-glide's Rust core runs on threads of this process: it is counted).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from rees46_loyalty.idempotency._redis import _BEGIN, _FINISH

from ._redis import redis_server

__all__ = ["CLIENTS", "MODES", "main", "measure"]

MODES = ["ping", "two round trips", "one round trip"]
RESULTS = Path(__file__).parent / "results"
_LEASE_MS, _TTL_MS = 60_000, 86_400_000
_ANSWER = json.dumps(
    {"status": "success", "payload": {"order_id": "1", "identifier": "79990001122", "x": "y" * 120}}
).encode()
_keys = itertools.count()

Args = list[bytes | str | int]


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis names scripts so


def _call_args(n: int) -> tuple[str, Args, Args]:
    """The key and the begin / finish arguments of one cancel, as the store sends them."""
    intent = {"operation": "cancel", "fingerprint": f"{n:032x}", "safety": "cancel"}
    owner = f"owner-{os.getpid()}-{n}"
    document = json.dumps({"state": "succeeded", "intent": intent, "status": 200})
    begin: Args = [json.dumps(intent), owner, _LEASE_MS, _TTL_MS]
    finish: Args = [owner, document, "1", _ANSWER, _TTL_MS, "0", b"", b""]
    return f"bench-clients:7:bench:order-{n}", begin, finish


class _Client:
    """One client under test: a command, the two scripts one by one, the two in one trip."""

    name = ""

    async def open(self, port: int) -> None:
        raise NotImplementedError

    async def ping(self) -> None:
        raise NotImplementedError

    async def two(self, key: str, begin: Args, finish: Args) -> None:
        raise NotImplementedError

    async def one(self, key: str, begin: Args, finish: Args) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _RedisPy(_Client):
    def __init__(self, *, hiredis: bool) -> None:
        self.name = "redis-py + hiredis" if hiredis else "redis-py (Python parser)"
        self._hiredis = hiredis

    async def open(self, port: int) -> None:
        from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.utils import HIREDIS_AVAILABLE

        if self._hiredis and not HIREDIS_AVAILABLE:
            raise ImportError("hiredis is not installed")
        parser = _AsyncHiredisParser if self._hiredis else _AsyncRESP2Parser
        # As the store makes its own: a blocking pool of 100 connections.
        pool = BlockingConnectionPool(
            host="127.0.0.1", port=port, max_connections=100, parser_class=parser
        )
        self._redis: Any = Redis(connection_pool=pool)  # its evalsha is typed for str only
        self._begin_sha = await self._redis.script_load(_BEGIN)
        self._finish_sha = await self._redis.script_load(_FINISH)

    async def ping(self) -> None:
        await self._redis.ping()

    async def two(self, key: str, begin: Args, finish: Args) -> None:
        await self._redis.evalsha(self._begin_sha, 1, key, *begin)
        await self._redis.evalsha(self._finish_sha, 1, key, *finish)

    async def one(self, key: str, begin: Args, finish: Args) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._begin_sha, 1, key, *begin)
            pipe.evalsha(self._finish_sha, 1, key, *finish)
            await pipe.execute()

    async def close(self) -> None:
        await self._redis.aclose()
        await self._redis.connection_pool.disconnect()


class _Coredis(_Client):
    name = "coredis"

    async def open(self, port: int) -> None:
        coredis = _optional("coredis")
        self._redis: Any = coredis.Redis(host="127.0.0.1", port=port, max_connections=100)
        self._context = await self._redis.__aenter__()
        self._begin_sha = await self._redis.script_load(_BEGIN)
        self._finish_sha = await self._redis.script_load(_FINISH)

    async def ping(self) -> None:
        await self._redis.ping()

    async def two(self, key: str, begin: Args, finish: Args) -> None:
        await self._redis.evalsha(self._begin_sha, keys=[key], args=begin)
        await self._redis.evalsha(self._finish_sha, keys=[key], args=finish)

    async def one(self, key: str, begin: Args, finish: Args) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            first = pipe.evalsha(self._begin_sha, keys=[key], args=begin)
            second = pipe.evalsha(self._finish_sha, keys=[key], args=finish)
        await first
        await second

    async def close(self) -> None:
        await self._redis.__aexit__(None, None, None)


class _Glide(_Client):
    name = "valkey-glide"

    async def open(self, port: int) -> None:
        glide = _optional("glide")
        self._batch = glide.Batch
        config = glide.GlideClientConfiguration([glide.NodeAddress("127.0.0.1", port)])
        self._redis: Any = await glide.GlideClient.create(config)
        self._begin_sha = (await self._redis.custom_command(["SCRIPT", "LOAD", _BEGIN])).decode()
        self._finish_sha = (await self._redis.custom_command(["SCRIPT", "LOAD", _FINISH])).decode()

    async def ping(self) -> None:
        await self._redis.ping()

    async def two(self, key: str, begin: Args, finish: Args) -> None:
        await self._redis.custom_command(["EVALSHA", self._begin_sha, "1", key, *map(_arg, begin)])
        await self._redis.custom_command(
            ["EVALSHA", self._finish_sha, "1", key, *map(_arg, finish)]
        )

    async def one(self, key: str, begin: Args, finish: Args) -> None:
        batch = self._batch(is_atomic=False)
        batch.custom_command(["EVALSHA", self._begin_sha, "1", key, *map(_arg, begin)])
        batch.custom_command(["EVALSHA", self._finish_sha, "1", key, *map(_arg, finish)])
        await self._redis.exec(batch, raise_on_error=True)

    async def close(self) -> None:
        await self._redis.close()


def _optional(name: str) -> Any:
    """A client only the bench session installs (untyped here: mypy runs without it)."""
    return importlib.import_module(name)


def _arg(value: bytes | str | int) -> bytes | str:
    return str(value) if isinstance(value, int) else value


class _Resp(_Client):
    """A minimal RESP2 client: a connection per task, replies read into bytes / ints / lists."""

    name = "minimal RESP (floor)"

    async def open(self, port: int) -> None:
        self._port = port
        self._connections: dict[asyncio.Task[Any] | None, Any] = {}
        self._begin_sha = _sha(_BEGIN)
        self._finish_sha = _sha(_FINISH)
        await self._send([b"SCRIPT", b"LOAD", _BEGIN], [b"SCRIPT", b"LOAD", _FINISH])

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        task = asyncio.current_task()
        found = self._connections.get(task)
        if found is None:
            found = await asyncio.open_connection("127.0.0.1", self._port)
            self._connections[task] = found
        return found

    async def _send(self, *commands: Sequence[bytes | str | int]) -> list[Any]:
        reader, writer = await self._connection()
        out = bytearray()
        for command in commands:
            out += b"*%d\r\n" % len(command)
            for word in command:
                data = word if isinstance(word, bytes) else str(word).encode()
                out += b"$%d\r\n%s\r\n" % (len(data), data)
        writer.write(out)
        return [await _read(reader) for _ in commands]

    async def ping(self) -> None:
        await self._send([b"PING"])

    async def two(self, key: str, begin: Args, finish: Args) -> None:
        await self._send([b"EVALSHA", self._begin_sha, 1, key, *begin])
        await self._send([b"EVALSHA", self._finish_sha, 1, key, *finish])

    async def one(self, key: str, begin: Args, finish: Args) -> None:
        await self._send(
            [b"EVALSHA", self._begin_sha, 1, key, *begin],
            [b"EVALSHA", self._finish_sha, 1, key, *finish],
        )

    async def close(self) -> None:
        for _, writer in self._connections.values():
            writer.close()
        self._connections.clear()


async def _read(reader: asyncio.StreamReader) -> Any:
    line = await reader.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else (await reader.readexactly(size + 2))[:-2]
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [await _read(reader) for _ in range(size)]
    raise RuntimeError(f"not a RESP reply: {line!r}")


class _Store(_Client):
    """The Redis store's own client: one connection per loop, every task's commands over it."""

    name = "the store's own client"

    async def open(self, port: int) -> None:
        from rees46_loyalty.idempotency._resp import RespClient

        self._client = RespClient(f"redis://127.0.0.1:{port}/0")
        self._begin = self._client.script(_BEGIN)
        self._finish = self._client.script(_FINISH)

    async def ping(self) -> None:
        await self._client.call("PING")

    async def two(self, key: str, begin: Args, finish: Args) -> None:
        await self._begin(keys=[key], args=begin)
        await self._finish(keys=[key], args=finish)

    async def one(self, key: str, begin: Args, finish: Args) -> None:
        # Both written before either reply is read: one round trip.
        await asyncio.gather(
            self._begin(keys=[key], args=begin), self._finish(keys=[key], args=finish)
        )

    async def close(self) -> None:
        await self._client.aclose()


def _clients() -> list[Callable[[], _Client]]:
    clients: list[Callable[[], _Client]] = [
        _Store,
        lambda: _RedisPy(hiredis=True),
        lambda: _RedisPy(hiredis=False),
        _Coredis,
        _Glide,
        _Resp,
    ]
    return clients


#: The client names, in the order of the tables.
CLIENTS = [make().name for make in _clients()]


async def _rate(client: _Client, mode: str, ops: int, concurrency: int) -> dict[str, float]:
    """*ops* operations of *mode*, *concurrency* at a time: µs per operation, wall and CPU."""
    numbers = [next(_keys) for _ in range(ops)]
    run: Callable[[int], Awaitable[None]]
    if mode == "ping":

        async def run(_: int) -> None:
            await client.ping()
    else:
        step = client.two if mode == "two round trips" else client.one

        async def run(n: int) -> None:
            await step(*_call_args(n))

    latencies: list[float] = []

    async def worker() -> None:
        while numbers:
            n = numbers.pop()
            started = time.perf_counter()
            await run(n)
            latencies.append(time.perf_counter() - started)

    await run(next(_keys))  # warm: a connection for this task, the code paths
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    latencies.sort()
    return {
        "ops_per_s": ops / wall,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "cpu_us": cpu / ops * 1e6,
    }


async def measure(
    port: int, *, ops: int, rounds: int, concurrency: Sequence[int] = (1, 16)
) -> dict[str, Any]:
    """Every (client, mode, concurrency) cell, *rounds* times, clients rotated; the medians."""
    clients: list[_Client] = []
    missing: dict[str, str] = {}
    for make in _clients():
        client = make()
        try:
            await client.open(port)
        except ImportError as exc:
            missing[client.name] = str(exc)
            continue
        clients.append(client)
    samples: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    try:
        for round_number in range(rounds):
            for mode in MODES:
                for level in concurrency:
                    shift = round_number % len(clients)
                    for client in clients[shift:] + clients[:shift]:
                        figures = await _rate(client, mode, ops, level)
                        samples.setdefault((client.name, mode, level), []).append(figures)
    finally:
        for client in clients:
            await client.close()
    cells = []
    for (name, mode, level), runs in samples.items():
        cell: dict[str, Any] = {"client": name, "mode": mode, "concurrency": level}
        for key in runs[0]:
            values = [run[key] for run in runs]
            cell[key] = statistics.median(values)
            cell[f"{key}_min"], cell[f"{key}_max"] = min(values), max(values)
        cells.append(cell)
    order = [client.name for client in clients]
    cells.sort(key=lambda c: (MODES.index(c["mode"]), c["concurrency"], order.index(c["client"])))
    return {"ops": ops, "rounds": rounds, "missing": missing, "cells": cells}


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("redis", "hiredis", "coredis", "valkey-glide"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return ", ".join(found)


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables: per concurrency, a row per client."""
    cells = {(c["client"], c["mode"], c["concurrency"]): c for c in results["cells"]}
    clients = list(dict.fromkeys(c["client"] for c in results["cells"]))
    levels = sorted({c["concurrency"] for c in results["cells"]})
    lines = [
        (
            f"{_versions()}; {results['ops']} operations per cell, medians of "
            f"{results['rounds']} rounds (lowest–highest); CPU = client CPU µs per operation."
        ),
    ]
    for level in levels:
        lines += [
            "",
            f"Concurrency {level}:",
            "",
            (
                "| client | PING CPU µs | PING p50 µs | two round trips: CPU µs | p50 µs "
                "| ops/s | one round trip: CPU µs | p50 µs | ops/s |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in clients:
            row = [name]
            for mode in MODES:
                cell = cells.get((name, mode, level))
                if cell is None:
                    row += [""] * (2 if mode == "ping" else 3)
                    continue
                row += [
                    f"{cell['cpu_us']:.0f} ({cell['cpu_us_min']:.0f}–{cell['cpu_us_max']:.0f})",
                    f"{cell['p50_us']:.0f}",
                ]
                if mode != "ping":
                    row.append(f"{cell['ops_per_s']:.0f}")
            lines.append(f"| {' | '.join(row)} |")
    for name, why in results["missing"].items():
        lines.append(f"\n{name}: not measured ({why}).")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the clients against a local redis-server; print and write the tables."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_clients", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer operations, two rounds")
    parser.add_argument("--ops", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    ops = args.ops or (300 if args.quick else 2000)
    rounds = args.rounds or (2 if args.quick else 3)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    with redis_server() as url:
        if len(cpus) > 1:  # the client on one CPU; redis-server (started before) keeps both
            os.sched_setaffinity(0, {cpus[0]})
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        results = asyncio.run(measure(port, ops=ops, rounds=rounds))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "redis_clients.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (RESULTS / "redis_clients.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
