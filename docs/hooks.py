r"""MkDocs hooks of the docs build: checks of the pages' Markdown that the build enforces.

A ``|`` inside a code span of a table cell is written as it is (``str | None``): Python-Markdown
does not split table cells inside backticks, and shows an escaped ``\|`` there literally, as
``str \| None``. The hook warns about every such cell, and ``mkdocs build --strict`` fails on
the warning.
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["escaped_pipes_in_code", "on_page_markdown"]

log = logging.getLogger("mkdocs.hooks.rees46_loyalty")

_CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def escaped_pipes_in_code(markdown: str) -> list[int]:
    r"""The line numbers (from 1) of table rows with ``\|`` inside a code span."""
    found = []
    for number, line in enumerate(markdown.splitlines(), start=1):
        if line.lstrip().startswith("|") and any(
            "\\|" in span.group(2) for span in _CODE_SPAN.finditer(line)
        ):
            found.append(number)
    return found


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    r"""Warn about each table cell that would show ``\|``; the strict build fails on it."""
    for number in escaped_pipes_in_code(markdown):
        log.warning(
            "%s:%d: a table cell's code span holds \\| and would show it as is; write | "
            "(Python-Markdown does not split cells inside backticks)",
            page.file.src_uri,
            number,
        )
    return markdown
