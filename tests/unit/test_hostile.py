"""A hostile or broken server, proxy or caller: every answer and argument ends in a result or a
documented error, and nothing shows the secret or an unmasked phone.

The answer-size limits are tested over a real socket in tests/integration/test_hostile_answers.py
and the frame locals of tracebacks in test_frame_locals.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    CartItem,
    Hooks,
    LoyaltyClient,
    LoyaltyError,
    MalformedResponseError,
    RetryPolicy,
    ValidationError,
)
from rees46_loyalty._hooks import ResponseRecord
from rees46_loyalty._operations import OPERATIONS
from rees46_loyalty._serialization import fast_decoding
from rees46_loyalty.cli._operator import Output
from rees46_loyalty.middleware import AuthMiddleware
from rees46_loyalty.middleware.errors import decode_response
from rees46_loyalty.middleware.idempotency import record_key
from rees46_loyalty.models import FailedCode, OrderRef
from tests.conftest import BASE_URL, PHONE, SHOP_ID, SHOP_SECRET
from tests.payloads import CALCULATION, status_envelope
from tests.unit.helpers import FakeApi

LINE = CartItem(product_id="A", price=Decimal(1), quantity=1)


def json_escaped(text: str) -> str:
    """*text* with every character written as a JSON \\u escape."""
    return "".join(f"\\u{ord(char):04x}" for char in text)


# -- 2. the decoded text is redacted wherever the SDK shows or stores it ------------------------


async def test_a_json_escaped_echo_of_the_secret_never_shows(api: FakeApi) -> None:
    """The secret echoed with \\u escapes stays out of the error, its payload and the hooks."""
    seen: list[ResponseRecord] = []
    message = f"wrong key {json_escaped(SHOP_SECRET)}"
    body = '{"status": "error", "payload": {"message": "' + message + '"}}'
    api.post("confirm", status=400, body=body, content_type="application/json")
    async with LoyaltyClient(
        SHOP_ID,
        SHOP_SECRET,
        base_url=BASE_URL,
        tracing=True,
        hooks=Hooks(on_response=seen.append),
        transport=api,
    ) as client:
        with pytest.raises(LoyaltyError) as caught:
            await client.confirm(order_id="1")
    shown = f"{caught.value} {caught.value!r} {caught.value.payload!r} {seen!r}"
    assert SHOP_SECRET not in shown
    assert "wrong key ***" in str(caught.value)


async def test_an_escaped_secret_in_a_result_message_is_redacted(api: FakeApi) -> None:
    """A success whose message echoes the secret (partly escaped) gives a redacted message, and
    the idempotency record keeps no secret either."""
    escaped = SHOP_SECRET[:3] + json_escaped(SHOP_SECRET[3:9]) + SHOP_SECRET[9:]
    body = '{"status": "success", "payload": {"order_id": "1", "message": "ok ' + escaped + '"}}'
    api.post("confirm", body=body, content_type="application/json")
    async with LoyaltyClient(SHOP_ID, SHOP_SECRET, base_url=BASE_URL, transport=api) as client:
        result = await client.confirm(order_id="1")
        assert client.idempotency is not None
        book = await client.idempotency.get(record_key(SHOP_ID, "1"))
    assert result.message == "ok ***"
    assert book is not None
    [record] = book.outcomes.values()
    assert record.answer is not None
    assert SHOP_SECRET not in json.loads(record.answer)["payload"]["message"]


async def test_a_secret_in_a_quoted_header_never_shows(
    once_client: LoyaltyClient, api: FakeApi
) -> None:
    """An error that quotes the Content-Type of the answer redacts a secret echoed there."""
    api.post("confirm", status=500, body=b"x", headers={"Content-Type": f"text/{SHOP_SECRET}"})
    with pytest.raises(LoyaltyError) as caught:
        await once_client.confirm(order_id="1")
    assert "a text/*** body" in str(caught.value)
    assert SHOP_SECRET not in f"{caught.value} {caught.value!r}"


_secrets = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=8, max_size=12)


@st.composite
def _escaped(draw: st.DrawFn, secret: str) -> str:
    """*secret* as a JSON encoder (or a hostile server) may write it inside a string."""
    forms = []
    for char in secret:
        escapes = [f"\\u{ord(char):04x}", f"\\u{ord(char):04X}"]
        if char in '"\\':
            escapes.append("\\" + char)
        else:
            escapes.append(char)
        if char == "/":
            escapes.append("\\/")
        forms.append(draw(st.sampled_from(escapes)))
    return "".join(forms)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), secret=_secrets)
def test_any_escaped_form_of_the_secret_is_redacted(data: st.DataObject, secret: str) -> None:
    """Whatever characters of the secret are escaped, and whatever escapes surround it (an
    escaped backslash, Cyrillic), the answer the auth middleware passes on no longer holds it."""
    around = data.draw(st.sampled_from(["", "\\\\", "\\u043f", "\\n", "x"]))
    token = '"' + around + data.draw(_escaped(secret)) + around + '"'
    body = ('{"payload": {"message": ' + token + "}}").encode()

    async def answer(_: ApiRequest) -> ApiResponse:
        return ApiResponse(status=200, headers={}, body=body)

    request = ApiRequest(operation=OPERATIONS["confirm"], data={})
    response = asyncio.run(AuthMiddleware(SHOP_ID, secret)(request, answer))
    assert secret not in json.loads(response.body)["payload"]["message"]


# -- 4. amounts of any magnitude, 5. nesting --------------------------------------------------


def outcome(operation: str, body: bytes, *, fast: bool) -> Any:
    """The result of decoding *body* as a 200 answer of *operation*, or the error class."""
    with fast_decoding(enabled=fast):
        try:
            request = ApiRequest(operation=OPERATIONS[operation], data={})
            return decode_response(request, ApiResponse(status=200, headers={}, body=body)).result
        except LoyaltyError as error:
            return type(error)


def calculation_with(amount: str) -> bytes:
    """An estimate answer whose order_to_pay is the JSON number text *amount*."""
    return (
        b'{"status": "success", "payload": {"order_total": 1, "order_to_pay": '
        + amount.encode()
        + b"}}"
    )


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(
    "amount",
    ["1e999999999", "-1e999999999", "1e15", "1000000000000000", "-1000000000000000.5",
     "0e-999999999", "1e-41", "1.00000000000000000000000000000000000000001", '"1e999999999"'],
)  # fmt: skip
def test_amounts_out_of_range_are_malformed_in_both_paths(amount: str, fast: bool) -> None:
    """Amounts of 10**15 or more, or with more than 40 decimal places, are refused alike."""
    assert outcome("estimate", calculation_with(amount), fast=fast) is MalformedResponseError


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(
    "amount", ["999999999999999.99", "-999999999999999", "5.551115123125783e-17", "0.000", "1E+2"]
)
def test_amounts_in_range_are_read_exactly_in_both_paths(amount: str, fast: bool) -> None:
    """Right up to the limits, and float noise from the server's arithmetic, read exactly."""
    result = outcome("estimate", calculation_with(amount), fast=fast)
    assert result.order_to_pay == Decimal(amount)


