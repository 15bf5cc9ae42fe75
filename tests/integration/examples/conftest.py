"""Fixtures of the tests of the integration examples under ``docs/examples/``.

The examples are not part of the package: users copy them. They are imported by their module
names (``fastapi_app``, ``arq_worker``, ...) from that folder, as a user's project would.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from rees46_loyalty import CartItem, LoyaltyClient, RetryPolicy
from rees46_loyalty.idempotency import Finish, RedisIdempotencyStore
from rees46_loyalty.testing import FakeRees46
from tests.conftest import PHONE, SHOP_ID, SHOP_SECRET

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"
sys.path.insert(0, str(EXAMPLES))


@pytest.fixture
async def shop() -> AsyncIterator[FakeRees46]:
    """The fake REES46 API with the test suite's credentials, a member and a feed."""
    async with FakeRees46(shop_id=SHOP_ID, shop_secret=SHOP_SECRET) as fake:
        fake.add_member(PHONE, bonuses=1000)
        fake.add_product("A", "Tea")
        fake.add_product("B", "Cup")
        fake.add_promo_code("SALE10", 10)
        yield fake


@pytest.fixture
async def order(shop: FakeRees46) -> str:
    """A confirmed order of 4 x 1000."""
    order_id = f"O-{uuid.uuid4().hex[:8]}"
    async with shop.client(idempotency=None) as client:
        cart = [CartItem(product_id="A", price=Decimal(1000), quantity=4)]
        await client.apply(order_id=order_id, cart_items=cart)
        await client.confirm(order_id=order_id)
    return order_id


@dataclass(frozen=True)
class Answer:
    """An HTTP answer of a web example."""

    status: int
    body: Any
    headers: Mapping[str, str]


@dataclass(frozen=True)
class ShopApi:
    """An HTTP client of a web example, whichever framework serves it, and the app's own
    LoyaltyClient."""

    loyalty: LoyaltyClient
    send: Callable[[str, str, Any], Awaitable[Answer]]

    async def get(self, path: str) -> Answer:
        return await self.send("GET", path, None)

    async def post(self, path: str, json: Any = None) -> Answer:
        return await self.send("POST", path, json)


@asynccontextmanager
async def serving(
    framework: str, shop: FakeRees46, *, shop_secret: str | None = None, **client_options: Any
) -> AsyncIterator[ShopApi]:
    """The example app of *framework* for *shop*, started as its framework starts it."""
    example = importlib.import_module(f"{framework}_app")
    settings = example.Settings(
        shop_id=shop.shop_id, shop_secret=shop_secret or shop.shop_secret, base_url=shop.url
    )
    app = example.create_app(settings, **client_options)
    if framework == "fastapi":
        # httpx's ASGITransport runs no lifespan: the app's own lifespan runs around it.
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://shop") as http,
        ):

            async def send_asgi(method: str, path: str, body: Any) -> Answer:
                answer = await http.request(method, path, json=body)
                return Answer(answer.status_code, answer.json(), answer.headers)

            yield ShopApi(app.state.loyalty, send_asgi)
    else:
        async with TestClient(TestServer(app)) as client:  # runs the app's cleanup_ctx

            async def send_http(method: str, path: str, body: Any) -> Answer:
                async with client.request(method, path, json=body) as answer:
                    return Answer(answer.status, await answer.json(), answer.headers)

            yield ShopApi(app[example.LOYALTY], send_http)


@pytest.fixture(params=["fastapi", "aiohttp"])
async def http(request: pytest.FixtureRequest, shop: FakeRees46) -> AsyncIterator[ShopApi]:
    """Each web example; its client does not retry, so every fault reaches the error mapping."""
    async with serving(request.param, shop, retry=RetryPolicy.disabled()) as api:
        yield api


@pytest.fixture
def worker_env(shop: FakeRees46, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment a worker of the examples reads: the fake API and the test Redis."""
    env = {
        "REES46_SHOP_ID": shop.shop_id,
        "REES46_SHOP_SECRET": shop.shop_secret,
        "REES46_BASE_URL": shop.url,
        "REDIS_URL": redis_url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


class RedeliveryGate:
    """Holds a job's first call between its request and the recording of its result.

    The request has been answered, so the change is applied, but the record in Redis is still
    "in flight": a redelivery of the job that starts now finds the key busy and has to wait.
    ``waiting`` is set when one does; ``open()`` lets the first call record its result.
    """

    def __init__(self) -> None:
        self.holding = asyncio.Event()
        self.waiting = asyncio.Event()
        self._open = asyncio.Event()

    async def first_call_held(self) -> None:
        """Return once the first call is held (bounded, so that a broken test fails, not hangs)."""
        await asyncio.wait_for(self.holding.wait(), timeout=30)

    async def redelivery_waiting(self) -> None:
        """Return once another call found the key busy and waits."""
        await asyncio.wait_for(self.waiting.wait(), timeout=30)

    def open(self) -> None:
        """Let the held call record its result."""
        self._open.set()


@pytest.fixture
def redelivery_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[RedeliveryGate]:
    """Wrap the real Redis store's finish and wait with the gate (Redis itself stays real)."""
    gate = RedeliveryGate()
    finish: Callable[..., Awaitable[Finish]] = RedisIdempotencyStore.finish
    wait: Callable[..., Awaitable[None]] = RedisIdempotencyStore.wait

    async def held_finish(self: RedisIdempotencyStore, *args: Any) -> Finish:
        if not gate.holding.is_set():
            gate.holding.set()
            await gate._open.wait()
        return await finish(self, *args)

    async def noted_wait(self: RedisIdempotencyStore, *args: Any) -> None:
        gate.waiting.set()
        await wait(self, *args)

    monkeypatch.setattr(RedisIdempotencyStore, "finish", held_finish)
    monkeypatch.setattr(RedisIdempotencyStore, "wait", noted_wait)
    yield gate
    gate.open()
