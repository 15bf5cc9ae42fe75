"""transport= under attack: what a function raises or returns must not break the SDK's promises."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    CartItem,
    ConnectError,
    LoyaltyClient,
    OrderStatusError,
    TransportError,
)
from rees46_loyalty.errors import TimeoutError as ApiTimeoutError
from rees46_loyalty.testing import json_response
from tests.conftest import BASE_URL, SHOP_ID, SHOP_SECRET, FakeClock
from tests.payloads import CALCULATION, CHANGE, status_envelope
from tests.unit.helpers import FakeApi

CART = [CartItem(product_id="A", price=Decimal(100), quantity=1)]


def _client(api: Any, clock: FakeClock, **options: Any) -> LoyaltyClient:
    return LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, transport=api, clock=clock, **options
    )


@pytest.mark.parametrize("operation", ["confirm", "details"])
async def test_an_sdk_error_quoting_the_request_is_redacted(
    clock: FakeClock, operation: str
) -> None:
    """A function's TransportError quoting the body, the data or the URL of a GET (as httpx's
    errors quote it) reaches no log record, span or raised error with the secret in it."""

    async def api(request: ApiRequest) -> ApiResponse:
        cause = OSError(f"GET https://api.test/x?shop_secret={request.data['shop_secret']}")
        raise TransportError(
            f"failed: {request.body!r} {dict(request.data)} {cause}", request_sent=True
        ) from cause

    async with _client(api, clock, tracing=True) as client:
        with pytest.raises(TransportError) as caught:
            await getattr(client, operation)(order_id="1001")
    error = caught.value
    assert SHOP_SECRET not in f"{error} {error!r} {error.args}"
    assert error.__cause__ is None or SHOP_SECRET not in f"{error.__cause__!r}"
    assert error.__context__ is None or SHOP_SECRET not in f"{error.__context__!r}"


async def test_an_error_instance_raised_again_carries_no_flag_of_an_earlier_call(
    clock: FakeClock,
) -> None:
    """One ConnectError instance raised by the function for two calls: the flag an earlier
    cancel set on it (previous_outcome_unknown) does not make a later change that was never
    sent an unknown outcome."""
    refused = ConnectError("refused", request_sent=False)
    api = FakeApi()
    api.post("cancel", exception=ApiTimeoutError("slow", request_sent=True))
    api.post("cancel", exception=refused)
    api.post("cancel", exception=refused)
    api.get("details", payload=status_envelope(CALCULATION))
    api.post("change", exception=refused)
    api.post("change", exception=refused)
    api.post("change", exception=refused)
    api.get("details", payload=status_envelope(CALCULATION))
    api.post("change", payload=status_envelope(CHANGE))
    async with _client(api, clock) as client:
        with pytest.raises(ConnectError):
            await client.cancel(order_id="1000")
        with pytest.raises(ConnectError) as caught:
            await client.change(order_id="1001", cart_items=CART)
        # Nothing was sent: the change may be sent again, and it is.
        change = await client.change(order_id="1001", cart_items=CART)
    assert caught.value.previous_outcome_unknown is False
    assert change.order_total_change == Decimal(CHANGE["order_total_change"])


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        (ApiResponse(status="200", headers={}, body=b"{}"), "status"),  # type: ignore[arg-type]
        (ApiResponse(status=200, headers={}, body="{}"), "body"),  # type: ignore[arg-type]
        (ApiResponse(status=200, headers=None, body=b"{}"), "headers"),  # type: ignore[arg-type]
    ],
)
async def test_an_answer_with_fields_of_the_wrong_type_is_named(
    clock: FakeClock, answer: ApiResponse, named: str
) -> None:
    """An ApiResponse whose status, body or headers has the wrong type: a TypeError that names
    the field, not one from deep inside the chain."""

    async def api(request: ApiRequest) -> ApiResponse:
        return answer

    async with _client(api, clock, idempotency=None) as client:
        with pytest.raises(TypeError, match=f"transport= returned an ApiResponse whose {named}"):
            await client.details(order_id="1001")


async def test_a_function_that_is_not_async_is_named(clock: FakeClock) -> None:
    """A plain function (not async): a TypeError that says transport= must be awaitable."""

    def api(request: ApiRequest) -> ApiResponse:
        return json_response(status_envelope(CALCULATION))

    async with _client(api, clock, idempotency=None) as client:
        with pytest.raises(TypeError, match="transport= must be an async function"):
            await client.details(order_id="1001")


async def test_a_terminal_error_raised_by_the_function_is_not_kept(clock: FakeClock) -> None:
    """An OrderStatusError built by the function (no API answer kept) is not recorded as a
    terminal answer: the next identical cancel is sent again."""
    api = FakeApi()
    api.post("cancel", exception=OrderStatusError("Could not cancel order in its current status"))
    api.post("cancel", payload=status_envelope({"order_id": "1001"}))
    async with _client(api, clock) as client:
        with pytest.raises(OrderStatusError):
            await client.cancel(order_id="1001")
        ref = await client.cancel(order_id="1001")
    assert ref.order_id == "1001"
    assert [r.operation.name for r in api.requests] == ["cancel", "cancel"]


async def test_a_cancelled_function_leaves_a_change_unknown(clock: FakeClock) -> None:
    """The caller cancelled while the function runs: it may have sent, so the change is an
    unknown outcome (not released, not resent)."""
    started = asyncio.Event()

    async def api(request: ApiRequest) -> ApiResponse:
        if request.operation.name == "details":
            return json_response(status_envelope(CALCULATION))
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with _client(api, clock) as client:
        task = asyncio.ensure_future(client.change(order_id="1001", cart_items=CART))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        book = await client.idempotency.get(f"{len(SHOP_ID)}:{SHOP_ID}:1001")  # type: ignore[union-attr]
    assert book is not None
    assert [o.state.value for o in book.outcomes.values()] == ["unknown"]


async def test_a_caller_cancelled_during_the_lookup_before_a_change_leaves_nothing(
    clock: FakeClock,
) -> None:
    """Cancelled while the details read before a change waits: nothing was sent, so nothing is
    recorded and the next change is sent."""
    waiting = asyncio.Event()
    sent: list[str] = []

    async def api(request: ApiRequest) -> ApiResponse:
        sent.append(request.operation.name)
        if request.operation.name == "details" and len(sent) == 1:
            waiting.set()
            await asyncio.Event().wait()
        if request.operation.name == "details":
            return json_response(status_envelope(CALCULATION))
        return json_response(status_envelope(CHANGE))

    async with _client(api, clock) as client:
        task = asyncio.ensure_future(client.change(order_id="1001", cart_items=CART))
        await waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        change = await client.change(order_id="1001", cart_items=CART)
    assert change.replayed is False
    assert sent == ["details", "details", "change"]


async def test_an_answer_claiming_a_replay_is_one_attempt_sent(
    clock: FakeClock, span_exporter: InMemorySpanExporter
) -> None:
    """An answer the function built with attempts=0 and idempotency="replayed": the call span
    still says what happened, one attempt and "sent"."""

    async def api(request: ApiRequest) -> ApiResponse:
        if request.operation.name == "details":
            return json_response(status_envelope(CALCULATION))
        answer = json_response(status_envelope(CHANGE))
        return answer.replace(attempts=0, idempotency="replayed")

    async with _client(api, clock, tracing=True) as client:
        change = await client.change(order_id="1001", cart_items=CART)
    assert change.replayed is False
    (call,) = [
        span for span in span_exporter.get_finished_spans() if span.name == "rees46_loyalty change"
    ]
    attributes = dict(call.attributes or {})
    assert attributes["rees46_loyalty.idempotency"] == "sent"
    assert attributes["rees46_loyalty.attempts"] == 1
