"""The operator commands (details, history, cancel, change) against the fake server.

Most cases call the entry point in-process, with its I/O and clock injected; a few run the real
``python -m rees46_loyalty`` in a subprocess. Every output of every run is checked for the shop
secret and the member's full phone number (``_no_leaks``).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from attrs import frozen

from rees46_loyalty import CartItem, LoyaltyClient, OutcomeUnknownError
from rees46_loyalty.cli import main, main_async
from rees46_loyalty.cli._args import COMMANDS, ExitCode
from rees46_loyalty.idempotency import RedisIdempotencyStore
from rees46_loyalty.testing import FakeClock, FakeRees46, Fault
from tests.conftest import PHONE, SHOP_ID, SHOP_SECRET

pytestmark = pytest.mark.integration

ORDER = "1001"
MASKED = "7999***1122"
CART = [
    CartItem(product_id="A", price=Decimal("1000"), quantity=4),
    CartItem(product_id="B", price=Decimal("99.90"), quantity=1),
]
RETURN = [
    CartItem(product_id="A", price=Decimal("1000"), quantity=3),
    CartItem(product_id="B", price=Decimal("99.90"), quantity=1),
]


@frozen
class Run:
    """What one run of the command line left behind."""

    code: int
    out: str
    err: str


#: Every output of the current test, for the leak check.
_outputs: list[str] = []


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """After each test: no output of any run holds the secret or the member's full phone."""
    _outputs.clear()
    yield
    for text in _outputs:
        assert SHOP_SECRET not in text
        assert PHONE not in text


@pytest.fixture
async def fake() -> AsyncIterator[FakeRees46]:
    """The fake server with one member and order 1001 applied (bonuses spent) and confirmed."""
    async with FakeRees46(shop_id=SHOP_ID, shop_secret=SHOP_SECRET) as server:
        server.add_member(PHONE, bonuses=500)
        server.add_product("A", "Tea")
        server.add_promo_code("SALE10", 10)
        async with server.client(clock=FakeClock(), idempotency=None) as client:
            await client.apply(
                order_id=ORDER,
                cart_items=CART,
                identifier=PHONE,
                promo_codes=["SALE10"],
                charge_bonuses=True,
            )
            await client.confirm(order_id=ORDER)
        yield server


