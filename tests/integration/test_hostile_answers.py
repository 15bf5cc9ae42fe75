"""A hostile or broken server over a real socket: answers too large, gzip bombs, endless
streams and generated garbage end in a result or a documented error, in bounded memory, and
the frames of a failed call hold neither the secret nor the member's phone."""

from __future__ import annotations

import asyncio
import functools
import gzip
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rees46_loyalty import (
    CartItem,
    LoyaltyClient,
    LoyaltyError,
    MalformedResponseError,
    OutcomeUnknownError,
    RetryPolicy,
)
from rees46_loyalty._client import DEFAULT_MAX_RESPONSE_BYTES
from rees46_loyalty._serialization import fast_decoding
from rees46_loyalty.testing import FakeRees46, Fault
from tests.conftest import PHONE
from tests.leaks import failure_of, tracked_text
from tests.payloads import CALCULATION, CHANGE, HISTORY, REF

pytestmark = pytest.mark.integration

CART = [CartItem(product_id="A", price=Decimal("1000"), quantity=4)]
MiB = 1024 * 1024
JSON = {"Content-Type": "application/json"}

Call = Callable[[LoyaltyClient], Awaitable[object]]
CALLS: dict[str, Call] = {
    "estimate": lambda c: c.estimate(cart_items=CART, identifier=PHONE),
    "apply": lambda c: c.apply(order_id="1", cart_items=CART, identifier=PHONE),
    "confirm": lambda c: c.confirm(order_id="1"),
    "cancel": lambda c: c.cancel(order_id="1"),
    "change": lambda c: c.change(order_id="1", cart_items=CART, identifier=PHONE),
    "details": lambda c: c.details(order_id="1"),
    "history": lambda c: c.history(identifier=PHONE),
}


def client_of(fake: FakeRees46, **kwargs: Any) -> LoyaltyClient:
    """A client of *fake* that sends each request once and keeps no idempotency record."""
    kwargs.setdefault("retry", RetryPolicy.disabled())
    return fake.client(idempotency=None, **kwargs)


@functools.cache
def gzip_bomb(decompressed: int) -> bytes:
    """A gzip body of *decompressed* zero bytes, about a thousandth of that in size."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    block = bytes(MiB)
    parts = [compressor.compress(block) for _ in range(decompressed // MiB)]
    return b"".join([*parts, compressor.flush()])


@pytest.fixture
def memory() -> Iterator[Callable[[], int]]:
    """Traces allocations during the test; the callable gives the peak so far, in bytes."""
    tracemalloc.start()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- 3. the size of an answer ------------------------------------------------------------------


async def test_a_declared_length_over_the_limit_is_refused(fake: FakeRees46) -> None:
    """A Content-Length over max_response_bytes: MalformedResponseError naming both sizes."""
    fake.faults.on("details", Fault.raw_answer(b" " * (2 * MiB), headers=JSON))
    async with client_of(fake, max_response_bytes=MiB) as client:
        with pytest.raises(MalformedResponseError, match=f"{2 * MiB} bytes, more than the limit"):
            await client.details(order_id="1")


async def test_a_gzip_bomb_is_refused_in_bounded_memory(
    fake: FakeRees46, memory: Callable[[], int]
) -> None:
    """128 MiB of zeros in a 128 KiB gzip body: refused at the default limit, and the peak of
    the client's memory stays far below what the bomb holds."""
    bomb = gzip_bomb(128 * MiB)
    assert len(bomb) < MiB
    fake.faults.on("details", Fault.raw_answer(bomb, headers={**JSON, "Content-Encoding": "gzip"}))
    async with client_of(fake) as client:
        tracemalloc.reset_peak()
        with pytest.raises(MalformedResponseError, match="more than the limit"):
            await client.details(order_id="1")
    assert memory() < DEFAULT_MAX_RESPONSE_BYTES + 32 * MiB


async def test_an_endless_body_is_cut_at_the_limit(
    fake: FakeRees46, memory: Callable[[], int]
) -> None:
    """A chunked answer that never ends: MalformedResponseError once the limit is passed, with
    the client's memory bounded by the limit."""
    fake.faults.on("details", Fault.endless_body())
    async with client_of(fake, max_response_bytes=4 * MiB) as client:
        tracemalloc.reset_peak()
        with pytest.raises(MalformedResponseError, match="more than the limit"):
            await client.details(order_id="1")
    assert memory() < 16 * MiB


