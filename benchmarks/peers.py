"""The typed peers of the SDK: what a shop writes by hand when it wants typed, exact results.

Two of them, each a hand-written aiohttp call that builds its body from typed cart lines,
posts it and decodes the whole answer into typed objects with ``Decimal`` amounts: every field
of the results the SDK decodes (``OrderRef`` for cancel; ``OrderChange`` with its lines, their
reward shares and certificates for change), nested objects included.

- :class:`MsgspecPeer`: ``msgspec.Struct`` classes, one ``msgspec.json.decode`` of the answer
  (msgspec reads JSON numbers into ``Decimal`` from their text: exact at any length).
- :class:`PydanticPeer`: pydantic v2 models, ``model_validate_json`` (what a FastAPI shop
  writes). pydantic reads a JSON number with a fraction through a ``float``, so a ``Decimal``
  field holds the shortest decimal of that float: the same value for amounts of up to 15
  significant digits (all of the benchmark's), not beyond.

Neither checks what the SDK checks (lengths, bounds, a hostile answer) and neither retries:
they are the floor a typed shop would stand on, not a replacement for the SDK.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import aiohttp
import msgspec
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

__all__ = ["MsgspecPeer", "PydanticPeer", "check_result"]

_ZERO = Decimal(0)
_JSON = {"Content-Type": "application/json"}


# --- msgspec ---------------------------------------------------------------------------------


class _MRewardShare(msgspec.Struct, frozen=True, kw_only=True):
    total: Decimal = _ZERO
    per_product: Decimal = _ZERO


class _MReferralReward(msgspec.Struct, frozen=True, kw_only=True):
    referral_program_id: int | None = None
    total: Decimal = _ZERO
    per_product: Decimal = _ZERO


class _MItemCertificate(msgspec.Struct, frozen=True, kw_only=True):
    id: int | str | None = None
    code: str | None = None
    pool_id: int | str | None = None
    amount: Decimal = _ZERO
    amount_per_product: Decimal = _ZERO


class _MFailedCode(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str | None = None


class _MLineItem(msgspec.Struct, frozen=True, kw_only=True):
    product_id: str | None = None
    uniqid: str | None = None
    quantity: Decimal = _ZERO
    price: Decimal = _ZERO
    total: Decimal = _ZERO
    discountable: bool | None = None
    discountable_reason: str | None = None
    bonusable: bool | None = None
    bonusable_reason: str | None = None
    rewardable: bool | None = None
    rewardable_reason: str | None = None
    paid_with_offers: Decimal = _ZERO
    paid_with_offers_per_product: Decimal = _ZERO
    paid_with_referral_discounts: Decimal = _ZERO
    paid_with_referral_discounts_per_product: Decimal = _ZERO
    paid_with_discounts: Decimal = _ZERO
    paid_with_discounts_per_product: Decimal = _ZERO
    paid_with_bonuses: Decimal = _ZERO
    paid_with_bonuses_per_product: Decimal = _ZERO
    paid_with_certificates: Decimal = _ZERO
    paid_with_certificates_per_product: Decimal = _ZERO
    bonuses_used: Decimal = _ZERO
    bonuses_used_per_product: Decimal = _ZERO
    bonuses_reward: Decimal = _ZERO
    bonuses_reward_per_product: Decimal = _ZERO
    bonuses_reward_loyalty_program: _MRewardShare | None = None
    bonuses_reward_referral_program: _MReferralReward | None = None
    bonuses_reward_promotions: dict[str, _MRewardShare] = msgspec.field(default_factory=dict)
    certificates: dict[str, _MItemCertificate] = msgspec.field(default_factory=dict)
    max_discountable_amount: Decimal | None = None
    max_discountable_amount_left: Decimal | None = None
    max_payable_by_bonuses: Decimal | None = None
    total_after_discounts: Decimal = _ZERO
    total_after_discounts_per_product: Decimal = _ZERO


class _MOrderChange(msgspec.Struct, frozen=True, kw_only=True):
    order_total: Decimal
    order_to_pay: Decimal
    order_total_change: Decimal
    order_id: str | None = None
    identifier: str | None = None
    payment_type: str | None = None
    products_total: Decimal = _ZERO
    saved_total: Decimal = _ZERO
    saved_by_discounts: Decimal = _ZERO
    saved_by_bonuses: Decimal = _ZERO
    saved_by_offers: Decimal = _ZERO
    saved_by_certificates: Decimal = _ZERO
    order_bonuses_to_charge: Decimal = _ZERO
    bonuses_balance: Decimal = _ZERO
    bonuses_reward: Decimal = _ZERO
    bonuses_referrer_reward: Decimal = _ZERO
    referrer_identifier: str | None = None
    referral_program: int | None = None
    applied_promotions: tuple[int | str, ...] = ()
    rewarded_stickers: dict[str, Any] = msgspec.field(default_factory=dict)
    used_stickers: dict[str, Any] = msgspec.field(default_factory=dict)
    stickers_balance: dict[str, Any] = msgspec.field(default_factory=dict)
    promo_codes: tuple[str, ...] = ()
    promo_codes_failed: tuple[_MFailedCode, ...] = ()
    certificates: tuple[str, ...] = ()
    certificates_failed: tuple[_MFailedCode, ...] = ()
    items: tuple[_MLineItem, ...] = ()


class _MOrderRef(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str
    identifier: str | None = None
    message: str | None = None


class _MChangeAnswer(msgspec.Struct, frozen=True):
    status: str
    payload: _MOrderChange | None = None


class _MCancelAnswer(msgspec.Struct, frozen=True):
    status: str
    payload: _MOrderRef | None = None


class _MCartLine(msgspec.Struct, frozen=True, kw_only=True):
    product_id: str
    price: Decimal
    quantity: int


class _MCancelBody(msgspec.Struct, frozen=True, kw_only=True):
    shop_id: str
    shop_secret: str
    order_id: str


class _MChangeBody(msgspec.Struct, frozen=True, kw_only=True):
    shop_id: str
    shop_secret: str
    order_id: str
    cart_items: list[_MCartLine]


# --- pydantic --------------------------------------------------------------------------------

# Amounts go out as JSON numbers (pydantic writes a Decimal as a string by default).
_Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class _PRewardShare(_Frozen):
    total: Decimal = _ZERO
    per_product: Decimal = _ZERO


class _PReferralReward(_Frozen):
    referral_program_id: int | None = None
    total: Decimal = _ZERO
    per_product: Decimal = _ZERO


class _PItemCertificate(_Frozen):
    id: int | str | None = None
    code: str | None = None
    pool_id: int | str | None = None
    amount: Decimal = _ZERO
    amount_per_product: Decimal = _ZERO


class _PFailedCode(_Frozen):
    code: str
    message: str | None = None


class _PLineItem(_Frozen):
    product_id: str | None = None
    uniqid: str | None = None
    quantity: Decimal = _ZERO
    price: Decimal = _ZERO
    total: Decimal = _ZERO
    discountable: bool | None = None
    discountable_reason: str | None = None
    bonusable: bool | None = None
    bonusable_reason: str | None = None
    rewardable: bool | None = None
    rewardable_reason: str | None = None
    paid_with_offers: Decimal = _ZERO
    paid_with_offers_per_product: Decimal = _ZERO
    paid_with_referral_discounts: Decimal = _ZERO
    paid_with_referral_discounts_per_product: Decimal = _ZERO
    paid_with_discounts: Decimal = _ZERO
    paid_with_discounts_per_product: Decimal = _ZERO
    paid_with_bonuses: Decimal = _ZERO
    paid_with_bonuses_per_product: Decimal = _ZERO
    paid_with_certificates: Decimal = _ZERO
    paid_with_certificates_per_product: Decimal = _ZERO
    bonuses_used: Decimal = _ZERO
    bonuses_used_per_product: Decimal = _ZERO
    bonuses_reward: Decimal = _ZERO
    bonuses_reward_per_product: Decimal = _ZERO
    bonuses_reward_loyalty_program: _PRewardShare | None = None
    bonuses_reward_referral_program: _PReferralReward | None = None
    bonuses_reward_promotions: dict[str, _PRewardShare] = Field(default_factory=dict)
    certificates: dict[str, _PItemCertificate] = Field(default_factory=dict)
    max_discountable_amount: Decimal | None = None
    max_discountable_amount_left: Decimal | None = None
    max_payable_by_bonuses: Decimal | None = None
    total_after_discounts: Decimal = _ZERO
    total_after_discounts_per_product: Decimal = _ZERO


class _POrderChange(_Frozen):
    order_total: Decimal
    order_to_pay: Decimal
    order_total_change: Decimal
    order_id: str | None = None
    identifier: str | None = None
    payment_type: str | None = None
    products_total: Decimal = _ZERO
    saved_total: Decimal = _ZERO
    saved_by_discounts: Decimal = _ZERO
    saved_by_bonuses: Decimal = _ZERO
    saved_by_offers: Decimal = _ZERO
    saved_by_certificates: Decimal = _ZERO
    order_bonuses_to_charge: Decimal = _ZERO
    bonuses_balance: Decimal = _ZERO
    bonuses_reward: Decimal = _ZERO
    bonuses_referrer_reward: Decimal = _ZERO
    referrer_identifier: str | None = None
    referral_program: int | None = None
    applied_promotions: tuple[int | str, ...] = ()
    rewarded_stickers: dict[str, Any] = Field(default_factory=dict)
    used_stickers: dict[str, Any] = Field(default_factory=dict)
    stickers_balance: dict[str, Any] = Field(default_factory=dict)
    promo_codes: tuple[str, ...] = ()
    promo_codes_failed: tuple[_PFailedCode, ...] = ()
    certificates: tuple[str, ...] = ()
    certificates_failed: tuple[_PFailedCode, ...] = ()
    items: tuple[_PLineItem, ...] = ()


class _POrderRef(_Frozen):
    order_id: str
    identifier: str | None = None
    message: str | None = None


class _PChangeAnswer(_Frozen):
    status: str
    payload: _POrderChange | None = None


class _PCancelAnswer(_Frozen):
    status: str
    payload: _POrderRef | None = None


class _PCartLine(_Frozen):
    product_id: str
    price: _Money
    quantity: int


class _PCancelBody(_Frozen):
    shop_id: str
    shop_secret: str
    order_id: str


class _PChangeBody(_Frozen):
    shop_id: str
    shop_secret: str
    order_id: str
    cart_items: list[_PCartLine]


# --- the calls -------------------------------------------------------------------------------


def _url(base: str, workload: str) -> str:
    return f"{base}/{workload}/loyalty/checkout/{'cancel' if workload == 'cancel' else 'change'}"


class _Peer:
    """An aiohttp session of its own; ``async with peer as call`` gives the call."""

    def __init__(self, base: str, workload: str, lines: int, shop: tuple[str, str]) -> None:
        self._url = _url(base, workload)
        self._lines = lines
        self._shop_id, self._secret = shop
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Any:
        self._session = aiohttp.ClientSession()
        return self.call if self._lines else self.cancel

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def _post(self, body: bytes) -> bytes:
        assert self._session is not None
        async with self._session.post(self._url, data=body, headers=_JSON) as response:
            answer = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            return answer

    async def call(self, order_id: str) -> Any:
        raise NotImplementedError

    async def cancel(self, order_id: str) -> Any:
        raise NotImplementedError


def _success(status: str, payload: Any) -> Any:
    if status != "success" or payload is None:
        raise RuntimeError(f"the API answered {status!r}")
    return payload


class MsgspecPeer(_Peer):
    """Hand-written aiohttp + msgspec Structs with exact ``Decimal`` amounts."""

    def __init__(self, base: str, workload: str, lines: int, shop: tuple[str, str]) -> None:
        super().__init__(base, workload, lines, shop)
        self._cart = [
            _MCartLine(product_id=f"SKU-{n}", price=Decimal("1249.90"), quantity=2)
            for n in range(lines)
        ]
        self._encoder = msgspec.json.Encoder(decimal_format="number")
        self._change = msgspec.json.Decoder(_MChangeAnswer)
        self._cancel = msgspec.json.Decoder(_MCancelAnswer)

    async def call(self, order_id: str) -> Any:
        body = _MChangeBody(
            shop_id=self._shop_id,
            shop_secret=self._secret,
            order_id=order_id,
            cart_items=self._cart,
        )
        answer = self._change.decode(await self._post(self._encoder.encode(body)))
        return _success(answer.status, answer.payload)

    async def cancel(self, order_id: str) -> Any:
        body = _MCancelBody(shop_id=self._shop_id, shop_secret=self._secret, order_id=order_id)
        answer = self._cancel.decode(await self._post(self._encoder.encode(body)))
        return _success(answer.status, answer.payload)


class PydanticPeer(_Peer):
    """Hand-written aiohttp + pydantic v2 models with ``Decimal`` amounts."""

    def __init__(self, base: str, workload: str, lines: int, shop: tuple[str, str]) -> None:
        super().__init__(base, workload, lines, shop)
        self._cart = [
            _PCartLine(product_id=f"SKU-{n}", price=Decimal("1249.90"), quantity=2)
            for n in range(lines)
        ]

    async def call(self, order_id: str) -> Any:
        body = _PChangeBody(
            shop_id=self._shop_id,
            shop_secret=self._secret,
            order_id=order_id,
            cart_items=self._cart,
        )
        answer = _PChangeAnswer.model_validate_json(
            await self._post(body.model_dump_json().encode())
        )
        return _success(answer.status, answer.payload)

    async def cancel(self, order_id: str) -> Any:
        body = _PCancelBody(shop_id=self._shop_id, shop_secret=self._secret, order_id=order_id)
        answer = _PCancelAnswer.model_validate_json(
            await self._post(body.model_dump_json().encode())
        )
        return _success(answer.status, answer.payload)


def check_result(result: Any, lines: int) -> None:
    """Raise unless *result* is a whole typed answer of the stand-in server with exact amounts.

    Works on the SDK's results and on both peers' (the same attribute names).
    """
    if not lines:
        if result.order_id != "1" or result.identifier != "79990001122":
            raise AssertionError(f"not the cancel answer: {result!r}")
        return
    items = result.items
    if len(items) != lines or not isinstance(result.order_total_change, Decimal):
        raise AssertionError(f"{len(items)} lines of {lines}, or amounts not Decimal")
    last = items[-1]
    expected = (last.product_id, last.price, last.total_after_discounts_per_product)
    if expected != (f"SKU-{lines - 1}", Decimal("1249.9"), Decimal("1124.91")):
        raise AssertionError(f"the last line is not the answer's: {expected!r}")
    share = last.bonuses_reward_loyalty_program
    if share is None or share.per_product != Decimal("53.74") or last.certificates != {}:
        raise AssertionError("a nested object of the line was not decoded")
    if result.order_total_change != Decimal("-2499.8"):
        raise AssertionError(f"order_total_change: {result.order_total_change!r}")
