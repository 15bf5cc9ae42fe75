"""Every failure the API or a proxy can answer with becomes the documented exception."""

from __future__ import annotations

import json
import pickle
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from rees46_loyalty import (
    APIError,
    AuthenticationError,
    BadRequestError,
    CartItem,
    LoyaltyClient,
    MalformedResponseError,
    NotFoundError,
    OrderStatusError,
    OutcomeUnknownError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from rees46_loyalty import TimeoutError as ApiTimeoutError
from tests.conftest import PHONE
from tests.payloads import CALCULATION, status_envelope, success_envelope
from tests.unit.helpers import FakeApi, count

CART = [CartItem(product_id="A", price=Decimal(100), quantity=1)]
NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def error_body(message: str) -> dict[str, Any]:
    return status_envelope({"message": message}, ok=False)


@pytest.mark.parametrize(
    ("status", "body", "error_type"),
    [
        (400, error_body("charge_bonuses needs a member"), BadRequestError),
        (401, error_body("Wrong API key"), AuthenticationError),
        (403, error_body("Secret key is wrong"), AuthenticationError),
        (404, error_body("Not found"), NotFoundError),
        (405, None, BadRequestError),
        (406, error_body("Format is not JSON"), BadRequestError),
        (429, None, RateLimitError),
        (500, error_body("Try again later"), ServerError),
        (502, NGINX_502, ServerError),
        (503, None, ServerError),
        (504, None, ServerError),
    ],
)
async def test_status_codes_map_to_the_error_tree(
    once_client: LoyaltyClient,
    api: FakeApi,
    status: int,
    body: Any,
    error_type: type[APIError],
) -> None:
    """Each status of the API's table (and a proxy's 502 / 504) raises its class, with context."""
    if isinstance(body, dict):
        api.post("apply", status=status, payload=body)
    else:
        api.post("apply", status=status, body=body or "", content_type="text/html")
    with pytest.raises(error_type) as caught:
        await once_client.apply(order_id="1001", cart_items=CART)
    error = caught.value
    assert type(error) is error_type
    assert error.status == status
    assert error.operation == "apply"
    assert error.order_id == "1001"
    assert error.attempts == 1
    if isinstance(body, dict):
        assert error.message == body["payload"]["message"]
        assert error.payload == body["payload"]
    else:
        assert error.message.startswith(f"HTTP {status} ")
        assert "<html>" not in str(error)


@pytest.mark.parametrize(
    ("operation", "message", "error_type"),
    [
        ("cancel", "Could not cancel order in its current status", OrderStatusError),
        ("confirm", "Could not confirm order in its current status", OrderStatusError),
        ("apply", "Cart contains line items with the same product ID", BadRequestError),
        ("details", "Order ABC not found", NotFoundError),
        ("history", "Loyalty program member is not found", NotFoundError),
    ],
)
@pytest.mark.parametrize("envelope", [status_envelope, success_envelope])
async def test_documented_messages_map_to_their_errors(
    client: LoyaltyClient,
    api: FakeApi,
    operation: str,
    message: str,
    error_type: type[APIError],
    envelope: Any,
) -> None:
    """The documented error messages, in both envelopes, raise their class after one request."""
    answer = envelope({"message": message}, ok=False)
    if operation in {"details", "history"}:
        api.get(operation, payload=answer)
    else:
        api.post(operation, payload=answer)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "cancel": lambda: client.cancel(order_id="ABC"),
        "confirm": lambda: client.confirm(order_id="ABC"),
        "apply": lambda: client.apply(order_id="ABC", cart_items=CART),
        "details": lambda: client.details(order_id="ABC"),
        "history": lambda: client.history(identifier=PHONE),
    }
    with pytest.raises(error_type, match=message.split(maxsplit=1)[0]) as caught:
        await calls[operation]()
    assert caught.value.message == message
    assert caught.value.status == 200
    assert caught.value.attempts == 1
    assert count(api) == 1


