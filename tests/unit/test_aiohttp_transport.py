"""The aiohttp transport: which aiohttp failure becomes which SDK error, and what it proves.

These tests fake aiohttp itself (aioresponses): the other unit tests send through a transport
function that raises the SDK's errors directly, so this is where the translation is checked.
"""

from __future__ import annotations

import asyncio

import aiohttp
import attrs
import pytest
from aioresponses import aioresponses as AioResponses  # noqa: N812

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    ConnectError,
    Handler,
    LoyaltyClient,
    MalformedResponseError,
    TransportError,
)
from rees46_loyalty import TimeoutError as LoyaltyTimeoutError
from tests.conftest import BASE_URL, SHOP_ID, SHOP_SECRET
from tests.payloads import CALCULATION, REF, status_envelope
from tests.unit.helpers import count, sent, url, url_pattern


def refused() -> aiohttp.ClientConnectorError:
    """The error aiohttp raises when nothing listens on the port."""
    key = aiohttp.client_reqrep.ConnectionKey(
        host="api.test",
        port=443,
        is_ssl=True,
        ssl=True,
        proxy=None,
        proxy_auth=None,
        proxy_headers_hash=None,
    )
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


@pytest.mark.parametrize(
    ("failure", "error_type", "request_sent"),
    [
        (refused(), ConnectError, False),
        (aiohttp.ConnectionTimeoutError("Connection timeout to host"), ConnectError, False),
        (aiohttp.SocketTimeoutError("Timeout on reading data"), LoyaltyTimeoutError, True),
        (asyncio.TimeoutError(), LoyaltyTimeoutError, True),
        (aiohttp.ServerDisconnectedError(), TransportError, True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), TransportError, True),
        (aiohttp.ClientPayloadError("Response payload is not completed"), TransportError, True),
    ],
)
async def test_each_aiohttp_failure_becomes_one_sdk_error(
    once_client: LoyaltyClient,
    mocked: AioResponses,
    failure: BaseException,
    error_type: type[TransportError],
    request_sent: bool,
) -> None:
    """No connection proves nothing was sent; anything after it may have been processed."""
    mocked.post(url("confirm"), exception=failure)
    with pytest.raises(TransportError) as caught:
        await once_client.confirm(order_id="1001")
    assert type(caught.value) is error_type
    assert caught.value.request_sent is request_sent
    assert caught.value.maybe_processed is request_sent
    assert caught.value.attempts == 1
    assert isinstance(caught.value.__cause__, type(failure))
    assert count(mocked) == 1


async def test_connect_errors_say_the_request_was_not_sent(
    once_client: LoyaltyClient, mocked: AioResponses
) -> None:
    """A refused connection is a retryable ConnectError with request_sent False."""
    mocked.post(url("confirm"), exception=refused())
    with pytest.raises(ConnectError) as caught:
        await once_client.confirm(order_id="1001")
    assert caught.value.request_sent is False
    assert caught.value.retryable is True
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


async def test_a_middleware_can_add_headers(mocked: AioResponses) -> None:
    """Headers set on the request by a middleware reach the wire, beside the SDK's own."""

    async def tag(request: ApiRequest, call_next: Handler) -> ApiResponse:
        return await call_next(attrs.evolve(request, headers={"X-Shop-Trace": "t-1"}))

    mocked.post(url("confirm"), payload=status_envelope(REF))
    async with LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL, middlewares=[tag]) as c:
        await c.confirm(order_id="1001")
    ((_, calls),) = mocked.requests.items()
    assert calls[0].kwargs["headers"]["X-Shop-Trace"] == "t-1"
    assert calls[0].kwargs["headers"]["User-Agent"].startswith("rees46-loyalty-python/")
    assert calls[0].kwargs["headers"]["Content-Type"] == "application/json"


async def test_a_get_sends_its_data_in_the_query_as_text(
    client: LoyaltyClient, mocked: AioResponses
) -> None:
    """details: the order id and the credentials go in the query string, with no body."""
    mocked.get(url_pattern("details"), payload=status_envelope(CALCULATION))
    await client.details(order_id="1001")
    ((_, _, kwargs),) = sent(mocked)
    assert kwargs["params"] == {"order_id": "1001", "shop_id": SHOP_ID, "shop_secret": SHOP_SECRET}
    assert kwargs["data"] is None


async def test_many_concurrent_calls_reuse_one_session(
    client: LoyaltyClient, mocked: AioResponses
) -> None:
    """Concurrent first calls create one session between them, not one each."""
    mocked.post(url("confirm"), payload=status_envelope(REF), repeat=True)
    results = await asyncio.gather(*(client.confirm(order_id="1001") for _ in range(50)))
    assert len(results) == 50
    assert count(mocked) == 50
    assert client._sessions.get() is client._sessions.get()


async def test_a_redirect_is_not_followed(client: LoyaltyClient, mocked: AioResponses) -> None:
    """A 3xx would carry the secret to another host: it is an error, and nothing follows it."""
    mocked.post(url("confirm"), status=302, headers={"Location": "https://elsewhere.test/"})
    with pytest.raises(MalformedResponseError, match="unexpected HTTP status 302"):
        await client.confirm(order_id="1001")
    assert count(mocked) == 1
