"""Attacks on the order's lookup before a change, read as its lines only: a hostile or quirky
server, a careless caller's middleware and decimal context, notes another version wrote.

Each ``test_held_*`` is an attack that found nothing; the others are what the attacks found,
each the proof of its fix.
"""

from __future__ import annotations

import contextlib
import decimal
from decimal import Decimal
from typing import Any

import pytest

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    CartItem,
    Handler,
    LoyaltyClient,
    LoyaltyError,
    MalformedResponseError,
    OrderCalculation,
    OutcomeUnknownError,
)
from rees46_loyalty import (
    TimeoutError as LoyaltyTimeoutError,
)
from rees46_loyalty._serialization import dumps, load_answer
from rees46_loyalty.idempotency import MemoryIdempotencyStore
from tests.conftest import SHOP_ID, SHOP_SECRET, FakeClock
from tests.payloads import CALCULATION, CHANGE, ITEM, status_envelope
from tests.unit.helpers import FakeApi

SMALLER = [CartItem(product_id="A", price=Decimal(1000), quantity=3)]
AFTER = {**CALCULATION, "order_to_pay": 3900, "items": [{**ITEM, "quantity": 3}]}


def _client(api: FakeApi, **options: Any) -> LoyaltyClient:
    return LoyaltyClient(SHOP_ID, SHOP_SECRET, transport=api, clock=FakeClock(), **options)


def _order(**fields: Any) -> dict[str, Any]:
    return status_envelope({**CALCULATION, **fields})


# -- what the attacks found ------------------------------------------------------------------


async def test_a_quirk_in_a_field_the_lookup_skips_never_hides_the_refund(
    api: FakeApi,
) -> None:
    """The server's answers always carry one malformed field neither the lookup nor reconcile
    reads: the change goes, its own answer fails to decode (unknown), and reconcile still
    decides it from the lines, records the refund and names it in its error; the redelivery
    is never sent."""
    quirk = {"bonuses_balance": "lots"}
    api.get("details", payload=_order(**quirk))
    api.post("change", payload=status_envelope({**CHANGE, **AFTER, **quirk,
                                                "order_total_change": -1000}))  # fmt: skip
    api.get("details", payload=status_envelope({**AFTER, **quirk}), repeat=True)
    async with _client(api) as client:
        with pytest.raises(OutcomeUnknownError) as sent:
            await client.change(order_id="1001", cart_items=SMALLER)
        assert isinstance(sent.value.__cause__, MalformedResponseError)
        with pytest.raises(MalformedResponseError, match=r"order_total_change -1000\b"):
            await client.reconcile(order_id="1001")
        with pytest.raises(LoyaltyError):  # recorded: the record cannot be read, nothing is sent
            await client.change(order_id="1001", cart_items=SMALLER)
    assert [r.operation.name for r in api.requests] == ["details", "change", "details"]


async def test_a_cache_of_details_answers_gives_details_callers_the_whole_order(
    api: FakeApi,
) -> None:
    """A middleware caching "details" answers by name hands details() the lookup's answer (the
    order read as its lines): details() still returns the whole order, read from the body."""
    cache: dict[tuple[str, str | None], ApiResponse] = {}

    async def cached(request: ApiRequest, call_next: Handler) -> ApiResponse:
        if request.operation.name != "details":
            return await call_next(request)
        key = (request.operation.name, request.order_id)
        if key not in cache:
            cache[key] = await call_next(request)
        return cache[key]

    api.get("details", payload=_order())
    api.post("change", exception=LoyaltyTimeoutError("read", request_sent=True))
    async with _client(api, middlewares=[cached]) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1001", cart_items=SMALLER)
        order = await client.details(order_id="1001")
        assert isinstance(order, OrderCalculation), type(order)
        await client.reconcile(order_id="1001")


async def test_the_callers_decimal_context_never_makes_the_guard_send_twice(
    api: FakeApi,
) -> None:
    """The caller's decimal context at 6 digits: the guard's sums and carts are exact anyway, so
    a cart the order already holds (its lines listed in another order) is not sent again."""
    held = [
        {**ITEM, "product_id": p, "quantity": q, "price": 10}
        for p, q in (("B", 0.004), ("C", 0.004), ("A", 1000))
    ]
    api.get("details", payload=_order(items=held))
    api.post("change", payload=status_envelope({**CHANGE, "order_total_change": 0}))
    cart = [
        CartItem(product_id="A", price=Decimal(10), quantity=Decimal(1000)),
        CartItem(product_id="B", price=Decimal(10), quantity=Decimal("0.004")),
        CartItem(product_id="C", price=Decimal(10), quantity=Decimal("0.004")),
    ]
    async with _client(api) as client:
        with decimal.localcontext() as context:
            context.prec = 6
            with pytest.raises(OutcomeUnknownError, match="already holds"):
                await client.change(order_id="1001", cart_items=cart)
    assert [r.operation.name for r in api.requests] == ["details"]


