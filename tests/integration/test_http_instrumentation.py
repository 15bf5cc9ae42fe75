"""OpenTelemetry's own aiohttp instrumentation never sees the SDK's requests.

It would record each request's full URL, and the URL of ``details`` and ``history`` carries the
shop secret and the member's phone in its query string. The transport turns HTTP
instrumentation off around its requests; the SDK's attempt span (``tracing=True``) is the HTTP
client span instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rees46_loyalty import CartItem, LoyaltyClient
from rees46_loyalty.testing import FakeRees46
from tests.conftest import PHONE, SHOP_ID, SHOP_SECRET, span_text

pytestmark = pytest.mark.integration


@pytest.fixture
async def instrumented() -> AsyncIterator[tuple[aiohttp.ClientSession, InMemorySpanExporter]]:
    """A session with OpenTelemetry's aiohttp client instrumentation, and its spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with aiohttp.ClientSession(
        trace_configs=[create_trace_config(tracer_provider=provider)]
    ) as session:
        yield session, exporter
    provider.shutdown()


async def test_instrumented_sessions_record_nothing_of_the_sdk(
    instrumented: tuple[aiohttp.ClientSession, InMemorySpanExporter],
) -> None:
    """The same instrumented session records a request of the application's own, and nothing
    of the SDK's details and history (whose URLs hold the secret and the phone)."""
    session, exporter = instrumented
    async with FakeRees46(shop_id=SHOP_ID, shop_secret=SHOP_SECRET) as fake:
        fake.add_member(PHONE, bonuses=100)
        fake.add_product("A", "Tea")
        async with session.get(f"{fake.url}/ping"):  # the application's own request
            pass
        assert len(exporter.get_finished_spans()) == 1  # the instrumentation is on

        async with LoyaltyClient(
            SHOP_ID, SHOP_SECRET, base_url=fake.url, session=session, tracing=True
        ) as client:
            cart = [CartItem(product_id="A", price=100, quantity=1)]
            await client.apply(order_id="1", cart_items=cart, identifier=PHONE)
            await client.details(order_id="1")
            await client.history(identifier=PHONE)

    assert len(exporter.get_finished_spans()) == 1
    for span in exporter.get_finished_spans():
        assert SHOP_SECRET not in span_text(span)
        assert PHONE not in span_text(span)
