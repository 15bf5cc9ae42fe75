"""The docs pages include the example files that the other tests run."""

from __future__ import annotations

import re
from pathlib import Path

from tests.integration.examples.conftest import EXAMPLES

ROOT = EXAMPLES.parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
# A snippet include inside a python fence, kept from ruff format (which would rewrite the
# include line as Python) by fmt: off / on.
INCLUDE = re.compile(
    r'<!-- fmt: off -->(?:<!--[^>]*-->)?\n```python[^\n]*\n--8<-- "([^"]+)"\n```\n<!-- fmt: on -->'
)


def test_every_example_is_included_by_a_page_and_every_include_exists() -> None:
    """No example left out of the docs, no include of a file that is not there."""
    included = [Path(path) for page in PAGES for path in INCLUDE.findall(page.read_text())]
    assert sorted(included) == sorted(p.relative_to(ROOT) for p in EXAMPLES.glob("*.py"))
    assert all((ROOT / path).is_file() for path in included)


def test_no_include_is_left_to_ruff_format() -> None:
    """Every include line of the pages is one of the protected blocks above."""
    for page in PAGES:
        text = page.read_text()
        python_includes = text.count("--8<--") - text.count('--8<-- "CHANGELOG.md"')
        assert python_includes == len(INCLUDE.findall(text)), page.name