async def test_the_callers_decimal_context_never_rounds_a_derived_refund(
    api: FakeApi,
) -> None:
    """The refund reconcile derives (now - before) is exact in any caller's decimal context."""
    api.get("details", payload=_order(order_to_pay=Decimal("200000.00")))
    api.post("change", exception=LoyaltyTimeoutError("read", request_sent=True))
    api.get("details", payload=status_envelope({**AFTER, "order_to_pay": Decimal("76543.22")}))
    async with _client(api) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1001", cart_items=SMALLER)
        with decimal.localcontext() as context:
            context.prec = 6
            found = await client.reconcile(order_id="1001")
    assert found.applied
    assert found.order_total_change == Decimal("-123456.78")


async def test_a_derived_refund_keeps_every_digit(api: FakeApi) -> None:
    """The derived answer keeps the order's numbers as the API wrote them, and its refund
    exact: 90000000000000.01 (inside the bounds read) is not rounded through a float."""
    api.get("details", payload=_order(order_to_pay=Decimal("0.01")))
    api.post("change", exception=LoyaltyTimeoutError("read", request_sent=True))
    now = Decimal("90000000000000.02")
    api.get("details", payload=status_envelope({**AFTER, "order_to_pay": now}))
    async with _client(api) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1001", cart_items=SMALLER)
        found = await client.reconcile(order_id="1001")
    assert found.applied
    assert found.order_total_change == Decimal("90000000000000.01")


async def test_a_lookup_whose_body_a_middleware_dropped_sends_nothing(
    api: FakeApi,
) -> None:
    """A middleware dropping the raw body of answers once decoded: without the order as it was,
    no unknown outcome could be reconciled, so the change is not sent."""

    async def drop_body(request: ApiRequest, call_next: Handler) -> ApiResponse:
        return (await call_next(request)).replace(body=b"")

    api.get("details", payload=_order())
    async with _client(api, middlewares=[drop_body]) as client:
        with pytest.raises(MalformedResponseError, match="without a body"):
            await client.change(order_id="1001", cart_items=SMALLER)
    assert [r.operation.name for r in api.requests] == ["details"]


async def test_a_reconcile_look_whose_body_a_middleware_replaced_is_an_sdk_error(
    api: FakeApi,
) -> None:
    """reconcile's look at the order keeps its decoded lines but a middleware put another body
    in place of the answer: the refund cannot be derived from it, and that is said as an SDK
    error (never a bare ValueError), nothing recorded as applied."""
    looks = 0

    async def replace_second_look(request: ApiRequest, call_next: Handler) -> ApiResponse:
        nonlocal looks
        response = await call_next(request)
        if request.operation.name == "details":
            looks += 1
            if looks == 2:
                return response.replace(body=b"[]")
        return response

    api.get("details", payload=_order())
    api.post("change", exception=LoyaltyTimeoutError("read", request_sent=True))
    api.get("details", payload=status_envelope(AFTER))
    async with _client(api, middlewares=[replace_second_look]) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1001", cart_items=SMALLER)
        with pytest.raises(MalformedResponseError, match="no envelope with a payload"):
            await client.reconcile(order_id="1001")


async def test_a_lookup_answered_by_a_middleware_without_a_body_is_an_sdk_error(
    api: FakeApi,
) -> None:
    """A middleware answering "details" with an OrderCalculation of its own and no body: an SDK
    error, never a bare JSONDecodeError, and nothing sent."""
    order = load_answer(dumps(_order()), OrderCalculation)

    async def offline_details(request: ApiRequest, call_next: Handler) -> ApiResponse:
        if request.operation.name == "details":
            return ApiResponse(status=200, headers={}, body=b"", result=order)
        return await call_next(request)

    api.post("change", payload=status_envelope(CHANGE))
    async with _client(api, middlewares=[offline_details]) as client:
        with contextlib.suppress(LoyaltyError):  # an SDK error, or an answer; never a bare one
            await client.change(order_id="1001", cart_items=SMALLER)
    assert [r.operation.name for r in api.requests] in ([], ["change"])


async def test_a_line_that_is_not_an_object_is_refused(api: FakeApi) -> None:
    """Lines written as "A" or [] are no lines (they read as all-default lines before): the
    lookup refuses the answer, and nothing is sent."""
    api.get("details", payload=_order(items=["A", []]))
    api.post("change", payload=status_envelope(CHANGE))
    async with _client(api) as client:
        with pytest.raises(MalformedResponseError):
            await client.change(order_id="1001", cart_items=SMALLER)
    assert [r.operation.name for r in api.requests] == ["details"]


