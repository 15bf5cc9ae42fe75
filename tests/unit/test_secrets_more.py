"""More secrets and hostile-answer protections, without a server: constructor errors, the fast
decode path's bounds, formatted phone numbers."""

from __future__ import annotations

import json
import traceback

import pytest

from rees46_loyalty import BadRequestError, LoyaltyClient, SyncLoyaltyClient
from rees46_loyalty._redact import redact, redact_headers
from rees46_loyalty._serialization import fast_decode, fast_decoding
from rees46_loyalty.idempotency import RedisIdempotencyStore
from rees46_loyalty.models import OrderCalculation, OrderRef
from tests.conftest import SHOP_SECRET
from tests.leaks import _sentry_event

BAD_OPTIONS = [
    {"timeout": "10"},
    {"base_url": "http://proxy.internal"},
    {"middlewares": [1]},
    {"idempotency_wait": -5},
]


def _constructor_error(cls: type, options: dict[str, object]) -> BaseException:
    try:
        cls("shop-42", SHOP_SECRET, **options)
    except (TypeError, ValueError) as error:
        return error
    raise AssertionError("the constructor accepted a wrong option")


@pytest.mark.parametrize("cls", [LoyaltyClient, SyncLoyaltyClient])
@pytest.mark.parametrize("options", BAD_OPTIONS, ids=lambda o: next(iter(o)))
def test_constructor_errors_keep_the_secret_out_of_frame_locals(
    cls: type, options: dict[str, object]
) -> None:
    """A wrong constructor option: the real sentry-sdk records no shop secret in any frame."""
    error = _constructor_error(cls, options)
    assert SHOP_SECRET not in json.dumps(_sentry_event(error))


@pytest.mark.parametrize("cls", [LoyaltyClient, SyncLoyaltyClient])
def test_capture_locals_survives_a_constructor_error(cls: type) -> None:
    """TracebackException(capture_locals=True) of a constructor error can be built."""
    error = _constructor_error(cls, {"timeout": "10"})
    captured = traceback.TracebackException(
        type(error), error, error.__traceback__, capture_locals=True
    )
    assert SHOP_SECRET not in "".join(captured.format())


# `order_total` as a JSON string: "1e999999999" written with JSON escapes, and
# 10**21 written with underscores (both read by Decimal()).
ESCAPED_EXPONENT = (
    rb'{"success":true,"payload":{"order_total":'
    rb'"\u0031\u0065\u0039\u0039\u0039\u0039\u0039\u0039\u0039\u0039\u0039","order_to_pay":1}}'
)
GROUPED_DIGITS = (
    b'{"success":true,"payload":{"order_total":"1_000_000_000_000_000_000","order_to_pay":1}}'
)
# 1e999 in full-width digits, and Infinity with an escaped letter (Decimal() reads both).
WIDE_DIGITS = (
    '{"success":true,"payload":{"order_total":"\uff11e\uff19\uff19\uff19","order_to_pay":1}}'
).encode()
ESCAPED_INFINITY = rb'{"success":true,"payload":{"order_total":"\u0049nfinity","order_to_pay":1}}'


@pytest.mark.parametrize(
    "body",
    [ESCAPED_EXPONENT, GROUPED_DIGITS, WIDE_DIGITS, ESCAPED_INFINITY],
    ids=["escaped", "grouped", "wide", "infinity"],
)
def test_fast_path_refuses_out_of_range_amounts_in_disguise(body: bytes) -> None:
    """An out-of-range or infinite amount as a disguised string never passes the fast path."""
    with fast_decoding(enabled=True):
        try:
            result = fast_decode(body, OrderCalculation)
        except Exception:  # noqa: BLE001 - a refusal of any kind is a fix
            result = None
    assert result is None  # left to the reference path, which refuses it


@pytest.mark.parametrize(
    "phone", ["+7 999 000-11-22", "+7 (999) 000-11-22", "8-999-000-11-22", "7 999 0001122"]
)
def test_formatted_phone_numbers_in_server_text_are_masked(phone: str) -> None:
    """A server message quoting a formatted phone: masked in errors and in result reprs."""
    error = BadRequestError(f"member {phone} is blocked")
    ref = OrderRef(order_id="1", message=f"member {phone} is blocked")
    digits = "".join(ch for ch in phone if ch.isdigit())
    for shown in (str(error), repr(error), repr(ref)):
        assert digits not in "".join(ch for ch in shown if ch.isdigit())


@pytest.mark.parametrize("cls", [LoyaltyClient, SyncLoyaltyClient])
def test_a_half_built_client_has_a_repr(cls: type) -> None:
    """repr() of a client whose constructor never ran names the class instead of raising."""
    assert repr(object.__new__(cls)).startswith(cls.__name__)


@pytest.mark.parametrize(
    "encoded",
    [
        "".join(f"%{ord(ch):02x}" for ch in SHOP_SECRET),
        "%73" + SHOP_SECRET[1:],
        SHOP_SECRET.replace("-", "%2d"),
    ],
    ids=["lower", "first", "dash"],
)
def test_percent_encoded_secrets_are_cut_from_text_and_headers(encoded: str) -> None:
    """redact() and redact_headers() decode percent escapes before looking for the secret."""
    shown = redact(f"see https://x.invalid/cb/{encoded} now", (SHOP_SECRET,))
    headers = redact_headers({"Location": f"/cb/{encoded}"}, (SHOP_SECRET,))
    assert encoded not in shown
    assert shown.startswith("see ")
    assert encoded not in headers["Location"]


def test_dates_and_amounts_are_not_taken_for_phones() -> None:
    """Text with a date, a time and grouped amounts keeps every digit."""
    text = "on 2026-12-01 23:18:47 the total was 1 234 567.89 (order 1001)"
    assert BadRequestError(text).message == text


# Globals, in no frame's locals; the password is never written whole in this file, whose
# lines sentry-sdk records around each frame.
REDIS_PASSWORD = "-".join(["hunter2", "redis", "password"])
REDIS_URL = f"redis://:{REDIS_PASSWORD}@127.0.0.1:6399/0"


@pytest.mark.parametrize("options", [{"ttl": 1, "lease": 60}, {"lease": "60"}], ids=str)
def test_redis_store_option_errors_keep_the_url_out_of_frame_locals(
    options: dict[str, object],
) -> None:
    """A wrong RedisIdempotencyStore option: no frame sentry-sdk records holds the Redis URL
    with its password, and a locals-capturing traceback can be built."""
    with pytest.raises((TypeError, ValueError)) as caught:
        RedisIdempotencyStore(REDIS_URL, **options)  # type: ignore[arg-type]
    assert REDIS_PASSWORD not in json.dumps(_sentry_event(caught.value))
    captured = traceback.TracebackException.from_exception(caught.value, capture_locals=True)
    assert REDIS_PASSWORD not in "".join(captured.format())
