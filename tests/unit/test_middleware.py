"""The middleware chain, each middleware alone with a plain async function as the next step."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from aioresponses import aioresponses as AioResponses  # noqa: N812

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    Handler,
    LoyaltyClient,
    ServerError,
)
from rees46_loyalty._operations import CONFIRM, DETAILS
from rees46_loyalty.middleware import AuthMiddleware, compose, errors_middleware
from rees46_loyalty.middleware.errors import parse_retry_after
from tests.conftest import BASE_URL, SHOP_ID, SHOP_SECRET, FakeClock
from tests.payloads import REF, status_envelope
from tests.unit.helpers import body_of, url


def answer(status: int = 200, body: bytes = b"{}") -> ApiResponse:
    return ApiResponse(status=status, headers={}, body=body)


async def test_compose_runs_the_first_middleware_outermost() -> None:
    """The first listed sees the request first and the response last."""
    trail: list[str] = []

    def middleware(name: str) -> Any:
        async def step(request: ApiRequest, call_next: Handler) -> ApiResponse:
            trail.append(f"{name}>")
            response = await call_next(request)
            trail.append(f"<{name}")
            return response

        return step

    async def transport(request: ApiRequest) -> ApiResponse:
        trail.append("transport")
        return answer()

    chain = compose([middleware("a"), middleware("b")], transport)
    await chain(ApiRequest(operation=CONFIRM, data={}))
    assert trail == ["a>", "b>", "transport", "<b", "<a"]


async def test_auth_puts_credentials_in_the_body_of_a_post_and_the_query_of_a_get() -> None:
    """The data of both kinds of request gains shop_id and shop_secret; secrets lists it."""
    seen: list[ApiRequest] = []

    async def transport(request: ApiRequest) -> ApiResponse:
        seen.append(request)
        return answer()

    auth = AuthMiddleware(SHOP_ID, SHOP_SECRET)
    await auth(ApiRequest(operation=CONFIRM, data={"order_id": "1"}), transport)
    await auth(ApiRequest(operation=DETAILS, data={"order_id": "1"}), transport)
    for request in seen:
        assert request.data == {"order_id": "1", "shop_id": SHOP_ID, "shop_secret": SHOP_SECRET}
        assert request.secrets == (SHOP_SECRET,)
        assert SHOP_SECRET not in repr(request)


async def test_user_middlewares_run_per_attempt_and_never_see_the_secret(
    mocked: AioResponses, clock: FakeClock
) -> None:
    """A user middleware sees each attempt, typed errors, and requests without credentials."""
    seen: list[tuple[int, str]] = []

    async def spy(request: ApiRequest, call_next: Handler) -> ApiResponse:
        assert "shop_secret" not in request.data
        try:
            response = await call_next(request)
        except ServerError as error:
            seen.append((request.attempt, type(error).__name__))
            raise
        seen.append((request.attempt, str(response.status)))
        return response

    mocked.post(url("confirm"), status=500)
    mocked.post(url("confirm"), payload=status_envelope(REF))
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, clock=clock, middlewares=[spy]
    ) as client:
        await client.confirm(order_id="1001")
    assert seen == [(1, "ServerError"), (2, "200")]


async def test_a_middleware_can_add_headers(mocked: AioResponses) -> None:
    """Headers set on the request by a middleware reach the wire."""

    async def tag(request: ApiRequest, call_next: Handler) -> ApiResponse:
        return await call_next(attrs.evolve(request, headers={"X-Shop-Trace": "t-1"}))

    mocked.post(url("confirm"), payload=status_envelope(REF))
    async with LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL, middlewares=[tag]) as c:
        await c.confirm(order_id="1001")
    ((_, calls),) = mocked.requests.items()
    assert calls[0].kwargs["headers"]["X-Shop-Trace"] == "t-1"
    assert calls[0].kwargs["headers"]["User-Agent"].startswith("rees46-loyalty-python/")


async def test_errors_middleware_sets_the_result() -> None:
    """A success envelope becomes response.result, typed as the operation's result model."""

    async def transport(request: ApiRequest) -> ApiResponse:
        return answer(body=b'{"success": true, "payload": {"order_id": "7"}}')

    response = await errors_middleware(ApiRequest(operation=CONFIRM, data={}), transport)
    assert response.result.order_id == "7"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("5", 5.0),
        ("0.25", 0.25),
        ("-1", None),
        ("inf", None),
        ("nan", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 07:28:00", 30.0),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Seconds, HTTP dates (30 s after 'now'), dates in the past, and nonsense."""
    now = 1445412450.0  # 2015-10-21 07:27:30 UTC
    assert parse_retry_after(header, now=now) == expected


async def test_a_middleware_that_changes_the_data_changes_what_is_sent(
    mocked: AioResponses,
) -> None:
    """The body is encoded once, but replacing `data` drops it: the change reaches the wire."""

    async def stream(request: ApiRequest, call_next: Handler) -> ApiResponse:
        return await call_next(request.replace(data={**request.data, "stream": "pos"}))

    mocked.post(url("confirm"), payload=status_envelope(REF))
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, middlewares=[stream], idempotency=None
    ) as client:
        await client.confirm(order_id="1001")
    assert body_of(mocked) == {
        "order_id": "1001",
        "stream": "pos",
        "shop_id": SHOP_ID,
        "shop_secret": SHOP_SECRET,
    }
