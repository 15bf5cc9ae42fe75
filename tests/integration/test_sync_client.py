"""SyncLoyaltyClient against the fake server (served from a thread of its own): the async
client's methods, results, errors, stores and hooks, from blocking code."""

from __future__ import annotations

import gc
import inspect
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from decimal import Decimal

import pytest

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    CartItem,
    Handler,
    Hooks,
    LoyaltyClient,
    NotFoundError,
    OrderCalculation,
    OrderChange,
    ResponseRecord,
    RetryPolicy,
    SyncLoyaltyClient,
    ValidationError,
)
from rees46_loyalty.testing import FakeRees46
from tests.conftest import PHONE

pytestmark = pytest.mark.integration

CART = [CartItem(product_id="A", price=Decimal(1000), quantity=4)]
KEPT = [CartItem(product_id="A", price=Decimal(1000), quantity=3)]
METHODS = [
    "estimate",
    "apply",
    "confirm",
    "cancel",
    "change",
    "details",
    "history",
    "clear_idempotency",
]


@pytest.fixture
def sync(threaded_shop: FakeRees46) -> Iterator[SyncLoyaltyClient]:
    with SyncLoyaltyClient(
        threaded_shop.shop_id, threaded_shop.shop_secret, base_url=threaded_shop.url
    ) as client:
        yield client


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rees46-loyalty"]


@pytest.mark.parametrize("name", METHODS)
def test_each_method_has_the_async_signature_and_docstring(name: str) -> None:
    """The blocking methods are made from the async ones: same parameters, same docs."""
    blocking = inspect.signature(getattr(SyncLoyaltyClient, name))
    awaited = inspect.signature(getattr(LoyaltyClient, name))
    assert blocking.parameters == awaited.parameters
    assert getattr(SyncLoyaltyClient, name).__doc__ == getattr(LoyaltyClient, name).__doc__
    assert not inspect.iscoroutinefunction(getattr(SyncLoyaltyClient, name))


def test_the_constructor_takes_the_async_arguments_but_a_session() -> None:
    """Every constructor argument of LoyaltyClient but ``session`` (a loop's object)."""
    blocking = dict(inspect.signature(SyncLoyaltyClient).parameters)
    awaited = dict(inspect.signature(LoyaltyClient).parameters)
    del awaited["session"]
    assert blocking == awaited


def test_every_operation_returns_the_async_clients_results(
    sync: SyncLoyaltyClient, threaded_shop: FakeRees46
) -> None:
    """estimate, apply, confirm, change, details, history, cancel: the models, the effects."""
    calc = sync.estimate(cart_items=CART, identifier=PHONE)
    assert isinstance(calc, OrderCalculation)
    assert calc.order_to_pay == Decimal(4000)
    assert sync.apply(order_id="S-1", cart_items=CART).order_id == "S-1"
    assert sync.confirm(order_id="S-1").order_id == "S-1"
    change = sync.change(order_id="S-1", cart_items=KEPT)
    assert isinstance(change, OrderChange)
    assert change.order_total_change == Decimal(-1000)
    assert sync.details(order_id="S-1").order_total == Decimal(3000)
    assert sync.history(identifier=PHONE).orders == ()
    assert sync.cancel(order_id="S-1").order_id == "S-1"
    assert len(threaded_shop.ledger.effects_for("change", "S-1")) == 1
    assert len(threaded_shop.ledger.effects_for("cancel", "S-1")) == 1
    assert repr(sync).startswith("SyncLoyaltyClient(shop_id=")


def test_errors_are_the_async_clients_errors(sync: SyncLoyaltyClient) -> None:
    """A validation error and an API error come out as they are, typed."""
    with pytest.raises(ValidationError, match="order_id"):
        sync.details(order_id="")
    with pytest.raises(NotFoundError) as caught:
        sync.details(order_id="nope")
    assert caught.value.operation == "details"


