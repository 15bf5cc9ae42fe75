"""Hooks, structured log fields and OpenTelemetry spans of what the SDK did."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import attrs
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from rees46_loyalty import (
    CartItem,
    Hooks,
    LoyaltyClient,
    OrderStatusError,
    OutcomeUnknownError,
    RequestRecord,
    ResponseRecord,
    RetryRecord,
    ServerError,
)
from tests.conftest import BASE_URL, PHONE, SHOP_ID, SHOP_SECRET, FakeClock, span_text
from tests.payloads import CALCULATION, CHANGE, REF, status_envelope
from tests.unit.helpers import FakeApi

CART = [CartItem(product_id="A", price=Decimal(100), quantity=1)]
CANNOT_CANCEL = status_envelope(
    {"message": "Could not cancel order in its current status"}, ok=False
)


class _SetOn(logging.Handler):
    """Sets *event* when a record matching *test* is logged."""

    def __init__(self, event: asyncio.Event, test: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__(logging.DEBUG)
        self._event, self._test = event, test

    def emit(self, record: logging.LogRecord) -> None:
        if self._test(record):
            self._event.set()


class Recorder:
    """Hooks that keep every record they get."""

    def __init__(self) -> None:
        self.requests: list[RequestRecord] = []
        self.responses: list[ResponseRecord] = []
        self.retries: list[RetryRecord] = []

    def hooks(self) -> Hooks:
        return Hooks(
            on_request=self.requests.append,
            on_response=[self.responses.append],
            on_retry=self.retries.append,
        )


@pytest.fixture
async def recorded(clock: FakeClock, api: FakeApi) -> AsyncIterator[tuple[LoyaltyClient, Recorder]]:
    recorder = Recorder()
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, clock=clock, transport=api, hooks=recorder.hooks()
    ) as client:
        yield client, recorder


async def test_hooks_see_each_attempt_answer_and_retry(
    recorded: tuple[LoyaltyClient, Recorder], api: FakeApi, clock: FakeClock
) -> None:
    """A 503 then a success: two requests, two responses (with status, error, time) and one
    retry with its wait, all with the identifier masked."""
    client, recorder = recorded
    api.post("apply", status=503)
    api.post("apply", payload=status_envelope(CALCULATION))
    await client.apply(order_id="1001", cart_items=CART, identifier=PHONE)

    assert [(r.operation, r.order_id, r.attempt) for r in recorder.requests] == [
        ("apply", "1001", 1),
        ("apply", "1001", 2),
    ]
    assert [r.idempotency for r in recorder.requests] == ["sent", "sent"]
    assert [(r.status, type(r.error).__name__) for r in recorder.responses] == [
        (503, "ServerError"),
        (200, "NoneType"),
    ]
    assert all(r.elapsed >= 0 for r in recorder.responses)
    (retry,) = recorder.retries
    assert (retry.operation, retry.attempt, retry.error_type) == ("apply", 1, "ServerError")
    assert isinstance(retry.error, ServerError)
    assert retry.wait == clock.sleeps[0]
    identifiers = {r.identifier for r in recorder.requests}
    identifiers |= {r.identifier for r in recorder.responses}
    identifiers |= {r.identifier for r in recorder.retries}
    assert identifiers == {"7999***1122"}


async def test_a_hook_that_raises_is_logged_and_the_call_goes_on(
    api: FakeApi, clock: FakeClock, log_records: list[logging.LogRecord]
) -> None:
    """A broken metrics hook never loses the operation: the call returns its result and the
    hook's failure is logged at ERROR with its traceback."""

    def broken(record: object) -> None:
        raise RuntimeError("exporter down")

    api.post("confirm", payload=status_envelope(REF))
    async with LoyaltyClient(
        SHOP_ID,
        SHOP_SECRET,
        base_url=BASE_URL,
        clock=clock,
        transport=api,
        hooks=Hooks(on_response=broken),
    ) as client:
        result = await client.confirm(order_id="1001")
    assert result.order_id == "1001"
    (error,) = [r for r in log_records if r.levelno == logging.ERROR]
    assert "on_response hook raised" in error.getMessage()
    assert error.exc_info is not None
    assert "exporter down" in str(error.exc_info[1])


