"""The middleware chain, each middleware alone with a plain async function as the next step."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    Handler,
    LoyaltyClient,
    OutcomeUnknownError,
    RetryPolicy,
    ServerError,
    TransportError,
)
from rees46_loyalty._http import SendRecord
from rees46_loyalty._operations import CHANGE, CONFIRM, DETAILS
from rees46_loyalty.idempotency import MemoryIdempotencyStore, State
from rees46_loyalty.middleware import (
    AuthMiddleware,
    RetryMiddleware,
    compose,
    errors_middleware,
)
from rees46_loyalty.middleware.errors import parse_retry_after
from rees46_loyalty.middleware.idempotency import IdempotencyMiddleware, record_key
from tests.conftest import BASE_URL, SHOP_ID, SHOP_SECRET, FakeClock
from tests.payloads import REF, status_envelope
from tests.unit.helpers import FakeApi, body_of


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
    api: FakeApi, clock: FakeClock
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

    api.post("confirm", status=500)
    api.post("confirm", payload=status_envelope(REF))
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, clock=clock, middlewares=[spy], transport=api
    ) as client:
        await client.confirm(order_id="1001")
    assert seen == [(1, "ServerError"), (2, "200")]


async def test_a_middleware_can_add_headers(api: FakeApi) -> None:
    """Headers set on the request by a middleware reach the transport."""

    async def tag(request: ApiRequest, call_next: Handler) -> ApiResponse:
        return await call_next(attrs.evolve(request, headers={"X-Shop-Trace": "t-1"}))

    api.post("confirm", payload=status_envelope(REF))
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, middlewares=[tag], transport=api
    ) as c:
        await c.confirm(order_id="1001")
    assert api.requests[0].headers == {"X-Shop-Trace": "t-1"}


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


async def test_a_middleware_that_changes_the_data_changes_what_is_sent(api: FakeApi) -> None:
    """The body is encoded once, but replacing `data` drops it: the change reaches the wire."""

    async def stream(request: ApiRequest, call_next: Handler) -> ApiResponse:
        return await call_next(request.replace(data={**request.data, "stream": "pos"}))

    api.post("confirm", payload=status_envelope(REF))
    async with LoyaltyClient(
        SHOP_ID,
        SHOP_SECRET,
        base_url=BASE_URL,
        middlewares=[stream],
        idempotency=None,
        transport=api,
    ) as client:
        await client.confirm(order_id="1001")
    assert body_of(api) == {
        "order_id": "1001",
        "stream": "pos",
        "shop_id": SHOP_ID,
        "shop_secret": SHOP_SECRET,
    }


async def test_the_retry_middleware_alone_resends_a_503_and_counts_the_attempts() -> None:
    """Over a plain function: a 503, then an answer; the answer says it took 2 attempts."""
    clock = FakeClock()
    calls: list[int] = []

    async def flaky(request: ApiRequest) -> ApiResponse:
        calls.append(request.attempt)
        if request.attempt == 1:
            raise ServerError("unavailable", status=503, operation="confirm", attempts=1)
        return answer()

    retry = RetryMiddleware(RetryPolicy(), clock=clock, jitter=lambda: 0.5)
    response = await retry(ApiRequest(operation=CONFIRM, data={}), flaky)
    assert calls == [1, 2]
    assert response.attempts == 2
    assert len(clock.sleeps) == 1


async def test_the_retry_middleware_alone_never_resends_a_change_that_may_have_landed() -> None:
    """Over a plain function: a change whose connection broke after sending is not resent,
    it is an unknown outcome, and the call's send record says so."""
    calls: list[int] = []
    record = SendRecord()

    async def broken(request: ApiRequest) -> ApiResponse:
        calls.append(request.attempt)
        raise TransportError("the connection failed", request_sent=True, attempts=1)

    retry = RetryMiddleware(RetryPolicy(), clock=FakeClock())
    request = ApiRequest(operation=CHANGE, data={}, order_id="1", send_record=record)
    with pytest.raises(OutcomeUnknownError):
        await retry(request, broken)
    assert calls == [1]
    assert record.maybe_processed is True


def _idempotency(clock: FakeClock) -> IdempotencyMiddleware:
    store = MemoryIdempotencyStore(clock=clock)
    return IdempotencyMiddleware(store, shop_id=SHOP_ID, clock=clock, wait_timeout=1.0)


async def test_the_idempotency_middleware_alone_replays_a_finished_call() -> None:
    """Over a plain function: a confirm is sent once (the request says "sent"); its repeat is
    answered from the store, with no attempt, and says so."""
    calls: list[ApiRequest] = []

    async def confirm(request: ApiRequest) -> ApiResponse:
        calls.append(request)
        return answer(body=b'{"status": "success", "payload": {"order_id": "1"}}')

    layer = _idempotency(FakeClock())
    request = ApiRequest(operation=CONFIRM, data={"order_id": "1"}, order_id="1")
    first = await layer(request, confirm)
    again = await layer(request, confirm)
    assert len(calls) == 1
    assert calls[0].idempotency == "sent"
    assert (first.idempotency, first.attempts) == (None, 1)  # sent: the answer as it came
    assert (again.idempotency, again.attempts) == ("replayed", 0)
    assert again.result.order_id == "1"


@pytest.mark.parametrize("written", [False, True])
async def test_the_idempotency_middleware_alone_knows_what_a_cancelled_call_wrote(
    written: bool,
) -> None:
    """Over a plain function cancelled mid-call: an attempt that had started writing leaves an
    unknown outcome; one that had not leaves nothing, and the order is free."""
    clock = FakeClock()
    layer = _idempotency(clock)
    started = asyncio.Event()

    async def hang(request: ApiRequest) -> ApiResponse:
        assert request.send_record is not None
        request.send_record.writing = written  # what the transport says of its attempt
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    request = ApiRequest(operation=CONFIRM, data={"order_id": "1"}, order_id="1")
    call = asyncio.ensure_future(layer(request, hang))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    book = await layer.store.get(record_key(SHOP_ID, "1"))
    if written:
        assert book is not None
        assert book.lease is None
        assert [o.state for o in book.outcomes.values()] == [State.UNKNOWN]
    else:
        assert book is None or book.empty
