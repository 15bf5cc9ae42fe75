"""LoyaltyClient: one short method per API operation; no HTTP in sight."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, cast

import aiohttp
from yarl import URL

from . import _validation as check
from ._clock import Clock, SystemClock
from ._hooks import Hooks
from ._http import ApiRequest, ApiResponse, Handler, Middleware, Transport
from ._operations import (
    APPLY,
    CANCEL,
    CHANGE,
    CONFIRM,
    DETAILS,
    ESTIMATE,
    HISTORY,
    Operation,
    ResultT,
)
from ._policy import RetryPolicy
from ._reconcile import Reconciler, Reconciliation
from ._scrub import scrubbed, scrubbed_init
from ._serialization import dumps, unstructure
from ._session import LoopGuard, SessionHolder
from ._transport import AiohttpTransport, FunctionTransport
from .errors import (
    ConnectError,
    IdempotencyError,
    LoyaltyError,
    NotAnApiError,
    ValidationError,
)
from .idempotency import IdempotencyStore, Outcome
from .idempotency._resp import RedisConnectionError
from .middleware._chain import Chain, idempotency_store
from .middleware.errors import decode_response
from .middleware.idempotency import record_key
from .models import (
    CartItem,
    CheckoutFields,
    MemberRequest,
    OrderCalculation,
    OrderChange,
    OrderHistory,
    OrderRef,
    OrderRequest,
)

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider
# typing_extensions is no runtime dependency: on 3.10 only type checkers see Unpack.
if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DEFAULT_BASE_URL", "LoyaltyClient"]

DEFAULT_BASE_URL = "https://api.rees46.ru"
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0
#: The largest answer read, in bytes after decompression: 32 MiB, about 17 times the answer of
#: a ``change`` of a 2,000-line cart (1.9 MB).
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024


#: Shorter secrets are refused: redacting them would mangle ordinary text.
MIN_SECRET_LENGTH = 8


class LoyaltyClient:
    """An async client of the REES46 loyalty checkout API.

    Create one per application (or per event loop) and share it: it holds one connection pool.
    Use it as ``async with LoyaltyClient(...) as client:`` or call :meth:`close` when done.

    Args:
        shop_id: The shop's API key.
        shop_secret: The shop's secret key (at least 8 characters). It never appears in a
            repr, a log record, an exception or a shown URL.
        base_url: Where the API lives; a proxy of the shop's own is fine. Plain ``http://`` is
            refused unless it points at a loopback address or ``allow_insecure_http`` is set.
        timeout: Seconds one attempt may take (connect, send, answer).
        connect_timeout: Seconds an attempt may spend getting a connection (waiting for a free
            one in the pool, or opening one); at most 90% of ``timeout``. A request that times
            out here was never sent, so even ``change`` may be retried after it.
        retry: How failed calls are retried; see :class:`RetryPolicy`.
        session: An :class:`aiohttp.ClientSession` of your own to send through. The client uses
            it and never closes it; without one the client creates and closes its own.
        middlewares: Your own middlewares, ``async (request, call_next) -> response``. They run
            once per attempt, inside the retry loop, outside the auth middleware.
        allow_insecure_http: Allow a plain ``http://`` base URL on a non-loopback host.
        idempotency: Where mutating calls are remembered so that none is applied twice:
            ``"memory"`` (the default, this process), a store such as
            :class:`~rees46_loyalty.idempotency.RedisIdempotencyStore` (shared by many
            processes; you close it), or ``None`` to turn the layer off.
        idempotency_wait: Seconds a call may wait for another call on the same order or key
            to finish (default: the store's lease, so that a dead holder is outlasted).
        hooks: Callables run on every attempt, answer and retry with a frozen record (to
            count retries in your metrics, say); see :class:`Hooks`.
        tracing: OpenTelemetry spans, one per call and one per attempt (the ``otel`` extra):
            ``True`` for the global tracer provider, or a ``TracerProvider`` of your own;
            ``False`` or ``None`` for none.
        clock: Time for the retry waits and deadlines; tests pass a fake one.
        max_response_bytes: The largest answer read, in bytes after decompression (default
            32 MiB). A larger one is refused as
            :class:`~rees46_loyalty.errors.MalformedResponseError` (for ``change``,
            :class:`~rees46_loyalty.errors.OutcomeUnknownError`) without reading it whole.
        transport: A function ``async (ApiRequest) -> ApiResponse`` that replaces aiohttp at
            the bottom of the chain, to test code without a server (see the testing page).
            Every middleware still runs, auth included: it gets the request as it would go
            on the wire. ``session`` cannot go with it; ``connect_timeout`` and
            ``max_response_bytes`` are aiohttp's and do not apply.

    Raises:
        TypeError: An argument of the wrong type, named in the message.
        ValueError: An argument of the right type with a wrong value, named in the message.
    """

    @scrubbed_init
    def __init__(
        self,
        shop_id: str,
        shop_secret: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        middlewares: Sequence[Middleware] = (),
        allow_insecure_http: bool = False,
        idempotency: IdempotencyStore | Literal["memory"] | None = "memory",
        idempotency_wait: float | None = None,
        hooks: Hooks | None = None,
        tracing: bool | TracerProvider | None = False,
        clock: Clock | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: Transport | None = None,
    ) -> None:
        check.client_options(
            base_url=base_url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retry=retry,
            session=session,
            middlewares=middlewares,
            allow_insecure_http=allow_insecure_http,
            idempotency=idempotency,
            idempotency_wait=idempotency_wait,
            hooks=hooks,
            clock=clock,
            max_response_bytes=max_response_bytes,
            transport=transport,
        )
        if not isinstance(shop_id, str) or not shop_id:
            raise ValueError("shop_id must be a non-empty string")
        if not isinstance(shop_secret, str) or len(shop_secret) < MIN_SECRET_LENGTH:
            # The secret is cut out of every text the SDK shows, answers included: a string as
            # short as a word would be cut out of ordinary text too, and mangle it.
            raise ValueError(
                f"shop_secret must be a string of at least {MIN_SECRET_LENGTH} characters; "
                "check that it holds the shop's secret key"
            )
        self._shop_id = shop_id
        self._base_url = check.base_url(base_url, allow_insecure_http)
        self._timeout = float(timeout)
        self._retry = RetryPolicy() if retry is None else retry
        self._sessions = SessionHolder(session)
        clock = SystemClock() if clock is None else clock
        self._idempotency = idempotency_store(idempotency, clock=clock, timeout=self._timeout)
        self._transport: Handler = (
            AiohttpTransport(
                self._sessions,
                self._base_url,
                clock,
                float(connect_timeout),
                max_body=max_response_bytes,
            )
            if transport is None
            else FunctionTransport(transport, clock)
        )
        self._chain = Chain(
            shop_id=shop_id,
            shop_secret=shop_secret,
            base_url=self._base_url,
            retry=self._retry,
            middlewares=middlewares,
            store=self._idempotency,
            idempotency_wait=idempotency_wait,
            hooks=hooks,
            tracing=tracing,
            clock=clock,
            transport=self._transport,
        )
        self._loop = LoopGuard()
        self._owns_session = session is None and transport is None
        self._view = False

    @classmethod
    def from_env(cls, **kwargs: Any) -> LoyaltyClient:
        """A client configured from the environment.

        ``REES46_SHOP_ID`` and ``REES46_SHOP_SECRET`` are required, ``REES46_BASE_URL`` is used
        when set; other constructor arguments go through *kwargs*.
        """
        shop_id, shop_secret = credentials_from_env(kwargs)
        return cls(shop_id, shop_secret, **kwargs)

    def __repr__(self) -> str:
        # getattr: a client whose constructor raised is shown too (by a traceback's locals).
        shop_id = getattr(self, "_shop_id", None)
        base_url = getattr(self, "_base_url", None)
        return f"LoyaltyClient(shop_id={shop_id!r}, base_url={str(base_url)!r})"

    async def __aenter__(self) -> LoyaltyClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client's own connection pool (a borrowed session is left open).

        On a view made by :meth:`with_options` it does nothing: close the client it came from.
        """
        if not self._view:
            await self._sessions.close()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_view", True) or not self._owns_session or self._sessions.closed:
            return
        if not self._loop.used:  # never called: no connection pool was made
            return
        _warn(
            f"unclosed {self!r}: close it with 'await client.close()' or use "
            "'async with LoyaltyClient(...) as client:'",
            ResourceWarning,
            stacklevel=2,
            source=self,
        )

    def with_options(
        self, *, timeout: float | None = None, retry: RetryPolicy | None = None
    ) -> LoyaltyClient:
        """A view of this client with other options, for some calls.

        The view shares this client's connection pool, idempotency store, hooks, middlewares
        and event loop; it is cheap to make (one per call is fine) and needs no closing. Only
        the options given change::

            await client.with_options(timeout=2, retry=RetryPolicy.disabled()).details(
                order_id="1001"
            )

        Args:
            timeout: Seconds one attempt may take.
            retry: How failed calls are retried; see :class:`RetryPolicy`.
        """
        view = object.__new__(LoyaltyClient)
        view.__dict__.update(self.__dict__)
        view._view = True
        if timeout is not None:
            if not timeout > 0:
                raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
            view._timeout = float(timeout)
        if retry is not None:
            view._retry = retry
            view._chain = self._chain.with_retry(retry)
        return view

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._sessions.closed

    @property
    def idempotency(self) -> IdempotencyStore | None:
        """The idempotency store in use, or ``None`` when the layer is off."""
        return self._idempotency

    @scrubbed
    async def clear_idempotency(
        self, *, order_id: str, idempotency_key: str | None = None
    ) -> list[Outcome]:
        """Forget an order's unknown outcomes and terminal failures, and return what was forgotten.

        Call it after reconciling an :class:`~rees46_loyalty.errors.OutcomeUnknownError` with
        :meth:`details`, to let calls on the order be sent again; with ``idempotency_key``, only
        that key's record goes. Successes and a call in flight stay, so that two workers
        reconciling the same job cannot let it go twice.
        """
        order_id = check.order_id(order_id, "clear_idempotency")
        if idempotency_key is not None:
            check.idempotency_key(idempotency_key, "clear_idempotency")
        if self._idempotency is None:
            return []
        self._loop.check()
        try:
            return await self._idempotency.forget(
                record_key(self._shop_id, order_id), idempotency_key
            )
        except Exception as exc:
            raise IdempotencyError(
                f"the idempotency store could not clear order {order_id!r}: {type(exc).__name__}",
                operation="clear_idempotency",
                order_id=order_id,
                retryable=True,
            ) from exc

    @scrubbed
    async def reconcile(
        self, *, order_id: str, idempotency_key: str | None = None
    ) -> Reconciliation:
        """Find out whether a call with an unknown outcome on an order happened, and record it.

        For the order's unknown ``change`` (or the one of ``idempotency_key``): compares the
        order now (``details``) with the order before the change and the cart it asked for,
        both kept by the idempotency store before it was sent. Applied: ``result`` is the
        :class:`OrderChange` its lost answer would have carried, with ``order_total_change``
        derived as ``order_to_pay`` now minus before, and it is recorded, so the redelivered
        identical call is answered with it. Not applied: the record goes, and the redelivered
        call is sent (a change that lands late after all is then derived, not lost). A
        ``cancel`` or ``confirm`` is decided from the order's status in ``history``; an
        ``apply`` is safe to repeat, so its unknown outcome simply goes. Sends no mutating
        request.

        Raises:
            OutcomeUnknownError: It cannot be decided (someone else changed the order since;
                the order has no member to look up); nothing was recorded.
            IdempotencyError: The store has nothing of the order (or of the key) to reconcile,
                or failed.
        """
        order_id = check.order_id(order_id, "reconcile")
        if idempotency_key is not None:
            check.idempotency_key(idempotency_key, "reconcile")
        store = self._idempotency
        if store is None:
            raise IdempotencyError(
                "reconcile needs the idempotency layer: this client has idempotency=None",
                operation="reconcile",
                order_id=order_id,
            )
        reconciler = Reconciler(
            store=store,
            key=record_key(self._shop_id, order_id),
            order_id=order_id,
            send=self._exchange,
        )
        try:
            return await reconciler.run(idempotency_key)
        except LoyaltyError:
            raise
        except Exception as exc:
            raise IdempotencyError(
                f"the idempotency store failed while reconciling order {order_id!r}: "
                f"{type(exc).__name__}",
                operation="reconcile",
                order_id=order_id,
                retryable=True,
            ) from exc

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy in force."""
        return self._retry

    @scrubbed
    async def estimate(
        self,
        *,
        cart_items: Iterable[CartItem],
        order_id: str | None = None,
        **fields: Unpack[CheckoutFields],
    ) -> OrderCalculation:
        """Calculate a cart without changing anything: discounts, bonuses, what is left to pay.

        Call it as often as the cart changes. ``identifier`` is the member's phone number
        (``7XXXXXXXXXX``); ``charge_bonuses=True`` needs it. ``current_time`` is ``HH:MM``.
        The optional fields are those of :class:`~rees46_loyalty.CheckoutFields`.
        """
        return await self._checkout(ESTIMATE, cart_items, order_id, fields)

    @scrubbed
    async def apply(
        self,
        *,
        order_id: str,
        idempotency_key: str | None = None,
        cart_items: Iterable[CartItem],
        **fields: Unpack[CheckoutFields],
    ) -> OrderCalculation:
        """Create order ``order_id`` (status "created") and reserve what it spends.

        Bonuses, certificates and promo codes are reserved. Repeat it while the order is
        "created" to replace the cart. Safe to retry. The optional fields are those of
        :class:`~rees46_loyalty.CheckoutFields`.
        """
        return await self._checkout(APPLY, cart_items, order_id, fields, idempotency_key)

    @scrubbed
    async def confirm(self, *, order_id: str, idempotency_key: str | None = None) -> OrderRef:
        """Confirm a paid order: rewards are granted. Confirming twice grants them once."""
        request = OrderRequest(order_id=check.order_id(order_id, CONFIRM.name))
        return await self._send(CONFIRM, unstructure(request), idempotency_key)

    @scrubbed
    async def cancel(self, *, order_id: str, idempotency_key: str | None = None) -> OrderRef:
        """Cancel an applied or confirmed order: spent bonuses and codes come back, rewards go.

        Final: the order id can never be applied again. Raises
        :class:`~rees46_loyalty.errors.OrderStatusError` when the order cannot be cancelled.
        """
        request = OrderRequest(order_id=check.order_id(order_id, CANCEL.name))
        return await self._send(CANCEL, unstructure(request), idempotency_key)

    @scrubbed
    async def change(
        self,
        *,
        order_id: str,
        idempotency_key: str | None = None,
        cart_items: Iterable[CartItem],
        **fields: Unpack[CheckoutFields],
    ) -> OrderChange:
        """Replace the cart of a confirmed order, usually for a partial return.

        ``cart_items`` is the *whole new cart*, not the returned lines. The answer's
        ``order_total_change`` is the money that moves: negative to return to the buyer,
        positive to take. Never sent twice: when the outcome of the request is unknown (a
        timeout after sending, a 5xx), :class:`~rees46_loyalty.errors.OutcomeUnknownError` is
        raised; call :meth:`details` before anything else. The optional fields are those of
        :class:`~rees46_loyalty.CheckoutFields`.
        """
        return await self._checkout(CHANGE, cart_items, order_id, fields, idempotency_key)

    @scrubbed
    async def details(self, *, order_id: str) -> OrderCalculation:
        """The order as the server has it now; the way to reconcile an unknown outcome."""
        request = OrderRequest(order_id=check.order_id(order_id, DETAILS.name))
        return await self._send(DETAILS, unstructure(request))

    @scrubbed
    async def history(self, *, identifier: str) -> OrderHistory:
        """The orders of the member ``identifier`` (a phone number, ``7XXXXXXXXXX``)."""
        request = MemberRequest(identifier=check.identifier(identifier, HISTORY.name))
        return await self._send(HISTORY, unstructure(request))

    async def _checkout(
        self,
        operation: Operation[ResultT],
        cart_items: object,
        order_id: object,
        fields: Mapping[str, object],
        idempotency_key: str | None = None,
    ) -> ResultT:
        data = check.checkout_body(
            operation.name,
            cart_items=cart_items,
            order_id=order_id,
            # apply and change make or change an order: they need its id.
            order_id_required=operation.mutating,
            fields=fields,
        )
        return await self._send(operation, data, idempotency_key)

    async def _send(
        self,
        operation: Operation[ResultT],
        data: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> ResultT:
        if idempotency_key is not None:
            check.idempotency_key(idempotency_key, operation.name)
        response = await self._exchange(
            operation, data, data.get("order_id"), data.get("identifier"), idempotency_key
        )
        result = response.result
        if not isinstance(result, operation.result_type):
            # A middleware of the caller's answered with a result of another kind (a cache of
            # "details" answers holding the order's lines the SDK reads before a change): the
            # answer's body is what the API said.
            result = answer_result(operation, response)
        return cast("ResultT", result)

    async def _exchange(
        self,
        operation: Operation[Any],
        data: dict[str, Any],
        order_id: str | None = None,
        identifier: str | None = None,
        idempotency_key: str | None = None,
    ) -> ApiResponse:
        """Send *data* through the chain; the response, its result decoded."""
        if self._sessions.closed:
            raise RuntimeError("this LoyaltyClient is closed; create a new one")
        self._loop.check()
        body = dumps(data)
        if self._chain.auth.secret_in(body):
            # A mix-up of arguments: sent, the secret would be shown wherever the order id,
            # the member or the cart is (errors, logs, spans, the idempotency store).
            field = next((k for k, v in data.items() if self._chain.auth.secret_in(dumps(v))), "?")
            raise ValidationError(
                "holds the shop secret (a mix-up of arguments?); nothing was sent",
                field=field,
                operation=operation.name,
            )
        try:
            return await self._chain.handler(
                ApiRequest(
                    operation=operation,
                    data=data,
                    body=body if operation.method == "POST" else None,
                    order_id=order_id,
                    identifier=identifier,
                    idempotency_key=idempotency_key,
                    timeout=self._timeout,
                )
            )
        except (ConnectError, NotAnApiError) as error:
            _name_base_url(error, self._base_url)
            raise
        except IdempotencyError as error:
            _name_unreachable_store(error)
            raise


def answer_result(operation: Operation[Any], response: ApiResponse) -> Any:
    """The result of *operation* read from the body of *response* (the errors its body says)."""
    plain = ApiResponse(status=response.status, headers=response.headers, body=response.body)
    return decode_response(ApiRequest(operation=operation, data={}), plain).result


def _name_base_url(error: LoyaltyError, base_url: URL) -> None:
    """Add to *error*'s message the base URL that could not be reached (once)."""
    if _BASE_URL_HINT not in error.message:
        error.message = f"{error.message}; is {str(base_url)!r} the API's address? {_BASE_URL_HINT}"
        error.args = (error.message,)


def _name_unreachable_store(error: IdempotencyError) -> None:
    """Add where the store is to the message of a store that could not be reached.

    The store's own connection errors, and redis-py's, name the host and port ("could not
    connect to Redis at 127.0.0.1:6379: Connection refused"); never a password.
    """
    cause = error.__cause__
    if cause is None or str(cause) in error.message:
        return
    if isinstance(cause, RedisConnectionError) or (
        type(cause).__module__.startswith("redis.")
        and type(cause).__name__ in ("ConnectionError", "TimeoutError")
    ):
        error.message = (
            f"{error.message}: {cause} (is the Redis URL of the idempotency store right, "
            "and is Redis running?)"
        )
        error.args = (error.message,)


_BASE_URL_HINT = "Check base_url (REES46_BASE_URL for from_env() and the command line)"


def credentials_from_env(options: dict[str, Any]) -> tuple[str, str]:
    """The credentials from ``REES46_SHOP_ID`` and ``REES46_SHOP_SECRET``.

    ``ValueError`` names those not set; ``REES46_BASE_URL``, when set, goes into *options*
    unless they already have a base URL.
    """
    missing = [
        name for name in ("REES46_SHOP_ID", "REES46_SHOP_SECRET") if not os.environ.get(name)
    ]
    if missing:
        raise ValueError(f"environment variable(s) not set: {', '.join(missing)}")
    if os.environ.get("REES46_BASE_URL"):
        options.setdefault("base_url", os.environ["REES46_BASE_URL"])
    return os.environ["REES46_SHOP_ID"], os.environ["REES46_SHOP_SECRET"]
