"""The shop secret is never shown, and member phone numbers are shown masked.

The suite-wide guard in conftest checks every log record of every test; these tests check the
other places a secret could surface: reprs, exception text, tracebacks and causes.
"""

from __future__ import annotations

import traceback
from decimal import Decimal

import aiohttp
import pytest
from aioresponses import aioresponses as AioResponses  # noqa: N812
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from rees46_loyalty import (
    CartItem,
    LoyaltyClient,
    LoyaltyError,
    NotFoundError,
    OrderRef,
    RetryPolicy,
    ValidationError,
)
from rees46_loyalty.middleware import AuthMiddleware
from tests.conftest import PHONE, SHOP_SECRET
from tests.payloads import CALCULATION, status_envelope
from tests.unit.helpers import FakeApi, url, url_pattern

SECRET_URL = f"https://api.test/loyalty/checkout/details?order_id=1001&shop_id=shop-42&shop_secret={SHOP_SECRET}"


def everything_shown(error: BaseException) -> str:
    """str, repr and the whole printed traceback of *error*, causes included."""
    printed = "".join(traceback.format_exception(error))
    return f"{error}\n{error!r}\n{printed}"


def test_the_client_repr_hides_the_secret() -> None:
    """repr(client) names the shop and the URL, not the secret."""
    client = LoyaltyClient("shop-42", SHOP_SECRET)
    assert SHOP_SECRET not in repr(client)
    assert "shop-42" in repr(client)
    assert SHOP_SECRET not in repr(AuthMiddleware("shop-42", SHOP_SECRET))


@pytest.mark.parametrize(
    "exception",
    [
        aiohttp.ConnectionTimeoutError(f"Connection timeout to host {SECRET_URL}"),
        aiohttp.ClientResponseError(
            aiohttp.RequestInfo(
                url=URL(SECRET_URL),
                method="GET",
                headers=CIMultiDictProxy(CIMultiDict()),
            ),
            (),
            status=500,
            message=f"failed {SECRET_URL}",
        ),
        aiohttp.InvalidURL(SECRET_URL),
        OSError(f"socket trouble talking to {SECRET_URL}"),
    ],
)
async def test_get_failures_never_show_the_url_with_the_secret(
    once_client: LoyaltyClient, mocked: AioResponses, exception: Exception
) -> None:
    """aiohttp errors of a GET quote its URL, query and secret included: all of it is redacted."""
    mocked.get(url_pattern("details"), exception=exception)
    with pytest.raises(LoyaltyError) as caught:
        await once_client.details(order_id="1001")
    shown = everything_shown(caught.value)
    assert SHOP_SECRET not in shown
    assert "details?***" in shown
    assert caught.value.__cause__ is None  # the cause would print the secret in a traceback


async def test_a_harmless_cause_is_kept(once_client: LoyaltyClient, mocked: AioResponses) -> None:
    """Causes without the secret stay attached, for debugging."""
    mocked.post(url("confirm"), exception=aiohttp.ServerDisconnectedError())
    with pytest.raises(LoyaltyError) as caught:
        await once_client.confirm(order_id="1001")
    assert isinstance(caught.value.__cause__, aiohttp.ServerDisconnectedError)


