"""The one place that knows the wire format: JSON text <-> attrs models.

Rules of the REES46 wire format kept here, not in the models:

* money is exact: JSON numbers are parsed as :class:`~decimal.Decimal` from their text, and
  Decimals are written back as JSON numbers (never strings) without loss;
* money is bounded: an amount of 10**15 or more (either sign), or with more than 40 decimal
  places, is not money but a broken or hostile answer (``1e999999999`` would take gigabytes
  to print), and the answer is refused;
* identifiers may come as numbers and are kept as strings;
* unknown fields are ignored (the API grows), optional ones get the model's default;
* everything else is strict: a string where a list belongs is an error, not a list of letters.
"""

from __future__ import annotations

import json
import operator
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from typing import Any, TypeVar

import attrs
from cattrs import Converter
from cattrs.cols import homogenous_tuple_structure_factory, mapping_structure_factory
from cattrs.errors import BaseValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.v import transform_error

__all__ = [
    "MAX_AMOUNT",
    "MAX_PLACES",
    "PayloadShapeError",
    "dumps",
    "envelope_payload",
    "envelope_succeeded",
    "fast_decode",
    "fast_decoding",
    "load_answer",
    "loads",
    "structure",
    "unstructure",
    "wire_number",
]

T = TypeVar("T")


