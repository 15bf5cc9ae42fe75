"""The figures the documentation shows are the ones the SDK and the fake server produce."""

from __future__ import annotations

import runpy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rees46_loyalty import CartItem
from rees46_loyalty.testing import FakeRees46
from rees46_loyalty.testing._seed import seed

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "quickstart.py"
DOCS = Path(__file__).parents[2] / "docs"
PAGE = DOCS / "quickstart.md"

# What docs/quickstart.md shows under "It prints"; the page is checked to hold it too.
EXPECTED = """\
estimate: to pay 629.94 saved 369.96
apply: bonuses spent 269.97 reward 31.49
change: refund 62.94
history: [('QS-1001', 'confirmed', Decimal('567.00'))]
"""


async def test_the_quickstart_prints_what_the_page_shows(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against serve-fake's sample data, the example's output is the page's, line for line."""
    main = runpy.run_path(str(EXAMPLE), run_name="quickstart")["main"]
    async with FakeRees46(shop_id="test-shop", shop_secret="test-secret") as fake:
        seed(fake)
        monkeypatch.setenv("REES46_SHOP_ID", fake.shop_id)
        monkeypatch.setenv("REES46_SHOP_SECRET", fake.shop_secret)
        monkeypatch.setenv("REES46_BASE_URL", fake.url)
        await main()
        assert len(fake.ledger.effects_for("change", "QS-1001")) == 1

    assert capsys.readouterr().out == EXPECTED
    assert EXPECTED in PAGE.read_text(encoding="utf-8")


async def test_the_life_cycle_page_moves_bonuses_as_its_table_shows() -> None:
    """Each step of the quick start's order leaves the member the balance lifecycle.md gives."""
    cart = [
        CartItem(product_id="TEA-1", price=Decimal("450.00"), quantity=2),
        CartItem(product_id="CUP-2", price=Decimal("99.90"), quantity=1),
    ]
    terms: dict[str, Any] = {
        "identifier": "79990001122",
        "promo_codes": ["WELCOME10"],
        "charge_bonuses": True,
    }
    async with FakeRees46() as fake, fake.client(idempotency=None) as client:
        seed(fake)
        member = fake.members["79990001122"]
        balances = [member.bonuses]

        calc = await client.estimate(cart_items=cart, **terms)
        balances.append(member.bonuses)
        await client.apply(order_id="L-1", cart_items=cart, **terms)
        balances.append(member.bonuses)
        await client.confirm(order_id="L-1")
        balances.append(member.bonuses)
        await client.confirm(order_id="L-1")
        balances.append(member.bonuses)
        change = await client.change(order_id="L-1", cart_items=cart[:1])
        balances.append(member.bonuses)
        await client.cancel(order_id="L-1")
        balances.append(member.bonuses)

    assert (calc.order_to_pay, calc.order_bonuses_to_charge, calc.bonuses_reward) == (
        Decimal("629.94"),
        Decimal("269.97"),
        Decimal("31.49"),
    )
    assert change.order_total_change == Decimal("-62.94")
    expected = ["1000.00", "1000.00", "730.03", "761.52", "761.52", "785.35", "1000.00"]
    assert balances == [Decimal(value) for value in expected]
    page = (DOCS / "lifecycle.md").read_text(encoding="utf-8")
    for value in [*expected, "629.94", "269.97", "31.49", "-62.94"]:
        assert value in page
