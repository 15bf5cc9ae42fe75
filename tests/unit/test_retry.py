"""Which failures are retried, how many requests go out, and how long the client waits.

Every test counts the requests sent; none sleeps (the client runs on a FakeClock). The client
sends through a transport function (``api``), which fails as the aiohttp transport does: with
the SDK's transport errors (test_aiohttp_transport.py shows which aiohttp failure becomes which).
The retry middleware is also built alone, over a plain function.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import pytest

from rees46_loyalty import (
    BadRequestError,
    CartItem,
    ConnectError,
    LoyaltyClient,
    MalformedResponseError,
    OrderStatusError,
    OutcomeUnknownError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TransportError,
)
from rees46_loyalty import (
    TimeoutError as LoyaltyTimeoutError,
)
from tests.conftest import BASE_URL, PHONE, SHOP_ID, SHOP_SECRET, FakeClock
from tests.payloads import CALCULATION, CHANGE, REF, status_envelope
from tests.unit.helpers import FakeApi, count

CART = [CartItem(product_id="A", price=Decimal(100), quantity=1)]
CANNOT_CANCEL = status_envelope(
    {"message": "Could not cancel order in its current status"}, ok=False
)
CANNOT_CONFIRM = status_envelope(
    {"message": "Could not confirm order in its current status"}, ok=False
)


def refused() -> ConnectError:
    """What the transport raises when nothing listens on the port."""
    return ConnectError("could not connect: ConnectionRefusedError", request_sent=False)


# What each kind of failure looks like to the retry middleware: keyword arguments of an answer.
NOT_SENT: dict[str, dict[str, Any]] = {
    "connection refused": {"exception": refused()},
    "connect timeout": {
        "exception": ConnectError("could not connect: ConnectionTimeoutError", request_sent=False)
    },
    "429": {"status": 429, "payload": status_envelope({"message": "Too many requests"}, ok=False)},
    "503": {"status": 503, "body": "maintenance"},
}
UNKNOWN: dict[str, dict[str, Any]] = {
    "read timeout": {"exception": LoyaltyTimeoutError("no answer in time", request_sent=True)},
    "server disconnected": {
        "exception": TransportError("the connection failed", request_sent=True)
    },
    "500": {"status": 500, "payload": status_envelope({"message": "Try again later"}, ok=False)},
    "502": {"status": 502, "body": "<html>502 Bad Gateway</html>", "content_type": "text/html"},
    "504": {"status": 504, "body": ""},
}
SAFE_CALLS: dict[str, tuple[str, Callable[[LoyaltyClient], Awaitable[object]], Any]] = {
    "estimate": ("post", lambda c: c.estimate(cart_items=CART), CALCULATION),
    "apply": ("post", lambda c: c.apply(order_id="1001", cart_items=CART), CALCULATION),
    "confirm": ("post", lambda c: c.confirm(order_id="1001"), REF),
    "cancel": ("post", lambda c: c.cancel(order_id="1001"), REF),
    "details": ("get", lambda c: c.details(order_id="1001"), CALCULATION),
    "history": ("get", lambda c: c.history(identifier=PHONE), {"orders": []}),
}


def mock(api: FakeApi, method: str, operation: str, **answer: Any) -> None:
    getattr(api, method)(operation, **answer)


@pytest.mark.parametrize("failure", [*NOT_SENT, *UNKNOWN])
@pytest.mark.parametrize("operation", list(SAFE_CALLS))
async def test_safe_operations_retry_every_transient_failure(
    client: LoyaltyClient, api: FakeApi, operation: str, failure: str
) -> None:
    """estimate / apply / confirm / cancel / details / history: fail, fail, succeed = 3 requests."""
    method, call, payload = SAFE_CALLS[operation]
    answer = {**NOT_SENT, **UNKNOWN}[failure]
    mock(api, method, operation, **answer)
    mock(api, method, operation, **answer)
    mock(api, method, operation, payload=status_envelope(payload))
    result = await call(client)
    assert result is not None
    assert count(api) == 3


@pytest.mark.parametrize("failure", list(UNKNOWN))
async def test_safe_operations_give_up_after_max_attempts(
    client: LoyaltyClient, api: FakeApi, failure: str
) -> None:
    """Three failures in a row: the last error is raised, after exactly 3 requests."""
    api.post("confirm", repeat=True, **UNKNOWN[failure])
    with pytest.raises((TransportError, ServerError)) as caught:
        await client.confirm(order_id="1001")
    assert caught.value.attempts == 3
    assert count(api) == 3


@pytest.mark.parametrize("failure", list(NOT_SENT))
async def test_change_is_resent_when_it_provably_never_arrived(
    client: LoyaltyClient, api: FakeApi, failure: str
) -> None:
    """Refused, connect timeout, 429 and 503 prove nothing was processed: change is resent."""
    api.post("change", **NOT_SENT[failure])
    api.post("change", payload=status_envelope(CHANGE))
    result = await client.change(order_id="1001", cart_items=CART)
    assert result.order_total_change == Decimal(-300)
    assert count(api) == 2


@pytest.mark.parametrize("failure", list(UNKNOWN))
async def test_change_is_never_resent_when_its_outcome_is_unknown(
    client: LoyaltyClient, api: FakeApi, failure: str
) -> None:
    """After a failure that may hide a processed change: OutcomeUnknownError after 1 request."""
    api.post("change", **UNKNOWN[failure])
    api.post("change", payload=status_envelope(CHANGE))
    with pytest.raises(OutcomeUnknownError) as caught:
        await client.change(order_id="1001", cart_items=CART)
    error = caught.value
    assert count(api) == 1
    assert error.attempts == 1
    assert error.operation == "change"
    assert error.order_id == "1001"
    assert error.retryable is False
    assert "await client.reconcile(order_id=" in str(error)
    assert isinstance(error.__cause__, TransportError | ServerError)


async def test_change_after_a_refused_connection_then_a_timeout_is_unknown(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """The second attempt's outcome is what counts: refused, then read timeout = unknown."""
    api.post("change", exception=refused())
    api.post("change", exception=LoyaltyTimeoutError("read", request_sent=True))
    with pytest.raises(OutcomeUnknownError) as caught:
        await client.change(order_id="1001", cart_items=CART)
    assert caught.value.attempts == 2
    assert count(api) == 2


