"""The wire format: exact money both ways, strict shapes, and no surprise on any JSON."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    LoyaltyError,
    OrderCalculation,
    OrderChange,
    OrderHistory,
    OrderRef,
)
from rees46_loyalty._operations import OPERATIONS
from rees46_loyalty._serialization import (
    PayloadShapeError,
    dumps,
    envelope_payload,
    envelope_succeeded,
    load_answer,
    loads,
    structure,
    unstructure,
)
from rees46_loyalty.middleware.errors import decode_response
from tests.payloads import CALCULATION, CHANGE, HISTORY, REF

# Money as shops have it: up to 15 significant digits, any number of them after the point.
money = st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
    lambda d: len(d.normalize().as_tuple().digits) <= 15 and abs(d.adjusted()) < 12
)


@given(money)
def test_decimals_survive_the_request_encoder_exactly(amount: Decimal) -> None:
    """dumps writes a JSON number that reads back as the same Decimal value."""
    text = dumps({"price": amount})
    assert b'"' not in text.split(b":", 1)[1]  # a number, not a string
    assert loads(text)["price"] == amount


@given(money)
def test_json_numbers_are_read_exactly_from_their_text(amount: Decimal) -> None:
    """Whatever digits the API writes are the digits the SDK reads: no float drift."""
    text = f'{{"order_total": {amount}, "order_to_pay": 0}}'
    result = structure(loads(text), OrderCalculation)
    assert result.order_total == amount
    assert str(result.order_total) == str(Decimal(str(amount)))


@pytest.mark.parametrize(
    ("model", "payload"),
    [
        (OrderCalculation, CALCULATION),
        (OrderChange, CHANGE),
        (OrderRef, REF),
        (OrderHistory, HISTORY),
    ],
)
def test_results_round_trip_through_unstructure(model: type[Any], payload: dict[str, Any]) -> None:
    """A result, unstructured to JSON and read back, is equal (how stored results will live)."""
    result = structure(loads(json.dumps(payload)), model)
    assert structure(loads(dumps(unstructure(result))), model) == result


def test_an_empty_array_where_an_object_belongs_is_an_empty_object() -> None:
    """Some serialisers write {} as []; that is read as an empty mapping, not an error."""
    result = structure({**CALCULATION, "rewarded_stickers": []}, OrderCalculation)
    assert result.rewarded_stickers == {}


def test_numeric_ids_become_strings() -> None:
    """Ids sent as numbers are kept as strings (ids are never arithmetic)."""
    result = structure({"order_id": 1001}, OrderRef)
    assert result.order_id == "1001"


def test_shape_errors_list_every_problem_with_its_path() -> None:
    """All mismatches are reported at once."""
    with pytest.raises(PayloadShapeError) as caught:
        structure({"order_total": "x", "order_to_pay": None}, OrderCalculation)
    assert any("$.order_total" in p for p in caught.value.problems)
    assert any("$.order_to_pay" in p for p in caught.value.problems)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.decimals(allow_nan=False, allow_infinity=False, places=2),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
result_fields = st.sampled_from(
    [
        "order_id",
        "order_total",
        "order_to_pay",
        "order_total_change",
        "items",
        "orders",
        "message",
        "identifier",
    ]
)
payloads = st.dictionaries(result_fields, json_values, max_size=6)
envelopes = st.one_of(
    st.builds(lambda p, ok: {"success": ok, "payload": p}, payloads, st.booleans()),
    st.builds(
        lambda p, s: {"status": s, "payload": p},
        payloads,
        st.sampled_from(["success", "error", "ok"]),
    ),
    json_values,
)


@given(
    operation=st.sampled_from(sorted(OPERATIONS)),
    status=st.sampled_from([200, 201, 204, 302, 400, 404, 429, 500, 502]),
    document=envelopes,
)
def test_any_answer_gives_a_result_or_a_loyalty_error(
    operation: str, status: int, document: Any
) -> None:
    """Whatever JSON comes back with whatever status, the SDK returns a result model or raises
    a LoyaltyError; nothing else escapes."""
    request = ApiRequest(operation=OPERATIONS[operation], data={})
    response = ApiResponse(status=status, headers={}, body=dumps(document))
    try:
        decoded = decode_response(request, response)
    except LoyaltyError as error:  # either outcome is fine; anything else escaping is not
        assert error.status == status  # noqa: PT017
        assert error.operation == operation  # noqa: PT017
    else:
        assert 200 <= status < 300
        assert isinstance(decoded.result, OPERATIONS[operation].result_type)


def test_null_means_not_given() -> None:
    """A null in an optional field gives its default; a null in a required one is missing."""
    result = structure(
        {"order_total": 10, "order_to_pay": 9, "bonuses_balance": None, "items": None},
        OrderCalculation,
    )
    assert result.bonuses_balance == 0
    assert result.items == ()
    with pytest.raises(PayloadShapeError, match=r"\$\.order_id"):
        structure({"order_id": None}, OrderRef)


def test_the_replayed_flag_never_comes_from_the_wire() -> None:
    """`replayed` is the SDK's own: an API field of that name is ignored, and never sent."""
    assert structure({"order_id": "1", "replayed": True}, OrderRef).replayed is False
    assert "replayed" not in unstructure(OrderRef(order_id="1", replayed=True))


@pytest.mark.parametrize(
    ("document", "succeeded", "payload"),
    [
        ({"success": True, "payload": {"a": 1}}, True, {"a": 1}),
        ({"success": False, "status": "success", "payload": {}}, False, {}),
        ({"status": "success", "payload": {"a": 1}}, True, {"a": 1}),
        ({"status": "error", "payload": {"message": "x"}}, False, {"message": "x"}),
        ({"success": "yes", "status": "error", "payload": [1]}, False, None),
        ({"status": "ok", "payload": "text"}, None, None),
        ({}, None, None),
    ],
)
def test_both_envelope_revisions_are_read_in_one_place(
    document: dict[str, Any], succeeded: bool | None, payload: dict[str, Any] | None
) -> None:
    """A boolean ``success`` decides, else ``status``; the payload is only an object."""
    assert envelope_succeeded(document.get("success"), document.get("status")) is succeeded
    assert envelope_payload(document) == payload


def test_a_kept_answer_that_is_not_an_envelope_is_refused() -> None:
    """A recorded answer is always an envelope: a bare result is a shape error, not a result."""
    with pytest.raises(PayloadShapeError, match="envelope"):
        load_answer(json.dumps(REF).encode(), OrderRef)
    assert load_answer(json.dumps({"status": "success", "payload": REF}).encode(), OrderRef)
