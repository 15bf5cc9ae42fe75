"""The operator commands: ``details``, ``history``, ``cancel``, ``change``, ``reconcile``.

A command runs in two steps. :func:`prepare` needs no event loop and sends nothing: it reads
the credentials from the environment and checks the arguments as the SDK would.
:meth:`Prepared.execute` then runs the rest in one event loop: for ``change`` it looks the order
up and shows its cart now beside the new one, with an estimate of the money that would move (and
a warning when the order already holds the new cart); for ``cancel`` and ``change`` it asks
y/N; then it sends the request and prints the answer. Ctrl-C at the question interrupts at once
and nothing is sent. Every error class has its own exit code (see ``_args.ExitCode``) and
one line on stderr, never a traceback.

The idempotency store of the commands comes from :func:`operator_store`: the workers' Redis
store when ``REES46_REDIS_URL`` is set (so that ``reconcile`` sees what a worker left unknown,
and a ``change --idempotency-key`` run twice is answered from its record), else this host's
SQLite file, so that a command run twice, or after a crash, sees what the first run recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from .. import _validation as check
from .. import errors
from .._client import MIN_SECRET_LENGTH, LoyaltyClient
from .._clock import Clock
from .._reconcile import Cart, cart_of_items
from .._redact import REDACTED, mask_identifier, secret_forms
from ..idempotency import IdempotencyStore, SqliteIdempotencyStore
from ..models import CartItem, OrderCalculation
from ._args import ExitCode
from ._render import (
    comparison_lines,
    dump_json,
    escape_controls,
    history_lines,
    order_lines,
    reconciliation_lines,
    ref_lines,
    to_json,
)

__all__ = [
    "REDIS_URL_VARIABLE",
    "Output",
    "Prepared",
    "operator_store",
    "prepare",
    "run",
    "run_in_new_loop",
]

#: The environment variable naming the workers' Redis idempotency store.
REDIS_URL_VARIABLE = "REES46_REDIS_URL"
DATABASE_VARIABLE = "REES46_IDEMPOTENCY_DB"

Result = tuple[list[str], dict[str, Any]]
Send = Callable[[LoyaltyClient], Awaitable[Result]]
#: Reads what the question shows before a command is sent (the order's cart, for change).
Look = Callable[[LoyaltyClient], Awaitable[list[str]]]


class Output:
    """stdout and stderr, with every form of the shop secret cut out as a last guard.

    The SDK already keeps the secret out of what it raises; this guard also covers what it
    cannot see, such as a ``REES46_BASE_URL`` quoted back in a configuration error.
    """

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self._stdout = stdout
        self._stderr = stderr
        secret = os.environ.get("REES46_SHOP_SECRET")
        # A secret too short to be told from ordinary text is refused by the client before
        # anything is sent; cutting it out would mangle that very message.
        self._secrets = secret_forms(secret) if secret and len(secret) >= MIN_SECRET_LENGTH else ()

    def _scrub(self, text: str) -> str:
        for form in self._secrets:
            text = text.replace(form, REDACTED)
        return escape_controls(text)

    def out(self, text: str) -> None:
        """Write *text* to stdout."""
        self._stdout.write(self._scrub(text))
        self._stdout.flush()

    def err(self, text: str) -> None:
        """Write *text* to stderr."""
        self._stderr.write(self._scrub(text))
        self._stderr.flush()


class Prepared:
    """A checked command with its client: looks up, confirms and sends in :meth:`execute`."""

    def __init__(
        self,
        args: argparse.Namespace,
        client: LoyaltyClient,
        send: Send,
        store: IdempotencyStore | None = None,
        *,
        question: list[str] | None = None,
        look: Look | None = None,
        stdin: TextIO | None = None,
    ) -> None:
        self._args = args
        self._client = client
        self._send = send
        self._store = store  # the store made for this run, closed after it
        self._question = question or []
        self._look = look
        self._stdin = stdin
        #: Whether the request may have left: an interruption after that is an unknown outcome.
        self.sending = False

    def interrupted(self, output: Output) -> int:
        """Say what an interruption (Ctrl-C) left behind; returns the exit code."""
        command = self._args.command
        if not self.sending or command not in ("cancel", "change"):
            output.err("\ninterrupted\n")
            return ExitCode.INTERRUPTED
        advice = (
            "do NOT send the change again" if command == "change" else "do not cancel again yet"
        )
        output.err(
            f"\ninterrupted after the {command} was sent: it may have been applied; {advice}: "
            f"{_reconcile_advice(self._args)}\n"
        )
        return ExitCode.OUTCOME_UNKNOWN

    async def execute(self, output: Output, *, own_loop: bool = False) -> int:
        """Look up, confirm, send the request and print the answer; returns the exit code.

        *own_loop*: the loop is this command's own (``asyncio.run``), whose Ctrl-C handler
        only cancels the running task: the question then restores the immediate
        KeyboardInterrupt, so that Ctrl-C ends a wait on stdin at once.
        """
        try:
            try:
                async with self._client:
                    shown = [] if self._look is None else await self._look(self._client)
                    code = self._confirm(shown, output, own_loop=own_loop)
                    if code is not None:
                        return code
                    self.sending = True
                    lines, document = await self._send(self._client)
            finally:
                if self._store is not None:
                    await self._store.close()
        except errors.LoyaltyError as error:
            code, hint = _classify(error, self._args)
            if not self.sending and self._args.command in ("cancel", "change"):
                hint += f"; nothing was sent (the {self._args.command} was not sent)"
            output.err(f"error: {type(error).__name__}: {error}{hint}\n")
            return code
        except Exception as error:  # noqa: BLE001 - a command line says what broke, in one line
            output.err(f"unexpected error: {type(error).__name__}: {error}\n")
            return ExitCode.UNEXPECTED
        output.out(dump_json(document) if self._args.json else "\n".join(lines) + "\n")
        return ExitCode.OK

    def _confirm(self, shown: list[str], output: Output, *, own_loop: bool) -> ExitCode | None:
        """Show the comparison and the question, read y/N; None to send, else the exit code."""
        question = [*shown, *self._question]
        if getattr(self._args, "yes", False) or not question:
            if shown:  # --yes: the comparison is shown all the same, on stderr
                output.err("\n".join(shown) + "\n")
            return None
        try:
            with _immediate_interrupt(enabled=own_loop):
                confirmed = _confirmed(question, self._stdin, output)
        except KeyboardInterrupt:  # at the question: nothing was sent
            output.err("\ninterrupted\n")
            return ExitCode.INTERRUPTED
        return None if confirmed else ExitCode.NOT_CONFIRMED


@contextmanager
def _immediate_interrupt(*, enabled: bool) -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt at once meanwhile, as outside an event loop.

    ``asyncio.run`` handles SIGINT by cancelling its task, which a blocking read of stdin
    would not notice until the operator pressed Enter.
    """
    previous = signal.getsignal(signal.SIGINT) if enabled else None
    if previous is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def prepare(
    args: argparse.Namespace,
    *,
    stdin: TextIO,
    output: Output,
    client_options: Mapping[str, Any] | None = None,
) -> Prepared | ExitCode:
    """Check the configuration and the arguments; nothing is sent or asked here.

    Returns the command ready to send, or the exit code to stop with. *client_options* go to
    :meth:`LoyaltyClient.from_env` (tests pass a fake clock).
    """
    store: IdempotencyStore | None = None
    try:
        options = dict(client_options or {})
        if "idempotency" not in options:
            store = options["idempotency"] = operator_store(options.get("clock"))
        client = LoyaltyClient.from_env(**options)
    except (ValueError, ImportError) as error:
        # The client's advice names a constructor argument the command line does not have.
        text = str(error).replace(
            "or pass allow_insecure_http=True", "or http on a loopback address"
        )
        output.err(f"error: configuration: {text}\n")
        return ExitCode.CONFIGURATION
    try:
        send, question, look = _checked(args)
    except errors.ValidationError as error:
        output.err(f"error: ValidationError: {error.message} (nothing was sent)\n")
        return ExitCode.VALIDATION
    return Prepared(args, client, send, store, question=question, look=look, stdin=stdin)


