"""The observability page's example: hooks feed Prometheus, tracing feeds OpenTelemetry."""

from __future__ import annotations

import importlib

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rees46_loyalty import CartItem
from rees46_loyalty.testing import FakeClock, FakeRees46, Fault
from tests.conftest import SHOP_ID, SHOP_SECRET

pytestmark = pytest.mark.integration


async def test_retries_and_attempts_reach_prometheus_and_spans(
    monkeypatch: pytest.MonkeyPatch, span_exporter: InMemorySpanExporter
) -> None:
    """A confirm that meets one 503: one retry counted under its error, two attempts timed,
    one call span with its two attempt spans."""
    metrics = importlib.import_module("metrics")  # docs/examples, put on sys.path by conftest
    async with FakeRees46(shop_id=SHOP_ID, shop_secret=SHOP_SECRET) as fake:
        fake.add_product("A", "Tea")
        monkeypatch.setenv("REES46_SHOP_ID", SHOP_ID)
        monkeypatch.setenv("REES46_SHOP_SECRET", SHOP_SECRET)
        monkeypatch.setenv("REES46_BASE_URL", fake.url)
        async with metrics.make_client(clock=FakeClock()) as client:
            await client.apply(
                order_id="M-1", cart_items=[CartItem(product_id="A", price=100, quantity=1)]
            )
            fake.faults.on("confirm", Fault.server_error(503))
            await client.confirm(order_id="M-1")

    sample = metrics.REGISTRY.get_sample_value
    assert sample("rees46_retries_total", {"operation": "confirm", "error": "ServerError"}) == 1
    assert sample("rees46_attempt_seconds_count", {"operation": "confirm"}) == 2
    names = [span.name for span in span_exporter.get_finished_spans()]
    assert names.count("POST /loyalty/checkout/confirm") == 2
    assert names.count("rees46_loyalty confirm") == 1
