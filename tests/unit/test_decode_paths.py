"""The fast decode path (msgspec, the `speedups` extra) against the reference path (json +
cattrs): for any answer, the same result object or the same error class."""

from __future__ import annotations

import asyncio
import json
import re
import typing
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks._server import change_answer
from rees46_loyalty import ApiRequest, ApiResponse, LoyaltyError, MalformedResponseError
from rees46_loyalty._operations import OPERATIONS, ORDER_LINES
from rees46_loyalty._serialization import (
    _FOLD,
    _FOLD_DROPS,
    _NO_DIGIT_ESCAPES,
    _OTHER_DIGITS_LEAD,
    _strings_may_hide_amounts,
    fast_decode,
    fast_decoding,
)
from rees46_loyalty.middleware.errors import decode_response
from tests.payloads import CALCULATION, CHANGE, HISTORY, REF

msgspec = pytest.importorskip("msgspec", reason="the fast path needs the speedups extra")

#: What the client decodes: each operation's answer, and the order's lines read before a change.
DECODED = {**OPERATIONS, "details (lines)": ORDER_LINES}

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
    yield from {op.result_type for op in DECODED.values()}


def _outcome(operation: str, body: bytes, *, fast: bool) -> Any:
    with fast_decoding(enabled=fast):
        try:
            request = ApiRequest(operation=DECODED[operation], data={})
            response = decode_response(request, ApiResponse(status=200, headers={}, body=body))
        except LoyaltyError as error:
            return type(error)
    return response.result


@pytest.mark.parametrize("operation", sorted(DECODED))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_both_paths_agree_on_any_payload(operation: str, data: st.DataObject) -> None:
    """Generated payloads, right and wrong, in any envelope: equal results or equal errors."""
    payload = data.draw(_model(DECODED[operation].result_type))
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
    [
        ("change", CHANGE),
        ("estimate", CALCULATION),
        ("cancel", REF),
        ("history", HISTORY),
        ("details (lines)", CALCULATION),
    ],
)
def test_documented_answers_take_the_fast_path(operation: str, payload: dict[str, Any]) -> None:
    """The answers of the docs decode on the fast path, to what the reference path gives."""
    body = json.dumps({"status": "success", "payload": payload}).encode()
    model = DECODED[operation].result_type
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


# -- adversarial numbers and keys: the fast path gives the reference path's result, or steps aside

_SPACES = st.sampled_from(
    ["", " ", "\t", "  ", "\\u0020", "\u00a0", "\\n", "\\t", "\u2003", "_", "\\u000b"]
)
_DIGITS = st.text(st.sampled_from("0123456789"), min_size=1, max_size=20)
_number_text = st.one_of(
    st.builds(lambda a, b: f"{a}.{b}", _DIGITS, _DIGITS),
    st.builds(lambda a, e, x: f"{a}{e}{x}", _DIGITS, st.sampled_from("eE"), st.integers(-60, 60)),
    _DIGITS,
    st.builds(lambda a, b: f"{a}.{b}", _DIGITS, st.integers(30, 45).map(lambda n: "0" * n + "1")),
).map(lambda text: text.lstrip("0") or "0")
_string_amount = st.one_of(
    _number_text,
    st.builds(lambda a, b: f"{a}_{b}", _DIGITS, _DIGITS),
    st.builds(
        lambda sign, word, spaces: f"{spaces}{sign}{word}{spaces}",
        st.sampled_from(["", "+", "-"]),
        st.sampled_from(
            [
                "NaN",
                "nan",
                "sNaN",
                "NaN12",
                "Inf",
                "inf",
                "Infinity",
                "iNfInItY",
                "N_aN",
                "_inf",
                "i_n_f",
                "s_NaN_1",
                "Inf_inity",
            ]
        ),
        _SPACES,
    ),
    st.builds(lambda a, b: f"{a}_{b}", _DIGITS, st.sampled_from(["e999", "E-50", "000000000"])),
    _DIGITS.map(lambda text: "".join(f"\\u{ord(char):04x}" for char in text)),
    _DIGITS.map(lambda text: "".join(chr(0x0660 + int(char)) for char in text)),
    _number_text.map(lambda text: text.replace("e", "\\u0065").replace("1", "\\u0031")),
)
_adversarial = st.one_of(
    _number_text.map(lambda text: text.encode()),
    _number_text.map(lambda text: b"-" + text.encode()),
    _string_amount.map(lambda text: b'"' + text.encode() + b'"'),
)