async def run(
    args: argparse.Namespace,
    *,
    stdout: TextIO,
    stderr: TextIO,
    stdin: TextIO,
    client_options: Mapping[str, Any] | None = None,
) -> int:
    """Run an operator command inside a running event loop; returns its exit code."""
    output = Output(stdout, stderr)
    prepared = prepare(args, stdin=stdin, output=output, client_options=client_options)
    if isinstance(prepared, ExitCode):
        return prepared
    return await prepared.execute(output)


def run_in_new_loop(
    args: argparse.Namespace, *, stdout: TextIO, stderr: TextIO, stdin: TextIO
) -> int:
    """Run an operator command from synchronous code (the command line); the exit code."""
    output = Output(stdout, stderr)
    prepared = prepare(args, stdin=stdin, output=output)
    if isinstance(prepared, ExitCode):
        return prepared
    try:
        # One loop for the look-up, the question and the send: the client is bound to it.
        return asyncio.run(prepared.execute(output, own_loop=True))
    except KeyboardInterrupt:
        return prepared.interrupted(output)


def operator_database() -> Path:
    """This host's file of the operator commands' records.

    ``REES46_IDEMPOTENCY_DB``, else ``$XDG_STATE_HOME/rees46_loyalty/idempotency.sqlite3``
    (``~/.local/state`` when ``XDG_STATE_HOME`` is not set).
    """
    configured = os.environ.get(DATABASE_VARIABLE)
    if configured:
        return Path(configured)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "rees46_loyalty" / "idempotency.sqlite3"