class PayloadShapeError(ValueError):
    """A decoded payload does not fit its model; ``problems`` lists each mismatch with its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


#: Amounts read from an answer are below this in magnitude (the bound of amounts sent, too).
MAX_AMOUNT = 10**15
#: Amounts read from an answer have at most this many decimal places. Generous: a float's
#: arithmetic noise from the server (``5.551115123125783e-17``) has 32.
MAX_PLACES = 40


def in_range(value: Decimal | int) -> bool:
    """Whether *value* is within the bounds of an amount (see the module docstring)."""
    if type(value) is int:
        return -MAX_AMOUNT < value < MAX_AMOUNT
    exponent = value.as_tuple().exponent  # type: ignore[union-attr]
    return (
        isinstance(exponent, int) and exponent >= -MAX_PLACES and -MAX_AMOUNT < value < MAX_AMOUNT
    )


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity by default; no amount of money is either.
    raise ValueError(f"{name} is not a valid JSON number")


def _bounded_decimal(text: str) -> Decimal:
    number = Decimal(text)
    if not in_range(number):
        raise ValueError("a number out of the range of amounts")  # never the text: a phone?
    return number


def loads(body: bytes | str) -> Any:
    """Decode JSON text, reading every non-integer number as an exact, bounded Decimal.

    Bytes must be UTF-8 (RFC 8259; a leading byte order mark is skipped): ``json.loads`` would
    guess UTF-16 or UTF-32 from the first bytes, and the secret echoed in those encodings would
    slip past the redaction, which looks for it in UTF-8. Anything else raises
    ``UnicodeDecodeError`` (a ``ValueError``), as msgspec refuses it on the fast path.
    """
    if isinstance(body, bytes):
        body = body.decode("utf-8-sig")
    return json.loads(body, parse_float=_bounded_decimal, parse_constant=_reject_constant)


def wire_number(value: Decimal) -> int | float:
    """*value* as the JSON encoder writes it: an int when integral, else a float.

    The stdlib encoder cannot write a Decimal as a number. The float's shortest repr has the
    Decimal's digits, which holds for every Decimal of up to 15 significant digits (checked
    before sending, see _validation).
    """
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return wire_number(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(data: Any) -> bytes:
    """Encode *data* as compact UTF-8 JSON; Decimals become JSON numbers."""
    return json.dumps(data, default=_default, separators=(",", ":"), ensure_ascii=False).encode()


def _expect(kind: str, value: object) -> TypeError:
    # The type only, never the value: a value may be a member's phone number.
    return TypeError(f"expected {kind}, got {type(value).__name__}")


def _structure_str(value: object, _: type) -> str:
    if type(value) is str:
        return value
    if type(value) is int:  # ids are often sent as numbers
        return str(value)
    raise _expect("a string", value)


def _structure_bool(value: object, _: type) -> bool:
    if type(value) is bool:
        return value
    raise _expect("a boolean", value)


def _structure_int(value: object, _: type) -> int:
    if type(value) is int:
        return value
    raise _expect("an integer", value)


def _structure_id(value: object, _: type) -> int | str:
    # Ids the API documents as numbers are kept as it sends them, numbers or strings.
    if type(value) is int or type(value) is str:
        return value
    raise _expect("an id (a number or a string)", value)


def _structure_decimal(value: object, _: type) -> Decimal:
    if type(value) is int:
        if in_range(value):
            return Decimal(value)
    elif isinstance(value, Decimal) and value.is_finite():
        if in_range(value):
            return value
    elif type(value) is str:  # history's `total` is documented as a string
        try:
            number = Decimal(value)
        except ArithmeticError:
            pass
        else:
            if number.is_finite() and in_range(number):
                return number
    raise _expect(f"an amount under 10**15 with at most {MAX_PLACES} decimal places", value)


def _is_homogeneous_tuple(type_: Any) -> bool:
    args = typing.get_args(type_)
    return typing.get_origin(type_) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_dict(type_: Any) -> bool:
    return typing.get_origin(type_) is dict


def _strict_tuple(type_: Any, converter: Converter) -> Callable[[Any, Any], Any]:
    structure_items = homogenous_tuple_structure_factory(type_, converter)

    def structure_tuple(value: Any, target: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise _expect("a list", value)
        return structure_items(value, target)

    return structure_tuple


def _strict_dict(type_: Any, converter: Converter) -> Callable[[Any, Any], Any]:
    structure_items = mapping_structure_factory(type_, converter)

    def structure_dict(value: Any, target: Any) -> Any:
        if value == []:  # an empty JSON object is sometimes serialised as an empty array
            return {}
        if not isinstance(value, Mapping):
            raise _expect("an object", value)
        return structure_items(value, target)

    return structure_dict


def _local_fields(type_: Any) -> list[str]:
    """Fields the SDK sets itself (``metadata={"local": True}``), never read from the wire."""
    if not attrs.has(type_):
        return []
    return [a.name for a in attrs.fields(type_) if a.metadata.get("local")]


def _model_structure(type_: Any, converter: Converter) -> Callable[[Any, Any], Any]:
    omitted = {name: override(omit=True) for name in _local_fields(type_)}
    structure_fields = make_dict_structure_fn(type_, converter, **omitted)  # type: ignore[arg-type]

    def structure_model(value: Any, target: Any) -> Any:
        if not isinstance(value, Mapping):  # a line written as "A" or [] is no line
            raise _expect("an object", value)
        # null means "not given": a field with a default gets it, a required one is missing.
        value = {name: item for name, item in value.items() if item is not None}
        return structure_fields(value, target)

    return structure_model


def _without_local_fields_unstructure(type_: Any, converter: Converter) -> Callable[[Any], Any]:
    omitted = {name: override(omit=True) for name in _local_fields(type_)}
    return make_dict_unstructure_fn(
        type_,
        converter,
        _cattrs_omit_if_default=converter.omit_if_default,
        **omitted,  # type: ignore[arg-type]
    )


def _make_converter() -> Converter:
    converter = Converter(omit_if_default=True, detailed_validation=True)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(Decimal, _structure_decimal)
    converter.register_structure_hook(int | str, _structure_id)
    converter.register_structure_hook(
        int | str | None,
        lambda value, type_: None if value is None else _structure_id(value, type_),
    )
    converter.register_structure_hook_factory(_is_homogeneous_tuple, _strict_tuple)
    converter.register_structure_hook_factory(_is_dict, _strict_dict)
    converter.register_unstructure_hook(Decimal, wire_number)
    has_local = lambda type_: bool(_local_fields(type_))  # noqa: E731
    converter.register_structure_hook_factory(attrs.has, _model_structure)
    converter.register_unstructure_hook_factory(has_local, _without_local_fields_unstructure)
    return converter


_converter = _make_converter()


def structure(payload: object, model: type[T]) -> T:
    """Build *model* from a decoded payload, or raise :class:`PayloadShapeError`."""
    if not isinstance(payload, Mapping):
        raise PayloadShapeError([f"expected an object, got {type(payload).__name__} @ $"])
    try:
        return _converter.structure(payload, model)
    except BaseValidationError as exc:
        raise PayloadShapeError(transform_error(exc, path="$")) from exc
    except RecursionError:
        raise PayloadShapeError(["nested too deeply @ $"]) from None


def envelope_payload(document: object) -> Mapping[str, Any] | None:
    """The payload of a decoded envelope (the object under ``payload``), or ``None``.

    REES46 answers in an envelope of one of two revisions::

        {"success": true, "payload": {...}}     {"success": false, "payload": {"message": "..."}}
        {"status": "success", "payload": {...}} {"status": "error", "payload": {"message": "..."}}
    """
    if isinstance(document, Mapping):
        payload = document.get("payload")
        if isinstance(payload, Mapping):
            return payload
    return None


def envelope_succeeded(success: object, status: object) -> bool | None:
    """What an envelope's flag says: success, error, or ``None`` when it has neither flag.

    *success* and *status* are the envelope's ``success`` and ``status`` fields (``None`` when
    absent); a boolean ``success`` decides, else ``status``.
    """
    if isinstance(success, bool):
        return success
    if status == "success":
        return True
    if status == "error":
        return False
    return None


def load_answer(body: bytes, model: type[T]) -> T:
    """The result model of a successful answer's body (an envelope), recorded or derived."""
    fast = fast_decode(body, model)
    if fast is not None:
        return fast
    payload = envelope_payload(loads(body))
    if payload is None:
        raise PayloadShapeError(["expected an envelope with a payload object @ $"])
    return structure(payload, model)


