"""The testing page's example: tests of a user's code through a transport= function."""

from __future__ import annotations

import importlib


async def test_the_testing_pages_transport_tests_pass() -> None:
    """Both example tests pass as a user would run them (answered, then refused)."""
    example = importlib.import_module("transport_tests")  # docs/examples, on sys.path
    await example.test_pay_for_returns_what_is_left_to_pay()
    await example.test_pay_for_passes_the_apis_refusal_on()