def test_hooks_take_a_callable_or_several_and_refuse_anything_else() -> None:
    """One callable, a list of them, or None; a non-callable is a TypeError at once."""
    assert Hooks(on_retry=print).on_retry == (print,)
    assert Hooks(on_retry=[print, repr]).on_retry == (print, repr)
    assert Hooks(on_retry=None).on_retry == ()
    with pytest.raises(TypeError, match="must be callable"):
        Hooks(on_retry=[print, "not a function"])


def test_records_are_frozen() -> None:
    """A hook cannot change what another hook sees."""
    record = RequestRecord(
        operation="cancel", order_id="1", identifier=None, attempt=1, idempotency=None
    )
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        record.attempt = 2  # type: ignore[misc]


async def test_log_records_carry_the_idempotency_outcome(
    api: FakeApi, clock: FakeClock, log_records: list[logging.LogRecord]
) -> None:
    """sent on the call that went out, replayed on the repeat, waited on a concurrent duplicate."""
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, clock=clock, transport=api
    ) as client:
        api.post("confirm", payload=status_envelope(REF))
        await client.confirm(order_id="1001")
        await client.confirm(order_id="1001")
        release, waiting = asyncio.Event(), asyncio.Event()
        signal = _SetOn(waiting, lambda r: getattr(r, "idempotency", None) == "waiting")
        logging.getLogger("rees46_loyalty").addHandler(signal)

        async def slow(*args: object, **kwargs: object) -> None:
            await release.wait()

        api.post("cancel", payload=status_envelope(REF), callback=slow)
        first = asyncio.ensure_future(client.cancel(order_id="1002"))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(client.cancel(order_id="1002"))
        await waiting.wait()
        release.set()
        await asyncio.gather(first, second)
        logging.getLogger("rees46_loyalty").removeHandler(signal)

    outcomes = [
        (r.operation, r.idempotency)  # type: ignore[attr-defined]
        for r in log_records
        if r.name == "rees46_loyalty" and hasattr(r, "idempotency")
    ]
    assert ("confirm", "sent") in outcomes
    assert ("confirm", "replayed") in outcomes
    assert ("cancel", "waited") in outcomes
    attempts = [r for r in log_records if getattr(r, "attempt", None) is not None]
    assert all(hasattr(r, "elapsed_ms") for r in attempts)


async def test_retries_log_at_info_and_final_failures_at_warning(
    client: LoyaltyClient, api: FakeApi, log_records: list[logging.LogRecord]
) -> None:
    """Every retry is an INFO record and the failure that ends the call a WARNING, both with
    the structured fields and the time since the first attempt."""
    for _ in range(3):
        api.post("confirm", status=503)
    with pytest.raises(ServerError):
        await client.confirm(order_id="1001")
    ours = [r for r in log_records if r.name == "rees46_loyalty"]
    infos = [r for r in ours if r.levelno == logging.INFO]
    (warning,) = [r for r in ours if r.levelno == logging.WARNING]
    assert [r.attempt for r in infos] == [1, 2]  # type: ignore[attr-defined]
    for record in [*infos, warning]:
        assert record.operation == "confirm"  # type: ignore[attr-defined]
        assert record.order_id == "1001"  # type: ignore[attr-defined]
        assert record.status == 503  # type: ignore[attr-defined]
        assert record.error == "ServerError"  # type: ignore[attr-defined]
        assert record.elapsed_ms >= 0  # type: ignore[attr-defined]
    assert warning.attempt == 3  # type: ignore[attr-defined]


# -- OpenTelemetry ------------------------------------------------------------------------------


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(
    clock: FakeClock, exporter: InMemorySpanExporter, api: FakeApi
) -> AsyncIterator[LoyaltyClient]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, clock=clock, transport=api, tracing=provider
    ) as client:
        yield client
    provider.shutdown()


