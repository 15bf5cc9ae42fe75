"""The quick start's example (docs/examples/quickstart.py) prints what the page says it prints."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from rees46_loyalty.testing import FakeRees46
from rees46_loyalty.testing._seed import seed

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "quickstart.py"
PAGE = Path(__file__).parents[2] / "docs" / "quickstart.md"

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