def operator_store(clock: Clock | None = None) -> IdempotencyStore:
    """The idempotency store of the operator commands.

    The workers' Redis store when ``REES46_REDIS_URL`` is set (with the SDK's default
    namespace, as the workers' ``RedisIdempotencyStore(url)``), else this host's SQLite file
    (:func:`operator_database`): a command run twice on purpose, or after a crash, sees what
    the first run recorded.
    """
    url = os.environ.get(REDIS_URL_VARIABLE)
    if url:
        from ..idempotency import RedisIdempotencyStore  # noqa: PLC0415 - the redis extra

        return RedisIdempotencyStore(url)
    return SqliteIdempotencyStore(operator_database(), clock=clock)


def _reconcile_advice(args: argparse.Namespace) -> str:
    """The command that decides an unknown outcome of *args*' call, and what it needs."""
    key = getattr(args, "idempotency_key", None)
    command = f"python -m rees46_loyalty reconcile {args.order_id}"
    if key is not None:
        command += f" --idempotency-key {key}"
    if os.environ.get(REDIS_URL_VARIABLE):
        return f"run {command}"
    return (
        f"run {command} on this host (its record is in {operator_database()}; set "
        f"{REDIS_URL_VARIABLE} to see the workers' records)"
    )


def _checked(args: argparse.Namespace) -> tuple[Send, list[str], Look | None]:
    """Check the arguments as the SDK will; the sending step, the question, the look-up."""
    command: str = args.command
    if command == "history":
        identifier = check.identifier(args.identifier, command)

        async def history(client: LoyaltyClient) -> Result:
            result = await client.history(identifier=identifier)
            document = {"identifier": mask_identifier(identifier), **to_json(result)}
            return history_lines(identifier, result), document

        return history, [], None
    order_id = check.order_id(args.order_id, command)
    if command == "reconcile":
        key: str | None = args.idempotency_key
        if key is not None:
            check.idempotency_key(key, command)

        async def reconcile(client: LoyaltyClient) -> Result:
            found = await client.reconcile(order_id=order_id, idempotency_key=key)
            return reconciliation_lines(found), to_json(found)

        return reconcile, [], None
    if command == "details":

        async def details(client: LoyaltyClient) -> Result:
            result = await client.details(order_id=order_id)
            return order_lines(result), to_json(result)

        return details, [], None
    if command == "cancel":

        async def cancel(client: LoyaltyClient) -> Result:
            result = await client.cancel(order_id=order_id)
            return ref_lines("cancelled", result), to_json(result)

        return (
            cancel,
            [
                f"cancel order {order_id}:",
                "  spent bonuses and codes go back to the member, its rewards are taken back;",
                "  final: this order id can never be applied again.",
            ],
            None,
        )
    return _checked_change(args, order_id)


def _checked_change(args: argparse.Namespace, order_id: str) -> tuple[Send, list[str], Look | None]:
    key: str | None = args.idempotency_key
    if key is not None:
        check.idempotency_key(key, "change")
    request = check.checkout_request(
        "change",
        cart_items=args.items,
        order_id_required=True,
        order_id_value=order_id,
    )

    async def look(client: LoyaltyClient) -> list[str]:
        # A failure here (no such order, no connection) ends the command: nothing is sent.
        order = await client.details(order_id=order_id)
        holds_it = _holds(order, request.cart_items)
        if holds_it:
            return comparison_lines(order, request.cart_items, holds_it=True)
        try:
            estimate = await _estimate(client, order, request.cart_items)
        except errors.LoyaltyError as error:
            # Shown, not hidden: the operator decides without the estimate.
            failure = f"{type(error).__name__}: {error}"
            return comparison_lines(
                order, request.cart_items, holds_it=False, estimate_failure=failure
            )
        return comparison_lines(order, request.cart_items, holds_it=False, estimate=estimate)

    async def change(client: LoyaltyClient) -> Result:
        result = await client.change(
            order_id=order_id, cart_items=request.cart_items, idempotency_key=key
        )
        return order_lines(result), to_json(result)

    question = [f"  idempotency key: {key}"] if key is not None else []
    return change, question, look


def _holds(order: OrderCalculation, cart: tuple[CartItem, ...]) -> bool:
    """Whether *order* already holds *cart*, compared as the SDK compares them."""
    asked = Cart.of(
        {
            "product_id": item.product_id,
            "quantity": item.quantity,
            "price": item.price,
            "discountable": item.discountable,
            "bonusable": item.bonusable,
            "rewardable": item.rewardable,
        }
        for item in cart
    )
    return bool(order.items) and cart_of_items(order.items).holds(asked)


