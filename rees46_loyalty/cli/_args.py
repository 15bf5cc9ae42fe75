"""The arguments of the operator commands, their help, and their exit codes.

The commands themselves run in ``_operator.py``; ``cli/__init__.py`` adds them to its parser.
"""

from __future__ import annotations

import argparse
import enum
import textwrap
from decimal import Decimal, InvalidOperation

from ..models import CartItem

__all__ = ["COMMANDS", "EXIT_CODES_HELP", "ExitCode", "add_commands"]


class ExitCode(enum.IntEnum):
    """The exit codes of the operator commands, one per class of outcome."""

    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    CONFIGURATION = 3
    VALIDATION = 4
    NOT_FOUND = 5
    ORDER_STATUS = 6
    OUTCOME_UNKNOWN = 7
    AUTHENTICATION = 8
    TRANSIENT = 9
    MALFORMED_ANSWER = 10
    NOT_CONFIRMED = 11
    NOTHING_TO_RECONCILE = 12
    INTERRUPTED = 130


EXIT_CODES_HELP = """\
exit codes:
  0    done
  1    unexpected error (a bug: please report it)
  2    usage: a wrong or missing argument
  3    configuration: REES46_SHOP_ID / REES46_SHOP_SECRET not set, or a bad REES46_BASE_URL
       (also one that answers, but not as the REES46 API)
  4    validation: the request was refused as invalid, here (nothing sent) or by the API;
       also an idempotency key reused for another request
  5    not found: no such order or no such member
  6    order status: the order is not in a state that allows it (terminal, do not retry)
  7    outcome unknown: the change may or may not have been applied; do NOT send it again,
       run `reconcile ORDER_ID` first (for reconcile: still undecidable, nothing was sent)
  8    authentication: the API refused REES46_SHOP_ID / REES46_SHOP_SECRET
  9    transient: rate limited, server error, timeout or no connection; try again later
  10   malformed answer: not the API's documented envelope (a cancel may have been
       applied all the same: run it again, an order status error means it was)
  11   not confirmed: the answer was not "y", or there was no answer (stdin closed)
  12   nothing to reconcile: the idempotency store has no unknown outcome for the order
       (or the key); without REES46_REDIS_URL it holds only this run's records
  130  interrupted (Ctrl-C)
"""

_ENVIRONMENT_HELP = """\
environment:
  REES46_SHOP_ID       the shop's API key (required)
  REES46_SHOP_SECRET   the shop's secret key (required; never printed)
  REES46_BASE_URL      the API's URL (default https://api.rees46.ru)
  REES46_REDIS_URL     the workers' Redis idempotency store (redis://...); without it the
                       records of cancel / change / reconcile live only as long as one run
"""

_JSON_HELP = (
    "print one JSON document on stdout instead of text; amounts are exact decimal strings "
    '("4661.09"), the member\'s phone number is masked'
)


def _paragraph(text: str) -> str:
    # The raw formatter keeps the epilog's layout, so the description is wrapped here.
    return textwrap.fill(text, width=88)


def _epilog(*examples: str) -> str:
    shown = "".join(f"  {example}\n" for example in examples)
    return f"examples:\n{shown}\n{_ENVIRONMENT_HELP}\n{EXIT_CODES_HELP}"


