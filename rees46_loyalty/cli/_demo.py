"""The demo: a whole order life cycle against the embedded fake server, with faults on.

Each step gets a fault planned for it, so the output shows what the SDK does about each kind:
a retried 503, an answer lost after the server committed, a 429 with Retry-After, a 5xx on
``change`` that proves the request was never processed. A second return's answer is lost after
the server committed it: the SDK raises ``OutcomeUnknownError`` instead of sending it again, and
``reconcile()`` finds it applied with its exact refund. Redelivered ``change`` calls and a
duplicate ``cancel`` are answered from the idempotency store without sending, and a cancel of
an unknown order is a terminal error. The closing checks compare what the SDK reported with the
server's ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TextIO

from .._clock import Clock
from .._http import ApiRequest, ApiResponse, Handler
from .._policy import RetryPolicy
from ..errors import LoyaltyError, OrderStatusError, OutcomeUnknownError
from ..models import CartItem, OrderChange
from ..testing import FakeRees46, Fault
from ..testing._seed import DEMO_MEMBER, seed

__all__ = ["run_demo"]

CART = [
    CartItem(product_id="TEA-1", price=Decimal("349.90"), quantity=4),
    CartItem(product_id="CUP-2", price=Decimal("1200"), quantity=2),
    CartItem(product_id="POT-3", price=Decimal("2490.50"), quantity=1),
]
# The buyer returns one cup and the teapot: the whole new cart, not the returned lines.
RETURNED_CART = [
    CartItem(product_id="TEA-1", price=Decimal("349.90"), quantity=4),
    CartItem(product_id="CUP-2", price=Decimal("1200"), quantity=1),
]
# Then the other cup: a second return, with an id of its own.
SECOND_RETURN_CART = [CartItem(product_id="TEA-1", price=Decimal("349.90"), quantity=4)]


class _AttemptCounter:
    """A user middleware: counts the attempts of the current call."""

    def __init__(self) -> None:
        self.attempts = 0

    async def __call__(self, request: ApiRequest, call_next: Handler) -> ApiResponse:
        self.attempts = request.attempt
        return await call_next(request)


async def run_demo(out: TextIO, clock: Clock | None = None) -> bool:  # noqa: PLR0915 - one story
    """Run the demo, writing to *out*; return whether every check held.

    *clock* is the client's clock (tests pass a FakeClock so that retries do not wait).
    """
    counter = _AttemptCounter()
    checks: list[tuple[str, bool]] = []
    async with FakeRees46() as fake:
        seed(fake)
        start_bonuses = fake.members[DEMO_MEMBER].bonuses
        out.write(f"rees46_loyalty demo: fake REES46 API at {fake.url}, faults on\n\n")
        out.write(f"{'step':<28}{'fault injected':<26}{'requests':>8}  outcome\n")
        out.write("-" * 100 + "\n")
        policy = RetryPolicy(initial_delay=0.05, max_delay=0.2)
        async with fake.client(retry=policy, middlewares=[counter], clock=clock) as client:

            async def step(
                name: str, fault: tuple[str, Fault] | None, call: Callable[[], Awaitable[str]]
            ) -> LoyaltyError | None:
                """Run one call and print a line; return the error it ended with, if any."""
                label = ""
                if fault is not None:
                    fake.faults.on(*fault)
                    label = fault[1].label
                error: LoyaltyError | None = None
                counter.attempts = 0
                try:
                    outcome = await call()
                except LoyaltyError as exc:
                    # The message up to its context: the advice after it is for code, not here.
                    error, outcome = exc, f"{type(exc).__name__}: {exc.message.split(' (')[0]}"
                out.write(f"{name:<28}{label:<26}{counter.attempts:>8}  {outcome}\n")
                return error

            async def estimate() -> str:
                calc = await client.estimate(
                    cart_items=CART,
                    identifier=DEMO_MEMBER,
                    charge_bonuses=True,
                    promo_codes=["WELCOME10"],
                )
                return f"to pay {calc.order_to_pay}, saved {calc.saved_total}"

            async def apply() -> str:
                calc = await client.apply(
                    order_id="D-1001",
                    cart_items=CART,
                    identifier=DEMO_MEMBER,
                    charge_bonuses=True,
                    promo_codes=["WELCOME10"],
                    certificates=["GIFT-500"],
                )
                return (
                    f"to pay {calc.order_to_pay}, bonuses spent {calc.saved_by_bonuses}, "
                    f"certificate {calc.saved_by_certificates}"
                )

            async def confirm() -> str:
                ref = await client.confirm(order_id="D-1001")
                return f"order {ref.order_id} confirmed"

            def change(
                key: str, cart: list[CartItem], found: list[Decimal]
            ) -> Callable[[], Awaitable[str]]:
                async def send() -> str:
                    calc = await client.change(
                        order_id="D-1001", cart_items=cart, idempotency_key=key
                    )
                    found.append(calc.order_total_change)
                    return f"order_total_change {calc.order_total_change}{_replayed(calc.replayed)}"

                return send

            async def reconcile() -> str:
                found = await client.reconcile(order_id="D-1001", idempotency_key="return-2")
                if not (found.applied and isinstance(found.result, OrderChange)):
                    return f"the {found.operation} was not applied"
                reconciled.append(found.result.order_total_change)
                return (
                    f"{found.operation} applied, order_total_change "
                    f"{found.result.order_total_change} (decided by {found.decided_by})"
                )

            async def cancel(order_id: str) -> str:
                ref = await client.cancel(order_id=order_id)
                return f"order {ref.order_id} cancelled{_replayed(ref.replayed)}"

            refunds: list[Decimal] = []
            second: list[Decimal] = []
            reconciled: list[Decimal] = []
            first_return = change("return-1", RETURNED_CART, refunds)
            second_return = change("return-2", SECOND_RETURN_CART, second)
            errors = [
                await step(
                    "1 estimate", ("estimate", Fault.unavailable(retry_after="0")), estimate
                ),
                await step("2 apply", ("apply", Fault.drop_after_commit()), apply),
                await step("3 confirm", ("confirm", Fault.rate_limited(retry_after="0")), confirm),
                await step(
                    "4 change (partial return)", ("change", Fault.unavailable()), first_return
                ),
                await step("5 change, job redelivered", None, first_return),
            ]
            lost = await step(
                "6 change (second return)", ("change", Fault.drop_after_commit()), second_return
            )
            errors += [
                await step("7 reconcile the lost change", None, reconcile),
                await step("8 change, job redelivered", None, second_return),
                await step("9 cancel", ("cancel", Fault.bad_gateway()), lambda: cancel("D-1001")),
                await step("10 cancel, duplicate", None, lambda: cancel("D-1001")),
            ]
            unknown = await step("11 cancel unknown order", None, lambda: cancel("D-404"))

        ledger = fake.ledger
        book = fake.book
        committed = [effect.order_total_change for effect in ledger.effects_for("change")]
        checks = [
            ("steps 1 to 5 and 7 to 10 succeeded despite their faults", errors == [None] * 9),
            (
                "the lost change raised OutcomeUnknownError and was not sent again",
                isinstance(lost, OutcomeUnknownError),
            ),
            (
                "both answers of the first return reported its refund in the ledger",
                committed[:1] * 2 == refunds,
            ),
            (
                "reconcile found the lost change's exact refund in the ledger",
                committed[1:] == reconciled,
            ),
            ("the second return's redelivery replayed that refund", second == reconciled),
            (
                "the redelivered changes and the duplicate cancel sent nothing",
                len(ledger.requests_for("change")) == 3
                and len(ledger.requests_for("cancel", "D-1001")) == 2,
            ),
            ("exactly two changes were committed", len(committed) == 2),
            ("exactly one confirm was committed", len(ledger.effects_for("confirm")) == 1),
            ("exactly one cancel was committed", len(ledger.effects_for("cancel")) == 1),
            (
                "the cancel of an unknown order failed as a terminal error",
                isinstance(unknown, OrderStatusError),
            ),
            ("the order ended cancelled", book.orders["D-1001"].status == "cancelled"),
            (
                "the member's bonuses are back where they started",
                fake.members[DEMO_MEMBER].bonuses == start_bonuses,
            ),
            (
                "the gift certificate is whole again",
                book.certificates["GIFT-500"].balance == Decimal(500),
            ),
            ("every fault planned was injected", len(fake.faults.injected) == 6),
        ]
        out.write("\nChecks against the fake server's ledger\n")
        for text, held in checks:
            out.write(f"  [{'ok' if held else 'FAILED'}] {text}\n")
        total = len(ledger.requests)
        faults = len(fake.faults.injected)
        out.write(f"\n{total} requests reached the server, {faults} of them met a fault.\n")
    passed = all(held for _, held in checks)
    out.write("All checks hold.\n" if passed else "Some checks FAILED.\n")
    out.write("\nNext: the quick start against `serve-fake` (README.md, docs/quickstart.md).\n")
    return passed


def _replayed(replayed: bool) -> str:
    return " (replayed: nothing sent)" if replayed else ""


def main(out: TextIO) -> int:
    """Run the demo; exit code 0 when every check holds."""
    return 0 if asyncio.run(run_demo(out)) else 1