@pytest.fixture
def env(fake: FakeRees46, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The credentials, the fake server's URL and a records file of the test's own, in this
    process's environment."""
    values = {
        "REES46_SHOP_ID": SHOP_ID,
        "REES46_SHOP_SECRET": SHOP_SECRET,
        "REES46_BASE_URL": fake.url,
        "REES46_IDEMPOTENCY_DB": str(tmp_path / "operator.sqlite3"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


async def cli(*argv: str, stdin: str = "") -> Run:
    """Run a command in-process, on a fake clock (retries do not wait)."""
    out, err = io.StringIO(), io.StringIO()
    code = await main_async(
        list(argv),
        stdout=out,
        stderr=err,
        stdin=io.StringIO(stdin),
        client_options={"clock": FakeClock()},
    )
    _outputs.extend([out.getvalue(), err.getvalue()])
    return Run(code, out.getvalue(), err.getvalue())


async def process(*argv: str, env: dict[str, str], stdin: bytes | None = None) -> Run:
    """Run ``python -m rees46_loyalty`` in a subprocess with *env* as its REES46_* variables."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REES46_")}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rees46_loyalty",
        *argv,
        env={**environ, **env},
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(stdin), timeout=60)
    assert child.returncode is not None
    _outputs.extend([out.decode(), err.decode()])
    return Run(child.returncode, out.decode(), err.decode())


def value_of(text: str, key: str) -> str:
    """The value of the aligned ``key  value`` line of *text*."""
    for line in text.splitlines():
        name, _, value = line.partition("  ")
        if name == key:
            return value.strip()
    raise AssertionError(f"no line {key!r} in:\n{text}")


def no_floats(text: str) -> object:
    """Parse JSON, failing on any float: amounts must travel as exact strings."""

    def refuse(number: str) -> object:
        raise AssertionError(f"a float in the JSON output: {number}")

    return json.loads(text, parse_float=refuse)


# -- details ---------------------------------------------------------------------------------


async def test_details_shows_the_order_as_the_server_has_it(
    fake: FakeRees46, env: dict[str, str]
) -> None:
    """details prints the server's amounts exactly, aligned, with the phone masked."""
    expected = fake.book.orders[ORDER].calculation.payload
    run = await cli("details", "--order-id", ORDER)
    assert run.code == ExitCode.OK
    assert run.err == ""
    assert value_of(run.out, "order_id") == ORDER
    assert value_of(run.out, "identifier") == MASKED
    assert value_of(run.out, "promo_codes") == "SALE10"
    for name in ("order_total", "order_to_pay", "order_bonuses_to_charge", "bonuses_reward"):
        assert Decimal(value_of(run.out, name)) == Decimal(str(expected[name]))
    assert value_of(run.out, "order_total") == "4099.90"
    assert "items (2)" in run.out
    lines = run.out.splitlines()
    keys = [line for line in lines if line.startswith(("order_id ", "order_to_pay "))]
    assert len({line.index(line.split()[1]) for line in keys}) == 1, "values are aligned"


async def test_details_json_is_one_document_with_exact_strings(
    fake: FakeRees46, env: dict[str, str]
) -> None:
    """details --json prints one JSON document: amounts as exact strings, phone masked."""
    run = await cli("details", "--order-id", ORDER, "--json")
    assert run.code == ExitCode.OK
    document = no_floats(run.out)
    assert isinstance(document, dict)
    expected = fake.book.orders[ORDER].calculation.payload
    assert document["order_id"] == ORDER
    assert document["identifier"] == MASKED
    # As the API sent it (4099.9): exact, not padded like the text form.
    assert document["order_total"] == "4099.9"
    assert Decimal(document["order_to_pay"]) == Decimal(str(expected["order_to_pay"]))
    assert [item["product_id"] for item in document["items"]] == ["A", "B"]
    assert document["items"][1]["price"] == "99.9"
    assert run.out.count("\n") == 1


# -- history ---------------------------------------------------------------------------------


async def test_history_lists_the_members_orders(env: dict[str, str]) -> None:
    """history prints the member masked and each order with its status and what was paid."""
    run = await cli("history", "--identifier", PHONE)
    assert run.code == ExitCode.OK
    assert run.out.startswith(f"member {MASKED}: 1 order(s)\n")
    row = next(line for line in run.out.splitlines() if line.strip().startswith(ORDER))
    assert "confirmed" in row.split()
    assert "Tea" in run.out


async def test_history_json(fake: FakeRees46, env: dict[str, str]) -> None:
    """history --json: the masked member and the orders, totals as exact strings."""
    run = await cli("history", "--identifier", PHONE, "--json")
    assert run.code == ExitCode.OK
    document = no_floats(run.out)
    assert isinstance(document, dict)
    assert document["identifier"] == MASKED
    (order,) = document["orders"]
    assert order["id"] == ORDER
    assert order["status"] == "confirmed"
    paid = fake.book.orders[ORDER].calculation.payload["order_to_pay"]
    assert Decimal(order["total"]) == Decimal(str(paid))


# -- cancel ----------------------------------------------------------------------------------


async def test_cancel_asks_and_cancels_on_yes(fake: FakeRees46, env: dict[str, str]) -> None:
    """cancel shows what it will do, sends on "y", and prints the cancelled order."""
    run = await cli("cancel", "--order-id", ORDER, stdin="y\n")
    assert run.code == ExitCode.OK
    assert f"cancel order {ORDER}" in run.err
    assert "send it? [y/N]" in run.err
    assert run.out.startswith(f"order {ORDER} cancelled\n")
    assert value_of(run.out, "identifier") == MASKED
    assert fake.book.orders[ORDER].status == "cancelled"


@pytest.mark.parametrize("answer", ["n\n", "\n", "maybe\n", ""])
async def test_cancel_sends_nothing_without_a_yes(
    fake: FakeRees46, env: dict[str, str], answer: str
) -> None:
    """Anything but "y" at the question, and no answer at all (EOF), sends nothing."""
    before = len(fake.ledger.requests)
    run = await cli("cancel", "--order-id", ORDER, stdin=answer)
    assert run.code == ExitCode.NOT_CONFIRMED
    assert "not sent" in run.err
    assert run.out == ""
    assert len(fake.ledger.requests) == before
    assert fake.book.orders[ORDER].status == "confirmed"


async def test_cancel_yes_json_skips_the_question(fake: FakeRees46, env: dict[str, str]) -> None:
    """--yes sends without asking; --json prints the answer as one document."""
    run = await cli("cancel", "--order-id", ORDER, "--yes", "--json", stdin="n\n")
    assert run.code == ExitCode.OK
    assert run.err == ""
    document = no_floats(run.out)
    assert document == {"order_id": ORDER, "identifier": MASKED, "message": None, "replayed": False}
    assert fake.book.orders[ORDER].status == "cancelled"


# -- change ----------------------------------------------------------------------------------


async def test_change_shows_the_new_cart_and_the_refund(
    fake: FakeRees46, env: dict[str, str]
) -> None:
    """change shows the whole new cart before sending and prints the refund it answered."""
    run = await cli("change", "--order-id", ORDER, "--item", "A:1000.00:3", stdin="yes\n")
    assert run.code == ExitCode.OK
    assert f"change order {ORDER}: its cart now and the whole new cart" in run.err
    assert "order_total before discounts: 4099.90 now, 3000.00 new" in run.err
    (effect,) = fake.ledger.effects_for("change", ORDER)
    refund = -effect.order_total_change
    assert refund > 0
    assert run.out.startswith(f"refund to the buyer: {refund}\n")
    assert Decimal(value_of(run.out, "order_total_change")) == effect.order_total_change
    assert value_of(run.out, "order_total") == "3000.00"


async def test_change_json_with_an_idempotency_key(fake: FakeRees46, env: dict[str, str]) -> None:
    """change --yes --json prints order_total_change as an exact string."""
    run = await cli(
        "change",
        "--order-id",
        ORDER,
        "--item",
        "A:1000:3",
        "--item",
        "B:99.90:1",
        "--idempotency-key",
        "ticket-4711",
        "--yes",
        "--json",
    )
    assert run.code == ExitCode.OK
    document = no_floats(run.out)
    assert isinstance(document, dict)
    (effect,) = fake.ledger.effects_for("change", ORDER)
    assert isinstance(document["order_total_change"], str)
    assert Decimal(document["order_total_change"]) == effect.order_total_change < 0
    assert document["identifier"] == MASKED


async def test_change_eof_sends_nothing(fake: FakeRees46, env: dict[str, str]) -> None:
    """change with no answer on stdin and no --yes refuses without sending."""
    run = await cli("change", "--order-id", ORDER, "--item", "A:1000:3")
    assert run.code == ExitCode.NOT_CONFIRMED
    assert fake.ledger.effects_for("change", ORDER) == []
    assert fake.received("change") == 0


async def test_change_outcome_unknown_says_reconcile(fake: FakeRees46, env: dict[str, str]) -> None:
    """A change whose answer is lost exits 7 and prints the reconcile command, not a resend;
    without REES46_REDIS_URL it names this host's records file, where the record is."""
    fake.faults.on("change", Fault.server_error(500, after_commit=True))
    argv = ("change", "--order-id", ORDER, "--item", "A:1000:3", "--idempotency-key", "t-1")
    run = await cli(*argv, "--yes")
    assert run.code == ExitCode.OUTCOME_UNKNOWN
    # --yes shows the comparison all the same; the error is the one line after it.
    comparison, error = run.err.rsplit("\n", 2)[0], run.err.splitlines()[-1]
    assert comparison.startswith(f"change order {ORDER}: its cart now and the whole new cart")
    assert error.startswith("error: OutcomeUnknownError: ")
    assert f"python -m rees46_loyalty reconcile {ORDER} --idempotency-key t-1" in error
    assert "on this host (its record is in" in error
    assert "operator.sqlite3" in error
    assert "do NOT send the change again" in error
    assert "nothing was sent" not in error
    assert fake.received("change") == 1


async def test_the_real_command_writes_one_line_for_a_lost_answer(
    fake: FakeRees46, env: dict[str, str]
) -> None:
    """In a real process (no test logging around it) the SDK's own WARNING stays out of
    stderr: the command's one line is all there is."""
    fake.faults.on("change", Fault.server_error(500, after_commit=True))
    run = await process("change", "--order-id", ORDER, "--item", "A:1000:3", "--yes", env=env)
    assert run.code == ExitCode.OUTCOME_UNKNOWN
    assert "WARNING" not in run.err
    comparison, error = run.err.split("error: ", 1)
    assert comparison.startswith(f"change order {ORDER}: its cart now and the whole new cart")
    assert comparison.rstrip().endswith("(shown after the change as order_total_change)") or (
        "may go back to the buyer" in comparison.splitlines()[-1]
    )
    assert error.startswith("OutcomeUnknownError: ")
    assert error.count("\n") == 1


async def test_ctrl_c_after_a_change_was_sent_says_it_may_have_been_applied(
    fake: FakeRees46, env: dict[str, str]
) -> None:
    """SIGINT while the server holds the change: exit 7 with the reconcile advice, not 130,
    because the change may have been applied and must not simply be sent again."""
    fake.faults.on("change", Fault.hold())
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REES46_")}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rees46_loyalty",
        "change",
        "--order-id",
        ORDER,
        "--item",
        "A:1000:3",
        "--yes",
        env={**environ, **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.wait_for(fake.wait_received("change"), timeout=60)
    child.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    _outputs.extend([out.decode(), err.decode()])
    assert child.returncode == ExitCode.OUTCOME_UNKNOWN
    assert "interrupted after the change was sent: it may have been applied" in err.decode()
    assert f"python -m rees46_loyalty reconcile {ORDER}" in err.decode()


# -- change: the refund trap ------------------------------------------------------------------


class Interrupted(io.StringIO):
    """An stdin whose read is interrupted by Ctrl-C."""

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]  # noqa: ARG002
        raise KeyboardInterrupt


async def test_change_compares_the_cart_now_with_the_new_one_and_estimates_the_money(
    fake: FakeRees46, env: dict[str, str]
) -> None:
    """Before the question: each product's units now and new, and about how much would move,
    labelled an estimate; the answer's exact refund then follows on stdout."""
    run = await cli("change", "--order-id", ORDER, "--item", "A:1000:3", "--item", "B:99.90:1")
    assert run.code == ExitCode.NOT_CONFIRMED
    assert fake.received("change") == 0
    lines = run.err.splitlines()
    assert lines[0] == f"change order {ORDER}: its cart now and the whole new cart"
    assert lines[1].split() == ["product_id", "price", "now", "new", "difference"]
    assert lines[2].split() == ["A", "1000.00", "4", "3", "-1"]
    assert lines[3].split() == ["B", "99.90", "1", "1"]
    before = fake.book.orders[ORDER].calculation.order_to_pay
    assert f"order_to_pay now: {before}" in run.err
    estimated = Decimal(run.err.split("money that would move: about ")[1].split()[0])
    assert "back to the buyer (refund)" in run.err
    assert "an estimate" in run.err
    assert "the API computes the exact amount" in run.err
    assert "WARNING" not in run.err
    sent = await cli(
        "change", "--order-id", ORDER, "--item", "A:1000:3", "--item", "B:99.90:1", stdin="y\n"
    )
    (effect,) = fake.ledger.effects_for("change", ORDER)
    # The fake's member balance lacks the order's own bonuses: the line under the estimate
    # names the gap, and the estimate plus that gap is the exact refund here.
    gap = Decimal(sent.err.split("up to ")[1].split()[0])
    assert estimated + gap == -effect.order_total_change
    assert sent.out.startswith(f"refund to the buyer: {-effect.order_total_change:.2f}")


async def test_change_warns_when_the_order_already_holds_the_cart(
    fake: FakeRees46, env: dict[str, str]
) -> None:
    """A second change to the same cart is shown as possibly done already, moving no money;
    confirmed anyway, the SDK sends nothing (answered from its record)."""
    argv = ("change", "--order-id", ORDER, "--item", "A:1000:3", "--item", "B:99.90:1")
    await cli(*argv, "--yes")
    assert fake.received("change") == 1
    refused = await cli(*argv)
    assert refused.code == ExitCode.NOT_CONFIRMED
    assert f"WARNING: order {ORDER} already holds this cart: the change may already have " in (
        refused.err
    )
    assert "Sending it would move no money" in refused.err
    assert "The SDK does not send it" in refused.err
    assert "money that would move: about" not in refused.err
    again = await cli(*argv, "--yes", "--json")
    assert "WARNING" in again.err
    document = no_floats(again.out)
    assert isinstance(document, dict)
    assert document["replayed"] is True
    assert fake.received("change") == 1


async def test_change_warns_after_a_change_made_elsewhere(
    fake: FakeRees46, env: dict[str, str]
) -> None:
    """A change made by another system (no record here) is warned of, and sending it anyway
    is refused by the SDK with nothing sent."""
    async with fake.client(clock=FakeClock(), idempotency=None) as other:
        await other.change(order_id=ORDER, cart_items=RETURN)
    run = await cli(
        "change", "--order-id", ORDER, "--item", "A:1000:3", "--item", "B:99.90:1", "--yes"
    )
    assert "WARNING: order 1001 already holds this cart" in run.err
    assert run.code == ExitCode.OUTCOME_UNKNOWN
    assert "already holds the cart of this change, so it was not sent" in run.err
    assert fake.received("change") == 1


async def test_ctrl_c_at_the_change_question_sends_nothing(
    fake: FakeRees46, env: dict[str, str]
) -> None:
    """In-process, Ctrl-C at the question after the comparison: exit 130, nothing sent."""
    out, err = io.StringIO(), io.StringIO()
    code = await main_async(
        ["change", "--order-id", ORDER, "--item", "A:1000:3"],
        stdout=out,
        stderr=err,
        stdin=Interrupted(),
        client_options={"clock": FakeClock()},
    )
    _outputs.extend([out.getvalue(), err.getvalue()])
    assert code == ExitCode.INTERRUPTED
    assert "money that would move" in err.getvalue()
    assert err.getvalue().endswith("\ninterrupted\n")
    assert out.getvalue() == ""
    assert fake.received("change") == 0


async def test_ctrl_c_at_the_question_of_the_command_line_sends_nothing(
    fake: FakeRees46, env: dict[str, str]
) -> None:
    """Through main() (its own asyncio.run, on a thread so that the fake server keeps
    answering), Ctrl-C at the question after the look-up is 130, nothing sent."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["change", "--order-id", ORDER, "--item", "A:1000:3"]
    code = await asyncio.to_thread(main, argv, out, err=err, stdin=Interrupted())
    _outputs.extend([out.getvalue(), err.getvalue()])
    assert code == ExitCode.INTERRUPTED
    assert "money that would move: about" in err.getvalue()
    assert err.getvalue().endswith("send it? [y/N] \ninterrupted\n")
    assert fake.received("details") >= 1
    assert fake.received("change") == 0


async def test_sigint_at_the_change_question_of_the_real_command_sends_nothing(
    fake: FakeRees46, env: dict[str, str]
) -> None:
    """A real process waiting at the question (stdin open) ends at once on SIGINT with 130."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REES46_")}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rees46_loyalty",
        "change",
        "--order-id",
        ORDER,
        "--item",
        "A:1000:3",
        env={**environ, **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stderr is not None
    shown = b""
    while not shown.endswith(b"send it? [y/N] "):
        chunk = await asyncio.wait_for(child.stderr.read(1), timeout=60)
        assert chunk, shown
        shown += chunk
    child.send_signal(signal.SIGINT)
    out, rest = await asyncio.wait_for(child.communicate(), timeout=60)
    err = (shown + rest).decode()
    _outputs.extend([out.decode(), err])
    assert child.returncode == ExitCode.INTERRUPTED
    assert "money that would move: about" in err
    assert err.endswith("\ninterrupted\n")
    assert fake.received("change") == 0


@pytest.mark.parametrize(
    ("fault", "code", "words"),
    [
        (None, ExitCode.NOT_FOUND, "NotFoundError"),
        (Fault.unavailable(), ExitCode.TRANSIENT, "try again later"),
    ],
)
async def test_a_failing_lookup_sends_no_change(
    fake: FakeRees46, env: dict[str, str], fault: Fault | None, code: ExitCode, words: str
) -> None:
    """No such order, or no answer to details: its exit code, one line, no question, no change."""
    order = "nope" if fault is None else ORDER
    if fault is not None:
        fake.faults.on("details", fault, times=10)
    run = await cli("change", "--order-id", order, "--item", "A:1000:3", stdin="y\n")
    assert run.code == code
    assert run.err.count("\n") == 1
    assert words in run.err
    assert "nothing was sent (the change was not sent)" in run.err
    assert "send it?" not in run.err
    assert fake.received("change") == 0


# -- exit codes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["details", "--order-id", "nope"], ExitCode.NOT_FOUND, "NotFoundError: Order nope"),
        (["history", "--identifier", "123"], ExitCode.VALIDATION, "ValidationError: identifier"),
        (["details", "--order-id", "  "], ExitCode.VALIDATION, "ValidationError: order_id"),
        (
            ["change", "--order-id", ORDER, "--item", "A:1:1", "--item", "A:2:1", "--yes"],
            ExitCode.VALIDATION,
            "ValidationError: cart_items",
        ),
        (["change", "--order-id", "9", "--item", "A:1:1", "--yes"], ExitCode.NOT_FOUND, ""),
    ],
)
async def test_error_classes_have_their_exit_codes(
    env: dict[str, str], argv: list[str], code: ExitCode, message: str
) -> None:
    """Each expected error is one line on stderr with its own exit code, nothing on stdout."""
    run = await cli(*argv)
    assert run.code == code
    assert run.out == ""
    assert run.err.startswith(f"error: {message}")
    assert run.err.count("\n") == 1
    assert "Traceback" not in run.err


