"""Small helpers for tests that fake the network with aioresponses."""

from __future__ import annotations

import json
import re
from typing import Any

from aioresponses import aioresponses as AioResponses  # noqa: N812

from tests.conftest import BASE_URL


def url(operation: str) -> str:
    """The URL of a POST operation."""
    return f"{BASE_URL}/loyalty/checkout/{operation}"


def url_pattern(operation: str) -> re.Pattern[str]:
    """A pattern matching an operation's URL with any query string (GET operations)."""
    return re.compile(re.escape(url(operation)) + r"(\?.*)?$")


def sent(mock: AioResponses) -> list[tuple[str, str, dict[str, Any]]]:
    """Every request sent, as (method, url, aiohttp keyword arguments)."""
    return [
        (method, str(request_url), call.kwargs)
        for (method, request_url), calls in mock.requests.items()
        for call in calls
    ]


def count(mock: AioResponses) -> int:
    """How many requests were sent."""
    return len(sent(mock))


def body_of(mock: AioResponses, index: int = 0) -> dict[str, Any]:
    """The decoded JSON body of the *index*-th request sent."""
    data = sent(mock)[index][2]["data"]
    decoded: dict[str, Any] = json.loads(data)
    return decoded