async def test_an_answer_that_echoes_the_secret_is_redacted(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """A server or proxy that echoes the request back cannot put the secret into an error."""
    echo = status_envelope({"message": f"Order not found for shop_secret={SHOP_SECRET}"}, ok=False)
    api.get("details", payload=echo)
    with pytest.raises(NotFoundError) as caught:
        await client.details(order_id="1001")
    assert SHOP_SECRET not in everything_shown(caught.value)
    assert SHOP_SECRET not in repr(caught.value.payload)


async def test_phone_numbers_in_api_messages_are_masked(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """A member's phone quoted by the API is masked in str and repr of the error."""
    answer = status_envelope({"message": f"Loyalty program member {PHONE} is not found"}, ok=False)
    api.get("history", payload=answer)
    with pytest.raises(NotFoundError) as caught:
        await client.history(identifier=PHONE)
    shown = everything_shown(caught.value)
    assert PHONE not in shown
    assert "7999***1122" in shown


async def test_results_and_requests_mask_the_identifier_in_their_repr(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """Logging a result or a request model never writes a full phone number."""
    api.post("estimate", payload=status_envelope(CALCULATION))
    result = await client.estimate(
        cart_items=[CartItem(product_id="A", price=Decimal(1), quantity=1)], identifier=PHONE
    )
    assert result.identifier == PHONE  # the value itself is intact
    assert PHONE not in repr(result)
    assert "7999***1122" in repr(result)
    assert PHONE not in repr(OrderRef(order_id="1", identifier=PHONE))


async def test_validation_errors_mask_the_phone(client: LoyaltyClient) -> None:
    """An identifier refused locally is masked in the message."""
    with pytest.raises(ValidationError) as caught:
        await client.estimate(
            cart_items=[CartItem(product_id="A", price=Decimal(1), quantity=1)],
            identifier=PHONE + "x",
        )
    assert PHONE not in everything_shown(caught.value)


@pytest.mark.parametrize("secret", ["Ab+cd/ef=gh&ij", "plain-secret", "ünïcode ключ"])
async def test_url_encoded_secrets_never_show(mocked: AioResponses, secret: str) -> None:
    """A secret with URL-special characters appears percent-encoded in aiohttp's text: the
    whole query is cut, and the cause is dropped."""
    from urllib.parse import quote  # noqa: PLC0415

    encoded = f"https://api.test/loyalty/checkout/history?identifier={PHONE}&shop_secret=" + quote(
        secret, safe="/"
    )
    mocked.get(url_pattern("history"), exception=aiohttp.ConnectionTimeoutError(f"to {encoded}"))
    async with LoyaltyClient(
        "shop-42", secret, base_url="https://api.test", retry=RetryPolicy.disabled()
    ) as client:
        with pytest.raises(LoyaltyError) as caught:
            await client.history(identifier=PHONE)
    shown = everything_shown(caught.value)
    assert secret not in shown
    assert quote(secret, safe="/") not in shown
    assert PHONE not in shown
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    "echo",
    [
        '{"status": "error", "payload": {"message": "bad secret ab\\/cd-123"}}',
        '{"status": "error", "payload": {"message": "bad secret ab/cd-123"}}',
        '{"status": "error", "payload": {"message": "bad secret ab%2Fcd-123"}}',
    ],
)
async def test_echoed_secrets_in_any_encoding_are_redacted(api: FakeApi, echo: str) -> None:
    """Raw, JSON-escaped and percent-encoded echoes of the secret are all removed."""
    api.post("confirm", status=400, body=echo, content_type="application/json")
    async with LoyaltyClient(
        "shop-42", "ab/cd-123", base_url="https://api.test", transport=api
    ) as client:
        with pytest.raises(LoyaltyError) as caught:
            await client.confirm(order_id="1")
    assert "ab/cd-123" not in everything_shown(caught.value)
    assert "cd-123" not in repr(caught.value.payload)


async def test_a_phone_in_a_malformed_answer_stays_out_of_tracebacks(
    client: LoyaltyClient, api: FakeApi
) -> None:
    """Type errors name types, never values: a phone where a string belongs is not printed."""
    api.post("confirm", payload=status_envelope({"order_id": "1", "identifier": {"phone": PHONE}}))
    with pytest.raises(LoyaltyError) as caught:
        await client.confirm(order_id="1")
    assert PHONE not in everything_shown(caught.value)


@pytest.mark.parametrize("secret", ["", "s", "1234567", None])
def test_a_secret_too_short_to_redact_safely_is_refused(secret: object) -> None:
    """A one-letter secret would be cut out of every answer (``"status"`` → ``"***tatu***"``)."""
    with pytest.raises(ValueError, match="at least 8 characters") as caught:
        LoyaltyClient("shop-42", secret)  # type: ignore[arg-type]
    assert "1234567" not in str(caught.value)


async def test_the_shortest_accepted_secret_leaves_answers_intact(api: FakeApi) -> None:
    """An 8-character secret is cut out of an echo of the request and nowhere else: the
    envelope, the order id and the message that merely resemble it stay whole."""
    answer = {"order_id": "abcdefg", "message": "echo abcdefgh, abcdefg"}
    api.post("confirm", payload=status_envelope(answer))
    async with LoyaltyClient(
        "shop-42", "abcdefgh", base_url="https://api.test", transport=api
    ) as client:
        result = await client.confirm(order_id="1")
    assert result.order_id == "abcdefg"
    assert result.message == "echo ***, abcdefg"
