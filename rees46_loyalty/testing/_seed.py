"""The sample data of the demo and of ``serve-fake``: members, a feed, codes, a certificate."""

from __future__ import annotations

from decimal import Decimal

from ._server import FakeRees46

__all__ = ["DEMO_MEMBER", "seed"]

DEMO_MEMBER = "79990001122"


def seed(fake: FakeRees46) -> None:
    """Give *fake* two members, three products, two promo codes and a certificate."""
    fake.add_member(DEMO_MEMBER, bonuses=Decimal(1000))
    fake.add_member("79990003344", bonuses=Decimal(0))
    fake.add_product("TEA-1", "Green tea, 100 g")
    fake.add_product("CUP-2", "Porcelain cup")
    fake.add_product("POT-3", "Teapot, 1 l")
    fake.add_promo_code("WELCOME10", 10)
    fake.add_promo_code("AUTUMN5", 5)
    fake.add_certificate("GIFT-500", 500)
