"""The fast decode path (msgspec, the `speedups` extra) against the reference path (json +
cattrs): for any answer, the same result object or the same error class."""

from __future__ import annotations

import asyncio
import json
import typing
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rees46_loyalty import ApiRequest, ApiResponse, LoyaltyError
from rees46_loyalty._operations import OPERATIONS
from rees46_loyalty._serialization import fast_decode, fast_decoding
from rees46_loyalty.middleware.errors import decode_response
from tests.payloads import CALCULATION, CHANGE, HISTORY, REF

msgspec = pytest.importorskip("msgspec", reason="the fast path needs the speedups extra")

money_text = st.decimals(
    allow_nan=False, allow_infinity=False, places=2, min_value=-(10**9), max_value=10**9
)
odd_values = st.sampled_from(
    [None, True, 0, 1.5, "", "x", "NaN", "Infinity", " 12 ", "1_000", [], {}, [1], {"a": 1}]
)


def _value_for(annotation: Any) -> st.SearchStrategy[Any]:
    """A right-typed JSON value for a model field, or sometimes a wrong-typed one."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    right: st.SearchStrategy[Any]
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return st.one_of(*(_value_for(arg) for arg in args if arg is not type(None)), st.none())
    if annotation is Decimal:
        right = st.one_of(st.integers(-(10**6), 10**6), money_text.map(float), money_text.map(str))
    elif annotation is str:
        right = st.one_of(st.text(max_size=6), st.integers(0, 10**6))
    elif annotation is bool:
        right = st.booleans()
    elif annotation is int:
        right = st.integers(0, 1000)
    elif origin is tuple:
        right = st.lists(_value_for(args[0]), max_size=3)
    elif origin is dict:
        value = st.integers() if args[1] is Any else _value_for(args[1])
        right = st.dictionaries(st.text(max_size=3), value, max_size=2)
    elif attrs.has(annotation):
        right = _model(annotation)
    else:  # pragma: no cover - a model field of a type the test does not know
        raise AssertionError(annotation)
    return st.one_of(right, right, right, odd_values)


def _model(model: type) -> st.SearchStrategy[dict[str, Any]]:
    hints = typing.get_type_hints(model)
    fields = {
        a.name: _value_for(hints[a.name]) for a in attrs.fields(model) if a.name != "replayed"
    }
    return st.fixed_dictionaries({}, optional={**fields, "unknown_field": odd_values})


def _models() -> Iterator[type]:
    yield from {op.result_type for op in OPERATIONS.values()}


def _outcome(operation: str, body: bytes, *, fast: bool) -> Any:
    with fast_decoding(enabled=fast):
        try:
            request = ApiRequest(operation=OPERATIONS[operation], data={})
            response = decode_response(request, ApiResponse(status=200, headers={}, body=body))
        except LoyaltyError as error:
            return type(error)
    return response.result


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_both_paths_agree_on_any_payload(operation: str, data: st.DataObject) -> None:
    """Generated payloads, right and wrong, in any envelope: equal results or equal errors."""
    payload = data.draw(_model(OPERATIONS[operation].result_type))
    envelope: dict[str, Any] = data.draw(
        st.sampled_from([{"status": "success"}, {"success": True}, {"status": "error"}, {}])
    )
    body = json.dumps({**envelope, "payload": payload}).encode()
    reference = _outcome(operation, body, fast=False)
    fast = _outcome(operation, body, fast=True)
    assert fast == reference
    if not isinstance(reference, type):
        assert type(fast) is type(reference)


@pytest.mark.parametrize(
    ("operation", "payload"),
    [("change", CHANGE), ("estimate", CALCULATION), ("cancel", REF), ("history", HISTORY)],
)
def test_documented_answers_take_the_fast_path(operation: str, payload: dict[str, Any]) -> None:
    """The answers of the docs decode on the fast path, to what the reference path gives."""
    body = json.dumps({"status": "success", "payload": payload}).encode()
    model = OPERATIONS[operation].result_type
    fast = fast_decode(body, model)
    assert fast is not None
    assert fast == _outcome(operation, body, fast=False)


@pytest.mark.parametrize(
    "body",
    [
        b'{"status": "success", "payload": {"order_id": 1001}}',  # an int id: coerced by cattrs
        b'{"status": "success", "payload": {"order_id": "1", "replayed": true}}',
        b'{"status": "success", "payload": {"message": "Could not cancel order"}}',
        b'{"status": "error", "payload": {"order_id": "1"}}',
        b'{"success": true, "payload": {"order_id": "1", "total": "NaN"}}',
        b"not json",
    ],
)
def test_what_the_fast_path_leaves_to_the_reference_path(body: bytes) -> None:
    """Answers the reference path reads differently are never decoded on the fast path."""
    assert fast_decode(body, OPERATIONS["cancel"].result_type) is None


def test_the_fast_path_can_be_turned_off() -> None:
    """Inside fast_decoding(enabled=False) answers take the reference path; after it, not."""
    body = json.dumps({"status": "success", "payload": REF}).encode()
    with fast_decoding(enabled=False) as on:
        assert on is False
        assert fast_decode(body, OPERATIONS["cancel"].result_type) is None
    assert fast_decode(body, OPERATIONS["cancel"].result_type) is not None


def test_fast_decoding_restores_the_previous_setting_however_the_block_ends() -> None:
    """Nested blocks restore the setting of the block around them, after an exception too."""
    body = json.dumps({"status": "success", "payload": REF}).encode()
    model = OPERATIONS["cancel"].result_type
    seen: list[object] = []

    def fails_inside() -> None:
        with fast_decoding(enabled=True) as on:
            seen.extend([on, fast_decode(body, model)])
            raise KeyError("the block fails")

    with fast_decoding(enabled=False):
        with pytest.raises(KeyError):
            fails_inside()
        assert fast_decode(body, model) is None  # the outer block's setting is back
    assert fast_decode(body, model) is not None
    assert seen[0] is True
    assert seen[1] is not None


async def test_fast_decoding_does_not_leak_into_other_tasks() -> None:
    """A task that turns the fast path off changes nothing for a task running meanwhile."""
    body = json.dumps({"status": "success", "payload": REF}).encode()
    model = OPERATIONS["cancel"].result_type
    turned_off, looked = asyncio.Event(), asyncio.Event()

    async def reference_only() -> object:
        with fast_decoding(enabled=False):
            turned_off.set()
            await looked.wait()
            return fast_decode(body, model)

    async def default() -> object:
        await turned_off.wait()
        try:
            return fast_decode(body, model)
        finally:
            looked.set()

    off, on = await asyncio.gather(reference_only(), default())
    assert off is None
    assert on is not None