def test_a_history_total_as_text_is_held_to_the_same_limits() -> None:
    """history's `total` is documented as a string: an exponent of a billion is refused too."""
    body = b'{"status": "success", "payload": {"orders": [{"id": "1", "total": "1e999999999"}]}}'
    assert outcome("history", body, fast=True) is MalformedResponseError
    assert outcome("history", body, fast=False) is MalformedResponseError


@pytest.mark.parametrize("depth", [100, 1000, 100_000])
def test_deep_nesting_is_a_documented_error_in_both_paths(depth: int) -> None:
    """An object nested deeper than the interpreter's recursion limit never raises
    RecursionError: both paths agree on a result or MalformedResponseError."""
    nested = b'{"a":' * depth + b"1" + b"}" * depth
    body = b'{"status": "success", "payload": {"order_total": 1, "order_to_pay": 1, '
    body += b'"rewarded_stickers": ' + nested + b"}}"
    fast, reference = outcome("estimate", body, fast=True), outcome("estimate", body, fast=False)
    assert fast == reference
    if depth >= 1000:
        assert reference is MalformedResponseError


# -- 6. lone surrogates, 10. phone digits and lengths -----------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ({"method": "details", "order_id": "10\ud80001"}, "order_id"),
        ({"method": "confirm", "order_id": "10\udc00"}, "order_id"),
        ({"method": "cancel", "order_id": "1", "idempotency_key": "k\ud800"}, "idempotency_key"),
        ({"method": "estimate", "payment_type": "card\ud800"}, "payment_type"),
        ({"method": "estimate", "promo_codes": ["OK", "X\udfff"]}, "promo_codes[1]"),
        (
            {
                "method": "estimate",
                "cart": [CartItem(product_id="A\ud800", price=Decimal(1), quantity=1)],
            },
            "product_id",
        ),
        ({"method": "history", "identifier": "7" + "\u0669" * 10}, "identifier"),
        ({"method": "estimate", "identifier": "7" + "\uff19" * 10}, "identifier"),
        ({"method": "estimate", "payment_type": "x" * 1_000_000}, "payment_type"),
        ({"method": "estimate", "stream": "x" * 256}, "stream"),
        ({"method": "estimate", "certificates": ["c" * 256]}, "certificates[0]"),
        ({"method": "confirm", "order_id": "1" * 256}, "order_id"),
        (
            {
                "method": "estimate",
                "cart": [CartItem(product_id="p" * 256, price=Decimal(1), quantity=1)],
            },
            "product_id",
        ),
    ],
)
async def test_unsendable_arguments_are_refused_before_sending(
    client: LoyaltyClient, api: FakeApi, call: dict[str, Any], field: str
) -> None:
    """Lone surrogates, non-ASCII digits in a phone and over-long text: ValidationError naming
    the field, and nothing on the wire."""
    api.post("estimate", payload=status_envelope(CALCULATION), repeat=True)
    api.get("details", payload=status_envelope(CALCULATION), repeat=True)
    kwargs = dict(call)
    method = kwargs.pop("method")
    if method == "estimate":
        kwargs["cart_items"] = kwargs.pop("cart", [LINE])
    with pytest.raises(ValidationError) as caught:
        await getattr(client, method)(**kwargs)
    assert field in caught.value.field
    assert not api.requests


