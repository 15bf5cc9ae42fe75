"""The first hour: the README's and the docs' quick starts run as pasted against serve-fake's
sample data and credentials, one after the other on the same server (no order id collides)."""

from __future__ import annotations

import re
import runpy
from collections.abc import Iterator
from pathlib import Path

import pytest

from rees46_loyalty.testing import FakeRees46
from rees46_loyalty.testing._seed import seed
from tests.integration.conftest import serving_in_a_thread

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


def first_python_block(path: Path, after: str) -> str:
    """The first ```python block of *path* after the heading *after*."""
    text = path.read_text(encoding="utf-8")
    section = text[text.index(after) :]
    match = re.search(r"```python\n(.*?)```\n", section, re.DOTALL)
    assert match is not None
    return match.group(1)


@pytest.fixture
def serve_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRees46]:
    """serve-fake's server (its defaults and sample data), and the environment its banner and
    the quick start give."""
    with serving_in_a_thread() as fake:
        seed(fake)
        monkeypatch.setenv("REES46_SHOP_ID", "test-shop")
        monkeypatch.setenv("REES46_SHOP_SECRET", "test-secret")
        monkeypatch.setenv("REES46_BASE_URL", fake.url)
        yield fake


def run_snippet(code: str, name: str) -> None:
    exec(compile(code, name, "exec"), {"__name__": "__main__"})  # noqa: S102 - the docs' code


def test_the_readme_quick_start_runs_as_pasted(
    serve_fake: FakeRees46, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's quick start, as it stands: priced, applied, confirmed, one change."""
    run_snippet(first_python_block(ROOT / "README.md", "## Quick start"), "README.md")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("to pay ")
    assert out[1].startswith("refund ")
    assert "('README-1', 'confirmed')" in out[2]
    assert len(serve_fake.ledger.effects_for("change", "README-1")) == 1
    code = first_python_block(ROOT / "README.md", "## Quick start")
    # estimate and apply with the same arguments, as apply.md advises.
    assert "client.estimate(cart_items=cart, **terms)" in code
    assert 'client.apply(order_id="README-1", cart_items=cart, **terms)' in code


def test_every_quick_start_runs_on_one_server_without_colliding(
    serve_fake: FakeRees46, capsys: pytest.CaptureFixture[str]
) -> None:
    """README, the docs' index and quickstart.py, one after the other: all succeed."""
    run_snippet(first_python_block(ROOT / "README.md", "## Quick start"), "README.md")
    run_snippet(first_python_block(ROOT / "docs" / "index.md", "## Quick start"), "index.md")
    runpy.run_path(str(ROOT / "docs" / "examples" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "estimate: to pay 629.94" in out
    assert {"README-1", "INDEX-1", "QS-1001"} <= set(serve_fake.book.orders)


def test_the_redis_example_refunds_once_for_two_deliveries(
    serve_fake: FakeRees46,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/examples/redis_refund.py against serve-fake and a real Redis prints what
    idempotency.md shows, and the server saw one change."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    runpy.run_path(str(ROOT / "docs" / "examples" / "redis_refund.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out == "delivery 1: refund 450\ndelivery 2: refund 450\n"
    assert out in (ROOT / "docs" / "idempotency.md").read_text(encoding="utf-8")
    assert serve_fake.received("change") == 1
