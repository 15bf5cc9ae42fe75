"""The command line: the demo, and serve-fake as a shop developer runs it."""

from __future__ import annotations

import asyncio
import io
import signal
import sys
from decimal import Decimal

import pytest

from rees46_loyalty import CartItem, LoyaltyClient
from rees46_loyalty.cli._demo import run_demo
from rees46_loyalty.testing import FakeClock

pytestmark = pytest.mark.integration


async def test_the_demo_passes_its_checks() -> None:
    """The demo runs the life cycle with a fault per step and every ledger check holds."""
    out = io.StringIO()
    assert await run_demo(out, clock=FakeClock()) is True
    text = out.getvalue()
    assert "All checks hold." in text
    assert "FAILED" not in text
    for step in ("estimate", "apply", "confirm", "change", "cancel, duplicate", "cancel unknown"):
        assert step in text
    assert "drop after commit" in text
    assert "OrderStatusError: Could not cancel order in its current status" in text
    assert text.count("(replayed: nothing sent)") == 3
    lost = next(line for line in text.splitlines() if line.startswith("6 change"))
    assert "OutcomeUnknownError: change on order 'D-1001' may have been applied" in lost
    found = next(line for line in text.splitlines() if line.startswith("7 reconcile"))
    refund = found.split("order_total_change ")[1].split()[0]
    redelivered = next(line for line in text.splitlines() if line.startswith("8 change"))
    assert f"order_total_change {refund} (replayed: nothing sent)" in redelivered
    assert "[ok] reconcile found the lost change's exact refund in the ledger" in text


async def test_serve_fake_serves_until_sigterm() -> None:
    """serve-fake prints its URL, shop and members but never the secret, answers the SDK, and
    stops cleanly on SIGTERM."""
    secret = "cli-secret-123"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rees46_loyalty",
        "serve-fake",
        "--port",
        "0",
        "--shop-id",
        "cli-shop",
        "--shop-secret",
        secret,
        "--envelope",
        "success",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or lines[-1] != "Ctrl-C to stop":
        line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
        assert line, "serve-fake exited early"
        lines.append(line.decode().strip())
    url = lines[0].rsplit(" ", 1)[-1]
    assert url.startswith("http://127.0.0.1:")
    assert any("member 79990001122: 1000 bonuses" in line for line in lines)
    async with LoyaltyClient("cli-shop", secret, base_url=url, clock=FakeClock()) as client:
        calc = await client.estimate(
            cart_items=[CartItem(product_id="TEA-1", price=Decimal(100), quantity=1)],
            promo_codes=["WELCOME10"],
        )
    assert calc.order_to_pay == Decimal(90)
    process.send_signal(signal.SIGTERM)
    rest, errors = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0
    output = "\n".join(lines) + rest.decode() + errors.decode()
    assert "stopped after 1 requests" in output
    assert secret not in output
