"""The SDK's version, as installed (``"0"`` when run from a source tree that is not installed)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION"]


def _installed_version() -> str:
    try:
        return version("rees46-loyalty")
    except PackageNotFoundError:  # pragma: no cover - a source tree or a vendored copy
        return "0"


VERSION = _installed_version()