async def test_the_longest_text_accepted_is_sent(client: LoyaltyClient, api: FakeApi) -> None:
    """255 characters is still a valid payment_type."""
    api.post("estimate", payload=status_envelope(CALCULATION))
    await client.estimate(cart_items=[LINE], payment_type="x" * 255)
    assert len(api.requests) == 1


# -- 7. constructor arguments -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"timeout": "10"}, TypeError, "timeout"),
        ({"timeout": math.inf}, ValueError, "timeout"),
        ({"timeout": math.nan}, ValueError, "timeout"),
        ({"timeout": True}, TypeError, "timeout"),
        ({"connect_timeout": None}, TypeError, "connect_timeout"),
        ({"retry": "x"}, TypeError, "retry"),
        ({"idempotency_wait": -5}, ValueError, "idempotency_wait"),
        ({"idempotency_wait": math.inf}, ValueError, "idempotency_wait"),
        ({"idempotency_wait": "5"}, TypeError, "idempotency_wait"),
        ({"middlewares": [1]}, TypeError, "middlewares"),
        ({"middlewares": 1}, TypeError, "middlewares"),
        ({"session": "s"}, TypeError, "session"),
        ({"allow_insecure_http": "yes"}, TypeError, "allow_insecure_http"),
        ({"idempotency": "redis"}, TypeError, "idempotency"),
        ({"hooks": print}, TypeError, "hooks"),
        ({"clock": 1}, TypeError, "clock"),
        ({"base_url": 1}, TypeError, "base_url"),
        ({"max_response_bytes": 0}, ValueError, "max_response_bytes"),
        ({"max_response_bytes": 1.5}, TypeError, "max_response_bytes"),
    ],
)
def test_wrong_constructor_arguments_are_named_at_once(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    """A wrong type is a TypeError, a wrong value a ValueError, naming the argument."""
    with pytest.raises(error, match=name):
        LoyaltyClient(SHOP_ID, SHOP_SECRET, **kwargs)


def test_the_documented_argument_forms_are_accepted() -> None:
    """Ints, floats, a policy, plain-function middlewares and zero waits all construct."""

    async def middleware(request: Any, call_next: Any) -> Any:
        return await call_next(request)

    LoyaltyClient(
        SHOP_ID,
        SHOP_SECRET,
        timeout=3,
        connect_timeout=0.5,
        retry=RetryPolicy.disabled(),
        middlewares=[middleware],
        idempotency_wait=0,
        max_response_bytes=1024,
    )


# -- 8. the CLI escapes control characters; 9. result reprs mask server text -------------------


def test_the_cli_shows_control_characters_escaped() -> None:
    """Terminal escape sequences (C0, C1, DEL) and bidi overrides in server text are escaped."""
    stdout, stderr = io.StringIO(), io.StringIO()
    output = Output(stdout, stderr)
    output.out("A\x1b]0;owned\x07B\x9b2J\u202eC\x7f\tD\n")
    output.err("\r\x1b[2K\n")
    assert stdout.getvalue() == "A\\u001b]0;owned\\u0007B\\u009b2J\\u202eC\\u007f\\u0009D\n"
    assert stderr.getvalue() == "\\u000d\\u001b[2K\n"
    document = json.loads(stdout.getvalue().replace("A\\", '"A\\').replace("D\n", 'D"'))
    assert "\x1b" in document


def test_result_reprs_mask_phones_in_server_text() -> None:
    """OrderRef.message and FailedCode.message are masked in repr, as error messages are."""
    ref = OrderRef(order_id="1", message=f"member {PHONE} confirmed")
    failed = FailedCode(code="X", message=f"code of {PHONE}")
    assert PHONE not in repr(ref)
    assert PHONE not in repr(failed)
    assert "7999***1122" in repr(ref)
    assert ref.message == f"member {PHONE} confirmed"  # the value itself is intact