def _cart_item(text: str) -> CartItem:
    """Parse ``PRODUCT_ID:PRICE:QUANTITY`` (the product id may itself hold colons)."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise argparse.ArgumentTypeError(
            f"expected PRODUCT_ID:PRICE:QUANTITY, like SKU-1:1000.00:3; got {text!r}"
        )
    product_id, price, quantity = parts
    try:
        # Decimal straight from the text: a float would lose kopecks.
        amounts = [Decimal(price), Decimal(quantity)]
    except InvalidOperation:
        raise argparse.ArgumentTypeError(
            f"PRICE and QUANTITY must be decimal numbers like 99.90 and 2; got {text!r}"
        ) from None
    if not all(amount.is_finite() for amount in amounts):
        raise argparse.ArgumentTypeError(f"PRICE and QUANTITY must be finite; got {text!r}")
    return CartItem(product_id=product_id, price=amounts[0], quantity=amounts[1])


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
    *examples: str,
) -> argparse.ArgumentParser:
    """Add the command *name*, with its help and the epilog every operator command shares.

    *summary* is its line in the list of commands; *description* and *examples* open its own
    help, which ends with the environment variables and the exit codes.
    """
    return commands.add_parser(
        name,
        help=summary,
        description=_paragraph(description),
        epilog=_epilog(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the operator commands to the subparsers of ``python -m rees46_loyalty``."""
    prog = "python -m rees46_loyalty"

    details = _command(
        commands,
        "details",
        "show an order as the server has it (amounts, member, lines)",
        (
            "Show an order as the REES46 server has it now: amounts, the member "
            "(phone masked), codes and lines. Only reads."
        ),
        f"{prog} details --order-id 1001",
        f"{prog} details --order-id 1001 --json | jq .",
    )
    details.add_argument("--order-id", required=True, help="the shop's order number")

    history = _command(
        commands,
        "history",
        "list a member's orders with their status",
        (
            "List the orders of one loyalty member with date, status and total. "
            "Only reads. The phone number is masked in the output."
        ),
        f"{prog} history --identifier 7XXXXXXXXXX  # the phone, digits only",
    )
    history.add_argument(
        "--identifier",
        required=True,
        metavar="PHONE",
        help="the member's phone number as digits, country code first (7XXXXXXXXXX)",
    )

    cancel = _command(
        commands,
        "cancel",
        "cancel an order (asks for confirmation)",
        (
            "Cancel an applied or confirmed order: spent bonuses and codes go back to "
            "the member, rewards of the order are taken back. Final: the order id can never be "
            "applied again. Asks for confirmation unless --yes."
        ),
        f"{prog} cancel --order-id 1001",
        f"{prog} cancel --order-id 1001 --yes",
    )
    cancel.add_argument("--order-id", required=True, help="the order to cancel")

    change = _command(
        commands,
        "change",
        "replace the cart of a confirmed order, e.g. a partial return (asks first)",
        (
            "Replace the cart of a confirmed order, usually for a partial return. "
            "The --item lines are the WHOLE new cart: a product left out is returned. The answer's "
            "order_total_change is the money that moves (negative: refund it to the buyer). "
            "Never send the same change twice: a second one answers 0 and the refund amount is "
            "lost. Asks for confirmation unless --yes."
        ),
        "# the order had SKU-1 x 4 and SKU-2 x 1; one SKU-1 and the SKU-2 come back:",
        f"{prog} change --order-id 1001 --item SKU-1:1000.00:3",
        f"{prog} change --order-id 1001 --item SKU-1:1000:3 --item CUP:99.90:1 \\\n"
        "      --idempotency-key ticket-4711 --yes --json",
    )
    change.add_argument("--order-id", required=True, help="the confirmed order to change")
    change.add_argument(
        "--item",
        dest="items",
        action="append",
        required=True,
        type=_cart_item,
        metavar="PRODUCT_ID:PRICE:QUANTITY",
        help="a line of the new cart: unit price before discounts and quantity as exact "
        "decimals (repeat for each line)",
    )
    change.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="a name for this request (e.g. the ticket number), up to 255 characters; with "
        "REES46_REDIS_URL its record is kept in the workers' store (a second run with the key "
        "is answered from it), without it only as long as this run",
    )

    reconcile = _command(
        commands,
        "reconcile",
        "find out whether a change or cancel with an unknown outcome was applied",
        (
            "Decide an unknown outcome (exit code 7 of change or cancel, or a worker's "
            "OutcomeUnknownError) from the order as the server has it now, and record it in the "
            "idempotency store: an applied change gets its refund (order_total_change, derived "
            "as order_to_pay now minus before), and a redelivered identical call is then "
            "answered from the record; a change not applied may be sent again. Sends no "
            "change or cancel, only reads. Needs REES46_REDIS_URL to see the workers' records."
        ),
        f"REES46_REDIS_URL=redis://localhost:6379/0 {prog} reconcile 1001",
        f"{prog} reconcile 1001 --idempotency-key refund:4711 --json",
    )
    reconcile.add_argument("order_id", metavar="ORDER_ID", help="the order to reconcile")
    reconcile.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="the key of the call to reconcile (OutcomeUnknownError.idempotency_key, a "
        "worker's job id); without it, the call whose outcome blocks the order",
    )

    for parser in (details, history, cancel, change, reconcile):
        parser.add_argument("--json", action="store_true", help=_JSON_HELP)
    for parser in (cancel, change):
        parser.add_argument(
            "--yes", action="store_true", help="do not ask for confirmation (for scripts)"
        )


#: The names of the operator commands.
COMMANDS = frozenset({"details", "history", "cancel", "change", "reconcile"})
