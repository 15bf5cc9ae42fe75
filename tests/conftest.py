"""Fixtures shared by the whole suite, and its guards.

FakeClock (from rees46_loyalty.testing) is re-exported here for the tests that import it.

Guard: every test runs with all loggers at DEBUG, and no record may hold the shop secret or an
unmasked member phone number (see ``log_records``).

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

from rees46_loyalty import LoyaltyClient, RetryPolicy
from rees46_loyalty.testing import FakeClock

pytest_plugins = ["pytester"]

SHOP_ID = "shop-42"
SHOP_SECRET = "s3cr3t-DO-NOT-LEAK-4f7a"
PHONE = "79990001122"
BASE_URL = "https://api.test"

__all__ = ["BASE_URL", "PHONE", "SHOP_ID", "SHOP_SECRET", "FakeClock"]


class _InertStreamWriter:
    output_size = 0


class _CompatClientResponse(aiohttp.ClientResponse):
    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _InertStreamWriter())
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mocked() -> Iterator[AioResponses]:
    """aioresponses, patched for aiohttp 3.14 (see the module docstring)."""
    original = aioresponses.core.ClientResponse
    aioresponses.core.ClientResponse = _CompatClientResponse  # type: ignore[misc]
    try:
        with AioResponses() as mock:
            yield mock
    finally:
        aioresponses.core.ClientResponse = original  # type: ignore[misc]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(clock: FakeClock) -> AsyncIterator[LoyaltyClient]:
    """A client of https://api.test with the default retry policy and a fake clock.

    The idempotency layer is off: these tests are about what goes on the wire; the layer has
    its own tests.
    """
    async with LoyaltyClient(
        SHOP_ID, SHOP_SECRET, base_url=BASE_URL, clock=clock, idempotency=None
    ) as c:
        yield c


@pytest.fixture
async def once_client(clock: FakeClock) -> AsyncIterator[LoyaltyClient]:
    """A client that never retries."""
    async with LoyaltyClient(
        SHOP_ID,
        SHOP_SECRET,
        base_url=BASE_URL,
        clock=clock,
        retry=RetryPolicy.disabled(),
        idempotency=None,
    ) as c:
        yield c


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def log_records() -> Iterator[list[logging.LogRecord]]:
    """Collect every log record of the test at DEBUG and check none leaks a secret or a phone."""
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