async def test_an_order_without_lines_decides_nothing(
    api: FakeApi,
) -> None:
    """Answers listing no lines, at the lookup and at reconcile's look: "now = before" says
    nothing (a confirmed order has lines), so reconcile raises instead of deciding."""
    api.get("details", payload=_order(items=[]))
    api.post("change", exception=LoyaltyTimeoutError("read", request_sent=True))
    api.get("details", payload=_order(items=[], order_to_pay=3900))
    async with _client(api) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1001", cart_items=SMALLER)
        with pytest.raises(OutcomeUnknownError):
            await client.reconcile(order_id="1001")


# -- held: attacks that found nothing ----------------------------------------------------------

_HELD_A4 = [CartItem(product_id="A", price=Decimal("1000.00"), quantity=Decimal("4.0"))]


@pytest.mark.parametrize(
    "lines",
    [
        [{**ITEM, "quantity": 1}, {**ITEM, "quantity": 3}],  # split lines of one product
        [{**ITEM, "quantity": 4}, {**ITEM, "quantity": 0}],  # a line of quantity 0
        [{**ITEM, "quantity": 5}, {**ITEM, "quantity": -1}],  # a negative correction
        [{**ITEM, "quantity": "4", "price": "1000.00"}],  # numbers as strings
        [{**ITEM, "quantity": Decimal("4.000"), "price": Decimal("1E+3")}],  # exponents, zeros
        [{**ITEM, "product_id": "A", "quantity": 4}, {**ITEM, "product_id": "B", "quantity": 0}],
        [{**ITEM, "name": {"odd": [1]}, "total": "lots"}],  # unused fields of the wrong type
    ],
)
async def test_held_the_guard_finds_the_held_cart_in_odd_lines(
    api: FakeApi, lines: list[dict[str, Any]]
) -> None:
    """Odd ways of writing 4 units of A at 1000 are all the cart asked for: nothing is sent."""
    api.get("details", payload=_order(items=lines))
    async with _client(api) as client:
        with pytest.raises(OutcomeUnknownError, match="already holds"):
            await client.change(order_id="1001", cart_items=_HELD_A4)
    assert [r.operation.name for r in api.requests] == ["details"]


@pytest.mark.parametrize(
    "lines",
    [
        [{**ITEM, "quantity": 4, "price": 999}],  # another price
        [{**ITEM, "quantity": 2}, {**ITEM, "quantity": 2, "price": 500}],  # same units, 2 prices
        [{**ITEM, "quantity": 4, "discountable": False}],  # a flag the request sets differs
        [{**ITEM, "quantity": 0.30000000000000004}, {**ITEM, "product_id": "B", "quantity": 3.7}],
    ],
)
async def test_held_other_carts_are_sent(api: FakeApi, lines: list[dict[str, Any]]) -> None:
    """Carts that differ in price, split price or a flag asked for are not the held cart."""
    cart = [CartItem(product_id="A", price=Decimal(1000), quantity=4, discountable=True)]
    api.get("details", payload=_order(items=lines))
    api.post("change", payload=status_envelope(CHANGE))
    async with _client(api) as client:
        await client.change(order_id="1001", cart_items=cart)
    assert [r.operation.name for r in api.requests] == ["details", "change"]


async def test_held_floats_of_the_request_match_decimals_of_the_answer(api: FakeApi) -> None:
    """Decimal("1.10") goes as 1.1 and 0.1 + 0.2 units as 0.1 and 0.2; the answer's 1.10 and
    0.30 (split 0.1 + 0.2) are the same cart."""
    held = [
        {**ITEM, "product_id": "A", "quantity": Decimal("1.10"), "price": Decimal("99.90")},
        {**ITEM, "product_id": "B", "quantity": Decimal("0.1"), "price": 10},
        {**ITEM, "product_id": "B", "quantity": Decimal("0.2"), "price": 10},
    ]
    api.get("details", payload=_order(items=held))
    cart = [
        CartItem(product_id="A", price=Decimal("99.9"), quantity=Decimal("1.10")),
        CartItem(product_id="B", price=Decimal("10.00"), quantity=Decimal("0.3")),
    ]
    async with _client(api) as client:
        with pytest.raises(OutcomeUnknownError, match="already holds"):
            await client.change(order_id="1001", cart_items=cart)


