"""The SQLite store across processes of one host, and across a restart."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from rees46_loyalty import CartItem
from rees46_loyalty.idempotency import SqliteIdempotencyStore
from rees46_loyalty.testing import FakeRees46, Fault
from tests.conftest import PHONE, SHOP_ID, SHOP_SECRET

pytestmark = pytest.mark.integration

CART = [CartItem(product_id="A", price=Decimal("1000"), quantity=4)]

_WORKER = f"""
import asyncio, sys
from decimal import Decimal
from rees46_loyalty import CartItem, LoyaltyClient
from rees46_loyalty.idempotency import SqliteIdempotencyStore

async def main(url, path):
    store = SqliteIdempotencyStore(path)
    client = LoyaltyClient({SHOP_ID!r}, {SHOP_SECRET!r}, base_url=url, idempotency=store)
    async with client:
        cart = [CartItem(product_id="A", price=Decimal("1000"), quantity=3)]
        change = await client.change(order_id="1", cart_items=cart, idempotency_key="job-1")
    await store.close()
    print(change.order_total_change, change.replayed)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeRees46]:
    async with FakeRees46(shop_id=SHOP_ID, shop_secret=SHOP_SECRET) as server:
        server.add_member(PHONE, bonuses=1000)
        server.add_product("A", "Tea")
        async with server.client(idempotency=None) as setup:
            await setup.apply(order_id="1", cart_items=CART, identifier=PHONE)
            await setup.confirm(order_id="1")
        yield server


async def _worker(fake: FakeRees46, path: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WORKER,
        fake.url,
        str(path),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode().strip()


async def test_two_processes_sharing_the_file_send_one_change(
    fake: FakeRees46, tmp_path: Path
) -> None:
    """The same job run by two worker processes at once: one change, the same refund twice."""
    fake.faults.on("change", Fault.latency(0.3))  # the first holds the order a while
    path = tmp_path / "idempotency.db"
    first, second = await asyncio.gather(_worker(fake, path), _worker(fake, path))
    assert sorted([first, second]) == ["-1000 False", "-1000 True"]
    assert len(fake.ledger.effects_for("change")) == 1


async def test_a_worker_that_comes_back_replays_what_it_recorded(
    fake: FakeRees46, tmp_path: Path
) -> None:
    """A process records its change and exits; the job redelivered to a new process replays."""
    path = tmp_path / "idempotency.db"
    assert await _worker(fake, path) == "-1000 False"
    assert await _worker(fake, path) == "-1000 True"
    assert len(fake.ledger.effects_for("change")) == 1


async def test_the_store_refuses_nonsense(tmp_path: Path) -> None:
    """Non-positive or misordered settings fail at construction, naming the setting."""
    with pytest.raises(ValueError, match="ttl"):
        SqliteIdempotencyStore(tmp_path / "x.db", ttl=10, lease=60)
    with pytest.raises(TypeError, match="lease"):
        SqliteIdempotencyStore(tmp_path / "x.db", lease="60")  # type: ignore[arg-type]


async def test_a_store_used_after_close_says_so_and_opens_nothing(tmp_path: Path) -> None:
    """close() ends the store: a later step raises a RuntimeError, the file is not reopened."""
    store = SqliteIdempotencyStore(tmp_path / "closed.db")
    assert await store.get("1") is None
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await store.get("1")
    assert store._connection is None


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_file_deleted_or_replaced_under_the_store_is_refused_for_good(
    tmp_path: Path, how: str
) -> None:
    """The file goes (or another takes its place): every later step fails, naming the cause,
    even once a fresh file is at the path; the store never reopens behind its leases."""
    path = tmp_path / "books.db"
    store = SqliteIdempotencyStore(path)
    assert await store.get("1") is None
    for suffix in ("", "-wal", "-shm"):
        await asyncio.to_thread(Path(f"{path}{suffix}").unlink, missing_ok=True)
    if how == "replaced":
        other = SqliteIdempotencyStore(path)
        assert await other.get("1") is None  # another process makes a fresh file
        await other.close()
    with pytest.raises(sqlite3.OperationalError, match=f"was {how}"):
        await store.get("1")
    assert store._connection is None
    fresh = SqliteIdempotencyStore(path)
    assert await fresh.get("1") is None
    with pytest.raises(sqlite3.OperationalError, match="refuses every step"):
        await store.get("1")
    await fresh.close()
    await store.close()


async def test_a_new_records_file_is_for_its_owner_alone(tmp_path: Path) -> None:
    """The records hold members' phones: a file the store creates is readable by its owner
    only, and so are the directories it makes."""
    path = tmp_path / "new" / "idempotency.db"
    store = SqliteIdempotencyStore(path)
    await store.get("7:shop-42:1")
    await store.close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o077 == 0
