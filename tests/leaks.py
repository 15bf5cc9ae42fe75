"""What an error tracker would record of an exception: the real sentry-sdk, in memory.

``tracked_text(error)`` is the JSON of the event that sentry-sdk builds for *error* with local
variables on (its default), plus the text of ``traceback.TracebackException`` with
``capture_locals=True``; both walk the whole ``__cause__`` / ``__context__`` chain.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Awaitable
from typing import Any

import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

__all__ = ["failure_of", "tracked_text"]


class _MemoryTransport(Transport):
    """Keeps every event sent instead of sending it."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type == "event" and item.payload.json is not None:
                self.events.append(item.payload.json)


def _sentry_event(error: BaseException) -> dict[str, Any]:
    client = sentry_sdk.Client(
        dsn="https://key@errors.invalid/1",
        transport=_MemoryTransport,
        include_local_variables=True,
        default_integrations=False,
        max_value_length=1_000_000,  # nothing cut short: the whole repr of every local
    )
    try:
        with sentry_sdk.new_scope() as scope:
            scope.set_client(client)
            sentry_sdk.capture_exception(error)
        client.flush()
        transport = client.transport
        assert isinstance(transport, _MemoryTransport)
        (event,) = transport.events
    finally:
        client.close()
    frames = [
        frame
        for exception in event["exception"]["values"]
        for frame in exception.get("stacktrace", {}).get("frames", [])
    ]
    assert any(frame.get("vars") for frame in frames), "sentry recorded no local variables"
    return event


def tracked_text(error: BaseException) -> str:
    """Everything an error tracker and a locals-capturing traceback would record of *error*."""
    event = _sentry_event(error)
    captured = traceback.TracebackException(
        type(error), error, error.__traceback__, capture_locals=True
    )
    return json.dumps(event, default=str) + "\n" + "".join(captured.format())


async def failure_of(call: Awaitable[object]) -> BaseException:
    """The exception *call* raised (the test fails if it returned)."""
    try:
        await call
    except BaseException as error:  # noqa: BLE001 - the cancelled calls too
        return error
    raise AssertionError("the call succeeded")
