"""FakeRees46: the checkout API on a real aiohttp server on loopback, with fault injection."""

from __future__ import annotations

import asyncio
import json
import re
import weakref
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from .._client import LoyaltyClient
from .._operations import OPERATIONS
from .._serialization import dumps
from ._book import ApiFailure, CheckoutParams, OrderBook
from ._faults import Fault, FaultKind, Faults
from ._ledger import Ledger, RequestRecord
from ._program import CartLine, Certificate, LoyaltyProgram, Member

__all__ = ["FakeRees46"]

Envelope = Literal["status", "success"]

NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_TIME_RE = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d")


class FakeRees46:
    """A fake of the REES46 loyalty checkout API, served over HTTP on loopback.

    It follows checkout.md: the seven endpoints, both envelopes (``envelope="status"``, the
    current docs, or ``"success"``, the older pages), the order state machine, the documented
    messages, 401 for an unknown ``shop_id`` and 403 for a wrong ``shop_secret``. Its loyalty
    program is small and deterministic (see ``rees46_loyalty.testing._program``). Every request
    and every committed effect is in :attr:`ledger`; :attr:`faults` plans failures.

    Use it as ``async with FakeRees46() as fake:`` and talk to it with ``fake.client()``.

    *keepalive_timeout* is how long (seconds) the server keeps an idle keep-alive connection
    open before closing it (aiohttp's default when ``None``); :meth:`Fault.idle_close` makes
    the race with such a close deterministic.
    """

    def __init__(
        self,
        *,
        shop_id: str = "test-shop",
        shop_secret: str = "test-secret",  # noqa: S107 - a fake server's fake secret
        envelope: Envelope = "status",
        host: str = "127.0.0.1",
        port: int = 0,
        program: LoyaltyProgram | None = None,
        keepalive_timeout: float | None = None,
    ) -> None:
        if envelope not in ("status", "success"):
            raise ValueError(f"envelope must be 'status' or 'success', got {envelope!r}")
        if keepalive_timeout is not None and not keepalive_timeout > 0:
            raise ValueError(f"keepalive_timeout must be > 0 seconds, got {keepalive_timeout!r}")
        self.shop_id = shop_id
        self.shop_secret = shop_secret
        self.envelope: Envelope = envelope
        self.ledger = Ledger()
        self.faults = Faults()
        self.book = OrderBook(program or LoyaltyProgram(), self.ledger)
        self._host = host
        self._port = port
        self._counts: Counter[str] = Counter()
        self._keepalive_timeout = keepalive_timeout
        # Requests served per connection, to tell a reused keep-alive connection from a fresh one.
        self._served: weakref.WeakKeyDictionary[asyncio.BaseTransport, int] = (
            weakref.WeakKeyDictionary()
        )
        self._arrived: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    def __repr__(self) -> str:
        return (
            f"FakeRees46(url={self._url!r}, shop_id={self.shop_id!r}, envelope={self.envelope!r})"
        )

    # -- the program's data ---------------------------------------------------------------

    @property
    def members(self) -> dict[str, Member]:
        """The loyalty members by identifier."""
        return self.book.members

    def add_member(self, identifier: str, bonuses: Decimal | int = 0) -> Member:
        """Register a member with a bonus balance."""
        member = Member(identifier=identifier, bonuses=Decimal(bonuses))
        self.book.members[identifier] = member
        return member

    def add_product(self, product_id: str, name: str) -> None:
        """Put a product in the feed: only products in the feed earn discounts and bonuses."""
        self.book.feed[product_id] = name

    def add_promo_code(self, code: str, percent: Decimal | int) -> None:
        """A promo code worth *percent* off discountable lines."""
        self.book.promo_codes[code] = Decimal(percent)

    def add_certificate(self, code: str, balance: Decimal | int) -> Certificate:
        """A prepaid certificate with *balance* on it."""
        certificate = Certificate(
            code=code, balance=Decimal(balance), id=len(self.book.certificates) + 1
        )
        self.book.certificates[code] = certificate
        return certificate

    def received(self, operation: str | None = None) -> int:
        """How many requests arrived (for *operation*, or in all), finished or still running.

        The ledger records a request once it is answered; a request held by a latency fault is
        counted here from the moment it arrives.
        """
        return self._counts[operation] if operation else sum(self._counts.values())

    async def wait_received(self, operation: str, count: int = 1) -> None:
        """Return once *count* requests to *operation* have arrived (see :meth:`received`)."""
        if self._arrived is None:
            self._arrived = asyncio.Condition()
        async with self._arrived:
            await self._arrived.wait_for(lambda: self._counts[operation] >= count)

    # -- serving --------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application, to mount or serve yourself."""
        app = web.Application()
        app.router.add_route("*", "/loyalty/checkout/{operation}", self._handle)
        return app

    async def start(self) -> str:
        """Start serving on loopback (a free port unless one was given); returns the URL."""
        # No access log: GET requests carry the shop secret in their query string.
        options: dict[str, Any] = {}
        if self._keepalive_timeout is not None:
            options["keepalive_timeout"] = self._keepalive_timeout
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5, **options
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        return self._url

    async def stop(self) -> None:
        """Stop serving and close every connection."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeRees46:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The base URL to give a client (``http://127.0.0.1:<port>``)."""
        if self._url is None:
            raise RuntimeError("the fake server is not started")
        return self._url

    def client(self, **kwargs: Any) -> LoyaltyClient:
        """A :class:`LoyaltyClient` for this server; *kwargs* go to its constructor."""
        return LoyaltyClient(self.shop_id, self.shop_secret, base_url=self.url, **kwargs)

    # -- one request ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        reused = self._served_before(request)
        operation = request.match_info["operation"]
        spec = OPERATIONS.get(operation)
        if spec is None:
            return self._answer(404, self._envelope(ok=False, payload={"message": "Not found"}))
        if request.method != spec.method:
            body = self._envelope(ok=False, payload={"message": "Method Not Allowed"})
            return self._answer(405, body)
        self._counts[operation] += 1
        number = self._counts[operation]
        if self._arrived is not None:
            async with self._arrived:
                self._arrived.notify_all()
        raw = await request.read()
        fields = self._fields(request, raw)
        order_id = _text(fields.get("order_id")) if fields is not None else None
        request_id = request.headers.get("X-Request-Id")
        fault = self.faults.pick(operation, number, reused_connection=reused)
        if fault is not None and fault.kind is FaultKind.LATENCY:
            await asyncio.sleep(fault.delay)
        elif fault is not None and fault.kind is FaultKind.HOLD:
            await asyncio.Event().wait()  # until the server stops and cancels this handler
        elif fault is not None and not fault.commits:
            self._note(
                operation, order_id, request_id, fault, status=fault.status or None, committed=False
            )
            return await self._fail(request, fault)

        effects_before = len(self.ledger.effects)
        try:
            fields = self._authenticated(fields)
            payload = self._dispatch(operation, fields)
            status, document = 200, self._envelope(ok=True, payload=payload)
        except ApiFailure as failure:
            status, document = failure.status, self._envelope(ok=False, payload=failure.payload)
        committed = len(self.ledger.effects) > effects_before

        if fault is not None and fault.kind is not FaultKind.LATENCY:
            dropped = fault.kind in (FaultKind.DROP_AFTER_COMMIT, FaultKind.TRUNCATED_BODY)
            shown = None if dropped else (fault.status or status)
            self._note(operation, order_id, request_id, fault, status=shown, committed=committed)
            return await self._fail(request, fault, dumps(document))
        self._note(operation, order_id, request_id, fault, status=status, committed=committed)
        return self._answer(status, document)

    def _fields(self, request: web.Request, raw: bytes) -> dict[str, Any] | None:
        if request.method == "GET":
            return dict(request.query)
        if request.content_type != "application/json":
            return None
        try:
            document = json.loads(raw, parse_float=Decimal)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    def _authenticated(self, fields: dict[str, Any] | None) -> dict[str, Any]:
        if fields is None:
            raise ApiFailure(406, "Format is not JSON")
        if fields.get("shop_id") != self.shop_id:
            raise ApiFailure(401, "Wrong API key")
        if fields.get("shop_secret") != self.shop_secret:
            raise ApiFailure(403, "Secret key is missing or wrong")
        return fields

    def _dispatch(self, operation: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        book = self.book
        if operation in ("estimate", "apply", "change"):
            params = _checkout_params(fields, order_required=operation != "estimate")
            return {"estimate": book.estimate, "apply": book.apply, "change": book.change}[
                operation
            ](params)
        if operation == "history":
            identifier = _text(fields.get("identifier"))
            if identifier is None:
                raise ApiFailure(400, "identifier is required")
            return book.history(identifier)
        order_id = _text(fields.get("order_id"))
        if order_id is None:
            raise ApiFailure(400, "order_id is required")
        return {"confirm": book.confirm, "cancel": book.cancel, "details": book.details}[operation](
            order_id
        )

    def _envelope(self, *, ok: bool, payload: Mapping[str, Any]) -> dict[str, Any]:
        if self.envelope == "success":
            return {"success": ok, "payload": dict(payload)}
        return {"status": "success" if ok else "error", "payload": dict(payload)}

    def _answer(self, status: int, document: Mapping[str, Any]) -> web.Response:
        return web.Response(status=status, body=dumps(document), content_type="application/json")

    def _note(
        self,
        operation: str,
        order_id: str | None,
        request_id: str | None,
        fault: Fault | None,
        *,
        status: int | None,
        committed: bool,
    ) -> None:
        self.ledger.requests.append(
            RequestRecord(
                seq=len(self.ledger.requests) + 1,
                operation=operation,
                order_id=order_id,
                status=status,
                fault=None if fault is None or fault.kind is FaultKind.LATENCY else fault.label,
                committed=committed,
                request_id=request_id,
            )
        )

    def _served_before(self, request: web.Request) -> bool:
        """Count *request* on its connection; whether that connection served one before."""
        transport = request.transport
        if transport is None:
            return False
        served = self._served.get(transport, 0)
        self._served[transport] = served + 1
        return served > 0

    async def _fail(  # noqa: PLR0911 - one answer per kind of fault
        self, request: web.Request, fault: Fault, answer: bytes = b""
    ) -> web.StreamResponse:
        if fault.kind in (
            FaultKind.CLOSE_BEFORE_ANSWER,
            FaultKind.DROP_AFTER_COMMIT,
            FaultKind.IDLE_CLOSE,
        ):
            _hang_up(request)
            return web.Response()  # never written: the connection is gone
        if fault.kind is FaultKind.TRUNCATED_BODY:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = len(answer)
            await response.prepare(request)
            await response.write(answer[: len(answer) // 2])
            _hang_up(request)
            return response
        if fault.kind is FaultKind.RAW:
            return web.Response(status=fault.status, body=fault.raw, headers=dict(fault.headers))
        if fault.kind is FaultKind.ENDLESS:
            return await _endless(request)
        if fault.kind is FaultKind.INVALID_JSON:
            return web.Response(
                status=200,
                body=b'{"status": "success", "payload": <',
                content_type="application/json",
            )
        headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
        if fault.body == "html":
            return web.Response(
                status=fault.status, body=NGINX_502, headers=headers, content_type="text/html"
            )
        if fault.body == "empty":
            return web.Response(status=fault.status, headers=headers)
        document = self._envelope(ok=False, payload={"message": "Try again later"})
        return web.Response(
            status=fault.status,
            body=dumps(document),
            headers=headers,
            content_type="application/json",
        )


async def _endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    chunk = b"x" * 65536
    try:
        await response.write(b'{"status": "success", "payload": {"message": "')
        while True:  # until the client hangs up (or the server stops)
            await response.write(chunk)
    except (ConnectionError, OSError):
        return response


def _hang_up(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


def _text(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def _number(value: object, name: str, *, allow_zero: bool = False) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ApiFailure(400, f"{name} must be a number")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ApiFailure(400, f"{name} must be a number") from None
    if not number.is_finite() or number < 0 or (number == 0 and not allow_zero):
        raise ApiFailure(400, f"{name} must be greater than 0")
    return number


def _flag(value: object, *, default: bool) -> bool:
    return value if isinstance(value, bool) else default


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def _checkout_params(fields: Mapping[str, Any], *, order_required: bool) -> CheckoutParams:
    items = fields.get("cart_items")
    if not isinstance(items, list) or not items:
        raise ApiFailure(400, "cart_items must be a non-empty list")
    cart, seen = [], set()
    for item in items:
        if not isinstance(item, dict):
            raise ApiFailure(400, "cart_items must be objects")
        product_id = _text(item.get("product_id"))
        if product_id is None:
            raise ApiFailure(400, "cart_items[].product_id is required")
        if product_id in seen:
            raise ApiFailure(
                400,
                "Cart contains line items with the same product ID",
                identifier=fields.get("identifier"),
            )
        seen.add(product_id)
        cart.append(
            CartLine(
                product_id=product_id,
                price=_number(item.get("price"), "cart_items[].price"),
                quantity=_number(item.get("quantity"), "cart_items[].quantity"),
                discountable=_flag(item.get("discountable"), default=True),
                bonusable=_flag(item.get("bonusable"), default=True),
                rewardable=_flag(item.get("rewardable"), default=True),
            )
        )
    order_id = _text(fields.get("order_id"))
    if order_required and order_id is None:
        raise ApiFailure(400, "order_id is required")
    current_time = fields.get("current_time")
    if current_time is not None and not (
        isinstance(current_time, str) and _TIME_RE.fullmatch(current_time)
    ):
        raise ApiFailure(400, "current_time must be HH:MM")
    cap = fields.get("bonuses_amount")
    return CheckoutParams(
        cart=tuple(cart),
        order_id=order_id,
        identifier=_text(fields.get("identifier")),
        payment_type=_text(fields.get("payment_type")),
        promo_codes=_strings(fields.get("promo_codes")),
        certificates=_strings(fields.get("certificates")),
        charge_bonuses=_flag(fields.get("charge_bonuses"), default=False),
        bonuses_amount=None if cap is None else _number(cap, "bonuses_amount", allow_zero=True),
    )