@pytest.mark.parametrize(
    "before",
    [
        {"order_to_pay": "4900.00"},  # a string
        {"order_to_pay": Decimal("4.9E+3")},  # an exponent
        {"order_to_pay": "x", "promo_codes": 7},  # a duplicate key (below): the last counts
    ],
)
async def test_held_the_refund_is_derived_from_odd_befores(
    api: FakeApi, before: dict[str, Any]
) -> None:
    """The noted before's order_to_pay, however written, gives the refund now - before."""
    body = dumps(_order(**before))
    if before.get("order_to_pay") == "x":
        body = body[:-2] + b',"order_to_pay":4900}}'
    api.get("details", body=body)
    api.post("change", exception=LoyaltyTimeoutError("read", request_sent=True))
    api.get("details", payload=status_envelope(AFTER))
    async with _client(api) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1001", cart_items=SMALLER)
        found = await client.reconcile(order_id="1001")
    assert found.applied
    assert found.order_total_change == Decimal(-1000)


async def test_held_escaped_keys_in_the_lookup_are_read(api: FakeApi) -> None:
    """Keys written with \\u escapes are the same keys: the guard sees the held cart."""
    body = dumps(_order()).replace(b'"order_to_pay"', b'"order\\u005fto_pay"')
    body = body.replace(b'"items"', b'"it\\u0065ms"')
    api.get("details", body=body)
    async with _client(api) as client:
        with pytest.raises(OutcomeUnknownError, match="already holds"):
            await client.change(order_id="1001", cart_items=_HELD_A4)


async def test_held_a_late_landing_is_derived_after_a_differently_written_look(
    api: FakeApi,
) -> None:
    """Reconcile finds the change not applied; the redelivery's lookup writes the landed cart
    otherwise (split, strings, exponents): the refund is still derived, and nothing is sent."""
    api.get("details", payload=_order())
    api.post("change", exception=LoyaltyTimeoutError("read", request_sent=True))
    api.get("details", payload=_order())  # reconcile: not applied (yet)
    landed = [{**ITEM, "quantity": "1"}, {**ITEM, "quantity": 2, "price": "1E+3"}, ITEM | {
        "quantity": 0}]  # fmt: skip
    api.get("details", payload=_order(items=landed, order_to_pay="3900.0"))
    async with _client(api) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1001", cart_items=SMALLER)
        assert not (await client.reconcile(order_id="1001")).applied
        result = await client.change(order_id="1001", cart_items=SMALLER)
    assert result.order_total_change == Decimal(-1000)
    assert result.replayed
    assert [r.operation.name for r in api.requests] == ["details", "change", "details", "details"]


async def test_held_a_noisy_order_is_never_decided_wrongly(api: FakeApi) -> None:
    """Float noise in the order's lines (0.30000000000000004) is not the cart asked (0.3):
    the change is sent, and a lost answer is undecidable rather than decided wrongly."""
    cart = [CartItem(product_id="A", price=Decimal(1000), quantity=Decimal("0.3"))]
    api.get("details", payload=_order(items=[{**ITEM, "quantity": 1}]))
    api.post("change", exception=LoyaltyTimeoutError("read", request_sent=True))
    api.get("details", payload=_order(items=[{**ITEM, "quantity": 0.30000000000000004}]))
    async with _client(api) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1001", cart_items=cart)
        with pytest.raises(OutcomeUnknownError, match="neither"):
            await client.reconcile(order_id="1001")


async def test_an_unreadable_kept_note_is_an_sdk_error(
    api: FakeApi,
) -> None:
    """A kept note (a change reconciled as not applied) that does not read as the order's lines
    (a store that lost part of it, another version's note): an SDK error on redelivery."""
    import attrs  # noqa: PLC0415

    store = MemoryIdempotencyStore()
    begin = store.begin

    async def foreign_note(*args: Any) -> Any:
        decision = await begin(*args)
        if decision.outcome is not None and decision.outcome.not_applied:
            note = b'{"status":"success","payload":{"items":[]}}'  # no order_to_pay
            return attrs.evolve(decision, outcome=attrs.evolve(decision.outcome, before=note))
        return decision

    store.begin = foreign_note  # type: ignore[method-assign,assignment]
    api.get("details", payload=_order())
    api.post("change", exception=LoyaltyTimeoutError("read", request_sent=True))
    api.get("details", payload=_order())  # reconcile: not applied (yet)
    api.get("details", payload=status_envelope(AFTER))  # it landed late
    async with _client(api, idempotency=store) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1001", cart_items=SMALLER)
        assert not (await client.reconcile(order_id="1001")).applied
        with pytest.raises(LoyaltyError):
            await client.change(order_id="1001", cart_items=SMALLER)
