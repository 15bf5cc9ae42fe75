"""Creating, configuring and closing a client."""

from __future__ import annotations

import aiohttp
import pytest
from aioresponses import aioresponses as AioResponses  # noqa: N812

from rees46_loyalty import DEFAULT_BASE_URL, LoyaltyClient, RetryPolicy
from tests.conftest import BASE_URL, SHOP_ID, SHOP_SECRET
from tests.payloads import REF, status_envelope
from tests.unit.helpers import count, sent, url


async def test_async_with_closes_the_session_it_created(mocked: AioResponses) -> None:
    """The client's own session is open while in use and closed on exit."""
    mocked.post(url("confirm"), payload=status_envelope(REF))
    async with LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL) as client:
        await client.confirm(order_id="1001")
        session = client._sessions.get()
        open_while_in_use = not session.closed
    assert open_while_in_use
    assert session.closed
    assert client.closed


async def test_a_borrowed_session_is_used_and_left_open(mocked: AioResponses) -> None:
    """A session passed in carries the requests and is not closed by the client."""
    mocked.post(url("confirm"), payload=status_envelope(REF))
    async with aiohttp.ClientSession() as session:
        async with LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL, session=session) as c:
            await c.confirm(order_id="1001")
            assert c._sessions.get() is session
        assert not session.closed
    assert count(mocked) == 1


async def test_a_closed_client_refuses_calls(mocked: AioResponses) -> None:
    """Using the client after close is a clear error, and nothing is sent."""
    client = LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL)
    await client.close()
    await client.close()  # closing twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        await client.confirm(order_id="1001")
    with pytest.raises(RuntimeError, match="closed"):
        client._sessions.get()
    assert count(mocked) == 0


def test_a_client_that_was_never_used_needs_no_event_loop() -> None:
    """Construction creates no session, so a module-level client warns about nothing."""
    client = LoyaltyClient(SHOP_ID, SHOP_SECRET)
    assert client._sessions._session is None
    assert client.retry_policy == RetryPolicy()


async def test_from_env(monkeypatch: pytest.MonkeyPatch, mocked: AioResponses) -> None:
    """from_env reads REES46_SHOP_ID, REES46_SHOP_SECRET and REES46_BASE_URL."""
    monkeypatch.setenv("REES46_SHOP_ID", "env-shop")
    monkeypatch.setenv("REES46_SHOP_SECRET", SHOP_SECRET)
    monkeypatch.setenv("REES46_BASE_URL", BASE_URL)
    mocked.post(url("confirm"), payload=status_envelope(REF))
    async with LoyaltyClient.from_env(timeout=3.0) as client:
        await client.confirm(order_id="1001")
    assert "env-shop" in repr(client)
    assert sent(mocked)[0][1] == url("confirm")


def test_from_env_defaults_the_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without REES46_BASE_URL the public API is used."""
    monkeypatch.setenv("REES46_SHOP_ID", "env-shop")
    monkeypatch.setenv("REES46_SHOP_SECRET", SHOP_SECRET)
    monkeypatch.delenv("REES46_BASE_URL", raising=False)
    assert DEFAULT_BASE_URL in repr(LoyaltyClient.from_env())


def test_from_env_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing variable is named in the error."""
    monkeypatch.delenv("REES46_SHOP_ID", raising=False)
    monkeypatch.setenv("REES46_SHOP_SECRET", SHOP_SECRET)
    with pytest.raises(ValueError, match="REES46_SHOP_ID"):
        LoyaltyClient.from_env()


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"shop_id": ""}, "shop_id"),
        ({"shop_secret": ""}, "shop_secret"),
        ({"timeout": 0}, "timeout"),
        ({"base_url": "ftp://api.test"}, "http"),
        ({"base_url": "api.rees46.ru"}, "http"),
        ({"base_url": "http://api.rees46.ru"}, "plain http"),
        ({"base_url": "https://u:p@api.rees46.ru"}, "credentials"),
        ({"base_url": "https://api.rees46.ru/?x=1"}, "query"),
    ],
)
def test_bad_configuration_fails_at_construction(kwargs: dict[str, object], problem: str) -> None:
    """Wrong settings are refused when the client is created, not on the first call."""
    arguments: dict[str, object] = {"shop_id": SHOP_ID, "shop_secret": SHOP_SECRET, **kwargs}
    with pytest.raises(ValueError, match=problem):
        LoyaltyClient(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:8080", "http://localhost:1234", "http://[::1]:8080"]
)
def test_plain_http_is_allowed_on_loopback(base_url: str) -> None:
    """A local fake server or sidecar needs no TLS."""
    assert base_url in repr(LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=base_url))


def test_plain_http_elsewhere_needs_an_explicit_opt_in() -> None:
    """allow_insecure_http=True accepts a plain-http proxy."""
    client = LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url="http://proxy.internal", allow_insecure_http=True
    )
    assert "proxy.internal" in repr(client)


async def test_a_base_url_with_a_path_prefix_is_kept(mocked: AioResponses) -> None:
    """A shop proxy under /rees46/ keeps its prefix before the API path."""
    mocked.post("https://proxy.test/rees46/loyalty/checkout/confirm", payload=status_envelope(REF))
    async with LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url="https://proxy.test/rees46/") as c:
        await c.confirm(order_id="1001")
    assert count(mocked) == 1
