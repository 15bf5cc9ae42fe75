"""Test what you build on the SDK without the real API.

:class:`FakeRees46` serves the loyalty checkout API over HTTP on loopback, with a small
deterministic loyalty program, a ledger of every effect and programmable faults. The pytest
plugin (installed with the package) gives it to tests as the ``rees46_fake`` fixture.
Without a server, a client's ``transport=`` function answers with :func:`json_response`.
"""

from ._answers import json_response
from ._book import Order
from ._clock import FakeClock
from ._faults import DEFAULT_MIX, Fault, FaultKind, Faults
from ._ledger import Effect, Ledger, RequestRecord
from ._program import Certificate, LoyaltyProgram, Member
from ._server import FakeRees46

__all__ = [
    "DEFAULT_MIX",
    "Certificate",
    "Effect",
    "FakeClock",
    "FakeRees46",
    "Fault",
    "FaultKind",
    "Faults",
    "Ledger",
    "LoyaltyProgram",
    "Member",
    "Order",
    "RequestRecord",
    "json_response",
]
