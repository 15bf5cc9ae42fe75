"""pytest plugin of rees46_loyalty: the ``rees46_fake`` fixture.

Installed with the package (entry point ``pytest11``), so a shop's test suite gets the fixture
without importing anything::

    async def test_checkout(rees46_fake):
        rees46_fake.server.add_member("79990001122", bonuses=500)
        calc = await rees46_fake.client.estimate(cart_items=[...], identifier="79990001122")
        assert rees46_fake.ledger.effects == []

Override the ``rees46_fake_options`` fixture to pass arguments to :class:`FakeRees46` (for
example ``{"envelope": "success"}``). The fixture is async: it needs pytest-asyncio.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from typing import Any

import pytest
from attrs import frozen

from .._client import LoyaltyClient
from ._clock import FakeClock
from ._faults import Faults
from ._ledger import Ledger
from ._program import Member
from ._server import FakeRees46

__all__ = ["Rees46Fake", "rees46_fake", "rees46_fake_options"]


@frozen
class Rees46Fake:
    """What the ``rees46_fake`` fixture gives a test.

    ``client`` is connected to ``server`` and runs on ``clock``, a :class:`FakeClock`, so its
    retries do not wait. Point your own application at ``server.url`` with ``server.shop_id``
    and ``server.shop_secret``.
    """

    server: FakeRees46
    client: LoyaltyClient
    clock: FakeClock

    @property
    def members(self) -> dict[str, Member]:
        """The server's loyalty members by identifier."""
        return self.server.members

    @property
    def faults(self) -> Faults:
        """The server's fault plan."""
        return self.server.faults

    @property
    def ledger(self) -> Ledger:
        """Every request the server saw and every effect it committed."""
        return self.server.ledger


@pytest.fixture
def rees46_fake_options() -> dict[str, Any]:
    """Keyword arguments for the fake server of ``rees46_fake``; override to change them."""
    return {}


if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def rees46_fake(rees46_fake_options: dict[str, Any]) -> AsyncIterator[Rees46Fake]:
        """A fake REES46 API on a free loopback port, and a client connected to it."""
        clock = FakeClock()
        async with (
            FakeRees46(**rees46_fake_options) as server,
            server.client(clock=clock) as client,
        ):
            yield Rees46Fake(server=server, client=client, clock=clock)

else:  # pragma: no cover

    @pytest.fixture
    def rees46_fake() -> None:
        """Unavailable: the fixture needs pytest-asyncio."""
        pytest.fail("the rees46_fake fixture needs pytest-asyncio: pip install pytest-asyncio")
