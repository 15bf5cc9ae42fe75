"""What the operator commands print: aligned text for people, one JSON document for scripts.

Money stays exact: a :class:`~decimal.Decimal` is written digit for digit (``4661.09``, never
``4661.0900000001`` or ``1E+3``), as text in both forms, and as a JSON string so that no JSON
reader turns it into a float. Member phone numbers are masked as the SDK masks them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from .._reconcile import Reconciliation
from .._redact import mask_identifier, mask_phones
from ..models import CartItem, LineItem, OrderCalculation, OrderChange, OrderHistory, OrderRef

__all__ = [
    "comparison_lines",
    "dump_json",
    "escape_controls",
    "history_lines",
    "money",
    "number",
    "order_lines",
    "reconciliation_lines",
    "ref_lines",
    "to_json",
]

# Fields that hold a member's phone number, and fields of free text (the API's own words) in
# which the API may quote one. Ids are shown whole: a product id is often a 13-digit barcode,
# which the phone mask would hide from the operator who needs it.
_IDENTIFIER_FIELDS = frozenset({"identifier", "referrer_identifier"})
_TEXT_FIELDS = frozenset({"message", "name"})

# The amounts an operator reads on a support call, in the order of a receipt.
_ORDER_FIELDS = (
    "order_total",
    "saved_total",
    "saved_by_discounts",
    "saved_by_bonuses",
    "saved_by_offers",
    "saved_by_certificates",
    "order_to_pay",
    "order_bonuses_to_charge",
    "bonuses_reward",
    "bonuses_balance",
)
_ITEM_COLUMNS = ("product_id", "quantity", "price", "total", "total_after_discounts")


_KOPECKS = Decimal("0.01")
# What a terminal acts on instead of showing: C0 controls but the line feed, DEL, C1 controls
# (0x9B is a CSI on many terminals) and the bidirectional overrides that reorder what is shown.
_CONTROLS_RE = re.compile(
    r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def escape_controls(text: str) -> str:
    r"""*text* with every control character written as a ``\uXXXX`` escape, line feeds kept.

    Server text (a product id, a message) reaches the operator's terminal: an escape sequence
    in it could retitle the window, clear the screen or hide what follows. The escape is the
    JSON one, so a JSON document stays valid JSON (its strings can hold no raw controls).
    """
    return _CONTROLS_RE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def number(value: Decimal) -> str:
    """*value* written exactly, without an exponent: ``Decimal("1E+3")`` -> ``1000``."""
    return format(value, "f")


def money(value: Decimal) -> str:
    """An amount with at least two decimals, never rounded: ``4099.9`` -> ``4099.90``.

    A finer amount (a per-unit share such as ``33.335``) keeps all of its digits.
    """
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        try:
            return number(value.quantize(_KOPECKS))
        except InvalidOperation:  # more digits than the context holds: shown as they are
            pass
    return number(value)


def to_json(value: object, field: str | None = None) -> Any:
    """A JSON-ready copy of a result: Decimals as exact strings, phone numbers masked."""
    kind = type(value)
    if attrs.has(kind):
        return {
            item.name: to_json(getattr(value, item.name), item.name) for item in attrs.fields(kind)
        }
    if isinstance(value, Decimal):
        return number(value)
    if isinstance(value, str):
        return _text(value, field)
    if isinstance(value, Mapping):
        return {str(key): to_json(item, field) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item, field) for item in value]
    return value


def _text(value: str, field: str | None) -> str | None:
    if field in _IDENTIFIER_FIELDS:
        return mask_identifier(value)
    return mask_phones(value) if field in _TEXT_FIELDS else value


def dump_json(document: Mapping[str, Any]) -> str:
    """One JSON document on one line, keys in the model's order, non-ASCII kept readable."""
    return json.dumps(document, ensure_ascii=False) + "\n"


