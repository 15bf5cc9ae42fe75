"""Fixtures shared by the whole suite, and its guards.

FakeClock (from rees46_loyalty.testing) is re-exported here for the tests that import it.

Guard: every test runs with all loggers at DEBUG, and no record may hold the shop secret or an
unmasked member phone number (see ``log_records``). The ``client`` fixtures trace with
OpenTelemetry into an in-memory exporter, and no span of any test may hold them either: every
failure scenario of the error, retry and validation tests is walked with spans on.

The network: unit tests send through a transport function (the ``api`` fixture, a
``tests.unit.helpers.FakeApi``: ``client`` and ``once_client`` use it when a test asks for it).
aioresponses (``mocked``) is left to the tests of the aiohttp transport itself: its translation
of aiohttp's failures, the secret in aiohttp's texts and frames, sessions and their life cycle.

Shim: aioresponses 0.7.9 builds ``ClientResponse`` without the ``stream_writer`` argument that
aiohttp 3.14 requires, so every mocked request fails with a TypeError (aioresponses issue #289,
open). We give its response factory a subclass that supplies an inert writer; it is the smallest
change that keeps aioresponses' own matching and recording intact, and it goes away when a fixed
aioresponses is released.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import aioresponses.core
import pytest
from aioresponses import aioresponses as AioResponses  # noqa: N812 - a class, named as one
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rees46_loyalty import LoyaltyClient, RetryPolicy
from rees46_loyalty.testing import FakeClock

pytest_plugins = ["pytester"]

SHOP_ID = "shop-42"
SHOP_SECRET = "s3cr3t-DO-NOT-LEAK-4f7a"
PHONE = "79990001122"
BASE_URL = "https://api.test"

__all__ = ["BASE_URL", "PHONE", "SHOP_ID", "SHOP_SECRET", "FakeClock", "span_text"]

# One provider for the whole run: OpenTelemetry lets the global one be set only once.
SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_provider)


class _InertStreamWriter:
    output_size = 0


class _CompatClientResponse(aiohttp.ClientResponse):
    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _InertStreamWriter())
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mocked() -> Iterator[AioResponses]:
    """aioresponses, patched for aiohttp 3.14 (see the module docstring)."""
    core: Any = aioresponses.core  # the name is patched, not exported
    original = core.ClientResponse
    core.ClientResponse = _CompatClientResponse
    try:
        with AioResponses() as mock:
            yield mock
    finally:
        core.ClientResponse = original


@pytest.fixture
def api() -> Any:
    """A transport function with canned answers (tests.unit.helpers.FakeApi)."""
    from tests.unit.helpers import FakeApi  # noqa: PLC0415 - the unit tests' helper

    return FakeApi()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _transport(request: pytest.FixtureRequest) -> Any:
    """The test's ``api`` (a tests.unit.helpers.FakeApi) when it asks for one, else None."""
    return request.getfixturevalue("api") if "api" in request.fixturenames else None


@pytest.fixture
async def client(clock: FakeClock, request: pytest.FixtureRequest) -> AsyncIterator[LoyaltyClient]:
    """A client of https://api.test with the default retry policy and a fake clock.

    It sends through the test's ``api`` fixture when the test asks for it (``transport=``),
    else through aiohttp (faked by ``mocked``). The idempotency layer is off: these tests are
    about what goes on the wire; the layer has its own tests.
    """
    async with LoyaltyClient(
        SHOP_ID,
        SHOP_SECRET,
        base_url=BASE_URL,
        clock=clock,
        idempotency=None,
        tracing=True,
        transport=_transport(request),
    ) as c:
        yield c


@pytest.fixture
async def once_client(
    clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[LoyaltyClient]:
    """A client that never retries (through ``api`` when the test asks for it, as ``client``)."""
    async with LoyaltyClient(
        SHOP_ID,
        SHOP_SECRET,
        base_url=BASE_URL,
        clock=clock,
        retry=RetryPolicy.disabled(),
        idempotency=None,
        tracing=True,
        transport=_transport(request),
    ) as c:
        yield c


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def span_text(span: ReadableSpan) -> str:
    """Everything a span exports: name, attributes, status, events."""
    events = [(event.name, dict(event.attributes or {})) for event in span.events]
    return f"{span.name} {dict(span.attributes or {})} {span.status.description} {events}"


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    """The exporter of every span the test finishes (cleared before each test)."""
    return SPANS


@pytest.fixture(autouse=True)
def log_records() -> Iterator[list[logging.LogRecord]]:
    """Collect every log record and span of the test; check none leaks a secret or a phone."""
    SPANS.clear()
    root = logging.getLogger()
    handler = _Collect()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    for record in handler.records:
        text = " ".join(
            [record.getMessage(), repr(record.__dict__), logging.Formatter().format(record)]
        )
        assert SHOP_SECRET not in text, f"shop secret in a log record: {record.getMessage()}"
        assert PHONE not in text, f"unmasked phone number in a log record: {record.getMessage()}"
    for span in SPANS.get_finished_spans():
        text = span_text(span)
        assert SHOP_SECRET not in text, f"shop secret in a span: {span.name}"
        assert PHONE not in text, f"unmasked phone number in a span: {span.name}"