def unstructure(obj: object) -> Any:
    """Turn a model into plain JSON-ready data, leaving out fields that hold their default."""
    return _converter.unstructure(obj)


# -- the fast decode path (the `speedups` extra) ----------------------------------------------
#
# msgspec reads the answer's bytes straight into the same attrs models, with exact Decimals
# from the JSON text, about three times faster than json.loads + cattrs. It is only ever a
# shortcut: whenever it cannot decode an answer exactly as the reference path above would (an
# int where a string belongs, a null, an error envelope...), it steps aside and the reference
# path decides. A differential test holds the two paths to the same objects and errors.

try:
    import msgspec
except ImportError:  # pragma: no cover - exercised by the test run without the extra
    msgspec = None  # type: ignore[assignment]

# Text the fast path leaves to the reference path: strings Decimal() would read as NaN or
# Infinity (the reference path refuses them). Decimal() strips whitespace (any script's) around
# a number and drops every ``_`` ("N_aN" is NaN); the pattern allows both, and any escape
# (\\u00a0 is whitespace too). And for a model whose every field has a
# default, any `"message"`: a payload that is only a message is an error whatever its
# envelope says, and only the reference path can tell.
_AROUND = rb"(?:[\x00-\x20_\x80-\xff]|\\(?:u[0-9a-fA-F]{4}|[^u]))*"
_NOT_FINITE = re.compile(
    rb'"' + _AROUND + rb"[+-]?" + _AROUND + rb"(?:s_*)?"
    rb"(?:n_*a_*n[\d_]*|i_*n_*f(?:_*i_*n_*i_*t_*y)?)" + _AROUND + rb'"',
    re.IGNORECASE,
)
_decoders: dict[type, tuple[Any, bool]] = {}


def _decoder_for(model: type) -> tuple[Any, bool]:
    """A one-pass decoder of the whole envelope for *model*.

    Returned with whether every field of the model has a default.
    """
    envelope = msgspec.defstruct(
        f"{model.__name__}Envelope",
        [
            ("success", bool | None, None),
            ("status", str | None, None),
            ("payload", model | None, None),
        ],
    )
    fields = attrs.fields(typing.cast("type[attrs.AttrsInstance]", model))
    all_defaults = all(a.default is not attrs.NOTHING for a in fields)
    # Numbers in the payload's free-form objects (stickers) are read as the reference path reads
    # them: exact and bounded Decimals, not floats.
    decoder = msgspec.json.Decoder(envelope, float_hook=_bounded_decimal)
    entry = _decoders[model] = (decoder, all_defaults)
    return entry


_message_probe: Any = None


