"""The Redis store's own connection against real redis-server processes: passwords, databases,
unix sockets, scripts Redis forgot, loops that come and go."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from benchmarks._redis import _binary, _free_port
from rees46_loyalty import CartItem, IdempotencyError
from rees46_loyalty.idempotency import Intent, Outcome, RedisIdempotencyStore, State, Verdict
from rees46_loyalty.testing import FakeRees46
from tests.integration.conftest import redis_call

PASSWORD = "hunter2-redis-pass"
CART = [CartItem(product_id="A", price=Decimal(1000), quantity=4)]
CANCEL = Intent(operation="cancel", fingerprint="f", safety="cancel")


def _ask(port: int, *lines: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"".join(line + b"\r\n" for line in lines))
        answer = b""
        while answer.count(b"\r\n") < len(lines):
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test's own that wants a password, on a TCP port and a socket."""
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603 - a binary we chose, arguments we wrote
        [_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(tmp_path), "--requirepass", PASSWORD,
         "--unixsocket", str(tmp_path / "redis.sock"), "--unixsocketperm", "700"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            if _ask(port, b"PING").startswith(b"-NOAUTH"):
                break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
        time.sleep(0.01)
    yield port
    process.terminate()
    process.wait(timeout=10)


async def _one_cancel(store: RedisIdempotencyStore) -> None:
    decision = await store.begin("o-1", CANCEL, "me")
    assert decision.verdict is Verdict.ACQUIRED
    await store.finish("o-1", "me", Outcome(state=State.SUCCEEDED, intent=CANCEL, status=200))


async def test_a_password_and_a_database_from_the_url(locked_redis: int) -> None:
    """redis://:password@host:port/2: logged in, the book in database 2, not in 0."""
    store = RedisIdempotencyStore(f"redis://:{PASSWORD}@127.0.0.1:{locked_redis}/2", namespace="n")
    await _one_cancel(store)
    key = store._key("o-1").encode()
    auth = b"AUTH " + PASSWORD.encode()
    assert _ask(locked_redis, auth, b"SELECT 2", b"EXISTS " + key).endswith(b":1\r\n")
    assert _ask(locked_redis, auth, b"EXISTS " + key).endswith(b":0\r\n")
    await store.close()


async def test_a_user_name_and_a_unix_socket(locked_redis: int, tmp_path: Path) -> None:
    """unix:// with the default user's name: the same store, over a socket."""
    url = f"unix://default:{PASSWORD}@{tmp_path / 'redis.sock'}?db=1"
    store = RedisIdempotencyStore(url, namespace="n")
    await _one_cancel(store)
    book = await store.get("o-1")
    assert book is not None
    await store.close()


async def test_a_wrong_password_is_an_idempotency_error_that_shows_no_password(
    locked_redis: int, fake: FakeRees46
) -> None:
    """Nothing is sent; the error says Redis refused, and holds neither password."""
    wrong = "not-the-" + PASSWORD
    store = RedisIdempotencyStore(f"redis://:{wrong}@127.0.0.1:{locked_redis}/0")
    async with fake.client(idempotency=store) as client:
        with pytest.raises(IdempotencyError) as caught:
            await client.apply(order_id="p-1", cart_items=CART)
    await store.close()
    text = f"{caught.value} {caught.value.__cause__!r} {caught.value.__cause__}"
    assert PASSWORD not in text
    assert fake.received("apply") == 0


async def test_scripts_redis_forgot_are_sent_again(redis_url: str) -> None:
    """SCRIPT FLUSH (or a restart) between two calls: the next call runs its script anyway."""
    store = RedisIdempotencyStore(redis_url, namespace=f"flush-{uuid.uuid4().hex}")
    await store.begin("o-1", CANCEL, "me")
    assert await redis_call(store, "SCRIPT", "FLUSH") == b"OK"
    done = await store.finish("o-1", "me", Outcome(state=State.SUCCEEDED, intent=CANCEL))
    assert done.value == "recorded"
    await store.close()


def test_one_store_serves_loops_one_after_another(redis_url: str) -> None:
    """A store made at import time and used by asyncio.run twice (a CLI, a test suite): each
    loop opens its own connection, and closes it with the store before it ends."""
    store = RedisIdempotencyStore(redis_url, namespace=f"loops-{uuid.uuid4().hex}")

    async def first() -> None:
        await _one_cancel(store)
        await store.close()

    async def second() -> Any:
        try:
            return await store.get("o-1")
        finally:
            await store.close()

    asyncio.run(first())
    book = asyncio.run(second())
    assert book is not None
    assert [o.state for o in book.outcomes.values()] == [State.SUCCEEDED]


async def test_many_calls_of_one_loop_at_once_each_get_their_own_reply(redis_url: str) -> None:
    """200 begins on 200 orders at once over the one connection: each its own decision."""
    store = RedisIdempotencyStore(redis_url, namespace=f"many-{uuid.uuid4().hex}")
    decisions = await asyncio.gather(
        *(store.begin(f"o-{n}", CANCEL, f"owner-{n}") for n in range(200))
    )
    assert all(d.verdict is Verdict.ACQUIRED for d in decisions)
    again = await asyncio.gather(*(store.begin(f"o-{n}", CANCEL, "x") for n in range(200)))
    assert all(d.verdict is Verdict.BUSY for d in again)
    await store.close()
