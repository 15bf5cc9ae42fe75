"""Reconciling an unknown outcome: did the lost call happen, and what did it answer?

The rules, each from what the API offers:

* ``change``: the order's lines now (``details``) against the lines before the change (noted in
  the lease before it was sent) and the lines it asked for. Now = asked for: applied, and its
  ``order_total_change`` is the order's ``order_to_pay`` now minus before — the API computes it
  the same way, as the money that moves. Now = before: not applied. Neither: someone else changed
  the order meanwhile, and nothing can be decided.
* ``cancel`` and ``confirm``: the order's status in the member's ``history`` (the member from
  ``details``): exactly cancelled (for a cancel) or confirmed (for a confirm) — applied; any
  other status — not applied, and the call is sent again (the API refuses it if it was done).
* ``apply``: safe to repeat, so nothing is decided: its unknown outcome goes, and the next
  apply is sent (it sets the cart either way).

"Not applied" is what the order shows now. A change that timed out may still be held by the
server and land later: its note is kept, so that its redelivery, finding the order already
holding its cart, derives the refund instead of losing it.

Nothing here sends a mutating request.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation, localcontext
from typing import Any

from attrs import frozen

from ._http import ApiResponse
from ._operations import DETAILS, HISTORY, OPERATIONS, ORDER_LINES, Operation
from ._serialization import dumps, load_answer, loads
from .errors import IdempotencyError, MalformedResponseError, OutcomeUnknownError
from .idempotency._records import Book, Finish, IdempotencyStore, Outcome, State
from .models import LineItem, OrderCalculation, OrderChange, OrderHistory, OrderRef
from .models._lines import OrderLine, OrderLines

__all__ = ["Cart", "Reconciler", "Reconciliation", "refund_of", "request_lines", "same_cart"]


# The statuses that say an order is cancelled, or confirmed; any other is neither (a status
# that only mentions a cancel, "cancel_requested", is not a cancelled order).
_CANCELLED = frozenset({"cancelled", "canceled", "отменен", "отменён", "отменено"})
_CONFIRMED = frozenset(
    {"confirmed", "completed", "complete", "исполнен", "завершен", "завершён", "подтвержден"}
)


@frozen(kw_only=True)
class Reconciliation:
    """What :meth:`LoyaltyClient.reconcile` found out about an order's unknown outcome.

    Attributes:
        order_id: The order.
        operation: The operation whose outcome was unknown (``"change"``, ``"cancel"``, ...).
        applied: Whether the API applied it.
        result: What its lost answer would have carried, when applied: for a ``change`` an
            :class:`OrderChange` whose ``order_total_change`` is derived (``order_to_pay`` now
            minus before); for ``cancel`` and ``confirm`` an :class:`OrderRef`. ``None`` when
            not applied.
        idempotency_key: The caller's key of that call, if it had one.
        decided_by: ``"details"`` (the order's lines), ``"history"`` (its status),
            ``"repeat"`` (an ``apply``: safe to send again, nothing to decide), or ``"record"``
            (the store already knew the outcome: nothing was unknown).
    """

    order_id: str
    operation: str
    applied: bool
    result: OrderChange | OrderRef | OrderCalculation | None
    idempotency_key: str | None = None
    decided_by: str

    @property
    def order_total_change(self) -> Decimal:
        """The money the reconciled call moved: its ``change``'s amount if applied, else 0."""
        if isinstance(self.result, OrderChange):
            return self.result.order_total_change
        return Decimal(0)


#: The arithmetic of carts and refunds: exact for every amount the SDK reads (under 10**15, at
#: most 40 places) and their sums, whatever decimal context the caller set (a task's own).
EXACT = Context(prec=200, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation])


def _number(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value.normalize()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value)).normalize()
    raise TypeError(f"not a number: {type(value).__name__}")


_FLAGS = ("discountable", "bonusable", "rewardable")


@frozen
class Cart:
    """A cart as the API applies it: units per (product, price), and each line's flags.

    A product's units may come on several lines (the API may split them); they count
    together. A flag is compared where the request sets it.
    """

    units: Mapping[tuple[str, Decimal], Decimal]
    flags: Mapping[tuple[str, Decimal], tuple[bool | None, ...]]

    @classmethod
    def of(cls, lines: Iterable[Mapping[str, Any]]) -> Cart:
        """The cart of *lines* (mappings with ``product_id``, ``quantity``, ``price``, flags)."""
        units: dict[tuple[str, Decimal], Decimal] = {}
        flags: dict[tuple[str, Decimal], tuple[bool | None, ...]] = {}
        with localcontext(EXACT):
            for line in lines:
                quantity = _number(line["quantity"])
                if quantity == 0:
                    continue
                key = (str(line["product_id"]), _number(line["price"]))
                units[key] = units.get(key, Decimal(0)) + quantity
                flags.setdefault(key, tuple(line.get(name) for name in _FLAGS))
        return cls(units=units, flags=flags)

    def holds(self, asked: Cart) -> bool:
        """Whether this cart (an order's) is the cart *asked* for."""
        if self.units != asked.units:
            return False
        return all(
            wanted is None or held == wanted
            for key, wanted_flags in asked.flags.items()
            for wanted, held in zip(wanted_flags, self.flags.get(key, ()), strict=False)
        )