async def test_a_span_per_call_and_per_attempt(
    traced: LoyaltyClient, api: FakeApi, exporter: InMemorySpanExporter
) -> None:
    """A retried change: one INTERNAL call span with the retry count and idempotency outcome,
    two CLIENT attempt spans under it with the HTTP client attributes."""
    api.get("details", payload=status_envelope(CALCULATION))
    api.post("change", exception=_refused())
    api.post("change", payload=status_envelope(CHANGE))
    await traced.change(order_id="1001", cart_items=CART)

    lookup, *attempts, call = exporter.get_finished_spans()
    # The change reads the order first: one attempt span of its own, under the same call.
    assert lookup.name == "GET /loyalty/checkout/details"
    assert lookup.parent is not None
    assert lookup.parent.span_id == call.context.span_id
    assert call.name == "rees46_loyalty change"
    assert call.kind is SpanKind.INTERNAL
    assert call.attributes is not None
    assert call.attributes["rees46_loyalty.operation"] == "change"
    assert call.attributes["rees46_loyalty.order_id"] == "1001"
    assert call.attributes["rees46_loyalty.retry_count"] == 1
    assert call.attributes["rees46_loyalty.idempotency"] == "sent"
    assert call.status.status_code is StatusCode.UNSET

    assert [span.name for span in attempts] == ["POST /loyalty/checkout/change"] * 2
    assert all(span.kind is SpanKind.CLIENT for span in attempts)
    assert all(
        span.parent is not None and span.parent.span_id == call.context.span_id for span in attempts
    )
    first, second = (dict(span.attributes or {}) for span in attempts)
    assert first["http.request.method"] == "POST"
    assert first["url.full"] == f"{BASE_URL}/loyalty/checkout/change"
    assert (first["server.address"], first["server.port"]) == ("api.test", 443)
    assert first["error.type"] == "ConnectError"
    assert "http.request.resend_count" not in first
    assert second["http.request.resend_count"] == 1
    assert second["http.response.status_code"] == 200


async def test_a_replayed_call_has_a_span_and_no_attempt(
    traced: LoyaltyClient, api: FakeApi, exporter: InMemorySpanExporter
) -> None:
    """The repeat of a finished confirm is answered from the store: a call span, no request."""
    api.post("confirm", payload=status_envelope(REF))
    await traced.confirm(order_id="1001")
    exporter.clear()
    await traced.confirm(order_id="1001")
    (call,) = exporter.get_finished_spans()
    assert call.attributes is not None
    assert call.attributes["rees46_loyalty.idempotency"] == "replayed"
    assert call.attributes["rees46_loyalty.attempts"] == 0


async def test_failed_calls_mark_their_spans_as_errors(
    traced: LoyaltyClient, api: FakeApi, exporter: InMemorySpanExporter
) -> None:
    """An order-status refusal sets ERROR status and error.type on the attempt and the call."""
    api.post("cancel", status=400, payload=CANNOT_CANCEL)
    with pytest.raises(OrderStatusError):
        await traced.cancel(order_id="1001")
    attempt, call = exporter.get_finished_spans()
    for span in (attempt, call):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["error.type"] == "OrderStatusError"
        assert "Could not cancel" in (span.status.description or "")
    assert attempt.attributes is not None
    assert attempt.attributes["http.response.status_code"] == 400


async def test_get_spans_never_show_the_query_string(
    traced: LoyaltyClient, api: FakeApi, exporter: InMemorySpanExporter
) -> None:
    """details and history send the secret and the phone in the query: the span's URL has no
    query, and the identifier attribute is masked."""
    api.get("details", payload=status_envelope(CALCULATION))
    api.get("history", payload=status_envelope({"orders": []}))
    await traced.details(order_id="1001")
    await traced.history(identifier=PHONE)
    spans = exporter.get_finished_spans()
    assert len(spans) == 4
    urls = [dict(s.attributes or {}).get("url.full") for s in spans if s.kind is SpanKind.CLIENT]
    assert urls == [f"{BASE_URL}/loyalty/checkout/details", f"{BASE_URL}/loyalty/checkout/history"]
    history_call = spans[-1]
    assert history_call.attributes is not None
    assert history_call.attributes["rees46_loyalty.identifier"] == "7999***1122"


async def test_a_cancelled_call_ends_its_spans(
    traced: LoyaltyClient, api: FakeApi, exporter: InMemorySpanExporter
) -> None:
    """A caller that gives up mid-call leaves no span open: both end with CancelledError."""
    started = asyncio.Event()

    async def hang(*args: object, **kwargs: object) -> None:
        started.set()
        await asyncio.Event().wait()

    api.post("confirm", callback=hang)
    task = asyncio.ensure_future(traced.confirm(order_id="1001"))
    await started.wait()
    task.cancel()
    with pytest.raises((asyncio.CancelledError, OutcomeUnknownError)):
        await task
    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    assert all(dict(s.attributes or {}).get("error.type") == "CancelledError" for s in spans)


def _refused() -> Exception:
    from tests.unit.test_retry import refused  # noqa: PLC0415 - one definition of the error

    return refused()


