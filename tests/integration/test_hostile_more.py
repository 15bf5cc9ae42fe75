"""More secrets and hostile-answer protections, over loopback to the fake server: echoes in
other encodings, hooks of cancelled calls, disguised amounts, the sync client's frames, secrets
passed as arguments, pickled errors."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

import pytest

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    CartItem,
    Handler,
    Hooks,
    LoyaltyError,
    MalformedResponseError,
    RetryPolicy,
    SyncLoyaltyClient,
    ValidationError,
)
from rees46_loyalty._serialization import fast_decoding
from rees46_loyalty.idempotency import MemoryIdempotencyStore
from rees46_loyalty.testing import FakeRees46, Fault
from tests.conftest import PHONE, SHOP_SECRET
from tests.integration.conftest import serving_in_a_thread
from tests.leaks import _sentry_event, failure_of, tracked_text

pytestmark = pytest.mark.integration

CART = [CartItem(product_id="A", price=Decimal("1000"), quantity=4)]
JSON = {"Content-Type": "application/json"}
ECHO = f"request was shop_secret={SHOP_SECRET}"


async def _failure(fake: FakeRees46, operation: str, body: bytes, status: int) -> Any:
    fake.faults.on(operation, Fault.raw_answer(body, status=status, headers=JSON))
    async with fake.client(idempotency=None, retry=RetryPolicy.disabled()) as client:
        try:
            return await client.confirm(order_id="1")
        except LoyaltyError as error:
            return error


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
async def test_an_echo_in_utf16_is_redacted(fake: FakeRees46, encoding: str) -> None:
    """An error answer in UTF-16 echoing the secret: the error's text never holds it."""
    body = json.dumps({"success": False, "payload": {"message": ECHO}}).encode(encoding)
    error = await _failure(fake, "confirm", body, 400)
    assert isinstance(error, LoyaltyError)
    assert SHOP_SECRET not in f"{error} {error!r} {getattr(error, 'payload', None)}"


async def test_an_echo_in_utf16_never_reaches_a_result_or_the_store(fake: FakeRees46) -> None:
    """confirm answered in UTF-16 with the secret in `message`: refused as not UTF-8, and
    neither the error, the idempotency store's record nor a second call holds the secret."""
    body = json.dumps({"success": True, "payload": {"order_id": "1", "message": ECHO}})
    fake.faults.on("confirm", Fault.raw_answer(body.encode("utf-16"), headers=JSON))
    store = MemoryIdempotencyStore()
    async with fake.client(idempotency=store, retry=RetryPolicy.disabled()) as client:
        first = await failure_of(client.confirm(order_id="1"))
        second = await failure_of(client.confirm(order_id="1"))
    assert isinstance(first, MalformedResponseError)
    assert "not valid JSON" in str(first)
    assert isinstance(second, LoyaltyError)
    records = repr(store.__dict__).replace("\\x00", "")  # a UTF-16 copy, made readable
    shown = f"{first} {first!r} {second} {second!r} {records}"
    assert SHOP_SECRET not in shown


@pytest.mark.parametrize("form", ["every", "lower", "one"])
async def test_percent_encoded_echoes_are_redacted(fake: FakeRees46, form: str) -> None:
    """The secret percent-encoded otherwise than by quote() (every character, lowercase hex,
    a single character): still cut out of the error's text."""
    encoded = {
        "every": "".join(f"%{ord(ch):02X}" for ch in SHOP_SECRET),
        "lower": "".join(f"%{ord(ch):02x}" for ch in SHOP_SECRET),
        "one": "%73" + SHOP_SECRET[1:],
    }[form]
    body = json.dumps({"success": False, "payload": {"message": f"echo {encoded}"}}).encode()
    error = await _failure(fake, "confirm", body, 400)
    assert isinstance(error, LoyaltyError)
    assert encoded not in str(error)