async def test_an_oversized_answer_to_change_is_an_unknown_outcome(fake: FakeRees46) -> None:
    """The change was processed and its answer is too large to read: OutcomeUnknownError."""
    fake.faults.on("change", Fault.endless_body())
    async with client_of(fake, max_response_bytes=MiB) as client:
        with pytest.raises(OutcomeUnknownError, match="more than the limit"):
            await client.change(order_id="1", cart_items=CART)


async def test_an_answer_within_the_limit_is_read_whole(fake: FakeRees46) -> None:
    """A gzip-encoded answer just under the limit decodes as usual."""
    fake.add_member(PHONE, 100)
    answer = b'{"status": "success", "payload": {"orders": []}}'
    padded = answer[:-1] + b" " * (MiB - len(answer)) + b"}"
    headers = {**JSON, "Content-Encoding": "gzip"}
    fake.faults.on("history", Fault.raw_answer(gzip.compress(padded), headers=headers))
    async with client_of(fake, max_response_bytes=MiB) as client:
        history = await client.history(identifier=PHONE)
    assert history.orders == ()


# -- 1. frame locals over a real socket ----------------------------------------------------------


def assert_nothing_tracked(fake: FakeRees46, error: BaseException) -> None:
    """Neither the fake's secret nor the phone in what an error tracker records of *error*."""
    text = tracked_text(error)
    assert fake.shop_secret not in text
    assert PHONE not in text


@pytest.mark.parametrize(
    ("operation", "fault"),
    [
        ("history", Fault.hold()),
        ("change", Fault.hold()),
        ("confirm", Fault.close_before_answer()),
        ("change", Fault.drop_after_commit()),
        ("change", Fault.truncated_body()),
        ("estimate", Fault.bad_gateway()),
        ("history", Fault.invalid_json()),
        ("history", Fault.endless_body()),
    ],
    ids=lambda value: value.label if isinstance(value, Fault) else value,
)
async def test_failures_on_the_wire_leave_no_secret_in_frames(
    fake: FakeRees46, operation: str, fault: Fault
) -> None:
    """Timeouts, disconnects, bad answers: sentry-sdk and capture_locals record neither."""
    fake.faults.on(operation, fault)
    async with client_of(fake, timeout=0.2, connect_timeout=0.1, max_response_bytes=MiB) as c:
        error = await failure_of(CALLS[operation](c))
    assert isinstance(error, LoyaltyError)
    assert_nothing_tracked(fake, error)


async def test_a_call_cancelled_on_the_wire_leaves_no_secret_in_frames(fake: FakeRees46) -> None:
    """A GET cancelled while the server holds it: its CancelledError records neither."""
    fake.faults.on("history", Fault.hold())
    async with client_of(fake) as client:
        task = asyncio.ensure_future(client.history(identifier=PHONE))
        await fake.wait_received("history")
        task.cancel()
        error = await failure_of(task)
    assert isinstance(error, asyncio.CancelledError)
    assert_nothing_tracked(fake, error)


# -- the property: any answer, one of the documented outcomes, the same in both paths -----------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from(["1e999999999", "-1E+400", "0e-99999", "1e-41", "0.1", "12345678901234567"]),
    st.text(max_size=8),
)
_json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
_fields = st.sampled_from(
    ["order_total", "order_to_pay", "order_total_change", "order_id", "identifier", "message",
     "items", "orders", "promo_codes_failed", "rewarded_stickers", "bonuses_balance"]
)  # fmt: skip


def _number_text(value: Any) -> str:
    # Number-like strings of _scalars are written as bare JSON numbers, the rest as JSON.
    import json  # noqa: PLC0415

    if isinstance(value, str) and value and value.lstrip("-")[:1].isdigit():
        return value
    if isinstance(value, list):
        return "[" + ",".join(_number_text(item) for item in value) + "]"
    if isinstance(value, dict):
        members = (f"{json.dumps(k)}:{_number_text(v)}" for k, v in value.items())
        return "{" + ",".join(members) + "}"
    return json.dumps(value)


