"""Lease owners stay unique across processes however they were forked."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A fork made by C code that does not run Python's at-fork hooks: uWSGI forks its workers so
# (after loading the application in the master) unless --py-call-osafterfork is set.
_RAW_FORK = textwrap.dedent(
    """
    import asyncio, ctypes, os, sys
    from rees46_loyalty.idempotency import Intent, SqliteIdempotencyStore
    from rees46_loyalty.middleware import idempotency as layer

    CHANGE = Intent(operation="change", fingerprint="cart-b", safety="once")

    async def begin(owner):
        store = SqliteIdempotencyStore(sys.argv[1])
        try:
            return (await store.begin("7:shop:order-1", CHANGE, owner)).verdict.name
        finally:
            await store.close()

    read, write = os.pipe()
    pid = ctypes.CDLL(None, use_errno=True).fork()
    if pid == 0:
        owner = layer._new_owner()
        os.write(write, (owner + " " + asyncio.run(begin(owner))).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode()
    os.waitpid(pid, 0)
    owner = layer._new_owner()
    print(child, owner, asyncio.run(begin(owner)))
    """
)


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux", reason="needs libc fork")
def test_workers_forked_without_python_hooks_never_share_an_order(tmp_path: Path) -> None:
    """A second worker forked by C code waits for the first's lease instead of sending too."""
    done = subprocess.run(  # noqa: S603 - the test's own interpreter and script
        [sys.executable, "-c", _RAW_FORK, str(tmp_path / "books.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    child_owner, child_verdict, parent_owner, parent_verdict = done.stdout.split()
    assert child_verdict == "ACQUIRED"
    assert child_owner != parent_owner
    assert parent_verdict == "BUSY"