async def test_a_second_cancel_exits_with_order_status(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A cancel run twice on one host is answered from the host's records the second time
    (nothing sent); from elsewhere it reaches the API: an order status error, exit code 6."""
    assert (await cli("cancel", "--order-id", ORDER, "--yes")).code == ExitCode.OK
    again = await cli("cancel", "--order-id", ORDER, "--yes")
    assert again.code == ExitCode.OK
    assert "replayed    yes" in again.out
    monkeypatch.setenv("REES46_IDEMPOTENCY_DB", str(tmp_path / "another-host.sqlite3"))
    run = await cli("cancel", "--order-id", ORDER, "--yes")
    assert run.code == ExitCode.ORDER_STATUS
    assert "Could not cancel order in its current status" in run.err


async def test_wrong_secret_exits_with_authentication(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret the API refuses is exit code 8, and the wrong secret is not printed either."""
    wrong = "wrong-secret-5e1f"
    monkeypatch.setenv("REES46_SHOP_SECRET", wrong)
    run = await cli("details", "--order-id", ORDER)
    assert run.code == ExitCode.AUTHENTICATION
    assert "AuthenticationError" in run.err
    assert "REES46_SHOP_SECRET" in run.err
    # Not even through the last-line guard: nothing of what the SDK said needed cutting.
    assert wrong not in run.err
    assert "***" not in run.err


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault.unavailable(), ExitCode.TRANSIENT),
        (Fault.rate_limited(retry_after="0"), ExitCode.TRANSIENT),
        (Fault.close_before_answer(), ExitCode.TRANSIENT),
        (Fault.invalid_json(), ExitCode.MALFORMED_ANSWER),
    ],
)
async def test_server_failures_have_their_exit_codes(
    fake: FakeRees46, env: dict[str, str], fault: Fault, code: ExitCode
) -> None:
    """Failures that outlast the retries are transient (9); an unreadable answer is 10."""
    fake.faults.on("details", fault, times=20)
    run = await cli("details", "--order-id", ORDER)
    assert run.code == code
    assert run.out == ""
    assert run.err.count("\n") == 1
    assert "Traceback" not in run.err


