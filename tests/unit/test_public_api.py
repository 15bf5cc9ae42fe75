"""The package's public surface."""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import rees46_loyalty
from rees46_loyalty import errors


def test_all_is_sorted_and_importable() -> None:
    """__all__ is sorted (constants first, as isort orders them) and every name exists."""
    names = rees46_loyalty.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for name in names:
        assert getattr(rees46_loyalty, name) is not None


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