@settings(max_examples=1000, deadline=None)
@given(
    amounts=st.lists(_adversarial, min_size=1, max_size=3),
    place=st.sampled_from(["order_to_pay", "saved_total", "item", "stickers", "unknown"]),
    text=st.sampled_from(['"card"', '"Карта «Мир»"', '"\\u041a\\u0430\\u0440\\u0442\\u0430"']),
)
def test_adversarial_numbers_are_read_alike_or_left_to_the_reference_path(
    amounts: list[bytes], place: str, text: str
) -> None:
    """Numbers of any magnitude, spelling or disguise (exponents, 41 places, NaN with spaces and
    signs, JSON escapes, other scripts' digits, underscores), in an amount, a line, a free-form
    object or an unknown field, beside Russian text raw or escaped: the fast path's result
    equals the reference path's, or it leaves the answer to the reference path."""
    first, *others = amounts
    fields = {"order_total": b"1", "order_to_pay": b"2"}
    if place == "order_to_pay":
        fields["order_to_pay"] = first
    elif place == "saved_total":
        fields["saved_total"] = first
    elif place == "item":
        fields["items"] = b'[{"product_id": "A", "price": ' + first + b"}]"
    elif place == "stickers":
        fields["rewarded_stickers"] = b'{"a": ' + first + b"}"
    else:
        fields["future_field"] = first
    for n, other in enumerate(others):
        fields[f"bonuses_reward{'' if n == 0 else '_x'}"] = other
    # text elsewhere: Russian, raw or written as \\u escapes, or none
    fields["payment_type"] = text.encode()
    payload = b", ".join(b'"' + name.encode() + b'": ' + value for name, value in fields.items())
    body = b'{"status": "success", "payload": {' + payload + b"}}"
    reference = _outcome("estimate", body, fast=False)
    fast = fast_decode(body, OPERATIONS["estimate"].result_type)
    if fast is not None:
        assert not isinstance(reference, type), body
        assert fast == reference
        assert repr(fast) == repr(reference)


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        # an escaped `message` key: a payload that is only a message is an error
        ("history", b'{"status": "success", "payload": {"mess\\u0061ge": "Order not found"}}'),
        ("history", b'{"status": "success", "payload": {"\\u006dessage": "x", "orders": []}}'),
        # an escaped `replayed` key: the SDK's own field, never read from the wire
        ("cancel", b'{"status": "success", "payload": {"order_id": "1", "repl\\u0061yed": true}}'),
        ("cancel", b'{"status": "success", "payload": {"order_id": "1", "replayed": true}}'),
    ],
)
def test_keys_written_with_escapes_are_left_to_the_reference_path(
    operation: str, body: bytes
) -> None:
    """`message` and `replayed` keys decide the outcome however they are spelled: the fast path
    steps aside, and the answer decodes as on the reference path."""
    assert fast_decode(body, OPERATIONS[operation].result_type) is None
    assert _outcome(operation, body, fast=True) == _outcome(operation, body, fast=False)


def test_an_unescaped_body_with_a_false_replayed_takes_the_fast_path() -> None:
    """`replayed: false` changes nothing on either path, so it needs no step aside."""
    body = b'{"status": "success", "payload": {"order_id": "1", "replayed": false}}'
    fast = fast_decode(body, OPERATIONS["cancel"].result_type)
    assert fast is not None
    assert fast.replayed is False
    assert fast == _outcome("cancel", body, fast=False)


@pytest.mark.parametrize(
    ("sticker", "expected"),
    [("0.1", Decimal("0.1")), ("1.50", Decimal("1.50")), ("7", 7), ('"0.1"', "0.1")],
)
def test_numbers_in_free_form_objects_are_exact_on_both_paths(sticker: str, expected: Any) -> None:
    """A fraction in a free-form object (stickers) is the same exact Decimal on the fast path
    as on the reference path, never a float."""
    body = (
        '{"status": "success", "payload": {"order_total": 1, "order_to_pay": 1, '
        f'"rewarded_stickers": {{"a": {sticker}}}}}}}'
    ).encode()
    fast = fast_decode(body, OPERATIONS["estimate"].result_type)
    assert fast is not None
    value = fast.rewarded_stickers["a"]
    assert type(value) is type(expected)
    assert str(value) == str(expected)
    assert fast == _outcome("estimate", body, fast=False)


@pytest.mark.parametrize("sticker", ["1e999999999", "1000000000000000.5", "1e-41"])
def test_out_of_range_numbers_in_free_form_objects_are_refused_on_both_paths(sticker: str) -> None:
    """A number out of the bounds of amounts in a free-form object is refused alike."""
    body = (
        '{"status": "success", "payload": {"order_total": 1, "order_to_pay": 1, '
        f'"rewarded_stickers": {{"a": {sticker}}}}}}}'
    ).encode()
    assert fast_decode(body, OPERATIONS["estimate"].result_type) is None
    assert _outcome("estimate", body, fast=False) is MalformedResponseError
    assert _outcome("estimate", body, fast=True) is MalformedResponseError


def test_every_digit_of_another_script_is_looked_for() -> None:
    """Decimal() reads every decimal digit of any script: the first byte of each (UTF-8) is one
    the fast path's look at the text marks, so such strings get their amounts checked."""
    leads = {
        chr(code).encode()[0]
        for code in range(0x80, 0x110000)
        if not 0xD800 <= code < 0xE000 and chr(code).isdecimal()
    }
    assert leads
    assert leads <= set(_OTHER_DIGITS_LEAD)