def test_threads_share_one_loop_and_one_pool(
    sync: SyncLoyaltyClient, threaded_shop: FakeRees46
) -> None:
    """Eight threads calling at once: every call answered, one loop thread, one session."""
    before = len(loop_threads())
    results: list[Decimal] = []
    failures: list[BaseException] = []

    def shopper() -> None:
        try:
            results.extend(sync.estimate(cart_items=CART).order_to_pay for _ in range(5))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            failures.append(error)

    threads = [threading.Thread(target=shopper) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert results == [Decimal(4000)] * 40
    assert len(loop_threads()) - before <= 1
    assert threaded_shop.received("estimate") == 40


def test_hooks_and_the_idempotency_store_work_as_in_the_async_client(
    threaded_shop: FakeRees46,
) -> None:
    """A change repeated with its key is replayed from the store; the hooks see each answer."""
    seen: list[ResponseRecord] = []
    with SyncLoyaltyClient(
        threaded_shop.shop_id,
        threaded_shop.shop_secret,
        base_url=threaded_shop.url,
        hooks=Hooks(on_response=seen.append),
    ) as client:
        client.apply(order_id="S-2", cart_items=CART)
        client.confirm(order_id="S-2")
        first = client.change(order_id="S-2", cart_items=KEPT, idempotency_key="ret-1")
        again = client.change(order_id="S-2", cart_items=KEPT, idempotency_key="ret-1")
    assert first.order_total_change == again.order_total_change == Decimal(-1000)
    assert again.replayed
    assert threaded_shop.received("change") == 1
    # A change reads the order first (kept to reconcile it, should its outcome be unknown).
    assert [record.operation for record in seen] == ["apply", "confirm", "details", "change"]


def test_close_stops_the_loop_and_later_calls_are_refused(threaded_shop: FakeRees46) -> None:
    """close() ends the loop thread; a call after it raises a clear RuntimeError."""
    client = SyncLoyaltyClient(
        threaded_shop.shop_id, threaded_shop.shop_secret, base_url=threaded_shop.url
    )
    client.estimate(cart_items=CART)
    (thread,) = [t for t in loop_threads() if t.is_alive()][-1:]
    client.close()
    client.close()  # idempotent
    assert client.closed
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        client.estimate(cart_items=CART)


def test_a_view_shares_the_loop_pool_and_store(sync: SyncLoyaltyClient) -> None:
    """with_options() on the sync client: same runner, same session, same store."""
    view = sync.with_options(timeout=3, retry=RetryPolicy.disabled())
    assert view.estimate(cart_items=CART).order_to_pay == Decimal(4000)
    assert view._runner is sync._runner
    assert view._client._sessions is sync._client._sessions
    assert view.idempotency is sync.idempotency
    assert view.retry_policy == RetryPolicy.disabled()
    view.close()  # a view owns nothing
    assert not sync.closed
    assert sync.estimate(cart_items=CART).order_to_pay == Decimal(4000)


def test_a_forgotten_close_warns_and_stops_the_thread(threaded_shop: FakeRees46) -> None:
    """A used client dropped unclosed: a ResourceWarning naming it and the cure."""
    client = SyncLoyaltyClient(
        threaded_shop.shop_id, threaded_shop.shop_secret, base_url=threaded_shop.url
    )
    client.estimate(cart_items=CART)
    thread = client._runner._thread
    assert thread is not None
    warning = r"unclosed SyncLoyaltyClient\(.*client\.close\(\)"
    with pytest.warns(ResourceWarning, match=warning):  # noqa: PT031 - gc warns
        del client
        gc.collect()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_an_interrupted_change_still_finishes_and_records_its_outcome(
    threaded_shop: FakeRees46,
) -> None:
    """Ctrl-C while change waits: the caller gets KeyboardInterrupt, the change runs to its end
    on the client's loop, and the same change sent again is replayed, not applied twice."""
    entered, release = threading.Event(), threading.Event()

    async def hold_change(request: ApiRequest, call_next: Handler) -> ApiResponse:
        response = await call_next(request)
        if request.operation.name == "change":
            entered.set()
            while not release.is_set():  # the answer is in; its record is not written yet
                await _pause()
        return response

    def interrupt() -> None:
        entered.wait(timeout=30)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    with SyncLoyaltyClient(
        threaded_shop.shop_id,
        threaded_shop.shop_secret,
        base_url=threaded_shop.url,
        middlewares=[hold_change],
    ) as client:
        client.apply(order_id="S-3", cart_items=CART)
        client.confirm(order_id="S-3")
        threading.Thread(target=interrupt).start()
        with pytest.raises(KeyboardInterrupt):
            client.change(order_id="S-3", cart_items=KEPT, idempotency_key="ret-3")
        release.set()
        again = client.change(order_id="S-3", cart_items=KEPT, idempotency_key="ret-3")
    assert again.replayed
    assert again.order_total_change == Decimal(-1000)
    assert threaded_shop.received("change") == 1
    assert len(threaded_shop.ledger.effects_for("change", "S-3")) == 1


async def _pause() -> None:
    import asyncio  # noqa: PLC0415 - the only async line of this module

    await asyncio.sleep(0.001)


def _fork_and_report(body: object) -> int:
    """Run *body* in a forked child; its exit status (0 = the child's checks held)."""
    assert callable(body)
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock; that is the case
        # under test, and the child touches no lock held by another thread.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            code = 0 if body() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_client_used_before_a_fork_refuses_to_work_in_the_child(
    sync: SyncLoyaltyClient,
) -> None:
    """The loop thread does not survive fork: the child gets a RuntimeError saying so."""
    sync.estimate(cart_items=CART)

    def child() -> bool:
        try:
            sync.estimate(cart_items=CART)
        except RuntimeError as error:
            return "forked" in str(error) and "worker_process_init" in str(error)
        return False

    assert _fork_and_report(child) == 0
    assert sync.estimate(cart_items=CART).order_to_pay == Decimal(4000)  # the parent's still works


def test_a_client_made_but_unused_before_a_fork_starts_afresh_in_the_child(
    threaded_shop: FakeRees46,
) -> None:
    """Made at import time (as a Celery or gunicorn app would), used only in the child."""
    client = SyncLoyaltyClient(
        threaded_shop.shop_id, threaded_shop.shop_secret, base_url=threaded_shop.url
    )

    def child() -> bool:
        with client:
            return client.estimate(cart_items=CART).order_to_pay == Decimal(4000)

    assert _fork_and_report(child) == 0
    assert threaded_shop.received("estimate") == 1
    client.close()


def test_a_view_of_a_dropped_client_forgotten_unclosed_warns_and_stops(
    threaded_shop: FakeRees46,
) -> None:
    """The view alone keeps the loop; dropped unclosed, it warns as the client does."""
    view = SyncLoyaltyClient(
        threaded_shop.shop_id, threaded_shop.shop_secret, base_url=threaded_shop.url
    ).with_options(timeout=5)
    view.estimate(cart_items=CART)
    thread = view._runner._thread
    assert thread is not None
    with pytest.warns(ResourceWarning, match=r"unclosed SyncLoyaltyClient\("):  # noqa: PT031
        del view
        gc.collect()
    thread.join(timeout=30)
    assert not thread.is_alive()