def _aligned(pairs: Sequence[tuple[str, str]], indent: str = "") -> list[str]:
    width = max((len(key) for key, _ in pairs), default=0)
    return [f"{indent}{key:<{width}}  {value}".rstrip() for key, value in pairs]


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, text_columns: int, indent: str
) -> list[str]:
    """Columns aligned as on a receipt: the first *text_columns* to the left, numbers right."""
    rows = [list(row) for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if index < text_columns else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return (indent + "  ".join(padded)).rstrip()

    return [line(header), *(line(row) for row in rows)]


def _shown(value: str | None) -> str:
    return "-" if value is None else value


def _codes(codes: Iterable[str]) -> str:
    return ", ".join(codes) or "-"


def order_lines(order: OrderCalculation) -> list[str]:
    """An order calculation (details, or the answer of change) as aligned lines."""
    pairs = [
        ("order_id", _shown(order.order_id)),
        ("identifier", _shown(mask_identifier(order.identifier))),
        ("payment_type", _shown(order.payment_type)),
    ]
    if isinstance(order, OrderChange):
        pairs.append(("order_total_change", money(order.order_total_change)))
    pairs.append(("products_total", number(order.products_total)))
    pairs += [(name, money(getattr(order, name))) for name in _ORDER_FIELDS]
    pairs.append(("promo_codes", _codes(order.promo_codes)))
    pairs.append(("certificates", _codes(order.certificates)))
    pairs += [
        (f"{kind} failed", f"{failed.code}: {mask_phones(failed.message or '')}".rstrip(": "))
        for kind, codes in (
            ("promo_code", order.promo_codes_failed),
            ("certificate", order.certificates_failed),
        )
        for failed in codes
    ]
    if order.replayed:
        pairs.append(("replayed", "yes: answered from the idempotency record, nothing sent"))
    lines = _aligned(pairs)
    if isinstance(order, OrderChange):
        lines.insert(0, _money_moves(order.order_total_change))
    lines.append(f"items ({len(order.items)})")
    rows = (
        [
            _shown(item.product_id),
            number(item.quantity),
            money(item.price),
            money(item.total),
            money(item.total_after_discounts),
        ]
        for item in order.items
    )
    lines += _table(_ITEM_COLUMNS, rows, text_columns=1, indent="  ")
    return lines


def _money_moves(order_total_change: Decimal) -> str:
    if order_total_change < 0:
        return f"refund to the buyer: {money(-order_total_change)}"
    if order_total_change > 0:
        return f"to take from the buyer: {money(order_total_change)}"
    return "no money moves (order_total_change 0)"


def history_lines(identifier: str, history: OrderHistory) -> list[str]:
    """A member's orders: one aligned row per order, its lines under it."""
    lines = [f"member {mask_identifier(identifier)}: {len(history.orders)} order(s)"]
    if not history.orders:
        return lines
    header = ("id", "date", "status", "total")
    rows = [
        [order.id, _shown(order.date), _shown(order.status), money(order.total)]
        for order in history.orders
    ]
    table = _table(header, rows, text_columns=3, indent="  ")
    lines.append(table[0])
    for order, row in zip(history.orders, table[1:], strict=True):
        lines.append(row)
        lines += _aligned(
            [
                (item.id, f"{number(item.quantity)} x {money(item.price)}  {_item_name(item.name)}")
                for item in order.items
            ],
            indent="      ",
        )
    return lines


def _item_name(name: str | None) -> str:
    return "" if name is None else mask_phones(name)


def ref_lines(verb: str, ref: OrderRef) -> list[str]:
    """The answer of cancel (or confirm): what happened, then its fields."""
    pairs = [
        ("order_id", ref.order_id),
        ("identifier", _shown(mask_identifier(ref.identifier))),
        ("message", _shown(None if ref.message is None else mask_phones(ref.message))),
    ]
    if ref.replayed:
        pairs.append(("replayed", "yes: answered from the idempotency record, nothing sent"))
    return [f"order {ref.order_id} {verb}", *_aligned(pairs)]


_DECIDED_BY = {
    "details": "the order's lines now, against its lines before and the lines asked for",
    "history": "the order's status in the member's history",
    "record": "the idempotency record: the outcome was already known, nothing was read",
}


def reconciliation_lines(found: Reconciliation) -> list[str]:
    """What ``reconcile`` found: applied or not, how it was decided, and the derived result."""
    operation = found.operation
    if found.applied:
        headline = f"order {found.order_id}: the {operation} WAS applied"
        after = f"a redelivered identical {operation} is answered from this record, nothing sent"
    else:
        headline = f"order {found.order_id}: the {operation} was NOT applied"
        after = f"the {operation} may be sent again: it goes to the server"
    pairs = [
        ("order_id", found.order_id),
        ("operation", operation),
        ("applied", "yes" if found.applied else "no"),
        ("decided_by", f"{found.decided_by}: {_DECIDED_BY.get(found.decided_by, '')}".rstrip()),
        ("idempotency_key", _shown(found.idempotency_key)),
    ]
    result = found.result
    lines = [headline]
    if isinstance(result, OrderChange):
        lines.append(_money_moves(result.order_total_change))
        pairs += [
            ("order_total_change", money(result.order_total_change)),
            ("order_to_pay", money(result.order_to_pay)),
        ]
    elif isinstance(result, OrderCalculation):
        pairs.append(("order_to_pay", money(result.order_to_pay)))
    pairs.append(("next", after))
    return [*lines, *_aligned(pairs)]


def _units(lines: Iterable[CartItem | LineItem]) -> dict[tuple[str, Decimal], Decimal]:
    """Units per (product, unit price), in the order the lines come."""
    units: dict[tuple[str, Decimal], Decimal] = {}
    for line in lines:
        key = (line.product_id or "", Decimal(line.price).normalize())
        units[key] = units.get(key, Decimal(0)) + Decimal(line.quantity)
    return units


def _signed(value: Decimal) -> str:
    return "" if value == 0 else f"{value:+f}"


def comparison_lines(
    order: OrderCalculation,
    new_cart: Sequence[CartItem],
    *,
    holds_it: bool,
    estimate: OrderCalculation | None = None,
    estimate_failure: str | None = None,
) -> list[str]:
    """The order's cart now beside the whole new cart of a ``change``, and what would move.

    The money is an estimate: the new cart's ``estimate`` against the order's ``order_to_pay``
    now. When the order already holds the new cart, a warning that it may be done instead.
    """
    now, new = _units(order.items), _units(new_cart)
    rows = [
        [
            product_id,
            money(price),
            number(now.get((product_id, price), Decimal(0))),
            number(new.get((product_id, price), Decimal(0))),
            _signed(new.get((product_id, price), Decimal(0)) - now.get((product_id, price), 0)),
        ]
        for product_id, price in {**now, **new}
    ]
    header = ("product_id", "price", "now", "new", "difference")
    total_new = sum((Decimal(i.price) * Decimal(i.quantity) for i in new_cart), Decimal(0))
    lines = [
        f"change order {_shown(order.order_id)}: its cart now and the whole new cart",
        *_table(header, rows, text_columns=1, indent="  "),
        (f"  order_total before discounts: {money(order.order_total)} now, {money(total_new)} new"),
        f"  order_to_pay now: {money(order.order_to_pay)}",
    ]
    if holds_it:
        return [
            *lines,
            (
                f"WARNING: order {_shown(order.order_id)} already holds this cart: the change "
                "may already have been made."
            ),
            (
                "  Sending it would move no money (the API would answer order_total_change 0, "
                "and the first change's refund is not in that answer). The SDK does not send "
                "it: it answers from its record of the first change when it has one, else it "
                "refuses (OutcomeUnknownError). Find the first change's refund in history and "
                "the shop's refunds."
            ),
        ]
    lines.append("  products left out are returned; the server computes the money that moves.")
    if estimate is None:
        failure = f" ({estimate_failure})" if estimate_failure else ""
        return [
            *lines,
            (
                f"money that would move: unknown, the estimate failed{failure}; the API "
                "computes the exact amount"
            ),
        ]
    moves = estimate.order_to_pay - order.order_to_pay
    if moves < 0:
        what = f"about {money(-moves)} back to the buyer (refund)"
    elif moves > 0:
        what = f"about {money(moves)} more to take from the buyer"
    else:
        what = "about 0: no money would move"
    lines += [
        f"money that would move: {what}",
        (
            f"  an estimate: the new cart estimated to pay {money(estimate.order_to_pay)} against "
            f"{money(order.order_to_pay)} now; the API computes the exact amount (shown after "
            "the change as order_total_change)"
        ),
    ]
    short = order.order_bonuses_to_charge - estimate.order_bonuses_to_charge
    if short > 0:
        lines.append(
            f"  the estimate spends {money(estimate.order_bonuses_to_charge)} bonuses where the "
            f"order spent {money(order.order_bonuses_to_charge)} (the member's balance now lacks "
            f"the order's own): up to {money(short)} more may go back to the buyer"
        )
    return lines
