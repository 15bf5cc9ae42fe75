"""Sessions: `nox` runs tests, lint, typecheck and docs; `nox -s <name>` runs one."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "tests_without_speedups", "lint", "typecheck", "docs"]
nox.options.error_on_missing_interpreters = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite with coverage of the package (fails under 95%), speedups installed."""
    session.install("-e", ".[test,redis,speedups,otel]")
    # coverage runs pytest (not pytest-cov inside it): the package's own pytest plugin is
    # imported while pytest starts, before pytest-cov could begin measuring.
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "report", "--fail-under=95")


@nox.session
def tests_without_speedups(session: nox.Session) -> None:
    """The test suite without the speedups extra: the reference decode path alone."""
    session.install("-e", ".[test,redis,otel]")
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (not part of the default run); ``-- --quick`` for a short run."""
    # The typed peers (pydantic), the chart (matplotlib) and the Redis clients compared with
    # redis-py are the benchmarks' own: no extra of the package carries them.
    session.install(
        "-e",
        ".[test,redis,speedups]",
        "orjson",
        "matplotlib",
        "pydantic>=2.7",
        "hiredis",
        "coredis",
        "valkey-glide",
    )
    quick = "--quick" in session.posargs
    session.run("python", "-m", "benchmarks.run", *(["--quick"] if quick else []))
    calls = ["--calls", "500", "--rounds", "3"] if quick else []
    session.run("python", "-m", "benchmarks.idempotency_overhead", *calls)
    session.run("python", "-m", "benchmarks.inflight", *(["--calls", "2000"] if quick else []))
    session.run("python", "-m", "benchmarks.redis_clients", *(["--quick"] if quick else []))
    session.run("python", "-m", "benchmarks.memory_store")
    session.run("python", "-m", "benchmarks.sync_overhead", *calls)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff~=0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, the examples, the tests and the benchmarks."""
    session.install("-e", ".[test,redis,speedups,otel]", "mypy~=2.4", "nox")
    session.run("mypy", "--strict")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into ``site/``; any warning fails the build."""
    # ruff formats the signatures the API reference shows; without it they are left on one line.
    session.install("-e", ".", "mkdocs-material~=9.6", "mkdocstrings[python]~=1.0", "ruff~=0.17.6")
    # mkdocs-material prints a banner about MkDocs 2.0 on every build; it is not a warning.
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs)