async def test_a_broken_hook_in_a_cancelled_call_logs_no_secret_in_frames(
    fake: FakeRees46,
) -> None:
    """The SDK logs a hook's failure with its traceback; an error tracker turning that record
    into an event (Sentry's logging integration does, at ERROR) records neither secret nor phone
    in any frame of the exception chain, which holds the hook's error alone."""
    tracked: list[str] = []
    chained: list[BaseException | None] = []

    class Tracker(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and record.exc_info[1] is not None:
                tracked.append(tracked_text(record.exc_info[1]))  # at log time, as Sentry does
                chained.append(record.exc_info[1].__context__)

    def broken(record: object) -> None:
        raise RuntimeError("metrics exporter down")

    sdk = logging.getLogger("rees46_loyalty")
    handler = Tracker(logging.ERROR)
    sdk.addHandler(handler)
    fake.faults.on("history", Fault.hold())
    try:
        async with fake.client(
            idempotency=None, retry=RetryPolicy.disabled(), hooks=Hooks(on_response=broken)
        ) as client:
            task = asyncio.ensure_future(client.history(identifier=PHONE))
            await fake.wait_received("history")
            task.cancel()
            assert isinstance(await failure_of(task), asyncio.CancelledError)
    finally:
        sdk.removeHandler(handler)
    assert tracked, "the hook's failure was not logged with its traceback"
    assert all(SHOP_SECRET not in text and PHONE not in text for text in tracked)
    assert chained == [None] * len(tracked)  # the hook's error does not drag the cancellation


@pytest.mark.parametrize(
    "amount", ["\\u0031\\u0065\\u0039\\u0039\\u0039\\u0039\\u0039", "1_000_000_000_000_000_000"]
)
async def test_disguised_huge_amounts_are_refused_in_both_paths(
    fake: FakeRees46, amount: str
) -> None:
    """estimate answered with an amount of 1e99999 or 10**21 written as a string in disguise:
    MalformedResponseError with the speedups fast path on, as with it off."""
    body = ('{"success":true,"payload":{"order_total":"' + amount + '","order_to_pay":1}}').encode()
    outcomes: list[BaseException | None] = []
    for fast in (False, True):
        fake.faults.on("estimate", Fault.raw_answer(body, headers=JSON))
        try:
            with fast_decoding(enabled=fast):
                async with fake.client(idempotency=None, retry=RetryPolicy.disabled()) as client:
                    outcomes.append(await failure_of(client.estimate(cart_items=CART)))
        except AssertionError:  # the call succeeded
            outcomes.append(None)
        finally:
            fake.faults.clear()
    assert all(isinstance(outcome, MalformedResponseError) for outcome in outcomes)


def test_sync_client_failures_hold_no_phone_in_frames() -> None:
    """A failed sync history call: sentry-sdk records no unmasked phone in any frame."""
    with serving_in_a_thread(shop_id="shop-42", shop_secret=SHOP_SECRET) as fake:
        fake.add_member(PHONE, bonuses=10)
        fake.faults.on("history", Fault.bad_gateway())
        with SyncLoyaltyClient(
            "shop-42", SHOP_SECRET, base_url=fake.url, retry=RetryPolicy.disabled()
        ) as client:
            try:
                client.history(identifier=PHONE)
            except LoyaltyError as failure:
                error = failure
            else:
                raise AssertionError("the call succeeded")
    event = json.dumps(_sentry_event(error))
    assert SHOP_SECRET not in event
    assert PHONE not in event


@pytest.mark.parametrize("where", ["order_id", "product_id", "payment_type"])
async def test_the_secret_passed_as_an_argument_is_refused(fake: FakeRees46, where: str) -> None:
    """A careless caller passes the secret as an argument: ValidationError naming the argument,
    nothing sent, and the secret in no error text or log line (the suite's guard checks logs)."""
    async with fake.client(retry=RetryPolicy.disabled()) as client:
        call: Awaitable[object]
        if where == "order_id":
            call = client.confirm(order_id=SHOP_SECRET)
        elif where == "product_id":
            line = CartItem(product_id=SHOP_SECRET, price=Decimal("1"), quantity=1)
            call = client.estimate(cart_items=[line])
        else:
            call = client.apply(order_id="1", cart_items=CART, payment_type=SHOP_SECRET)
        error = await failure_of(call)
    assert isinstance(error, ValidationError)
    assert error.field == {"product_id": "cart_items"}.get(where, where)
    assert fake.received() == 0
    assert SHOP_SECRET not in f"{error} {error!r}"


async def test_a_pickled_error_holds_no_phone(fake: FakeRees46) -> None:
    """A change failing with a 500 that names the member: the error a task queue pickles (and
    keeps in its result backend) holds no unmasked phone."""
    body = json.dumps({"success": False, "payload": {"message": "blocked", "identifier": PHONE}})
    fake.faults.on("change", Fault.raw_answer(body.encode(), status=500, headers=JSON))
    async with fake.client(retry=RetryPolicy.disabled(), idempotency=None) as client:
        error = await failure_of(client.change(order_id="1", cart_items=CART, identifier=PHONE))
    assert isinstance(error, LoyaltyError)
    assert PHONE.encode() not in pickle.dumps(error)
    restored = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert restored.payload == {"message": "blocked", "identifier": "7999***1122"}


async def test_a_cancelled_attempt_leaves_the_transport_without_its_frames(
    fake: FakeRees46,
) -> None:
    """A middleware that records the CancelledError of an attempt (before the public method
    scrubs it) finds neither secret nor phone in the frames below it."""
    seen: list[str] = []

    async def spy(request: ApiRequest, call_next: Handler) -> ApiResponse:
        try:
            return await call_next(request)
        except BaseException as exc:
            seen.append(tracked_text(exc))
            raise

    fake.faults.on("history", Fault.hold())
    async with fake.client(
        idempotency=None, retry=RetryPolicy.disabled(), middlewares=[spy]
    ) as client:
        task = asyncio.ensure_future(client.history(identifier=PHONE))
        await fake.wait_received("history")
        task.cancel()
        assert isinstance(await failure_of(task), asyncio.CancelledError)
    assert len(seen) == 1
    assert SHOP_SECRET not in seen[0]
    assert PHONE not in seen[0]