@pytest.mark.parametrize(
    ("variables", "shown"),
    [
        ({"REES46_SHOP_ID": ""}, "not set: REES46_SHOP_ID"),
        ({"REES46_SHOP_SECRET": ""}, "not set: REES46_SHOP_SECRET"),
        ({"REES46_BASE_URL": "ftp://api.example"}, "base_url"),
        ({"REES46_BASE_URL": "http://api.example"}, "plain http"),
        ({"REES46_SHOP_SECRET": "short"}, "at least 8 characters"),
        # A one-letter secret must not be cut out of the message that refuses it.
        ({"REES46_SHOP_SECRET": "s"}, "shop_secret must be a string of at least 8 characters"),
    ],
)
async def test_configuration_errors_exit_3_before_asking(
    fake: FakeRees46,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    shown: str,
) -> None:
    """A missing or bad variable is one line, exit code 3, before any question or request."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    before = len(fake.ledger.requests)
    run = await cli("cancel", "--order-id", ORDER, stdin="y\n")
    assert run.code == ExitCode.CONFIGURATION
    assert run.err.startswith("error: configuration: ")
    assert shown in run.err
    assert "allow_insecure_http" not in run.err  # a constructor argument, not a CLI option
    assert run.err.count("\n") == 1
    assert "send it?" not in run.err
    assert len(fake.ledger.requests) == before


async def test_a_secret_quoted_in_a_configuration_error_is_cut_out(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base URL that holds the secret is quoted back with the secret replaced by ***."""
    monkeypatch.setenv("REES46_BASE_URL", f"ftp://{SHOP_SECRET}.example")
    run = await cli("details", "--order-id", ORDER)
    assert run.code == ExitCode.CONFIGURATION
    assert "ftp://***.example" in run.err


