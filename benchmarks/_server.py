"""A fast local stand-in of the checkout API for benchmarks: prebuilt answers, its own process.

Every POST gets the same prebuilt success answer of its operation, so the client, not the
server, is what the benchmark measures.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

__all__ = ["answer_server"]

_CANCEL = json.dumps({"status": "success", "payload": {"order_id": "1", "identifier": None}})


def _serve(port: int, cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    body = _CANCEL.encode()

    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        server = web.Server(handle, access_log=None)
        runner = web.ServerRunner(server)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


@contextmanager
def answer_server(cpu: int | None = None) -> Iterator[str]:
    """Run the stand-in in a process of its own (pinned to *cpu* if given); yield its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(port, cpu), daemon=True
    )
    process.start()
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if not process.is_alive():
                    raise
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.join()