def _may_have_message(body: bytes) -> bool:
    """Whether the payload of *body* may have a ``message``, its key written with escapes."""
    global _message_probe  # noqa: PLW0603 - built once, on first use, like the decoders
    if _message_probe is None:
        probe = msgspec.defstruct("MessageProbe", [("message", Any, msgspec.UNSET)])
        envelope = msgspec.defstruct("MessageProbeEnvelope", [("payload", probe | None, None)])
        _message_probe = msgspec.json.Decoder(envelope)
    try:
        payload = _message_probe.decode(body).payload
    except Exception:  # noqa: BLE001 - not an envelope of an object: the reference path decides
        return True
    return payload is not None and payload.message is not msgspec.UNSET


# Whether the fast path may decode: a context variable, so that a setting is seen only by the
# code that made it and the tasks it starts (asyncio copies the context into each task).
_fast_path = ContextVar("rees46_loyalty_fast_path", default=msgspec is not None)


@contextmanager
def fast_decoding(*, enabled: bool) -> Iterator[bool]:
    """Within the block, answers take the fast path only if *enabled* (benchmarks and tests).

    Yields whether the fast path is on (never without the ``speedups`` extra). The setting holds
    for this context and the tasks started from it, never for other callers (a concurrent task,
    another thread), and the previous one is back when the block ends, however it ends.
    """
    token = _fast_path.set(enabled and msgspec is not None)
    try:
        yield _fast_path.get()
    finally:
        _fast_path.reset(token)


# One translated copy of the body, without ``_`` (Decimal() reads "1_0" as 10) nor signs, for
# quick looks, each a search of the copy (bytes searches run fastest for few, long needles
# whose last byte is rare, and fastest of all for one byte). Numbers out of the bounds of
# amounts: an exponent (e after a digit or a point, then a digit: 1e9, 1.E-9; in a number or a
# string; not the e of a \\u043e escape), 16 digits in a row (10**15 and more, or more decimal
# places than the fast path checks). NaN or Infinity, in any case, in a string. Every other
# byte is one filler byte, but for the first byte of a digit of another script (x): Decimal()
# reads those too. Such answers, rare and maybe hostile, are left to the reference path, which
# checks each number, or their amounts are checked one by one.
#: First bytes (UTF-8) of every decimal digit outside ASCII, of any Unicode version so far and
#: to come beyond U+FFFF (a test holds this to the interpreter's Unicode database).
_OTHER_DIGITS_LEAD = b"\xd9\xdb\xdf\xe0\xe1\xea\xef" + bytes(range(0xF0, 0x100))


def _fold_table() -> bytes:
    table = bytearray(b" " * 256)
    for sources, folded in ((b"0123456789", b"0"), (b".", b"p"), (b"eE", b"e"), (b"nN", b"n"),
                            (b"aA", b"a"), (b"iI", b"i"), (b"fF", b"f"),
                            (_OTHER_DIGITS_LEAD, b"x")):  # fmt: skip
        for source in sources:
            table[source] = folded[0]
    return bytes(table)


_FOLD = _fold_table()
#: What the folded copy leaves out.
_FOLD_DROPS = b"_+-"


def _needs_reference_path(body: bytes, folded: bytes, all_defaults: bool) -> bool:
    """Whether the answer *body* (*folded* by :data:`_FOLD`) is left to the reference path."""
    if all_defaults and (b'"message"' in body or (b"\\" in body and _may_have_message(body))):
        return True
    if b"0e0" in folded or b"pe0" in folded or b"0000000000000000" in folded:
        return True
    # The exact pattern only runs when the letters are there at all.
    return (b"nan" in folded or b"inf" in folded) and _NOT_FINITE.search(body) is not None


def _strings_may_hide_amounts(body: bytes, folded: bytes) -> bool:
    r"""Whether strings of *body* may hold amounts the look at its text cannot see.

    Those are digits of other scripts, and escapes but the \u ones of characters that are no
    digit: Cyrillic letters (\u04.., what an encoder that writes ASCII only makes of Russian
    text), and U+00A0-U+00BF and U+2000-U+21FF (guillemets, dashes, quotes, the numero sign,
    currency signs; their whitespace can only stand around a number, where the NaN pattern
    allows any escape).
    """
    if b"x" in folded:
        return True
    if b"\\" not in body:
        return False
    # Every backslash opens one of those escapes, or look (counting one byte is cheapest).
    backslashes, escapes = body.count(b"\\"), body.count(b"\\u04")
    if escapes != backslashes:
        escapes += sum(body.count(prefix) for prefix in _NO_DIGIT_ESCAPES)
    return escapes != backslashes


