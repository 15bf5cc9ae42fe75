"""Small helpers for the unit tests: a transport function with canned answers (``FakeApi``), and
readers of what aioresponses saw, for the tests of the aiohttp transport itself."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aioresponses import aioresponses as AioResponses  # noqa: N812
from attrs import frozen

from rees46_loyalty import ApiRequest, ApiResponse
from rees46_loyalty._serialization import dumps
from tests.conftest import BASE_URL

Callback = Callable[[ApiRequest], Awaitable[ApiResponse | None]]


@frozen
class _Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]
    exception: BaseException | None
    callback: Callback | None
    repeat: bool


class FakeApi:
    """A ``transport=`` function: canned answers per operation, in the order planned.

    Plan them with :meth:`post` and :meth:`get` (``payload=``, ``status=``, ``body=``,
    ``headers=``, ``exception=``, ``callback=``, ``repeat=``); every request it gets is in
    :attr:`requests`, as the transport got it (after auth: credentials in ``body`` and ``data``).
    A request with no answer planned fails the test (an AssertionError, which no layer retries).
    """

    def __init__(self) -> None:
        self.requests: list[ApiRequest] = []
        self._answers: dict[tuple[str, str], list[_Answer]] = {}

    def post(self, operation: str, **answer: Any) -> None:
        """Plan the next answer of a POST operation."""
        self._plan("POST", operation, **answer)

    def get(self, operation: str, **answer: Any) -> None:
        """Plan the next answer of a GET operation."""
        self._plan("GET", operation, **answer)

    def _plan(
        self,
        method: str,
        operation: str,
        *,
        status: int = 200,
        payload: Any = None,
        body: str | bytes = b"",
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        exception: BaseException | None = None,
        callback: Callback | None = None,
        repeat: bool = False,
    ) -> None:
        encoded = dumps(payload) if payload is not None else body
        self._answers.setdefault((method, operation), []).append(
            _Answer(
                status=status,
                body=encoded.encode() if isinstance(encoded, str) else encoded,
                headers={"Content-Type": content_type, **(headers or {})},
                exception=exception,
                callback=callback,
                repeat=repeat,
            )
        )

    async def __call__(self, request: ApiRequest) -> ApiResponse:
        self.requests.append(request)
        answers = self._answers.get((request.method, request.operation.name))
        if not answers:
            raise AssertionError(f"no answer planned for {request.method} {request.path}")
        answer = answers[0] if answers[0].repeat else answers.pop(0)
        if answer.callback is not None:
            response = await answer.callback(request)
            if response is not None:
                return response
        if answer.exception is not None:
            raise copy.copy(answer.exception) if answer.repeat else answer.exception
        return ApiResponse(status=answer.status, headers=answer.headers, body=answer.body)


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


def count(mock: AioResponses | FakeApi) -> int:
    """How many requests were sent."""
    return len(mock.requests) if isinstance(mock, FakeApi) else len(sent(mock))


def body_of(mock: AioResponses | FakeApi, index: int = 0) -> dict[str, Any]:
    """The decoded JSON body of the *index*-th request sent."""
    if isinstance(mock, FakeApi):
        data = mock.requests[index].body
        assert data is not None
    else:
        data = sent(mock)[index][2]["data"]
    decoded: dict[str, Any] = json.loads(data)
    return decoded
