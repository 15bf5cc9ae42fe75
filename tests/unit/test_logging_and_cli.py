"""Log records of the chain, the system clock, and the command line."""

from __future__ import annotations

import io
import logging
from decimal import Decimal
from typing import TextIO

import pytest

from rees46_loyalty import CartItem, LoyaltyClient, SystemClock
from rees46_loyalty.cli import _demo, main
from tests.conftest import PHONE, FakeClock
from tests.payloads import CALCULATION, REF, status_envelope
from tests.unit.helpers import FakeApi


async def test_one_debug_record_per_attempt_with_structured_fields(
    client: LoyaltyClient, api: FakeApi, log_records: list[logging.LogRecord]
) -> None:
    """Each attempt logs its operation, order, masked identifier, attempt, status and duration;
    the retry in between logs at INFO."""
    api.post("apply", status=503)
    api.post("apply", payload=status_envelope(CALCULATION))
    await client.apply(
        order_id="1001",
        cart_items=[CartItem(product_id="A", price=Decimal(1), quantity=1)],
        identifier=PHONE,
    )
    ours = [r for r in log_records if r.name == "rees46_loyalty"]
    attempts = [r for r in ours if r.levelno == logging.DEBUG]
    assert [(r.attempt, r.status) for r in attempts] == [(1, 503), (2, 200)]  # type: ignore[attr-defined]
    assert all(r.operation == "apply" and r.order_id == "1001" for r in attempts)  # type: ignore[attr-defined]
    assert all(r.identifier == "7999***1122" for r in attempts)  # type: ignore[attr-defined]
    assert attempts[0].error == "ServerError"  # type: ignore[attr-defined]
    (retry,) = [r for r in ours if r.levelno == logging.INFO]
    assert retry.retry_delay >= 0  # type: ignore[attr-defined]
    assert "retrying apply" in retry.getMessage()


async def test_nothing_is_logged_below_the_configured_level(
    client: LoyaltyClient, api: FakeApi, log_records: list[logging.LogRecord]
) -> None:
    """With the SDK's logger at WARNING a successful call writes no record at all."""
    logger = logging.getLogger("rees46_loyalty")
    logger.setLevel(logging.WARNING)
    try:
        api.post("confirm", payload=status_envelope(REF))
        await client.confirm(order_id="1001")
    finally:
        logger.setLevel(logging.NOTSET)
    assert [r for r in log_records if r.name == "rees46_loyalty"] == []


async def test_the_system_clock_moves_forward() -> None:
    """SystemClock reads time.monotonic and sleeps with asyncio."""
    clock = SystemClock()
    before = clock.monotonic()
    await clock.sleep(0)
    assert clock.monotonic() >= before


def test_demo_command_runs_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """python -m rees46_loyalty demo runs the demo and exits 0 when its checks hold."""
    real = _demo.run_demo

    async def without_waiting(out: TextIO, clock: object = None) -> bool:
        return await real(out, clock=FakeClock())

    monkeypatch.setattr(_demo, "run_demo", without_waiting)
    out = io.StringIO()
    assert main(["demo"], out) == 0
    assert "All checks hold." in out.getvalue()
    assert out.getvalue().rstrip().splitlines()[-1].startswith("Next: the quick start")


def test_the_command_line_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command argparse explains the usage."""
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    assert "usage" in capsys.readouterr().err
