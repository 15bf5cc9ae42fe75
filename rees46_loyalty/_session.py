"""Owns or borrows the aiohttp ClientSession, and knows whether the client is still open.

:class:`LoopGuard` keeps a client on the event loop its pool belongs to.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp

__all__ = ["LoopGuard", "SessionHolder"]

_CONNECTION_LIMIT = 100

_Signal = Callable[[aiohttp.ClientSession, SimpleNamespace, Any], Awaitable[None]]


def _mark_writing(*, writing: bool) -> _Signal:
    """A request signal that tells the attempt's send record whether writing has started."""

    async def signal(
        session: aiohttp.ClientSession,  # noqa: ARG001 - the signal's signature
        context: SimpleNamespace,
        params: object,  # noqa: ARG001
    ) -> None:
        record = context.trace_request_ctx
        if record is not None:
            record.writing = writing

    return signal


def _trace_config() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig()
    # Proof that this request is traced: from its start until the headers go, nothing is
    # written. Without these signals (a borrowed session, a test double of aiohttp) the
    # transport's assumption stands: anything may have been written.
    config.on_request_start.append(_mark_writing(writing=False))
    # aiohttp calls this just before it writes the request's first byte: until then the server
    # cannot have processed anything, whatever happens to the attempt (a wait for a pooled
    # connection, a connect, a cancellation).
    config.on_request_headers_sent.append(_mark_writing(writing=True))
    return config


class SessionHolder:
    """Hands out the ClientSessions of a client.

    A session passed in is borrowed: it is used, never closed. Otherwise the sessions are
    created on first use (inside the running event loop, where aiohttp wants them) and closed by
    :meth:`close`: a pooled one for every call, and one that opens a fresh connection for every
    request, for ``change``.
    """

    __slots__ = ("_closed", "_fresh", "_owned", "_session")

    def __init__(self, session: aiohttp.ClientSession | None) -> None:
        self._session = session
        self._fresh: aiohttp.ClientSession | None = None
        self._owned = session is None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def get(self) -> aiohttp.ClientSession:
        """The pooled session; created now if this is the first use."""
        if self._closed:
            raise RuntimeError("this LoyaltyClient is closed; create a new one")
        if self._session is None:
            self._session = self._create(force_close=False)
        return self._session

    def get_fresh(self) -> aiohttp.ClientSession:
        """A session of the SDK's own that sends each request on a new connection.

        A pooled keep-alive connection may have been closed by the server (or a load balancer)
        while it sat idle; a request written to it fails as "disconnected" although nothing was
        processed, which for ``change`` would be an unknown outcome. A new connection cannot
        be stale. Made here even when the client borrowed a session (which cannot say when
        writing starts, nor promise a fresh connection): with that session's ``trust_env``,
        so that its proxy settings still apply.
        """
        if self._closed:
            raise RuntimeError("this LoyaltyClient is closed; create a new one")
        if self._fresh is None:
            borrowed = None if self._owned else self._session
            trust_env = borrowed.trust_env if borrowed is not None else False
            self._fresh = self._create(force_close=True, trust_env=trust_env)
        return self._fresh

    @staticmethod
    def _create(*, force_close: bool, trust_env: bool = False) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=_CONNECTION_LIMIT, force_close=force_close),
            raise_for_status=False,
            trace_configs=[_trace_config()],
            trust_env=trust_env,
        )

    async def close(self) -> None:
        """Close the sessions created here (never a borrowed one); idempotent."""
        self._closed = True
        pooled, fresh = self._session, self._fresh
        self._session = self._fresh = None
        for session in (pooled if self._owned else None, fresh):
            if session is not None:
                await session.close()


class LoopGuard:
    """Remembers the event loop a client first ran on, and refuses any other.

    The connection pool (and a Redis store's connections) belong to that loop: used from
    another one they fail deep inside aiohttp ("Event loop is closed", "attached to a
    different loop"). Shared by a client and its views.
    """

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    @property
    def used(self) -> bool:
        """Whether a call ran (and so a connection pool may be open)."""
        return self._loop is not None

    def check(self) -> None:
        """Remember the running loop on first use; refuse any other after it."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = weakref.ref(loop)
        elif self._loop() is not loop:
            raise RuntimeError(
                "this LoyaltyClient was first used on another event loop, and its connection "
                "pool belongs to that loop: one client per event loop. Create the client inside "
                "the loop that uses it (in each asyncio.run(), in each thread), or call the API "
                "from synchronous code with rees46_loyalty.SyncLoyaltyClient"
            )