async def test_change_gives_up_on_503_after_max_attempts_with_the_503(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """503 three times is still known-not-processed: the ServerError, not an unknown outcome."""
    api.post("change", status=503, repeat=True)
    with pytest.raises(ServerError) as caught:
        await client.change(order_id="1001", cart_items=CART)
    assert caught.value.status == 503
    assert count(api) == 3


@pytest.mark.parametrize(
    ("operation", "answer", "call"),
    [
        ("cancel", CANNOT_CANCEL, lambda c: c.cancel(order_id="1001")),
        ("confirm", CANNOT_CONFIRM, lambda c: c.confirm(order_id="1001")),
    ],
)
async def test_order_status_errors_are_never_retried(
    client: LoyaltyClient, api: FakeApi, operation: str, answer: Any, call: Any
) -> None:
    """ "Could not cancel/confirm order in its current status" ends the call after one request."""
    api.post(operation, payload=answer, repeat=True)
    with pytest.raises(OrderStatusError) as caught:
        await call(client)
    assert count(api) == 1
    assert caught.value.previous_outcome_unknown is False


async def test_cancel_flags_a_terminal_error_after_a_lost_answer(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """A cancel whose first answer was lost fails on the retry; the error says why."""
    api.post("cancel", exception=TransportError("disconnected", request_sent=True))
    api.post("cancel", payload=CANNOT_CANCEL)
    with pytest.raises(OrderStatusError) as caught:
        await client.cancel(order_id="1001")
    assert caught.value.previous_outcome_unknown is True
    assert "previous_outcome_unknown=True" in str(caught.value)
    assert count(api) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 406, 409, 422])
async def test_client_errors_are_never_retried(
    client: LoyaltyClient, api: FakeApi, status: int
) -> None:
    """4xx other than 429 are the caller's to fix: one request."""
    api.post("estimate", status=status, repeat=True)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the class is checked elsewhere
        await client.estimate(cart_items=CART)
    assert caught.value.status == status  # type: ignore[attr-defined]
    assert count(api) == 1


async def test_malformed_answers_are_not_retried(client: LoyaltyClient, api: FakeApi) -> None:
    """A 200 with a body that is not JSON is not a transient failure."""
    api.post("estimate", body="<html>", content_type="text/html", repeat=True)
    with pytest.raises(MalformedResponseError):
        await client.estimate(cart_items=CART)
    assert count(api) == 1


async def test_retry_after_in_seconds_is_honoured(
    client: LoyaltyClient, api: FakeApi, clock: FakeClock
) -> None:
    """429 with Retry-After: 7 waits exactly 7 s before the one retry."""
    api.post("confirm", status=429, headers={"Retry-After": "7"})
    api.post("confirm", payload=status_envelope(REF))
    await client.confirm(order_id="1001")
    assert clock.sleeps == [7.0]
    assert count(api) == 2


