r"""Where the decoding of a successful answer spends its time, against ``json.loads``.

For the answer of ``cancel``, of a ``change`` of 10, 200 and 2,000 lines (the stand-in API's
answers) and of 200 lines with Russian text written as \u escapes, the CPU time of one decode
by: ``json.loads`` (untyped floats, the yardstick), the SDK (``load_answer``: the fast path,
which every answer here takes), its parts (the pre-scan of the text, msgspec into the attrs
models alone, the walk of every amount that answers with strings in disguise take), msgspec
into equivalent Structs (the typed peer) and the reference path (json + cattrs). With
``--against REV`` the SDK's decoding at that git revision is measured beside today's (its
fast path, or its reference path where that one stepped aside). Rounds rotate the
candidates; figures are medians of process CPU time per decode.

    python -m benchmarks.decode [--rounds 7] [--against REV]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import operator
import statistics
import subprocess
import sys
import time
import typing
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import attrs
import msgspec

from rees46_loyalty import _serialization
from rees46_loyalty._serialization import (
    _FOLD,
    _FOLD_DROPS,
    _amounts_bounded,
    _decoder_for,
    _needs_reference_path,
    _strings_may_hide_amounts,
)
from rees46_loyalty.models import OrderChange, OrderRef

from ._server import change_answer

__all__ = ["WORKLOADS", "measure"]

#: workload -> lines in the answer (0: the answer of cancel); "ru": each line has the API's
#: reasons in Russian, written as \\u escapes (what an encoder that writes ASCII only sends);
#: "ru«»": with guillemets and a dash, whose escapes are not Cyrillic (every amount is checked)
WORKLOADS = {
    "cancel": 0,
    "change10": 10,
    "change200": 200,
    "change2000": 2000,
    "change200ru": 200,
    "change200ru«»": 200,
}
_REASONS = {
    "ru": "Товар не участвует в акции: скидка 10%, см. условия",
    "ru«»": "Товар не участвует в акции «Скидка 10%» — см. условия",
}
_CANCEL = {"status": "success", "payload": {"order_id": "1", "identifier": "79990001122"}}


def _answer(workload: str) -> tuple[bytes, type]:
    lines = WORKLOADS[workload]
    if not lines:
        return json.dumps(_CANCEL).encode(), OrderRef
    answer = change_answer(lines)
    reason = _REASONS.get(workload.removeprefix(f"change{lines}"))
    if reason:
        document = json.loads(answer)
        for item in document["payload"]["items"]:
            item["discountable_reason"] = item["bonusable_reason"] = reason
        answer = json.dumps(document).encode()
    return answer, OrderChange


def _struct_type(annotation: Any, made: dict[type, type]) -> Any:
    if attrs.has(annotation):
        return _struct_of(annotation, made)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        item: Any = _struct_type(args[0], made)
        return tuple[item, ...]
    if origin is dict:
        value: Any = _struct_type(args[1], made)
        return dict[args[0], value]  # type: ignore[valid-type]
    if args:  # a union
        return functools.reduce(operator.or_, (_struct_type(arg, made) for arg in args))
    return annotation


def _struct_of(model: type, made: dict[type, type]) -> type:
    """A msgspec Struct with the fields, types and defaults of the attrs *model*."""
    if model in made:
        return made[model]
    hints = typing.get_type_hints(model)
    required: list[Any] = []
    optional: list[Any] = []
    for field_ in attrs.fields(typing.cast("type[attrs.AttrsInstance]", model)):
        kind = _struct_type(hints[field_.name], made)
        if field_.default is attrs.NOTHING:
            required.append((field_.name, kind))
        elif isinstance(field_.default, attrs.Factory):  # type: ignore[arg-type]
            factory = field_.default.factory
            optional.append((field_.name, kind, msgspec.field(default_factory=factory)))
        else:
            optional.append((field_.name, kind, field_.default))
    struct = made[model] = msgspec.defstruct(f"{model.__name__}Struct", required + optional)
    return struct


def _struct_decoder(model: type) -> msgspec.json.Decoder[Any]:
    envelope = msgspec.defstruct(
        "Envelope",
        [
            ("success", bool | None, None),
            ("status", str | None, None),
            ("payload", _struct_of(model, {}) | None, None),
        ],
    )
    return msgspec.json.Decoder(envelope)


def _module_at(revision: str) -> ModuleType:
    """``rees46_loyalty._serialization`` as it was at git *revision*."""
    # git of the PATH, as a shell finds it, with the revision the user named
    command = ["git", "show", f"{revision}:rees46_loyalty/_serialization.py"]
    source = subprocess.run(  # noqa: S603
        command,
        capture_output=True,
        check=True,
    ).stdout
    name = "rees46_loyalty._serialization_at_revision"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "rees46_loyalty"
    sys.modules[name] = module
    exec(compile(source, f"{revision}:_serialization.py", "exec"), module.__dict__)  # noqa: S102
    return module


def _candidates(
    body: bytes, model: type, before: ModuleType | None
) -> dict[str, Callable[[], Any]]:
    serialization = _serialization
    decoder, all_defaults = _decoder_for(model)
    structs = _struct_decoder(model)
    result: Any = serialization.fast_decode(body, model)
    assert result is not None, "the answer must take the fast path"
    assert result == serialization.load_answer(body, model)

    def reference() -> object:
        with serialization.fast_decoding(enabled=False):
            return serialization.load_answer(body, model)

    candidates: dict[str, Callable[[], Any]] = {
        "json.loads": lambda: json.loads(body),
        "SDK decode": lambda: serialization.load_answer(body, model),
    }
    if before is not None:
        # its own fast path, or its reference path where that one steps aside
        candidates["SDK decode before"] = lambda: before.load_answer(body, model)
        parts = vars(before)  # its private parts, as in today's module
        old_defaults = parts["_decoder_for"](model)[1]
        old_scan = parts["_needs_reference_path"]
        candidates["pre-scan before"] = lambda: old_scan(body, old_defaults)

    def scan() -> bool:
        folded = body.translate(_FOLD, _FOLD_DROPS)
        return _needs_reference_path(body, folded, all_defaults) or _strings_may_hide_amounts(
            body, folded
        )

    candidates.update(
        {
            "pre-scan": scan,
            "msgspec -> attrs": lambda: decoder.decode(body),
            "msgspec -> Structs": lambda: structs.decode(body),
            "walk of amounts": lambda: _amounts_bounded(result),
            "reference path": reference,
        }
    )
    return candidates


def _cpu_per_call(call: Callable[[], Any], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - started) / calls * 1e6


def measure(
    rounds: int = 7, workloads: Sequence[str] = tuple(WORKLOADS), against: str | None = None
) -> list[dict[str, Any]]:
    """One row per (workload, candidate): median µs of CPU per decode and the ratio to json."""
    before = _module_at(against) if against else None
    rows: list[dict[str, Any]] = []
    for workload in workloads:
        body, model = _answer(workload)
        candidates = _candidates(body, model, before)
        calls = max(3, 200_000 // len(body))
        samples: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(rounds):
            for name, call in candidates.items():
                runs = calls // 5 + 1 if name == "reference path" else calls
                samples[name].append(_cpu_per_call(call, runs))
        loads = statistics.median(samples["json.loads"])
        for name, figures in samples.items():
            median = statistics.median(figures)
            rows.append({"workload": workload, "kind": name, "us": median, "ratio": median / loads})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--against", metavar="REV", help="also measure the fast path at REV")
    args = parser.parse_args(argv)
    print("| answer | kind | µs per decode | × json.loads |")
    print("|---|---|---:|---:|")
    for row in measure(args.rounds, against=args.against):
        print(f"| {row['workload']} | {row['kind']} | {row['us']:,.1f} | {row['ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