async def test_an_unexpected_error_is_one_line_exit_1(env: dict[str, str]) -> None:
    """A failure outside the SDK's error tree is exit code 1, one line, no traceback."""

    async def broken(request: object, call_next: object) -> object:
        raise RuntimeError("a bug in a middleware")

    out, err = io.StringIO(), io.StringIO()
    code = await main_async(
        ["details", "--order-id", ORDER],
        stdout=out,
        stderr=err,
        stdin=io.StringIO(),
        client_options={"clock": FakeClock(), "middlewares": [broken]},
    )
    assert code == ExitCode.UNEXPECTED
    assert err.getvalue() == "unexpected error: RuntimeError: a bug in a middleware\n"
    assert out.getvalue() == ""


async def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse refuses an --item whose price is not a decimal number, with exit code 2."""
    with pytest.raises(SystemExit) as caught:
        await cli("change", "--order-id", ORDER, "--item", "A:ten:1")
    assert caught.value.code == ExitCode.USAGE
    assert "PRICE and QUANTITY must be decimal numbers" in capsys.readouterr().err


def test_ctrl_c_at_the_question_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the question waits ends with exit code 130 and sends nothing."""

    class Interrupted(io.StringIO):
        def readline(self, size: int | None = -1) -> str:  # type: ignore[override]  # noqa: ARG002
            raise KeyboardInterrupt

    monkeypatch.setenv("REES46_SHOP_ID", SHOP_ID)
    monkeypatch.setenv("REES46_SHOP_SECRET", SHOP_SECRET)
    # Nothing listens there: a request sent by mistake would fail with another exit code.
    monkeypatch.setenv("REES46_BASE_URL", "http://127.0.0.1:9")
    out, err = io.StringIO(), io.StringIO()
    code = main(["cancel", "--order-id", ORDER], out, err=err, stdin=Interrupted())
    assert code == ExitCode.INTERRUPTED
    assert err.getvalue().endswith("interrupted\n")