def cart_of_items(items: Iterable[LineItem | OrderLine]) -> Cart:
    """The cart of an order's lines (of its calculation, or of its lines alone)."""
    return Cart.of(
        {
            "product_id": item.product_id,
            "quantity": item.quantity,
            "price": item.price,
            **{name: getattr(item, name) for name in _FLAGS},
        }
        for item in items
    )


def cart_of_request(body: bytes) -> Cart:
    """The cart a request body asks for."""
    return Cart.of(_lines_of_request(body))


def _lines_of_request(body: bytes) -> list[Mapping[str, Any]]:
    document = loads(body)
    lines = document.get("cart_items") if isinstance(document, Mapping) else None
    if not isinstance(lines, list):
        raise TypeError("the request has no cart_items")
    return lines


def same_cart(details: ApiResponse, asked: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the order (the answer of ``details``, read as its lines) holds the cart *asked*.

    *asked* is the request's ``cart_items`` in their wire form (see :func:`request_lines`).
    """
    lines = order_lines(details)
    if not lines.items:
        return False
    try:
        # Carts of other totals differ (a return's new cart, usually): no need to build both.
        with localcontext(EXACT):
            if sum(item.quantity for item in lines.items) != sum(
                _exact(line["quantity"]) for line in asked
            ):
                return False
    except (TypeError, KeyError, ArithmeticError):  # the full comparison says what is wrong
        pass
    return cart_of_items(lines.items).holds(Cart.of(asked))


def order_lines(details: ApiResponse) -> OrderLines:
    """The order's lines in an answer of ``details``: its decoded result, else its body read.

    The body is read when a middleware of the caller's answered with a result of its own (an
    :class:`OrderCalculation` it kept): :class:`MalformedResponseError` if it cannot be.
    """
    if isinstance(details.result, OrderLines):
        return details.result
    return read_lines(details.body, "details")


def read_lines(body: bytes, operation: str) -> OrderLines:
    """*body* (an answer of ``details``, or a note of one) read as the order's lines."""
    try:
        return load_answer(body, OrderLines)
    except (ValueError, RecursionError) as exc:  # not JSON, not an envelope, not the lines
        raise MalformedResponseError(
            f"the order's lines cannot be read from an answer of details "
            f"({type(exc).__name__}: {exc})"[:300],
            operation=operation,
        ) from None


def request_lines(data: Mapping[str, Any], body: bytes) -> Sequence[Mapping[str, Any]]:
    """The cart lines of a request: its data's, else decoded from its *body*."""
    lines = data.get("cart_items")
    return lines if type(lines) is list else _lines_of_request(body)


def _exact(value: Any) -> Any:
    # A wire number as the JSON text it is sent as reads (a float compares to a Decimal by its
    # binary value: 0.1 != Decimal("0.1")).
    return Decimal(repr(value)) if type(value) is float else value


def derived_change(before: OrderLines, now: OrderLines, now_body: bytes) -> bytes:
    """The answer a ``change`` would have given: the order now, with its derived amount.

    The order's answer is kept as the API wrote it (its numbers' text exact), with
    ``order_total_change`` (``order_to_pay`` now minus before, exact) added to its payload.
    """
    with localcontext(EXACT):
        amount = now.order_to_pay - before.order_to_pay
    try:
        inner = _payload_text(now_body)[1:-1].strip()
    except ValueError as exc:  # a body a middleware of the caller's replaced
        raise MalformedResponseError(
            f"the order's answer is no envelope with a payload ({exc})", operation="reconcile"
        ) from None
    members = (
        f'{inner},"order_total_change":{amount}' if inner else f'"order_total_change":{amount}'
    )
    return ('{"status":"success","payload":{' + members + "}}").encode()


def _payload_text(body: bytes) -> str:
    """The text of the ``payload`` object of an envelope (the last one, as JSON readers take)."""
    text = body.decode("utf-8-sig")
    decoder = json.JSONDecoder()
    found: str | None = None
    index = _past_blanks(text, 0)
    if text[index : index + 1] != "{":
        raise ValueError("an envelope is an object")
    index = _past_blanks(text, index + 1)
    while text[index : index + 1] not in ("}", ""):
        key, index = decoder.raw_decode(text, index)
        index = _past_blanks(text, index)
        if text[index : index + 1] != ":":
            raise ValueError("a member without a value")
        start = _past_blanks(text, index + 1)
        _, index = decoder.raw_decode(text, start)
        if key == "payload" and text[start : start + 1] == "{":
            found = text[start:index]
        index = _past_blanks(text, index)
        if text[index : index + 1] == ",":
            index = _past_blanks(text, index + 1)
    if found is None:
        raise ValueError("the envelope has no payload object")
    return found