async def _estimate(
    client: LoyaltyClient, order: OrderCalculation, cart: tuple[CartItem, ...]
) -> OrderCalculation:
    """The new cart estimated for the order's member, with the order's codes and bonuses.

    A change keeps the order's promo codes, certificates and bonus settings and spends no
    more bonuses than the order did, so the estimate asks for the same; it is still only an
    estimate (the member's balance now, rewards of added products).
    """
    spent = order.order_bonuses_to_charge
    return await client.estimate(
        cart_items=cart,
        identifier=order.identifier,
        payment_type=order.payment_type,
        promo_codes=order.promo_codes or None,
        certificates=order.certificates or None,
        charge_bonuses=True if spent > 0 else None,
        bonuses_amount=spent if spent > 0 else None,
    )


def _confirmed(question: list[str], stdin: TextIO | None, output: Output) -> bool:
    """Show what will be sent and read y/N from *stdin*; no answer (EOF) is a no."""
    # The question goes to stderr, so that stdout holds only the answer (and --json stays a
    # single document).
    output.err("\n".join(question) + "\nsend it? [y/N] ")
    answer = "" if stdin is None else stdin.readline()
    if answer and stdin is not None and not stdin.isatty():
        # A piped answer is not echoed: end the question's line ourselves.
        output.err("\n")
    if not answer:
        output.err("\nnot sent: no answer on stdin (pass --yes to send without asking)\n")
        return False
    if answer.strip().lower() not in {"y", "yes"}:
        output.err("not sent\n")
        return False
    return True


_Kinds = type[errors.LoyaltyError] | tuple[type[errors.LoyaltyError], ...]
# The first match wins: OrderStatusError and NotFoundError are APIErrors too.
_EXIT_CODES: tuple[tuple[_Kinds, ExitCode], ...] = (
    (errors.OutcomeUnknownError, ExitCode.OUTCOME_UNKNOWN),
    (errors.OrderStatusError, ExitCode.ORDER_STATUS),
    (errors.NotFoundError, ExitCode.NOT_FOUND),
    (errors.AuthenticationError, ExitCode.AUTHENTICATION),
    ((errors.ValidationError, errors.BadRequestError), ExitCode.VALIDATION),
    (errors.NotAnApiError, ExitCode.CONFIGURATION),  # REES46_BASE_URL does not serve the API
    (errors.MalformedResponseError, ExitCode.MALFORMED_ANSWER),
)


def _exit_code(error: errors.LoyaltyError) -> ExitCode:
    if (
        isinstance(error, errors.IdempotencyError)
        and not error.retryable
        and error.operation == "reconcile"
    ):
        return ExitCode.NOTHING_TO_RECONCILE
    if isinstance(error, errors.IdempotencyError) and not error.retryable:
        # A key reused for another request: the operator's input, like a validation error.
        return ExitCode.VALIDATION
    for kinds, code in _EXIT_CODES:
        if isinstance(error, kinds):
            return code
    return ExitCode.TRANSIENT if error.retryable else ExitCode.UNEXPECTED


def _classify(error: errors.LoyaltyError, args: argparse.Namespace) -> tuple[ExitCode, str]:
    """The exit code of *error*, and a hint on what to do next (may be empty)."""
    code = _exit_code(error)
    hint = ""
    if code is ExitCode.OUTCOME_UNKNOWN and args.command == "reconcile":
        hint = (
            "; nothing was sent: compare details --order-id "
            f"{args.order_id} with the shop's own records before doing anything else"
        )
    elif code is ExitCode.OUTCOME_UNKNOWN:
        what = "the change" if args.command == "change" else f"the {args.command}"
        hint = f"; do NOT send {what} again: {_reconcile_advice(args)}"
    elif code is ExitCode.NOTHING_TO_RECONCILE and not os.environ.get(REDIS_URL_VARIABLE):
        hint = (
            f"; {REDIS_URL_VARIABLE} is not set, so only this host's records "
            f"({operator_database()}) were searched: set it to the workers' Redis"
        )
    elif isinstance(error, errors.OrderStatusError) and error.previous_outcome_unknown:
        hint = "; an earlier attempt of this call most likely did it: check history"
    elif code is ExitCode.AUTHENTICATION:
        hint = "; check REES46_SHOP_ID and REES46_SHOP_SECRET"
    elif isinstance(error, errors.ConnectError):
        hint = ""  # its message names the base URL and REES46_BASE_URL
    elif code is ExitCode.TRANSIENT:
        hint = "; try again later"
    return code, hint
