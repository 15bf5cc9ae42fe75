"""Owns or borrows the aiohttp ClientSession, and knows whether the client is still open."""

from __future__ import annotations

import aiohttp

__all__ = ["SessionHolder"]

_CONNECTION_LIMIT = 100


class SessionHolder:
    """Hands out the one ClientSession of a client.

    A session passed in is borrowed: it is used, never closed. Otherwise the session is created
    on first use (inside the running event loop, where aiohttp wants it) and closed by
    :meth:`close`.
    """

    __slots__ = ("_closed", "_owned", "_session")

    def __init__(self, session: aiohttp.ClientSession | None) -> None:
        self._session = session
        self._owned = session is None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def owns_open_session(self) -> bool:
        """Whether a session created here is still open."""
        return self._owned and self._session is not None and not self._session.closed

    def get(self) -> aiohttp.ClientSession:
        """The session; created now if this is the first use."""
        if self._closed:
            raise RuntimeError("this LoyaltyClient is closed; create a new one")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=_CONNECTION_LIMIT),
                raise_for_status=False,
            )
        return self._session

    async def close(self) -> None:
        """Close the session if it was created here; idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if self._owned and session is not None:
            await session.close()