def _past_blanks(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\n\r":
        index += 1
    return index


def ref_answer(order_id: str, identifier: str | None) -> bytes:
    """The answer a ``cancel`` or ``confirm`` would have given."""
    payload: dict[str, Any] = {"order_id": order_id}
    if identifier is not None:
        payload["identifier"] = identifier
    return dumps({"status": "success", "payload": payload})


def decide_change(outcome: Outcome, before: OrderLines, now: OrderLines, order_id: str) -> bool:
    """Applied (True), not applied (False), or :class:`OutcomeUnknownError`."""
    if outcome.request is None:
        raise _undecidable(outcome, order_id, "the change's request was not recorded")
    if not before.items or not now.items:
        # A confirmed order has lines: an answer without any says nothing about them.
        raise _undecidable(outcome, order_id, "the order's details list no lines")
    asked = cart_of_request(outcome.request)
    cart_now = cart_of_items(now.items)
    if cart_now.holds(asked):
        return True
    if cart_now == cart_of_items(before.items):
        return False
    raise _undecidable(
        outcome,
        order_id,
        "the order holds neither its cart from before the change nor the cart the change asked "
        "for: someone else changed it meanwhile",
    )


def status_applied(operation: str, history: OrderHistory, order_id: str) -> bool:
    """Whether the order's status in *history* shows *operation* (cancel / confirm) done.

    A confirm counts only on a confirmed order: on a cancelled one it was not (or no longer)
    what made the state, and sending it again is harmless (the API refuses it).
    """
    status = next((order.status for order in history.orders if order.id == order_id), None)
    if status is None:
        return False
    known = _CANCELLED if operation == "cancel" else _CONFIRMED
    return status.strip().lower() in known


def _undecidable(outcome: Outcome, order_id: str, why: str) -> OutcomeUnknownError:
    error = OutcomeUnknownError(
        f"the outcome of the {outcome.intent.operation} on order {order_id!r} cannot be decided: "
        f"{why}; nothing was sent or recorded",
        operation="reconcile",
        order_id=order_id,
    )
    error.idempotency_key = outcome.intent.key
    return error


def nothing_to_reconcile(order_id: str, idempotency_key: str | None) -> IdempotencyError:
    """The error of a reconcile that finds no record at all."""
    what = f"key {idempotency_key!r} of order {order_id!r}" if idempotency_key else order_id
    return IdempotencyError(
        f"nothing to reconcile: the idempotency store has no unknown outcome for {what}",
        operation="reconcile",
        order_id=order_id,
    )


# -- the steps: read the book, look at the order, record what was found -----------------------


class Reconciler:
    """Reconciles one order's unknown outcome through a client's chain and store.

    *send* sends a read-only request (``details``, ``history``) through the client's chain and
    returns its response; *store* is the client's idempotency store; *key* the order's book.
    """

    def __init__(
        self,
        *,
        store: IdempotencyStore,
        key: str,
        order_id: str,
        send: Callable[[Operation[Any], dict[str, Any], str | None], Awaitable[ApiResponse]],
    ) -> None:
        self._store = store
        self._key = key
        self._order_id = order_id
        self._send = send

    async def run(self, idempotency_key: str | None) -> Reconciliation:
        """Decide, record, and say what was found (see :meth:`LoyaltyClient.reconcile`)."""
        book = await self._store.get(self._key)
        outcome = _target(book, idempotency_key)
        if outcome is None:
            raise nothing_to_reconcile(self._order_id, idempotency_key)
        if outcome.state is not State.UNKNOWN:
            return self._recorded(outcome)
        operation = outcome.intent.operation
        if operation == "apply":
            # Safe to repeat: whether or not it landed, the next apply (sent) sets the cart.
            await self._store.release(self._key, outcome.owner or "", outcome.intent)
            return self._found(outcome, applied=False, result=None, decided_by="repeat")
        if operation == "change":
            applied, answer = await self._change(outcome)
        else:
            applied, answer = await self._status(operation)
        if not applied:
            await self._not_applied(outcome)
            return self._found(outcome, applied=False, result=None)
        assert answer is not None  # noqa: S101 - every applied decision carries its answer
        recorded = Outcome(state=State.SUCCEEDED, intent=outcome.intent, status=200, answer=answer)
        done = await self._store.finish(self._key, outcome.owner or "", recorded)
        if done not in (Finish.RECORDED, Finish.RECORDED_AFTER_LOSS):
            # Another reconciler (or the slow call itself) recorded it first: say what it did.
            return await self.run(idempotency_key)
        return self._found(outcome, applied=True, result=self._result(operation, answer))

    async def _change(self, outcome: Outcome) -> tuple[bool, bytes | None]:
        if outcome.request is None or outcome.before is None:
            # A change is sent only once its note is in the store: without one, it never left.
            return False, None
        before = read_lines(outcome.before, "reconcile")
        # The order now is read as the lookup before the change was: what one accepted, the
        # other does (a quirk in a field neither reads leaves the change decidable).
        looked = await self._send(ORDER_LINES, {"order_id": self._order_id}, self._order_id)
        now = order_lines(looked)
        if not decide_change(outcome, before, now, self._order_id):
            return False, None
        return True, derived_change(before, now, looked.body)

    async def _not_applied(self, outcome: Outcome) -> None:
        """Let the same intent be sent again; for a change sent, keep what it noted.

        A request that timed out may still be held by the server and land after this look:
        its redelivery then finds the order holding its cart, and derives its refund from the
        order as it was before (see the idempotency middleware), instead of losing it.
        """
        owner = outcome.owner or ""
        if outcome.intent.operation != "change" or outcome.request is None:
            await self._store.release(self._key, owner, outcome.intent)
            return
        kept = Outcome(
            state=State.UNKNOWN,
            intent=outcome.intent,
            not_applied=True,
            before=outcome.before,
            request=outcome.request,
        )
        await self._store.finish(self._key, owner, kept)

    async def _status(self, operation: str) -> tuple[bool, bytes | None]:
        details = (await self._details()).result
        assert isinstance(details, OrderCalculation)  # noqa: S101
        identifier = details.identifier
        if identifier is None:
            raise OutcomeUnknownError(
                f"the outcome of the {operation} on order {self._order_id!r} cannot be decided: "
                "the order has no member, so its status is not in any history",
                operation="reconcile",
                order_id=self._order_id,
            )
        history = await self._send(HISTORY, {"identifier": identifier}, None)
        assert isinstance(history.result, OrderHistory)  # noqa: S101
        if not status_applied(operation, history.result, self._order_id):
            return False, None
        return True, ref_answer(self._order_id, identifier)

    async def _details(self) -> ApiResponse:
        return await self._send(DETAILS, {"order_id": self._order_id}, self._order_id)

    def _recorded(self, outcome: Outcome) -> Reconciliation:
        applied = outcome.state is State.SUCCEEDED
        answer = outcome.answer if applied else None
        result = None if answer is None else self._result(outcome.intent.operation, answer)
        return self._found(outcome, applied=applied, result=result, decided_by="record")

    def _result(self, operation: str, answer: bytes) -> Any:
        """The result model of a recorded answer.

        :class:`MalformedResponseError` when it does not decode, naming what it holds (for a
        change, its refund).
        """
        try:
            return _decoded(operation, answer)
        except (ValueError, RecursionError) as exc:
            error = MalformedResponseError(
                f"the outcome of the {operation} on order {self._order_id!r} is recorded, but "
                f"its answer does not decode ({type(exc).__name__}){refund_of(answer)}",
                operation="reconcile",
                order_id=self._order_id,
            )
        raise error

    def _found(
        self, outcome: Outcome, *, applied: bool, result: Any, decided_by: str | None = None
    ) -> Reconciliation:
        operation = outcome.intent.operation
        if decided_by is None:
            decided_by = "details" if operation in ("change", "apply") else "history"
        return Reconciliation(
            order_id=self._order_id,
            operation=operation,
            applied=applied,
            result=result,
            idempotency_key=outcome.intent.key,
            decided_by=decided_by,
        )


def _target(book: Book | None, idempotency_key: str | None) -> Outcome | None:
    """The outcome to reconcile: the key's, else the one blocking the order, else any unknown."""
    if book is None:
        return None
    outcomes = book.outcomes
    if idempotency_key is not None:
        return outcomes.get("k:" + idempotency_key)
    unknown = [o for o in outcomes.values() if o.state is State.UNKNOWN]
    blocking = [o for o in unknown if o.blocks]
    candidates = blocking or unknown
    return candidates[0] if candidates else None


def _decoded(operation: str, answer: bytes) -> Any:
    """The result model of a recorded (or derived) answer."""
    spec = OPERATIONS[operation]
    return load_answer(answer, spec.result_type)


def refund_of(answer: bytes) -> str:
    """What a (derived) change answer says it moved, for an error's message; else nothing."""
    try:
        payload = loads(answer).get("payload")
        amount = payload.get("order_total_change") if isinstance(payload, Mapping) else None
    except (ValueError, RecursionError, AttributeError):
        return ""
    if not isinstance(amount, Decimal | int):
        return ""
    return f"; it moved order_total_change {amount} (the money to return when negative)"