# -- the real command, in a subprocess --------------------------------------------------------


async def test_the_real_command_reads_details_and_history(env: dict[str, str]) -> None:
    """python -m rees46_loyalty details / history work in a subprocess with the environment."""
    details = await process("details", "--order-id", ORDER, env=env)
    assert details.code == 0, details.err
    assert value_of(details.out, "identifier") == MASKED
    history = await process("history", "--identifier", PHONE, "--json", env=env)
    assert history.code == 0, history.err
    document = no_floats(history.out)
    assert isinstance(document, dict)
    assert document["orders"][0]["status"] == "confirmed"


async def test_the_real_command_confirms_from_stdin(fake: FakeRees46, env: dict[str, str]) -> None:
    """In a subprocess, a closed stdin refuses the change; a piped "y" cancels the order."""
    refused = await process("change", "--order-id", ORDER, "--item", "A:1000:3", env=env)
    assert refused.code == ExitCode.NOT_CONFIRMED
    assert "no answer on stdin" in refused.err
    assert fake.received("change") == 0
    done = await process("cancel", "--order-id", ORDER, env=env, stdin=b"y\n")
    assert done.code == 0, done.err
    assert fake.book.orders[ORDER].status == "cancelled"


async def test_the_real_command_without_credentials(env: dict[str, str]) -> None:
    """In a subprocess, missing credentials are one line and exit code 3; a bad flag is 2."""
    missing = await process("details", "--order-id", ORDER, env={})
    assert missing.code == ExitCode.CONFIGURATION
    assert missing.err == (
        "error: configuration: environment variable(s) not set: "
        "REES46_SHOP_ID, REES46_SHOP_SECRET\n"
    )
    secret_flag = await process("details", "--order-id", ORDER, "--shop-secret", "x", env=env)
    assert secret_flag.code == ExitCode.USAGE
    assert "unrecognized arguments: --shop-secret" in secret_flag.err