async def test_retry_after_as_an_http_date_is_honoured(
    client: LoyaltyClient, api: FakeApi, clock: FakeClock
) -> None:
    """503 with Retry-After as an HTTP date waits until that date."""
    when = datetime.now(timezone.utc) + timedelta(seconds=20)
    api.get(
        "details",
        status=503,
        headers={"Retry-After": format_datetime(when, usegmt=True)},
    )
    api.get("details", payload=status_envelope(CALCULATION))
    await client.details(order_id="1001")
    (waited,) = clock.sleeps
    assert 18.0 <= waited <= 20.0  # HTTP dates have whole seconds
    assert count(api) == 2


async def test_a_retry_after_beyond_the_cap_is_not_waited_for(
    client: LoyaltyClient, api: FakeApi, clock: FakeClock
) -> None:
    """Retry-After: 3600 is longer than max_retry_after: raise at once with retry_after set."""
    api.post("confirm", status=429, headers={"Retry-After": "3600"}, repeat=True)
    with pytest.raises(RateLimitError) as caught:
        await client.confirm(order_id="1001")
    assert caught.value.retry_after == 3600.0
    assert caught.value.retryable is True
    assert clock.sleeps == []
    assert count(api) == 1


async def test_retry_after_can_be_ignored(api: FakeApi, clock: FakeClock) -> None:
    """respect_retry_after=False uses the backoff instead of the server's wait."""
    policy = RetryPolicy(respect_retry_after=False, initial_delay=0.5)
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, retry=policy, clock=clock, transport=api
    ) as c:
        api.post("confirm", status=429, headers={"Retry-After": "3600"})
        api.post("confirm", payload=status_envelope(REF))
        await c.confirm(order_id="1001")
    (waited,) = clock.sleeps
    assert 0.0 <= waited <= 0.5


async def test_backoff_is_exponential_with_full_jitter_and_capped(
    api: FakeApi, clock: FakeClock
) -> None:
    """Waits stay within [0, min(max_delay, initial * 2**(n-1))] and grow with n."""
    policy = RetryPolicy(max_attempts=6, initial_delay=1.0, max_delay=4.0, deadline=None)
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, retry=policy, clock=clock, transport=api
    ) as c:
        api.post("confirm", status=500, repeat=True)
        with pytest.raises(ServerError):
            await c.confirm(order_id="1001")
    assert count(api) == 6
    ceilings = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(clock.sleeps) == 5
    assert all(0.0 <= wait <= cap for wait, cap in zip(clock.sleeps, ceilings, strict=True))


def test_backoff_formula() -> None:
    """RetryPolicy.backoff is the jitter share of the capped exponential ceiling."""
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0)
    assert [policy.backoff(n, 1.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.backoff(3, 0.25) == 0.5
    assert policy.backoff(1, 0.0) == 0.0


async def test_the_deadline_bounds_all_attempts(api: FakeApi, clock: FakeClock) -> None:
    """No retry starts when its wait would end past the call's deadline."""
    policy = RetryPolicy(max_attempts=10, deadline=10.0, max_retry_after=60.0)
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, retry=policy, clock=clock, transport=api
    ) as c:
        api.post("confirm", status=503, headers={"Retry-After": "4"}, repeat=True)
        with pytest.raises(ServerError):
            await c.confirm(order_id="1001")
    assert clock.sleeps == [4.0, 4.0]  # a third wait would end at 12 s > 10 s
    assert count(api) == 3


async def test_a_call_past_its_deadline_sends_nothing(api: FakeApi, clock: FakeClock) -> None:
    """An attempt that would start after the deadline raises TimeoutError, request_sent False."""

    async def slow(request: Any, call_next: Any) -> Any:
        clock.advance(31.0)  # the attempt before this one took all the time there was
        return await call_next(request)

    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, clock=clock, middlewares=[slow], transport=api
    ) as c:
        with pytest.raises(LoyaltyTimeoutError) as caught:
            await c.confirm(order_id="1001")
    assert caught.value.request_sent is False
    assert count(api) == 0


async def test_disabled_policy_sends_once(once_client: LoyaltyClient, api: FakeApi) -> None:
    """RetryPolicy.disabled(): one request whatever happens."""
    api.post("estimate", status=503, repeat=True)
    with pytest.raises(ServerError):
        await once_client.estimate(cart_items=CART)
    assert count(api) == 1