@st.composite
def _envelopes(draw: st.DrawFn) -> bytes:
    payload = draw(st.dictionaries(_fields, _json_values, max_size=5))
    flag = draw(st.sampled_from(['"status":"success"', '"success":true', '"status":"error"', ""]))
    document = "{" + (flag + "," if flag else "") + '"payload":' + _number_text(payload) + "}"
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "utf-8-sig", "latin-1"]))
    return document.encode(encoding, "surrogatepass" if encoding == "utf-8" else "replace")


# A documented answer of each operation, for answers that are right but for a few fields.
_ANSWERS: dict[str, dict[str, Any]] = {
    "estimate": CALCULATION,
    "apply": CALCULATION,
    "details": CALCULATION,
    "change": CHANGE,
    "confirm": REF,
    "cancel": REF,
    "history": HISTORY,
}


@st.composite
def _almost_right(draw: st.DrawFn, operation: str) -> bytes:
    base = _ANSWERS[operation]
    changes = draw(st.dictionaries(st.sampled_from(sorted(base)), _json_values, max_size=2))
    return ('{"status":"success","payload":' + _number_text({**base, **changes}) + "}").encode()


_nested = st.sampled_from([10, 500, 999, 1000, 3000, 100_000]).map(
    lambda depth: (
        b'{"status":"success","payload":{"order_total":1,"order_to_pay":1,"rewarded_stickers":'
        + b'{"a":' * depth
        + b"1"
        + b"}" * depth
        + b"}}"
    )
)
_bodies = st.one_of(
    _envelopes(),
    _nested,
    st.binary(max_size=64),
    st.integers(0, 200_000).map(lambda size: b'{"status":"success","payload":{}}' + b" " * size),
    st.sampled_from([b"", b"<html>502</html>", b'{"payload": "\\ud800"}', b"\xff\xfe\x00"]),
)
_headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(
            ["application/json", "application/json; charset=utf-16", "text/html", "x/y; a=b"]
        ),
        "Content-Encoding": st.sampled_from(["gzip", "gzip", "identity", "deflate", "br", "x"]),
        "Retry-After": st.sampled_from(["1", "-5", "1e999", "soon", "Wed, 21 Oct 2015 07:28:00"]),
        "X-Echo": st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    },
)
_answers = st.sampled_from(sorted(CALLS)).flatmap(
    lambda operation: st.tuples(
        st.just(operation),
        st.sampled_from([*[200] * 8, 201, 204, 302, 400, 404, 429, 500, 502]),
        _headers,
        _almost_right(operation) | _bodies,
        st.sampled_from([True, True, False]),  # whether a gzip Content-Encoding compresses it
    )
)


async def _outcome(client: LoyaltyClient, fake: FakeRees46, answer: Any, *, fast: bool) -> Any:
    operation, status, headers, body, compress = answer
    if compress and headers.get("Content-Encoding") == "gzip":
        body = gzip.compress(body)
    fake.faults.on(operation, Fault.raw_answer(body, status=status, headers=headers))
    try:
        with fast_decoding(enabled=fast):
            result = await asyncio.wait_for(CALLS[operation](client), timeout=10)
    except LoyaltyError as error:  # documented; anything else fails the test
        return type(error)
    finally:
        fake.faults.clear()
    return result


def test_any_answer_ends_in_a_result_or_a_documented_error(memory: Callable[[], int]) -> None:
    """Generated hostile answers to every operation (sizes, nesting, numbers, encodings, content
    types, headers): a result or a LoyaltyError, in bounded time and memory, the same in the
    fast and the reference decode paths."""
    loop = asyncio.new_event_loop()
    fake = FakeRees46()
    loop.run_until_complete(fake.start())
    client = client_of(fake, max_response_bytes=64 * 1024, timeout=10)

    peaks: list[int] = []

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(answer=_answers)
    def answered(answer: Any) -> None:
        # The peak of each answer's own calls: threads that earlier tests left behind allocate
        # too, and over the whole test they would blur the figure.
        tracemalloc.reset_peak()
        fast = loop.run_until_complete(_outcome(client, fake, answer, fast=True))
        reference = loop.run_until_complete(_outcome(client, fake, answer, fast=False))
        peaks.append(memory())
        assert fast == reference
        assert type(fast) is type(reference)

    try:
        answered()
    finally:
        loop.run_until_complete(client.close())
        loop.run_until_complete(fake.stop())
        loop.close()
    assert peaks
    assert max(peaks) < 64 * MiB