async def test_the_suite_guard_sees_the_spans_of_the_shared_client(
    client: LoyaltyClient, api: FakeApi, span_exporter: InMemorySpanExporter
) -> None:
    """The ``client`` fixture traces into the exporter that the suite-wide guard scans, so every
    failure scenario run through it is checked for leaks in spans too (not vacuously)."""
    api.get("history", status=500)
    api.get("history", status=500)
    api.get("history", status=500)
    with pytest.raises(ServerError):
        await client.history(identifier=PHONE)
    texts = [span_text(span) for span in span_exporter.get_finished_spans()]
    assert len(texts) == 4  # three attempts and the call
    assert any("7999***1122" in text for text in texts)
    assert not any(PHONE in text or SHOP_SECRET in text for text in texts)


async def test_a_call_that_waited_and_then_sent_is_sent(
    api: FakeApi, clock: FakeClock, log_records: list[logging.LogRecord]
) -> None:
    """Two different applies of one order: the second waits for the first, then sends its own
    request; both attempts are "sent", and the wait is logged as "waiting"."""
    recorder = Recorder()
    release, waiting = asyncio.Event(), asyncio.Event()
    signal = _SetOn(waiting, lambda r: getattr(r, "idempotency", None) == "waiting")
    logging.getLogger("rees46_loyalty").addHandler(signal)

    async def slow(*args: object, **kwargs: object) -> None:
        await release.wait()

    api.post("apply", payload=status_envelope(CALCULATION), callback=slow)
    api.post("apply", payload=status_envelope(CALCULATION))
    other_cart = [CartItem(product_id="B", price=Decimal(5), quantity=1)]
    try:
        async with LoyaltyClient(
            SHOP_ID,
            SHOP_SECRET,
            base_url=BASE_URL,
            clock=clock,
            transport=api,
            hooks=recorder.hooks(),
        ) as client:
            first = asyncio.ensure_future(client.apply(order_id="1001", cart_items=CART))
            second = asyncio.ensure_future(client.apply(order_id="1001", cart_items=other_cart))
            await waiting.wait()
            release.set()
            await asyncio.gather(first, second)
    finally:
        logging.getLogger("rees46_loyalty").removeHandler(signal)
    assert [r.idempotency for r in recorder.requests] == ["sent", "sent"]


async def test_an_interrupted_attempt_still_reaches_on_response(
    api: FakeApi, clock: FakeClock
) -> None:
    """A caller that gives up mid-attempt: on_request and on_response both ran, the latter
    with no status, no error and ``interrupted="CancelledError"``."""
    recorder = Recorder()
    started = asyncio.Event()

    async def hang(*args: object, **kwargs: object) -> None:
        started.set()
        await asyncio.Event().wait()

    api.post("confirm", callback=hang)
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, clock=clock, transport=api, hooks=recorder.hooks()
    ) as client:
        task = asyncio.ensure_future(client.confirm(order_id="1001"))
        await started.wait()
        task.cancel()
        with pytest.raises((asyncio.CancelledError, OutcomeUnknownError)):
            await task
    assert len(recorder.requests) == 1
    (response,) = recorder.responses
    assert (response.status, response.error, response.interrupted) == (None, None, "CancelledError")


async def test_tracing_none_and_false_make_no_spans(
    api: FakeApi, clock: FakeClock, span_exporter: InMemorySpanExporter
) -> None:
    """``tracing=None`` is off, like ``hooks=None`` and ``idempotency=None``."""
    for tracing in (None, False):
        api.post("confirm", payload=status_envelope(REF))
        async with LoyaltyClient(
            SHOP_ID, SHOP_SECRET, base_url=BASE_URL, clock=clock, transport=api, tracing=tracing
        ) as client:
            await client.confirm(order_id="1001")
    assert span_exporter.get_finished_spans() == ()


def test_tracing_without_opentelemetry_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the otel extra, tracing=True says what to install."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "rees46_loyalty.middleware.tracing", raising=False)
    monkeypatch.delattr("rees46_loyalty.middleware.tracing", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'rees46-loyalty\[otel\]'"):
        LoyaltyClient(SHOP_ID, SHOP_SECRET, tracing=True)


def test_the_sdk_logger_prints_nothing_until_logging_is_configured() -> None:
    """A NullHandler keeps Python's last-resort handler from writing the SDK's WARNINGs."""
    handlers = logging.getLogger("rees46_loyalty").handlers
    assert any(isinstance(handler, logging.NullHandler) for handler in handlers)