async def test_the_retry_budget_stops_retries_during_an_outage(
    api: FakeApi, clock: FakeClock
) -> None:
    """With 10 tokens (2 retries' worth), the third failing call is sent only once."""
    policy = RetryPolicy(max_attempts=2, retry_budget=10)
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, retry=policy, clock=clock, transport=api
    ) as c:
        api.post("confirm", status=500, repeat=True)
        for _ in range(3):
            with pytest.raises(ServerError):
                await c.confirm(order_id="1001")
        budget = c._chain.retry.budget
        assert budget is not None
        assert budget.tokens == 0
    assert count(api) == 2 + 2 + 1


async def test_successes_refill_the_retry_budget(api: FakeApi, clock: FakeClock) -> None:
    """A first-time success gives a token back; a success after a retry gives its cost back."""
    policy = RetryPolicy(max_attempts=2, retry_budget=10)
    async with LoyaltyClient(
        SHOP_ID,
        SHOP_SECRET,
        base_url=BASE_URL,
        retry=policy,
        clock=clock,
        idempotency=None,
        transport=api,
    ) as c:
        budget = c._chain.retry.budget
        assert budget is not None
        api.post("confirm", status=500)
        api.post("confirm", payload=status_envelope(REF))
        await c.confirm(order_id="1001")
        assert budget.tokens == 10
        budget.tokens = 3
        api.post("confirm", payload=status_envelope(REF))
        await c.confirm(order_id="1001")
        assert budget.tokens == 4


async def test_a_timeout_costs_more_of_the_budget(api: FakeApi, clock: FakeClock) -> None:
    """Retrying after a timeout takes 10 tokens, after another failure 5."""
    policy = RetryPolicy(max_attempts=2, retry_budget=100)
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, retry=policy, clock=clock, transport=api
    ) as c:
        budget = c._chain.retry.budget
        assert budget is not None
        api.post("confirm", exception=LoyaltyTimeoutError("read", request_sent=True), repeat=True)
        with pytest.raises(LoyaltyTimeoutError):
            await c.confirm(order_id="1001")
        assert budget.tokens == 90


async def test_cancellation_is_never_swallowed(client: LoyaltyClient, api: FakeApi) -> None:
    """A caller's cancellation passes through the retry loop untouched."""
    api.post("confirm", exception=asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await client.confirm(order_id="1001")
    assert count(api) == 1


def test_retry_policy_rejects_nonsense() -> None:
    """Impossible policies fail at construction."""
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="deadline"):
        RetryPolicy(deadline=0)
    with pytest.raises(ValueError, match="retry_budget"):
        RetryPolicy(retry_budget=-1)
    assert RetryPolicy.disabled().max_attempts == 1


async def test_bad_request_is_raised_as_is(client: LoyaltyClient, api: FakeApi) -> None:
    """A change refused with 400 was not applied: BadRequestError, not an unknown outcome."""
    api.post("change", status=400, payload=status_envelope({"message": "bad"}, ok=False))
    with pytest.raises(BadRequestError):
        await client.change(order_id="1001", cart_items=CART)
    assert count(api) == 1


async def test_a_redirect_on_change_is_not_an_unknown_outcome(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """A 3xx means the API never processed the change (a wrong base_url): say so plainly."""
    api.post("change", status=301, headers={"Location": "https://elsewhere.test/"})
    with pytest.raises(MalformedResponseError, match="301"):
        await client.change(order_id="1001", cart_items=CART)
    assert count(api) == 1


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (501, False), (505, False)]
)
async def test_only_transient_server_errors_say_they_are_retryable(
    once_client: LoyaltyClient, api: FakeApi, status: int, retryable: bool
) -> None:
    """A 501 will answer the same tomorrow: retryable is False, and it is not retried."""
    api.post("confirm", status=status, repeat=True)
    with pytest.raises(ServerError) as caught:
        await once_client.confirm(order_id="1001")
    assert caught.value.retryable is retryable


async def test_a_final_transient_failure_is_logged_as_a_warning(
    client: LoyaltyClient, api: FakeApi, log_records: list[Any]
) -> None:
    """Giving up after retries writes one WARNING with the same extra fields as the others."""
    api.post("confirm", status=502, repeat=True)
    with pytest.raises(ServerError):
        await client.confirm(order_id="1001")
    (warning,) = [r for r in log_records if r.levelname == "WARNING"]
    assert (warning.operation, warning.order_id, warning.attempt, warning.status) == (
        "confirm",
        "1001",
        3,
        502,
    )
    assert warning.error == "ServerError"