@pytest.mark.parametrize("command", sorted(COMMANDS))
async def test_help_of_every_command(command: str) -> None:
    """--help of each operator command shows examples, the environment and the exit codes."""
    run = await process(command, "--help", env={})
    assert run.code == 0
    assert "examples:" in run.out
    assert "python -m rees46_loyalty " + command in run.out
    assert "REES46_SHOP_SECRET" in run.out
    assert "exit codes:" in run.out
    assert "7    outcome unknown" in run.out
    assert "--json" in run.out


async def test_help_of_the_command_line_lists_the_operator_commands() -> None:
    """The top-level --help names the operator commands and their exit codes."""
    run = await process("--help", env={})
    assert run.code == 0
    for command in COMMANDS:
        assert command in run.out
    assert "exit codes:" in run.out


async def test_no_run_shows_the_secret_or_the_phone(
    fake: FakeRees46, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command, in both forms and in error, never prints the secret or the full phone."""
    runs = [
        await cli("details", "--order-id", ORDER),
        await cli("details", "--order-id", ORDER, "--json"),
        await cli("history", "--identifier", PHONE),
        await cli("history", "--identifier", PHONE, "--json"),
        await cli("history", "--identifier", PHONE + "0000"),
        await cli("change", "--order-id", ORDER, "--item", "A:1000:3", stdin="y\n"),
        await cli("change", "--order-id", ORDER, "--item", "A:1000:2", "--yes", "--json"),
        await cli("cancel", "--order-id", ORDER, stdin="y\n"),
        await cli("cancel", "--order-id", ORDER, "--yes", "--json"),
        await cli("reconcile", ORDER),
        await process("history", "--identifier", PHONE, env=env),
        await process("history", "--identifier", "79990003344", env=env),
    ]
    fake.faults.on("details", Fault.bad_gateway(), times=20)
    runs.append(await cli("details", "--order-id", ORDER))
    monkeypatch.setenv("REES46_SHOP_SECRET", SHOP_SECRET + "-wrong")
    runs.append(await cli("history", "--identifier", PHONE))
    # The second cancel is answered from this host's records (0), nothing is unknown (12).
    assert [run.code for run in runs] == [0, 0, 0, 0, 5, 0, 0, 0, 0, 12, 0, 5, 9, 8]
    text = "\n".join(run.out + run.err for run in runs)
    assert MASKED in text
    assert SHOP_SECRET not in text
    assert PHONE not in text


# -- reconcile, with the workers' Redis store --------------------------------------------------


@pytest.fixture
async def redis_order(
    fake: FakeRees46, redis_url: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> str:
    """A confirmed order of its own (the Redis store outlives each test's fake server), and
    REES46_REDIS_URL in the environment."""
    order_id = f"R-{uuid.uuid4().hex[:10]}"
    async with fake.client(clock=FakeClock(), idempotency=None) as client:
        await client.apply(order_id=order_id, cart_items=CART, identifier=PHONE)
        await client.confirm(order_id=order_id)
    env["REES46_REDIS_URL"] = redis_url
    monkeypatch.setenv("REES46_REDIS_URL", redis_url)
    return order_id


@asynccontextmanager
async def worker(fake: FakeRees46, redis_url: str) -> AsyncIterator[LoyaltyClient]:
    """A client as a worker has it: the shared Redis store, in its default namespace."""
    store = RedisIdempotencyStore(redis_url)
    try:
        async with fake.client(clock=FakeClock(), idempotency=store) as client:
            yield client
    finally:
        await store.close()


async def test_reconcile_finds_a_workers_lost_change_applied_with_the_ledgers_refund(
    fake: FakeRees46, redis_url: str, redis_order: str, env: dict[str, str]
) -> None:
    """A worker's change commits and its answer is dropped; the real command with
    REES46_REDIS_URL prints it applied with the ledger's exact refund, and the worker's
    redelivery is then answered from the record, the change sent once."""
    fake.faults.on("change", Fault.drop_after_commit())
    async with worker(fake, redis_url) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id=redis_order, cart_items=RETURN, idempotency_key="job-7")
        run = await process("reconcile", redis_order, env=env)
        assert run.code == ExitCode.OK, run.err
        (effect,) = fake.ledger.effects_for("change", redis_order)
        assert run.out.startswith(f"order {redis_order}: the change WAS applied\n")
        assert f"refund to the buyer: {-effect.order_total_change}\n" in run.out
        assert Decimal(value_of(run.out, "order_total_change")) == effect.order_total_change
        to_pay = fake.book.orders[redis_order].calculation.payload["order_to_pay"]
        assert Decimal(value_of(run.out, "order_to_pay")) == Decimal(str(to_pay))
        assert value_of(run.out, "operation") == "change"
        assert value_of(run.out, "applied") == "yes"
        assert value_of(run.out, "decided_by").startswith("details:")
        assert value_of(run.out, "idempotency_key") == "job-7"
        again = await client.change(
            order_id=redis_order, cart_items=RETURN, idempotency_key="job-7"
        )
    assert again.replayed is True
    assert again.order_total_change == effect.order_total_change
    assert fake.received("change") == 1


async def test_reconcile_json_is_one_document_with_the_derived_change(
    fake: FakeRees46, redis_url: str, redis_order: str
) -> None:
    """reconcile --json: applied, operation, decided_by, the key, and the derived result with
    order_total_change as an exact string."""
    fake.faults.on("change", Fault.drop_after_commit())
    async with worker(fake, redis_url) as client:
        with pytest.raises(OutcomeUnknownError) as lost:
            await client.change(order_id=redis_order, cart_items=RETURN, idempotency_key="job-8")
    key = lost.value.idempotency_key
    assert key == "job-8"
    run = await cli("reconcile", redis_order, "--idempotency-key", key, "--json")
    assert run.code == ExitCode.OK, run.err
    document = no_floats(run.out)
    assert isinstance(document, dict)
    (effect,) = fake.ledger.effects_for("change", redis_order)
    assert (document["applied"], document["operation"], document["decided_by"]) == (
        True,
        "change",
        "details",
    )
    assert document["idempotency_key"] == "job-8"
    assert Decimal(document["result"]["order_total_change"]) == effect.order_total_change
    assert document["result"]["identifier"] == MASKED
    assert run.out.count("\n") == 1


async def test_reconcile_a_change_never_processed_says_not_applied(
    fake: FakeRees46, redis_url: str, redis_order: str
) -> None:
    """A 504 before processing: reconcile prints NOT applied (exit 0), and the worker's
    redelivery is then sent once and succeeds."""
    fake.faults.on("change", Fault.gateway_timeout())
    async with worker(fake, redis_url) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id=redis_order, cart_items=RETURN)
        run = await cli("reconcile", redis_order)
        assert run.code == ExitCode.OK, run.err
        assert run.out.startswith(f"order {redis_order}: the change was NOT applied\n")
        assert value_of(run.out, "applied") == "no"
        assert "order_total_change" not in run.out
        again = await client.change(order_id=redis_order, cart_items=RETURN)
    assert again.replayed is False
    (effect,) = fake.ledger.effects_for("change", redis_order)
    assert effect.order_total_change == again.order_total_change


async def test_reconcile_with_nothing_to_reconcile_exits_12(
    redis_order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No unknown outcome in the workers' store: exit 12, one line; without REES46_REDIS_URL
    the line says that only this run's records were searched."""
    shared = await cli("reconcile", redis_order)
    assert shared.code == ExitCode.NOTHING_TO_RECONCILE
    assert shared.out == ""
    assert shared.err.startswith("error: IdempotencyError: nothing to reconcile")
    assert "REES46_REDIS_URL" not in shared.err
    assert shared.err.count("\n") == 1
    monkeypatch.delenv("REES46_REDIS_URL")
    alone = await cli("reconcile", redis_order, "--json")
    assert alone.code == ExitCode.NOTHING_TO_RECONCILE
    assert "REES46_REDIS_URL is not set" in alone.err
    assert alone.out == ""


async def test_reconcile_an_order_changed_meanwhile_stays_unknown(
    fake: FakeRees46, redis_url: str, redis_order: str
) -> None:
    """Someone else changed the order after the lost change: exit 7, nothing sent, and the
    hint says to compare details with the shop's records."""
    fake.faults.on("change", Fault.drop_after_commit())
    async with worker(fake, redis_url) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id=redis_order, cart_items=RETURN)
    async with fake.client(clock=FakeClock(), idempotency=None) as other_system:
        await other_system.change(order_id=redis_order, cart_items=RETURN[:1])
    run = await cli("reconcile", redis_order)
    assert run.code == ExitCode.OUTCOME_UNKNOWN
    assert "someone else changed it" in run.err
    assert f"compare details --order-id {redis_order}" in run.err
    assert run.err.count("\n") == 1
    assert fake.received("change") == 2


async def test_change_with_a_key_is_replayed_from_the_shared_store(
    fake: FakeRees46, redis_order: str
) -> None:
    """With REES46_REDIS_URL a second run of change with the same key is answered from the
    record: the same refund, replayed, one change in the ledger."""
    argv = ("change", "--order-id", redis_order, "--item", "A:1000:3", "--item", "B:99.90:1")
    first = await cli(*argv, "--idempotency-key", "ticket-1", "--yes", "--json")
    second = await cli(*argv, "--idempotency-key", "ticket-1", "--yes", "--json")
    assert (first.code, second.code) == (ExitCode.OK, ExitCode.OK), first.err + second.err
    one, two = no_floats(first.out), no_floats(second.out)
    assert isinstance(one, dict)
    assert isinstance(two, dict)
    assert (one["replayed"], two["replayed"]) == (False, True)
    assert one["order_total_change"] == two["order_total_change"]
    assert fake.received("change") == 1


async def test_a_bad_redis_url_is_a_configuration_error(
    fake: FakeRees46, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A REES46_REDIS_URL that is not a Redis URL: exit 3, one line, nothing sent."""
    monkeypatch.setenv("REES46_REDIS_URL", "ftp://cache.example/0")
    before = len(fake.ledger.requests)
    run = await cli("reconcile", ORDER)
    assert run.code == ExitCode.CONFIGURATION
    assert run.err.startswith("error: configuration: ")
    assert run.err.count("\n") == 1
    assert len(fake.ledger.requests) == before
