"""The package's public surface."""

from __future__ import annotations
import __future__

import importlib
import importlib.metadata
import types
from pathlib import Path

import pytest

import rees46_loyalty
from rees46_loyalty import errors


def test_all_is_sorted_and_importable() -> None:
    """__all__ is sorted (constants first, as isort orders them) and every name exists."""
    names = rees46_loyalty.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for name in names:
        assert getattr(rees46_loyalty, name) is not None


# The packages whose namespace is their interface: every public name in it is exported.
PACKAGES = [
    "rees46_loyalty",
    "rees46_loyalty.idempotency",
    "rees46_loyalty.middleware",
    "rees46_loyalty.models",
    "rees46_loyalty.testing",
]


def _public_names(module: types.ModuleType) -> list[str]:
    """The names a user sees in *module*: all but the private ones and compiler directives.

    Not identifiers either (``@py_builtins``: pytest's assertion rewriting of its plugins).
    """
    return [
        name
        for name, value in vars(module).items()
        if name.isidentifier()
        and not name.startswith("_")
        and not isinstance(value, __future__._Feature)
    ]


@pytest.mark.parametrize("name", PACKAGES)
def test_a_package_shows_only_its_exports_and_submodules(name: str) -> None:
    """Every public name of the package is in its __all__ (which names only what exists) or is
    one of its subpackages: no import of its own leaks into what users see."""
    package = importlib.import_module(name)
    exported = set(package.__all__)
    leaked = [
        attribute
        for attribute in _public_names(package)
        if attribute not in exported
        and not (
            isinstance(getattr(package, attribute), types.ModuleType)
            and getattr(package, attribute).__name__ == f"{name}.{attribute}"
        )
    ]
    assert leaked == [], f"import these under a private name or export them: {leaked}"
    assert all(hasattr(package, attribute) for attribute in exported)


def test_errors_exports_every_public_thing_it_defines() -> None:
    """Every public class or function errors.py defines is in its __all__, which names only
    what exists (its imports, a module's own business, are not checked)."""
    defined = [
        name
        for name in _public_names(errors)
        if getattr(getattr(errors, name), "__module__", None) == errors.__name__
    ]
    assert set(defined) <= set(errors.__all__)
    assert "LoyaltyError" in defined
    assert all(hasattr(errors, name) for name in errors.__all__)


def test_every_error_is_re_exported_from_the_root() -> None:
    """rees46_loyalty.errors and the package root name the same classes."""
    for name in errors.__all__:
        assert getattr(rees46_loyalty, name) is getattr(errors, name)


def test_the_error_tree() -> None:
    """The hierarchy drawn in errors.py's docstring holds."""
    tree = {
        "ValidationError": "LoyaltyError",
        "APIError": "LoyaltyError",
        "BadRequestError": "APIError",
        "AuthenticationError": "APIError",
        "NotFoundError": "APIError",
        "OrderStatusError": "APIError",
        "RateLimitError": "APIError",
        "ServerError": "APIError",
        "TransportError": "LoyaltyError",
        "ConnectError": "TransportError",
        "TimeoutError": "TransportError",
        "MalformedResponseError": "LoyaltyError",
        "NotAnApiError": "MalformedResponseError",
        "OutcomeUnknownError": "LoyaltyError",
        "IdempotencyError": "LoyaltyError",
    }
    for child, parent in tree.items():
        assert issubclass(getattr(errors, child), getattr(errors, parent)), child
        assert child in (errors.__doc__ or "")
    assert issubclass(errors.TimeoutError, TimeoutError)
    assert issubclass(errors.ValidationError, ValueError)
    assert not issubclass(errors.NotAnApiError, errors.NotFoundError)


def test_the_version_is_the_installed_one() -> None:
    """rees46_loyalty.__version__ is the distribution's version."""
    assert rees46_loyalty.__version__ == importlib.metadata.version("rees46-loyalty")


def test_py_typed_is_shipped() -> None:
    """The package is marked as typed."""
    assert (Path(rees46_loyalty.__file__).parent / "py.typed").is_file()


def test_tenacity_and_cattrs_stay_in_their_modules() -> None:
    """tenacity is imported only by the retry middleware, cattrs only by _serialization."""
    package = Path(rees46_loyalty.__file__).parent
    for source in package.rglob("*.py"):
        text = source.read_text()
        relative = source.relative_to(package).as_posix()
        if relative != "middleware/retry.py":
            assert "import tenacity" not in text
            assert "from tenacity" not in text, relative
        if relative != "_serialization.py":
            assert "from cattrs" not in text, relative
            assert "import cattrs" not in text, relative
    importlib.import_module("rees46_loyalty.middleware.retry")