def test_the_escapes_left_unchecked_are_of_no_digit() -> None:
    """The \\u escapes whose strings keep their amounts unchecked (Cyrillic, and the ranges of
    guillemets, dashes and currency signs) name no character that Decimal() reads as a digit."""
    prefixes = [b"\\u04", *_NO_DIGIT_ESCAPES]
    for prefix in prefixes:
        hex_digits = prefix.decode()[2:]
        first = int(hex_digits.ljust(4, "0"), 16)
        last = int(hex_digits.ljust(4, "f"), 16)
        assert not any(chr(code).isdecimal() for code in range(first, last + 1)), prefix


@pytest.mark.parametrize(
    ("text", "hides"),
    [
        ('"card"', False),
        ('"Карта «Мир» — №1"', False),  # Cyrillic, guillemets, a dash, the numero sign
        ('"\\u041a\\u0430\\u0440\\u0442\\u0430 \\u041c\\u0438\\u0440"', False),
        ('"\\u041a\\u0430 \\"x\\" \\n"', True),  # other escapes: looked at, in doubt
        ('"\u0661\u0662"', True),  # Arabic-Indic digits
        ('"\uff11"', True),  # a fullwidth digit
        ('"\\u0031"', True),
        ('"\\u00ab\\u041c\\u0438\\u0440\\u00bb \\u2014 \\u2116 \\u20bd \\u00a0"', False),
        ('"\\u00AB"', True),  # written in capitals: looked at, in doubt
        ('"\\u00e9"', True),  # any other \\u escape is looked at
        ('"\\\\u0031"', True),  # an escaped backslash, then text: looked at, in doubt
    ],
)
def test_strings_that_may_hide_amounts(text: str, hides: bool) -> None:
    """Another script's digits or an escape but a Cyrillic letter's get each amount checked;
    Russian text, raw or written as \\u escapes, does not."""
    body = ('{"status": "success", "payload": {"payment_type": ' + text + "}}").encode()
    assert _strings_may_hide_amounts(body, body.translate(_FOLD, _FOLD_DROPS)) is hides


@pytest.mark.parametrize(
    "amount",
    [
        '"N_aN"', '"_inf"', '"-i_n_f"', '"s_NaN"', '"Inf_inity"', '"\\nnan"', '"\\t-Infinity\\r"',
        '"\u00a0nan"', '"\u2003NaN\u3000"', '"_\u00a0+nan_1_"', '"\\u004eaN"', '"N\\u0061N"',
        '"' + "\u0661" * 16 + '"', '"\u0661e999"', '"\uff11\uff45\uff19"', '"\\u0031e999"',
        '"1_000_000_000_000_000"', '"1_e999"', '"0.' + "0_" * 41 + '1"', '"1.e999"', '"1.E+999"',
        '"1e-_50"', '"1.5e_+9_99"', '"\\u043e1e999"', '"\\u00a0nan"', '"\\u2003-Inf\\u2028"',
        '"\\u00a0\\u0031e999"', '"\\u20031e999"',
    ],
)  # fmt: skip
@pytest.mark.parametrize("text", ["card", "Карта «Мир» — №1"])
def test_disguised_amounts_out_of_range_never_take_the_fast_path(amount: str, text: str) -> None:
    """NaN, Infinity and numbers out of bounds in disguise (underscores, whitespace of any script
    or escaped, JSON escapes, other scripts' digits) are refused on both paths, beside any text."""
    body = (
        '{"status": "success", "payload": {"order_total": 1, "order_to_pay": '
        f'{amount}, "payment_type": "{text}"}}}}'
    ).encode()
    assert fast_decode(body, OPERATIONS["estimate"].result_type) is None
    assert _outcome("estimate", body, fast=False) is MalformedResponseError
    assert _outcome("estimate", body, fast=True) is MalformedResponseError


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_an_answer_with_russian_text_takes_the_fast_path(ensure_ascii: bool) -> None:
    """Reasons in Russian, raw or written as \\u escapes (whose hex digits look like numbers:
    \\u043e), with hyphens and digits, decode on the fast path to the reference path's result."""
    reason = "Товар по-русски: «Скидка 10%» — №1, ещё 2"
    payload = {**CHANGE, "items": [{**CHANGE["items"][0], "discountable_reason": reason}]}
    body = json.dumps({"status": "success", "payload": payload}, ensure_ascii=ensure_ascii)
    fast = fast_decode(body.encode(), OPERATIONS["change"].result_type)
    assert fast is not None
    assert fast.items[0].discountable_reason == reason
    assert fast == _outcome("change", body.encode(), fast=False)


@pytest.mark.parametrize(
    "body",
    [
        change_answer(10),  # the benchmark's: 2499.7999999999997
        json.dumps(
            {"status": "success", "payload": {**CHANGE, "order_total": 1124.91 * 3}}
        ).encode(),
    ],
)  # fmt: skip
def test_answers_with_float_noise_take_the_fast_path(body: bytes) -> None:
    """A server computing in floats writes 3374.7300000000005 (17 digits): such answers are
    decoded on the fast path (a look at the text that sent them to the reference path once
    doubled the client's CPU per change of 10 lines)."""
    assert re.search(rb"\.\d{13,}", body)  # the noise is there
    fast = fast_decode(body, OPERATIONS["change"].result_type)
    assert fast is not None
    assert fast == _outcome("change", body, fast=False)
