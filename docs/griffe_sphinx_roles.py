"""A griffe extension for the docs build: Sphinx roles in docstrings become Markdown.

The package's docstrings are Google style but cross-reference the Sphinx way
(``:class:`~rees46_loyalty.errors.OutcomeUnknownError```, ``:meth:`close```), which Markdown
would show as it is. Targets inside the package become mkdocstrings cross-references; other
targets (the standard library, aiohttp, attrs) become code, since the site has no inventory of
them and a dangling reference fails the strict build. A paragraph ending in ``::`` (reST's
literal block marker) ends in ``:``: the indented block after it is already code in Markdown.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

__all__ = ["SphinxRoles"]

_ROLE = re.compile(r":(?:class|meth|func|attr|exc|mod|data|obj):`(?P<tilde>~?)(?P<target>[^`]+)`")
_LITERAL_MARKER = re.compile(r"(?<=\S)::$", re.MULTILINE)
_PACKAGE = "rees46_loyalty."


def _role_to_markdown(match: re.Match[str]) -> str:
    target = match["target"]
    shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
    if target.startswith(_PACKAGE):
        return f"[`{shown}`][{target}]"
    return f"`{shown}`"


def to_markdown(text: str) -> str:
    """Rewrite the Sphinx roles and literal-block markers of one docstring."""
    return _LITERAL_MARKER.sub(":", _ROLE.sub(_role_to_markdown, text))


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring as it is loaded, before mkdocstrings renders it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: ARG002 - the hook signature
        """Rewrite the docstring of *obj*, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
