"""SyncLoyaltyClient: the async client, for synchronous code (Django, Flask, Celery, scripts).

One :class:`~rees46_loyalty.LoyaltyClient` runs on one private event loop, in a background
thread of its own; each blocking method hands its call to that loop and waits for the answer.
So a sync client keeps what makes the async one cheap (one connection pool, one idempotency
store, kept across calls) and is thread-safe: any number of threads may call it at once.

The methods are made from the async client's methods by :func:`_blocking`, which keeps their
signatures (a ``ParamSpec``) and docstrings: there is one definition of each operation.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar

from ._client import (
    DEFAULT_BASE_URL,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    LoyaltyClient,
    credentials_from_env,
)
from ._clock import Clock
from ._hooks import Hooks
from ._http import Middleware, Transport
from ._policy import RetryPolicy
from ._scrub import scrubbed_init
from .idempotency import IdempotencyStore

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["SyncLoyaltyClient"]

P = ParamSpec("P")
R = TypeVar("R")


class _LoopThread:
    """One event loop running in a daemon thread, started on first use, in this process only.

    A fork copies the loop's objects into the child but not its thread: a loop started before
    the fork is refused in the child. One never started is started afresh there.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.closed = False

    @property
    def started_here(self) -> bool:
        """Whether the loop runs, and in this very process."""
        return self._loop is not None and self._pid == os.getpid()

    def submit(self, coroutine: Coroutine[Any, Any, R]) -> Future[R]:
        """Run *coroutine* on the loop; the future of its result."""
        with self._lock:  # a close() cannot slip between the check and the submission
            try:
                loop = self._running_loop()
            except BaseException:
                coroutine.close()  # never started: no "never awaited" warning
                raise
            return asyncio.run_coroutine_threadsafe(coroutine, loop)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._pid != os.getpid():
            if self._loop is not None:
                raise RuntimeError(
                    f"this SyncLoyaltyClient was used in process {self._pid} before this "
                    "process was forked from it, and its event loop thread did not come along "
                    "(one client per process): create the client in the child process, e.g. "
                    "in Celery's worker_process_init, or only use it after the fork"
                )
            self._pid = os.getpid()
            self._lock = threading.Lock()
        if self.closed:
            raise RuntimeError("this SyncLoyaltyClient is closed; create a new one")
        if self._thread is not None and threading.get_ident() == self._thread.ident:
            raise RuntimeError(
                "a SyncLoyaltyClient cannot be called from its own event loop (from a hook or a "
                "middleware): that call would wait for itself forever"
            )
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_run_forever, args=(loop,), name="rees46-loyalty", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop

    def close(self, last: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Let the calls in flight end, run *last* on the loop, then stop it; idempotent.

        Refused on the loop's own thread (a hook, a middleware): it would wait for itself.
        """
        with self._lock:
            if self._thread is not None and threading.get_ident() == self._thread.ident:
                raise RuntimeError(
                    "a SyncLoyaltyClient cannot be closed from its own event loop (from a hook "
                    "or a middleware): close() waits for the calls in flight, the hook's among "
                    "them, so it would wait for itself forever; close it from another thread"
                )
            if self.closed:
                return
            self.closed = True
            if not self.started_here:
                return
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:  # pragma: no cover - started_here says both are set
            return
        try:
            asyncio.run_coroutine_threadsafe(_finish(last), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()

    def abandon(self, last: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Like :meth:`close`, without waiting (for a client that was garbage-collected)."""
        self.closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(_finish(last), loop)
            future.add_done_callback(lambda _: loop.call_soon_threadsafe(loop.stop))


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


class _Shared:
    """What a :class:`SyncLoyaltyClient` and its views share: the async client and its loop.

    Each of them holds it, so it lives as long as one of them does. Dropped unclosed once the
    last of them is gone, it warns (``ResourceWarning``) and stops the loop without waiting.
    """

    def __init__(self, client: LoyaltyClient) -> None:
        self.client = client
        self.runner = _LoopThread()

    def close(self) -> None:
        """Wait for the calls in flight, close the pool and the store, stop the loop."""
        self.runner.close(self._close_on_loop)

    async def _close_on_loop(self) -> None:
        try:
            await self.client.close()
        finally:
            if self.client.idempotency is not None:
                await self.client.idempotency.close()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self.runner.closed or not self.runner.started_here:
            return
        _warn(
            f"unclosed Sync{self.client!r}: close it with 'client.close()' or use "
            "'with SyncLoyaltyClient(...) as client:'",
            ResourceWarning,
            stacklevel=2,
            source=self,
        )
        self.runner.abandon(self.client.close)


async def _finish(last: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Wait for every call still running on this loop, then run *last*."""
    current = asyncio.current_task()
    running = [task for task in asyncio.all_tasks() if task is not current]
    if running:
        await asyncio.gather(*running, return_exceptions=True)
    await last()


def _blocking(
    method: Callable[Concatenate[LoyaltyClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[SyncLoyaltyClient, P], R]:
    """The blocking twin of an async method of LoyaltyClient: same arguments, same result."""

    @functools.wraps(method)
    def blocking(self: SyncLoyaltyClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        future = self._runner.submit(method(self._client, *args, **kwargs))
        del args, kwargs  # the member's phone may be among them: gone from this frame's locals
        # An interrupt here (Ctrl-C, a worker's soft time limit) leaves the call running on the
        # client's loop, never cancelled half-way: a change that was sent still records its
        # outcome in the idempotency store, and close() waits for it.
        return future.result()

    blocking.__qualname__ = f"SyncLoyaltyClient.{method.__name__}"
    return blocking


class SyncLoyaltyClient:
    """A blocking client of the REES46 loyalty checkout API, for synchronous code.

    The same arguments, methods, results, errors, idempotency stores and hooks as
    :class:`~rees46_loyalty.LoyaltyClient`, without ``await``::

        with SyncLoyaltyClient.from_env() as client:
            calc = client.estimate(cart_items=cart)

    Make one per process and share it between threads (a Django or Flask app, a Celery worker
    process): it runs one ``LoyaltyClient`` on a private event loop in a background thread,
    made on the first call. Close it with :meth:`close` or a ``with`` block.

    - **Threads:** any thread may call it at once; the calls share the connection pool.
    - **Hooks** run on the client's own thread; keep them quick, as with the async client.
    - **fork:** a client first used before the process forked refuses to work in the child
      (its thread did not come along) with a ``RuntimeError`` that says so; one made but not
      yet used starts afresh in each child. With Celery's prefork pool, make it in
      ``worker_process_init``, or at import time without calling it.
    - **Interrupted calls:** a ``KeyboardInterrupt`` (or a task's time limit) while a method
      waits leaves the call running to its end on the client's loop: a ``change`` that was
      sent is never abandoned half-way, and its outcome is recorded in the idempotency store,
      so a retry of the same call replays it (or raises ``OutcomeUnknownError``) instead of
      sending it again. :meth:`close` waits for such calls.
    - **The idempotency store** lives on the client's loop, so :meth:`close` closes it too (a
      ``RedisIdempotencyStore`` made from a URL closes its connections).

    It takes no ``session``: an aiohttp session belongs to an event loop, and this client's
    loop is private. The other arguments are those of ``LoyaltyClient``; a ``transport``
    function runs on the client's loop.
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
        middlewares: Sequence[Middleware] = (),
        allow_insecure_http: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        idempotency: IdempotencyStore | Literal["memory"] | None = "memory",
        idempotency_wait: float | None = None,
        hooks: Hooks | None = None,
        tracing: bool | TracerProvider | None = False,
        clock: Clock | None = None,
        transport: Transport | None = None,
    ) -> None:
        self._client = LoyaltyClient(
            shop_id,
            shop_secret,
            base_url=base_url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retry=retry,
            middlewares=middlewares,
            allow_insecure_http=allow_insecure_http,
            max_response_bytes=max_response_bytes,
            idempotency=idempotency,
            idempotency_wait=idempotency_wait,
            hooks=hooks,
            tracing=tracing,
            clock=clock,
            transport=transport,
        )
        self._shared = _Shared(self._client)
        self._runner = self._shared.runner
        self._root: weakref.ref[SyncLoyaltyClient] | None = None  # a view's client

    @classmethod
    def from_env(cls, **kwargs: Any) -> SyncLoyaltyClient:
        """A client configured from the environment, as :meth:`LoyaltyClient.from_env`.

        ``REES46_SHOP_ID`` and ``REES46_SHOP_SECRET`` are required, ``REES46_BASE_URL`` is used
        when set; other constructor arguments go through *kwargs*.
        """
        shop_id, shop_secret = credentials_from_env(kwargs)
        return cls(shop_id, shop_secret, **kwargs)

    def __repr__(self) -> str:
        client = getattr(self, "_client", None)  # None while the constructor runs
        return "SyncLoyaltyClient(...)" if client is None else f"Sync{client!r}"

    def __enter__(self) -> SyncLoyaltyClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Wait for the calls in flight, close the pool and the idempotency store, stop the loop.

        Idempotent. Raises ``RuntimeError`` when called from the client's own loop (a hook, a
        middleware): it would wait for itself. On a view made by :meth:`with_options`, it does
        nothing while the client the view came from is still held; once that client is gone,
        it closes what the view shares (see :meth:`with_options`).
        """
        if self._root is None or self._root() is None:
            self._shared.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._runner.closed

    @property
    def idempotency(self) -> IdempotencyStore | None:
        """The idempotency store in use, or ``None`` when the layer is off."""
        return self._client.idempotency

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy in force."""
        return self._client.retry_policy

    def with_options(
        self, *, timeout: float | None = None, retry: RetryPolicy | None = None
    ) -> SyncLoyaltyClient:
        """A view with other options, sharing this client's loop, pool, store and hooks.

        See :meth:`LoyaltyClient.with_options`. The view holds what it shares, so it keeps
        working when only the view is kept (``self.api = make_client().with_options(...)``).

        Who closes: the client the view came from, while someone holds that client (closing a
        view then does nothing, so a view closed early never breaks its client or the other
        views). Once that client is gone (garbage-collected, or never kept, as in
        ``SyncLoyaltyClient(...).with_options(...)``), the view is all that is left to close,
        so its :meth:`close` (or ``with`` block) closes the loop, pool and store, for every view
        that shares them. A view of a view counts the first client. Forgotten unclosed, the
        last of them warns (``ResourceWarning``) as the client does.
        """
        view = object.__new__(SyncLoyaltyClient)
        view._shared = self._shared
        view._runner = self._runner
        view._client = self._client.with_options(timeout=timeout, retry=retry)
        view._root = self._root if self._root is not None else weakref.ref(self)
        return view

    # The operations, made from the async client's methods (their signatures and docstrings;
    # the strings below are what the API reference shows).
    estimate = _blocking(LoyaltyClient.estimate)
    """The blocking :meth:`~rees46_loyalty.LoyaltyClient.estimate`."""
    apply = _blocking(LoyaltyClient.apply)
    """The blocking :meth:`~rees46_loyalty.LoyaltyClient.apply`."""
    confirm = _blocking(LoyaltyClient.confirm)
    """The blocking :meth:`~rees46_loyalty.LoyaltyClient.confirm`."""
    cancel = _blocking(LoyaltyClient.cancel)
    """The blocking :meth:`~rees46_loyalty.LoyaltyClient.cancel`."""
    change = _blocking(LoyaltyClient.change)
    """The blocking :meth:`~rees46_loyalty.LoyaltyClient.change`."""
    details = _blocking(LoyaltyClient.details)
    """The blocking :meth:`~rees46_loyalty.LoyaltyClient.details`."""
    history = _blocking(LoyaltyClient.history)
    """The blocking :meth:`~rees46_loyalty.LoyaltyClient.history`."""
    clear_idempotency = _blocking(LoyaltyClient.clear_idempotency)
    """The blocking :meth:`~rees46_loyalty.LoyaltyClient.clear_idempotency`."""
    reconcile = _blocking(LoyaltyClient.reconcile)
    """The blocking :meth:`~rees46_loyalty.LoyaltyClient.reconcile`."""
