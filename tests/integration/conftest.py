"""Fixtures of the integration tests: the fake REES46 server on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal

import pytest

from benchmarks._redis import redis_server
from rees46_loyalty import LoyaltyClient
from rees46_loyalty.idempotency import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
    SqliteIdempotencyStore,
)
from rees46_loyalty.idempotency._resp import RespClient
from rees46_loyalty.testing import FakeClock, FakeRees46
from tests.conftest import PHONE, SHOP_ID, SHOP_SECRET


@asynccontextmanager
async def _stocked_fake(envelope: Literal["status", "success"]) -> AsyncIterator[FakeRees46]:
    async with FakeRees46(shop_id=SHOP_ID, shop_secret=SHOP_SECRET, envelope=envelope) as f:
        f.add_member(PHONE, bonuses=1000)
        f.add_product("A", "Tea")
        f.add_product("B", "Cup")
        f.add_promo_code("SALE10", 10)
        f.add_certificate("GIFT", 300)
        yield f


@pytest.fixture(params=["status", "success"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeRees46]:
    """The fake server in each envelope style, with a member, a feed, a code, a certificate."""
    async with _stocked_fake(request.param) as f:
        yield f


@pytest.fixture
async def fake_in_one_style() -> AsyncIterator[FakeRees46]:
    """The same fake server in the current envelope style only, for tests about other layers."""
    async with _stocked_fake("status") as f:
        yield f


@pytest.fixture
async def sdk(fake: FakeRees46, clock: FakeClock) -> AsyncIterator[LoyaltyClient]:
    """A client of the fake server on a fake clock (retries do not wait), without the
    idempotency layer, so that every call reaches the server."""
    async with fake.client(clock=clock, idempotency=None) as client:
        yield client


@pytest.fixture(params=["memory", "redis", "sqlite"])
async def store(
    request: pytest.FixtureRequest, clock: FakeClock, redis_url: str, tmp_path: Path
) -> AsyncIterator[IdempotencyStore]:
    """Each idempotency store: in memory (on the fake clock), a real Redis (under a namespace
    of its own) and a SQLite file of the test's own."""
    if request.param == "memory":
        yield MemoryIdempotencyStore(clock=clock)
        return
    if request.param == "sqlite":
        sqlite = SqliteIdempotencyStore(tmp_path / "idempotency.db")
        yield sqlite
        await sqlite.close()
        return
    redis = RedisIdempotencyStore(redis_url, namespace=f"test-{uuid.uuid4().hex}")
    yield redis
    await redis.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server process on a free loopback port, for the whole session."""
    with redis_server() as url:
        yield url


@contextmanager
def serving_in_a_thread(**options: Any) -> Iterator[FakeRees46]:
    """The fake server on an event loop of its own, in a background thread.

    For the tests of synchronous code (the sync client, Django, Celery), whose calls block the
    thread they run in: the server must not share that thread.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-rees46", daemon=True)
    thread.start()
    fake = FakeRees46(**options)
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(timeout=30)
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest.fixture
def threaded_shop() -> Iterator[FakeRees46]:
    """The fake server in a thread of its own, with a member and a feed (for sync code)."""
    with serving_in_a_thread(shop_id=SHOP_ID, shop_secret=SHOP_SECRET) as fake:
        fake.add_member(PHONE, bonuses=1000)
        fake.add_product("A", "Tea")
        fake.add_product("B", "Cup")
        yield fake


async def redis_call(store: RedisIdempotencyStore, *command: str | int) -> Any:
    """Send one Redis command through *store*'s own connection (its client, or the user's)."""
    client = store._redis
    if isinstance(client, RespClient):
        return await client.call(*command)
    return await client.execute_command(*command)  # type: ignore[no-untyped-call]


async def age_redis_book(store: RedisIdempotencyStore, key: str, seconds: float) -> None:
    """Move the Redis book of *key* (a store key) *seconds* into the past: its lease's and
    outcomes' expiries and the key's own TTL, as if Redis's clock had run on."""
    name = store._key(key)
    raw = await redis_call(store, "HGET", name, "book")
    if raw is None:
        return
    book: dict[str, Any] = json.loads(raw)
    shift = round(seconds * 1000)
    for entry in (book.get("lease"), *book.get("outcomes", {}).values()):
        if entry is not None and "expires" in entry:
            entry["expires"] -= shift
    await redis_call(store, "HSET", name, "book", json.dumps(book))
    left = await redis_call(store, "PTTL", name)
    if left > 0:
        if left - shift <= 0:
            await redis_call(store, "DEL", name)
        else:
            await redis_call(store, "PEXPIRE", name, left - shift)
