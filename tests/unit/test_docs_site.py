"""The documentation site works offline and its tables read cleanly (checked on the sources;
the docs build runs the same hook)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

DOCS = Path(__file__).parents[2] / "docs"
MKDOCS = (DOCS.parent / "mkdocs.yml").read_text(encoding="utf-8")
PAGES = sorted(DOCS.rglob("*.md"))


@pytest.fixture(scope="module")
def hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hook_finds_an_escaped_pipe_in_a_table_code_span(hooks: ModuleType) -> None:
    """`str \\| None` in a table cell is found (line 3); outside tables or code it is not."""
    page = "text `a \\| b`\n| a | b |\n| `str \\| None` | x \\| y |\n| `str | None` | y |\n"
    assert hooks.escaped_pipes_in_code(page) == [3]


def test_the_build_runs_the_hook_and_no_page_has_the_mistake(hooks: ModuleType) -> None:
    """mkdocs.yml registers the hook, and every page passes it."""
    assert "hooks:\n  - docs/hooks.py" in MKDOCS
    for page in PAGES:
        assert hooks.escaped_pipes_in_code(page.read_text(encoding="utf-8")) == [], page.name


def test_nothing_is_loaded_from_a_cdn() -> None:
    """No mermaid fence (mermaid.js comes from a CDN), no Google Fonts: the site works offline."""
    assert "mermaid" not in MKDOCS
    assert "font: false" in MKDOCS
    for page in PAGES:
        assert "```mermaid" not in page.read_text(encoding="utf-8"), page.name


def test_the_life_cycle_diagram_is_a_local_svg_of_every_transition() -> None:
    """lifecycle.md shows docs/assets/lifecycle.svg, which draws the three states and the
    operations between them."""
    assert "](assets/lifecycle.svg)" in (DOCS / "lifecycle.md").read_text(encoding="utf-8")
    svg = (DOCS / "assets" / "lifecycle.svg").read_text(encoding="utf-8")
    for label in ("created", "confirmed", "cancelled", "apply", "confirm", "change", "cancel"):
        assert f">{label}</text>" in svg
    assert svg.count(">cancel</text>") == 2
    assert svg.count(">apply</text>") == 2
    assert "http://www.w3.org/2000/svg" in svg
    assert "href=" not in svg  # nothing fetched
