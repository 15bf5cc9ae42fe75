"""Reconciling an unknown outcome: did the lost call happen, and what did it answer?

The rules, each from what the API offers:

* ``change``: the order's lines now (``details``) against the lines before the change (noted in
  the lease before it was sent) and the lines it asked for. Now = asked for: applied, and its
  ``order_total_change`` is the order's ``order_to_pay`` now minus before — the API computes it
  the same way, as the money that moves. Now = before: not applied. Neither: someone else changed
  the order meanwhile, and nothing can be decided.
* ``cancel`` and ``confirm``: the order's status in the member's ``history`` (the member from
  ``details``): cancelled, or confirmed (or cancelled after it) — applied; else not.
* ``apply``: the order exists (``details``) — applied.

Nothing here sends a mutating request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from attrs import frozen

from ._http import ApiResponse
from ._operations import DETAILS, HISTORY, OPERATIONS, Operation
from ._serialization import dumps, load_answer, loads
from .errors import IdempotencyError, NotFoundError, OutcomeUnknownError
from .idempotency._records import Book, Finish, IdempotencyStore, Outcome, State
from .models import LineItem, OrderCalculation, OrderChange, OrderHistory, OrderRef

__all__ = ["Reconciler", "Reconciliation", "cart_lines", "same_cart"]

Lines = frozenset[tuple[str, Decimal, Decimal]]

_CANCELLED = re.compile(r"cancel|отмен", re.IGNORECASE)
_CONFIRMED = re.compile(r"confirm|complete|исполн|заверш", re.IGNORECASE)


@frozen(kw_only=True)
class Reconciliation:
    """What :meth:`LoyaltyClient.reconcile` found out about an order's unknown outcome.

    Attributes:
        order_id: The order.
        operation: The operation whose outcome was unknown (``"change"``, ``"cancel"``, ...).
        applied: Whether the API applied it.
        result: What its lost answer would have carried, when applied: for a ``change`` an
            :class:`OrderChange` whose ``order_total_change`` is derived (``order_to_pay`` now
            minus before); for ``cancel`` and ``confirm`` an :class:`OrderRef`; for ``apply``
            the order's :class:`OrderCalculation`. ``None`` when not applied.
        idempotency_key: The caller's key of that call, if it had one.
        decided_by: ``"details"`` (the order's lines), ``"history"`` (its status), or
            ``"record"`` (the store already knew the outcome: nothing was unknown).
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


def _number(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value.normalize()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value)).normalize()
    raise TypeError(f"not a number: {type(value).__name__}")


def _lines(pairs: Iterable[tuple[object, object, object]]) -> Lines:
    return frozenset(
        (str(product), _number(quantity), _number(price))
        for product, quantity, price in pairs
        if _number(quantity) != 0
    )


def cart_lines(items: Iterable[LineItem]) -> Lines:
    """The lines of a calculation, as (product, quantity, price), comparable with a request's."""
    return _lines((item.product_id, item.quantity, item.price) for item in items)


def request_lines(body: bytes) -> Lines:
    """The lines a request body asks for."""
    document = loads(body)
    lines = document.get("cart_items") if isinstance(document, Mapping) else None
    if not isinstance(lines, list):
        raise TypeError("the request has no cart_items")
    return _lines((line["product_id"], line["quantity"], line["price"]) for line in lines)


def same_cart(details_answer: bytes, request_body: bytes) -> bool:
    """Whether the order (the answer of ``details``) already holds the cart asked for."""
    calculation = load_answer(details_answer, OrderCalculation)
    if not calculation.items:
        return False
    return cart_lines(calculation.items) == request_lines(request_body)


def derived_change(before: OrderCalculation, now_body: bytes) -> bytes:
    """The answer a ``change`` would have given: the order now, with its derived amount."""
    document = loads(now_body)
    payload: dict[str, Any] = dict(document["payload"])
    now = Decimal(str(payload["order_to_pay"]))
    payload["order_total_change"] = now - before.order_to_pay
    return dumps({"status": "success", "payload": payload})


def ref_answer(order_id: str, identifier: str | None) -> bytes:
    """The answer a ``cancel`` or ``confirm`` would have given."""
    payload: dict[str, Any] = {"order_id": order_id}
    if identifier is not None:
        payload["identifier"] = identifier
    return dumps({"status": "success", "payload": payload})


def decide_change(
    outcome: Outcome, before: OrderCalculation, now: OrderCalculation, order_id: str
) -> bool:
    """Applied (True), not applied (False), or :class:`OutcomeUnknownError`."""
    if outcome.request is None:
        raise _undecidable(outcome, order_id, "the change's request was not recorded")
    asked = request_lines(outcome.request)
    lines_now = cart_lines(now.items)
    if lines_now == asked:
        return True
    if lines_now == cart_lines(before.items):
        return False
    raise _undecidable(
        outcome,
        order_id,
        "the order holds neither its cart from before the change nor the cart the change asked "
        "for: someone else changed it meanwhile",
    )


def status_applied(operation: str, history: OrderHistory, order_id: str) -> bool:
    """Whether the order's status in *history* shows *operation* (cancel / confirm) done."""
    status = next((order.status for order in history.orders if order.id == order_id), None)
    if status is None:
        return False
    if _CANCELLED.search(status):
        return True
    return operation == "confirm" and _CONFIRMED.search(status) is not None


def not_found_means_not_applied(error: NotFoundError) -> bool:
    """Whether *error* says the order does not exist (so an ``apply`` never happened)."""
    return "not found" in error.message.lower()


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
        if operation == "change":
            applied, answer = await self._change(outcome)
        elif operation == "apply":
            applied, answer = await self._apply()
        else:
            applied, answer = await self._status(operation)
        if not applied:
            await self._store.release(self._key, outcome.owner or "", outcome.intent)
            return self._found(outcome, applied=False, result=None)
        assert answer is not None  # noqa: S101 - every applied decision carries its answer
        recorded = Outcome(state=State.SUCCEEDED, intent=outcome.intent, status=200, answer=answer)
        done = await self._store.finish(self._key, outcome.owner or "", recorded)
        if done not in (Finish.RECORDED, Finish.RECORDED_AFTER_LOSS):
            # Another reconciler (or the slow call itself) recorded it first: say what it did.
            return await self.run(idempotency_key)
        return self._found(outcome, applied=True, result=_decoded(operation, answer))

    async def _change(self, outcome: Outcome) -> tuple[bool, bytes | None]:
        if outcome.request is None or outcome.before is None:
            # A change is sent only once its note is in the store: without one, it never left.
            return False, None
        if not outcome.before:  # the order did not exist when the change was sent
            try:
                await self._details()
            except NotFoundError:
                return False, None
            raise _undecidable(outcome, self._order_id, "the order did not exist before it")
        before = _decoded("details", outcome.before)
        assert isinstance(before, OrderCalculation)  # noqa: S101 - details decodes to it
        now = await self._details()
        assert isinstance(now.result, OrderCalculation)  # noqa: S101
        if not decide_change(outcome, before, now.result, self._order_id):
            return False, None
        return True, derived_change(before, now.body)

    async def _apply(self) -> tuple[bool, bytes | None]:
        try:
            now = await self._details()
        except NotFoundError as error:
            if not_found_means_not_applied(error):
                return False, None
            raise
        return True, now.body

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
        result = None if answer is None else _decoded(outcome.intent.operation, answer)
        return self._found(outcome, applied=applied, result=result, decided_by="record")

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
