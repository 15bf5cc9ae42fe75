"""A clock for tests: sleeping returns at once and moves time forward."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A :class:`~rees46_loyalty.Clock` whose ``sleep`` returns at once.

    Each sleep moves the clock forward by its length and is recorded in :attr:`sleeps`, so a
    test can assert how long the client *would* have waited (backoff, ``Retry-After``) without
    waiting. :meth:`advance` moves time by hand (a slow attempt, an expired lease).
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        """The fake time, in seconds."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Record *seconds* and move the clock forward by them, without waiting."""
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        """Move the clock forward by *seconds*."""
        self.now += seconds
