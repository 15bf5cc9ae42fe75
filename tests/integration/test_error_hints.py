"""Errors that say what to do: a wrong base URL, an order in the wrong state, an amount of the
wrong kind, an unreachable Redis, a busy port for serve-fake."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from rees46_loyalty import (
    CartItem,
    IdempotencyError,
    LoyaltyClient,
    NotAnApiError,
    NotFoundError,
    OrderStatusError,
    RetryPolicy,
    ValidationError,
)
from rees46_loyalty.cli import main
from rees46_loyalty.idempotency import RedisIdempotencyStore
from rees46_loyalty.testing import FakeRees46

pytestmark = pytest.mark.integration

CART = [CartItem(product_id="A", price=Decimal(1000), quantity=4)]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something is listening on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("path", ["/api", "/loyalty"])
async def test_a_base_url_that_does_not_serve_the_api_is_named(fake: FakeRees46, path: str) -> None:
    """A real server's 404 page (not the API's JSON) is NotAnApiError, never NotFoundError, and
    says which base URL to check; it is not retried."""
    base_url = fake.url + path
    async with LoyaltyClient(fake.shop_id, fake.shop_secret, base_url=base_url) as client:
        with pytest.raises(NotAnApiError) as caught:
            await client.details(order_id="1001")
    error = caught.value
    assert not isinstance(error, NotFoundError)
    assert error.status == 404
    assert error.attempts == 1
    assert "not an answer of the REES46 API" in str(error)
    assert repr(base_url) in str(error)
    assert "REES46_BASE_URL" in str(error)


async def test_an_unknown_order_is_still_not_found(fake: FakeRees46) -> None:
    """The API's own "not found" stays NotFoundError: only foreign answers change class."""
    async with fake.client(idempotency=None) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.details(order_id="nope")
    assert not isinstance(caught.value, NotAnApiError)


async def test_a_change_of_an_unconfirmed_order_names_the_likely_cause(
    sdk: LoyaltyClient,
) -> None:
    """The API's message is kept; str() adds that change needs a confirmed order."""
    await sdk.apply(order_id="H-1", cart_items=CART)
    with pytest.raises(OrderStatusError) as caught:
        await sdk.change(order_id="H-1", cart_items=CART[:1])
    error = caught.value
    assert error.message.startswith("Could not change order in its current status")
    assert "change needs a confirmed order" in str(error)
    assert str(error).startswith(error.message)


async def test_a_second_cancel_says_the_order_is_probably_cancelled(sdk: LoyaltyClient) -> None:
    """Cancelling twice: the hint points to the order being cancelled already and history()."""
    await sdk.apply(order_id="H-2", cart_items=CART)
    await sdk.cancel(order_id="H-2")
    with pytest.raises(OrderStatusError) as caught:
        await sdk.cancel(order_id="H-2")
    assert "cancelled already" in str(caught.value)
    assert "history()" in str(caught.value)
    assert caught.value.hint is not None
    assert caught.value.hint in str(caught.value)


# What users write by mistake (hence the type: ignore: mypy would catch these first).
FROM_A_FLOAT = Decimal(99.90)  # noqa: RUF032 - the mistake under test
MISTAKES: list[tuple[dict[str, Any], str]] = [
    ({"price": Decimal(10), "quantity": 2.5}, "write Decimal('2.5')"),
    ({"price": 99.9, "quantity": 1}, "write Decimal('99.9')"),
    (
        {"price": FROM_A_FLOAT, "quantity": 1},
        "the float 99.9, so it was most likely made with Decimal(99.9): write Decimal('99.9')",
    ),
    ({"price": "99.90", "quantity": 1}, "write Decimal('99.90')"),
]


@pytest.mark.parametrize(("amounts", "advice"), MISTAKES)
async def test_amounts_of_the_wrong_kind_say_what_to_write(
    sdk: LoyaltyClient, amounts: dict[str, Any], advice: str
) -> None:
    """A float, a Decimal made from a float, a string: the error says what to write."""
    with pytest.raises(ValidationError) as caught:
        await sdk.estimate(cart_items=[CartItem(product_id="A", **amounts)])
    assert advice in str(caught.value)


async def test_an_unreachable_redis_store_is_named_by_host_and_port(fake: FakeRees46) -> None:
    """The store's Redis is down: IdempotencyError naming its host and port; nothing sent."""
    port = closed_port()
    store = RedisIdempotencyStore(f"redis://127.0.0.1:{port}/0")
    async with fake.client(idempotency=store, retry=RetryPolicy.disabled()) as client:
        with pytest.raises(IdempotencyError) as caught:
            await client.apply(order_id="H-3", cart_items=CART)
    await store.close()
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "Redis" in str(caught.value)
    assert fake.received("apply") == 0


def test_serve_fake_on_a_busy_port_says_so_in_one_line(busy_port: int) -> None:
    """serve-fake on a port in use: exit 2 and one line naming the port and --port."""
    out, err = io.StringIO(), io.StringIO()
    code = main(["serve-fake", "--port", str(busy_port)], out, err=err)
    assert code == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    assert f"port {busy_port} is already in use" in lines[0]
    assert "--port" in lines[0]
    assert "Traceback" not in err.getvalue() + out.getvalue()