async def test_an_error_message_under_a_success_flag_is_an_error(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """checkout.md's apply example: status success, but the payload is only a message."""
    payload = {"message": "Cart contains line items with the same product ID", "identifier": PHONE}
    api.post("apply", payload=status_envelope(payload))
    with pytest.raises(BadRequestError, match="same product ID"):
        await client.apply(order_id="1001", cart_items=CART)


async def test_an_error_status_with_a_terminal_message_is_an_order_status_error(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """A 400 that carries "Could not cancel…" is the terminal OrderStatusError, not a 400."""
    answer = success_envelope({"message": "Could not cancel order in its current status"}, ok=False)
    api.post("cancel", status=400, payload=answer)
    with pytest.raises(OrderStatusError) as caught:
        await client.cancel(order_id="1001")
    assert caught.value.status == 400
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    ("body", "content_type", "problem"),
    [
        ("", "application/json", "empty"),
        ("{not json", "application/json", "not valid JSON"),
        ("[1, 2, 3]", "application/json", "got list"),
        ('"just a string"', "application/json", "got str"),
        ("<html><body>Welcome to nginx!</body></html>", "text/html", "not valid JSON"),
        ('{"payload": {"order_id": "1"}}', "application/json", "neither `success` nor `status`"),
        ('{"status": "success"}', "application/json", "with a payload"),
        ('{"status": "success", "payload": []}', "application/json", "with a payload"),
        ('{"status": "success", "payload": {"identifier": "1"}}', "application/json", "order_id"),
        (
            '{"status": "success", "payload": {"order_id": {"x": 1}}}',
            "application/json",
            "$.order_id",
        ),
        (
            '{"status": "success", "payload": {"order_id": "1", "identifier": [1]}}',
            "application/json",
            "$.identifier",
        ),
        ('{"success": true, "payload": {"order_id": NaN}}', "application/json", "not valid JSON"),
    ],
)
async def test_malformed_answers(
    client: LoyaltyClient, api: FakeApi, body: str, content_type: str, problem: str
) -> None:
    """An answer that is not the documented envelope is a MalformedResponseError, not retried."""
    api.post("cancel", status=200, body=body, content_type=content_type)
    with pytest.raises(MalformedResponseError) as caught:
        await client.cancel(order_id="1001")
    assert problem in str(caught.value)
    assert caught.value.operation == "cancel"
    assert caught.value.status == 200
    assert count(api) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("order_total", "lots"),
        ("order_total", True),
        ("order_total", [1]),
        ("items", "abc"),
        ("items", [{"total": {"a": 1}}]),
        ("promo_codes_failed", [{"message": "no code"}]),
        ("applied_promotions", "33"),
        ("rewarded_stickers", "x"),
        ("referral_program", "21"),
    ],
)
async def test_wrong_field_types_are_malformed(
    client: LoyaltyClient, api: FakeApi, field: str, value: Any
) -> None:
    """A documented field of the wrong type is an error naming its path, never a coercion."""
    api.post("estimate", payload=status_envelope({**CALCULATION, field: value}))
    with pytest.raises(MalformedResponseError, match=rf"\$\.{field}"):
        await client.estimate(cart_items=CART)


async def test_a_required_result_field_that_is_absent_is_malformed(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """cancel's answer without order_id cannot be trusted."""
    api.post("cancel", payload=status_envelope({"identifier": PHONE, "status": "ok"}))
    with pytest.raises(MalformedResponseError, match=r"required field missing @ \$\.order_id"):
        await client.cancel(order_id="1001")


async def test_change_without_order_total_change_is_malformed(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """A change answer without the refund amount: the change happened, its amount is unknown."""
    api.post("change", payload=status_envelope(CALCULATION))
    with pytest.raises(OutcomeUnknownError) as caught:
        await client.change(order_id="1001", cart_items=CART)
    assert isinstance(caught.value.__cause__, MalformedResponseError)
    assert "order_total_change" in str(caught.value.__cause__)
    assert count(api) == 1


async def test_errors_pickle_with_their_context(client: LoyaltyClient, api: FakeApi) -> None:
    """Task queues pickle the exception of a failed job; the context must survive."""
    api.post("cancel", payload=error_body("Could not cancel order in its current status"))
    with pytest.raises(OrderStatusError) as caught:
        await client.cancel(order_id="1001")
    copy = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 - our own object
    assert type(copy) is OrderStatusError
    assert (copy.operation, copy.order_id, copy.status, copy.attempts) == ("cancel", "1001", 200, 1)
    assert str(copy) == str(caught.value)
    assert json.dumps(copy.payload) == json.dumps(caught.value.payload)


async def test_a_deeply_nested_answer_is_malformed(client: LoyaltyClient, api: FakeApi) -> None:
    """JSON nested past the recursion limit is a MalformedResponseError, not a RecursionError."""
    api.post("confirm", body="[" * 100_000, content_type="application/json")
    with pytest.raises(MalformedResponseError, match="not valid JSON"):
        await client.confirm(order_id="1001")


async def test_an_unreadable_change_keeps_its_payload(client: LoyaltyClient, api: FakeApi) -> None:
    """When a change answer fits no model, the payload (and its refund) stays on the errors."""
    payload = {**CALCULATION, "order_total_change": -300, "order_total": "lots"}
    api.post("change", payload=status_envelope(payload))
    with pytest.raises(OutcomeUnknownError) as caught:
        await client.change(order_id="1001", cart_items=CART)
    assert caught.value.payload is not None
    assert caught.value.payload["order_total_change"] == -300
    assert isinstance(caught.value.__cause__, MalformedResponseError)
    assert caught.value.__cause__.payload == caught.value.payload


def test_payload_is_declared_once_for_every_error() -> None:
    """Every LoyaltyError has ``payload``: None unless the error was built from an answer."""
    assert ValidationError("x", field="order_id").payload is None
    assert ApiTimeoutError("x", request_sent=True).payload is None
    assert MalformedResponseError("x", payload={"a": 1}).payload == {"a": 1}
    assert OutcomeUnknownError("x", payload={"b": 2}, idempotency_key="k").payload == {"b": 2}
    error = RateLimitError("x", payload={"c": 3}, retry_after=1.0)
    assert (error.payload, error.retry_after) == ({"c": 3}, 1.0)