#: \\u escapes, besides the Cyrillic ones, of characters that are no digit (a test holds this to
#: the interpreter's Unicode database).
_NO_DIGIT_ESCAPES = (b"\\u00a", b"\\u00b", b"\\u20", b"\\u21")


# Amounts written as JSON strings can pass the look at the bytes above in disguise: \\u escapes
# (``"\\u0031\\u0065\\u0039..."``) or other scripts' digits, which msgspec reads as Decimal()
# does. When a body may have them (_strings_may_hide_amounts), each Decimal of the result is
# checked. The check may only say yes for an amount the reference path accepts: in doubt, the
# reference path decides.
_Plan = tuple[Callable[[Any], Any] | None, tuple[str, ...]]
_plans: dict[type, _Plan] = {}


def _plan_for(model: type) -> _Plan:
    """The getter of *model*'s plain Decimal fields and the names of its other fields to walk."""
    hints = typing.get_type_hints(model)
    amounts: list[str] = []
    walked: list[str] = []
    for field_ in attrs.fields(typing.cast("type[attrs.AttrsInstance]", model)):
        annotation = hints[field_.name]
        if annotation is Decimal or annotation == (Decimal | None):
            amounts.append(field_.name)
        elif _mentions_amounts(annotation):
            walked.append(field_.name)
    getter = None
    if amounts:
        get = operator.attrgetter(*amounts)
        getter = get if len(amounts) > 1 else lambda obj: (get(obj),)
    plan = _plans[model] = (getter, tuple(walked))
    return plan


def _mentions_amounts(annotation: Any) -> bool:
    if annotation is Decimal or attrs.has(annotation):
        return True
    return any(_mentions_amounts(arg) for arg in typing.get_args(annotation))


def _surely_an_amount(value: Decimal) -> bool:
    # finite; |value| < 10**15; at most 30 digits from 10**-10 on, so at most 39 places
    return value.is_finite() and -10 <= value.adjusted() < 15 and len(str(value)) <= 30


def _amounts_bounded(value: object) -> bool:
    """Whether every Decimal in *value* (a result model or a value of one) is surely an amount."""
    kind = type(value)
    if kind is Decimal:
        return _surely_an_amount(value)  # type: ignore[arg-type]
    if kind is tuple or kind is list:
        return all(_amounts_bounded(item) for item in value)  # type: ignore[attr-defined]
    if kind is dict:
        return all(_amounts_bounded(item) for item in value.values())  # type: ignore[attr-defined]
    if not attrs.has(kind):
        return True
    getter, walked = _plans.get(kind) or _plan_for(kind)
    if getter is not None:
        for amount in getter(value):
            if amount is not None and not _surely_an_amount(amount):
                return False
    return all(_amounts_bounded(getattr(value, name)) for name in walked)


def fast_decode(body: bytes, model: type[T]) -> T | None:
    """The result model of a successful answer, or ``None`` to leave it to the reference path."""
    if not _fast_path.get():
        return None
    decoder, all_defaults = _decoders.get(model) or _decoder_for(model)
    folded = body.translate(_FOLD, _FOLD_DROPS)
    if _needs_reference_path(body, folded, all_defaults):
        return None
    try:
        envelope = decoder.decode(body)
    except Exception:  # noqa: BLE001 - any failure (RecursionError too): the reference path decides
        return None
    if envelope_succeeded(envelope.success, envelope.status) is not True or (
        envelope.payload is None
    ):
        return None
    result: T = envelope.payload
    # `replayed` is the SDK's own field, which the reference path never reads from the wire.
    if getattr(result, "replayed", False) is not False or (
        _strings_may_hide_amounts(body, folded) and not _amounts_bounded(result)
    ):
        return None
    return result
