"""The holes an attack on reconcile(), the SQLite store and the sync client found, one test each."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import threading
import warnings
from decimal import Decimal
from pathlib import Path

import pytest

from rees46_loyalty import (
    ApiRequest,
    ApiResponse,
    CartItem,
    Handler,
    Hooks,
    LoyaltyError,
    RequestRecord,
    RetryPolicy,
    SyncLoyaltyClient,
)
from rees46_loyalty._serialization import dumps
from rees46_loyalty.idempotency import MemoryIdempotencyStore, SqliteIdempotencyStore
from rees46_loyalty.testing import FakeClock, FakeRees46, Fault
from tests.conftest import PHONE

pytestmark = pytest.mark.integration

CART = [
    CartItem(product_id="A", price=Decimal("1000"), quantity=4),
    CartItem(product_id="B", price=Decimal("350.50"), quantity=2),
]
RETURN = [
    CartItem(product_id="A", price=Decimal("1000"), quantity=3),
    CartItem(product_id="B", price=Decimal("350.50"), quantity=2),
]
SMALLER = [CartItem(product_id="A", price=Decimal("1000"), quantity=1)]
NO_RETRY = RetryPolicy.disabled()


@pytest.fixture
def fake(fake_in_one_style: FakeRees46) -> FakeRees46:
    """The shared fake server, in one envelope style: these tests are about other layers."""
    return fake_in_one_style


async def _confirmed(fake: FakeRees46, order_id: str) -> None:
    async with fake.client(idempotency=None) as setup:
        await setup.apply(order_id=order_id, cart_items=CART, identifier=PHONE)
        await setup.confirm(order_id=order_id)


async def test_an_unknown_apply_of_a_new_cart_never_processed_is_not_reported_applied(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """apply(cart 1) succeeds; apply(cart 2) gets a 504 before processing: reconcile must
    not say applied (the order still holds cart 1), and the redelivery must be sent."""
    store = MemoryIdempotencyStore(clock=clock)
    async with fake.client(clock=clock, idempotency=store, retry=NO_RETRY) as client:
        await client.apply(order_id="1", cart_items=CART, identifier=PHONE)
        fake.faults.on("apply", Fault.gateway_timeout())
        with pytest.raises(LoyaltyError) as lost:
            await client.apply(order_id="1", cart_items=SMALLER, identifier=PHONE)
        assert lost.value.outcome_unknown
        found = await client.reconcile(order_id="1")
        again = await client.apply(order_id="1", cart_items=SMALLER, identifier=PHONE)
    assert found.applied is False
    assert again.replayed is False
    assert again.order_total == Decimal("1000")


async def test_reconcile_while_the_server_still_holds_the_change_does_not_lose_the_refund(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """A change times out while the server holds it; reconcile runs at once (the worker
    recipe), then the server commits: the refund must reach the shop (a reconciliation or
    the redelivery's answer), matching the ledger."""
    await _confirmed(fake, "1")
    store = MemoryIdempotencyStore(clock=clock)
    fake.faults.on("change", Fault.latency(0.4))
    async with fake.client(clock=clock, idempotency=store, retry=NO_RETRY, timeout=0.1) as client:
        with pytest.raises(LoyaltyError) as lost:
            await client.change(order_id="1", cart_items=RETURN)
        assert lost.value.outcome_unknown
        found = await client.reconcile(order_id="1")
        for _ in range(100):  # the server's own real-time hold ends, and it commits
            if fake.ledger.effects_for("change"):
                break
            await asyncio.sleep(0.01)
        known = found.result.order_total_change if found.applied else None  # type: ignore[union-attr]
        if known is None:
            try:
                known = (await client.change(order_id="1", cart_items=RETURN)).order_total_change
            except LoyaltyError:
                known = None
    assert known == fake.ledger.refunds("1")
    assert len(fake.ledger.effects_for("change")) == 1


async def test_a_store_failure_while_noting_a_change_is_an_idempotency_error(
    fake: FakeRees46, tmp_path: Path
) -> None:
    """Another process breaks the SQLite file between the lease and the note: the change
    raises an IdempotencyError (a LoyaltyError), sends nothing."""
    await _confirmed(fake, "1")
    path = tmp_path / "idem.db"
    store = SqliteIdempotencyStore(path)

    async def break_the_file(request: ApiRequest, call_next: Handler) -> ApiResponse:
        response = await call_next(request)
        if request.operation.name == "details":
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("DROP TABLE fields")
            other.close()
        return response

    async with fake.client(idempotency=store, middlewares=[break_the_file]) as client:
        with pytest.raises(LoyaltyError):
            await client.change(order_id="1", cart_items=RETURN)
    await store.close()
    assert fake.ledger.requests_for("change") == []


async def test_a_history_status_that_only_mentions_cancel_is_not_a_cancelled_order(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """A cancel lost before processing; history answers the order 'cancel_requested': not
    cancelled, so reconcile must not say applied."""
    await _confirmed(fake, "1")
    store = MemoryIdempotencyStore(clock=clock)
    history = (
        b'{"status":"success","payload":{"orders":[{"id":"1","date":"2026-01-01 00:00:00",'
        b'"status":"cancel_requested","total":"4701","items":[]}]}}'
    )
    async with fake.client(clock=clock, idempotency=store, retry=NO_RETRY) as client:
        fake.faults.on("cancel", Fault.gateway_timeout())
        with pytest.raises(LoyaltyError):
            await client.cancel(order_id="1")
        fake.faults.on(
            "history",
            Fault.raw_answer(history, headers={"Content-Type": "application/json"}),
        )
        found = await client.reconcile(order_id="1")
    assert fake.ledger.effects_for("cancel") == []
    assert found.applied is False


def test_closing_the_sync_client_from_its_own_hook_is_refused_not_a_hang(
    threaded_shop: FakeRees46,
) -> None:
    """A hook that calls close(): a RuntimeError in the hook (logged), and the call ends."""
    errors: list[BaseException] = []
    holder: list[SyncLoyaltyClient] = []

    def closing_hook(_: RequestRecord) -> None:
        try:
            holder[0].close()
        except RuntimeError as error:
            errors.append(error)

    client = SyncLoyaltyClient(
        threaded_shop.shop_id,
        threaded_shop.shop_secret,
        base_url=threaded_shop.url,
        hooks=Hooks(on_request=closing_hook),
    )
    holder.append(client)
    caller = threading.Thread(target=_swallow, args=(client,), daemon=True)
    caller.start()
    caller.join(timeout=5)  # a bounded wait: the hang is the finding
    assert not caller.is_alive()
    assert errors
    assert not client.closed
    client.close()  # from another thread, it closes
    assert client.closed


def _swallow(client: SyncLoyaltyClient) -> None:
    with contextlib.suppress(LoyaltyError):
        client.estimate(cart_items=CART)


async def test_a_change_of_a_line_flag_only_is_sent(fake: FakeRees46, clock: FakeClock) -> None:
    """Same lines, product A no longer payable by bonuses: the API recomputes the order and
    the money moves; the SDK must send it and report the ledger's amount."""
    store = MemoryIdempotencyStore(clock=clock)
    async with fake.client(clock=clock, idempotency=store) as client:
        await client.apply(order_id="1", cart_items=CART, identifier=PHONE, charge_bonuses=True)
        await client.confirm(order_id="1")
        flagged = [
            CartItem(product_id="A", price=Decimal("1000"), quantity=4, bonusable=False),
            CartItem(product_id="B", price=Decimal("350.50"), quantity=2),
        ]
        async with fake.client(idempotency=None) as probe:
            estimate = await probe.estimate(
                cart_items=flagged, identifier=PHONE, charge_bonuses=True
            )
        before = await client.details(order_id="1")
        assert estimate.order_to_pay != before.order_to_pay  # the flag moves money
        changed = await client.change(order_id="1", cart_items=flagged)
    assert changed.order_total_change == fake.ledger.refunds("1") != 0


def test_a_view_keeps_working_when_only_the_view_is_kept(threaded_shop: FakeRees46) -> None:
    """Keep only the view (``self.api = make_client().with_options(...)``): it still works."""
    client = SyncLoyaltyClient(
        threaded_shop.shop_id, threaded_shop.shop_secret, base_url=threaded_shop.url
    )
    client.estimate(cart_items=CART)
    view = client.with_options(timeout=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del client
        gc.collect()
    try:
        assert view.estimate(cart_items=CART).order_total == Decimal("4701")
    finally:
        view.close()


def test_a_view_of_a_dropped_client_can_be_closed(threaded_shop: FakeRees46) -> None:
    """The view is all the caller has: closing it stops the loop thread it started."""
    before = {t.ident for t in threading.enumerate() if t.name == "rees46-loyalty"}
    view = SyncLoyaltyClient(
        threaded_shop.shop_id, threaded_shop.shop_secret, base_url=threaded_shop.url
    ).with_options(timeout=5)
    gc.collect()
    view.estimate(cart_items=CART)
    view.close()
    left = [
        t
        for t in threading.enumerate()
        if t.name == "rees46-loyalty" and t.ident not in before and t.is_alive()
    ]
    assert left == []


async def test_a_wrong_404_before_a_change_does_not_make_its_refund_unrecoverable(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """details answers one spurious 404, the change commits and its answer is dropped: the
    refund must still be recoverable (reconcile) or the change never sent."""
    await _confirmed(fake, "1")
    store = MemoryIdempotencyStore(clock=clock)
    not_found = b'{"status":"error","payload":{"message":"Order 1 not found"}}'
    fake.faults.on(
        "details",
        Fault.raw_answer(
            not_found, status=404, headers={"Content-Type": "application/json"}, after_commit=False
        ),
    )
    fake.faults.on("change", Fault.drop_after_commit())
    known: Decimal | None
    async with fake.client(clock=clock, idempotency=store, retry=NO_RETRY) as client:
        try:
            answer = await client.change(order_id="1", cart_items=RETURN)
            known = answer.order_total_change
        except LoyaltyError:
            try:
                found = await client.reconcile(order_id="1")
                known = found.result.order_total_change if found.applied else None  # type: ignore[union-attr]
            except LoyaltyError:
                known = None
    if fake.ledger.effects_for("change"):
        assert known == fake.ledger.refunds("1")


async def test_a_deleted_database_file_does_not_split_the_order_in_two(
    fake: FakeRees46, tmp_path: Path
) -> None:
    """Worker 1 has the file open when it is deleted; worker 2, started after, makes a fresh
    file and holds a change (the server is slow); the same change redelivered to worker 1 must
    not be sent a second time (a change already in flight when the file goes cannot be known
    to a worker that starts on a fresh file: losing the file loses its records)."""
    await _confirmed(fake, "1")
    path = tmp_path / "idem.db"
    first, second = SqliteIdempotencyStore(path), SqliteIdempotencyStore(path)
    fake.faults.on("change", Fault.latency(0.3))
    async with (
        fake.client(idempotency=first) as worker1,
        fake.client(idempotency=second) as worker2,
    ):
        assert await first.get("1") is None  # worker 1 is up: the file is open
        for suffix in ("", "-wal", "-shm"):
            await asyncio.to_thread(Path(f"{path}{suffix}").unlink, missing_ok=True)
        held = asyncio.ensure_future(worker2.change(order_id="1", cart_items=RETURN))
        await fake.wait_received("change")
        outcomes = await asyncio.gather(
            worker1.change(order_id="1", cart_items=RETURN), held, return_exceptions=True
        )
    await first.close()
    await second.close()
    assert all(not isinstance(o, BaseException) or isinstance(o, LoyaltyError) for o in outcomes)
    assert len(fake.ledger.effects_for("change")) == 1


async def test_a_details_answer_with_a_product_on_two_lines_is_counted_by_units(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """The order holds A x2, the server lists it as two lines of one unit: returning one unit
    (A x1) is a real change, sent, with the ledger's refund."""
    async with fake.client(idempotency=None) as setup:
        two = [CartItem(product_id="A", price=Decimal("1000"), quantity=2)]
        await setup.apply(order_id="1", cart_items=two, identifier=PHONE)
        await setup.confirm(order_id="1")
    payload = dict(fake.book.details("1"))
    [line] = payload["items"]
    half = {
        name: (value / 2 if isinstance(value, Decimal) and name != "price" else value)
        for name, value in line.items()
    }
    payload["items"] = [{**half, "uniqid": "u1"}, {**half, "uniqid": "u2"}]
    split = dumps({"status": "success", "payload": payload})
    fake.faults.on("details", Fault.raw_answer(split, headers={"Content-Type": "application/json"}))
    store = MemoryIdempotencyStore(clock=clock)
    one = [CartItem(product_id="A", price=Decimal("1000"), quantity=1)]
    async with fake.client(clock=clock, idempotency=store) as client:
        changed = await client.change(order_id="1", cart_items=one)
    assert changed.order_total_change == fake.ledger.refunds("1") != 0


async def test_a_confirm_of_an_order_cancelled_before_it_is_not_reported_applied(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """Created, cancelled, then a (late) confirm gets a 504 before processing: reconcile must
    not say applied, and the redelivered confirm must not answer success."""
    store = MemoryIdempotencyStore(clock=clock)
    async with fake.client(clock=clock, idempotency=store, retry=NO_RETRY) as client:
        await client.apply(order_id="1", cart_items=CART, identifier=PHONE)
        await client.cancel(order_id="1")
        fake.faults.on("confirm", Fault.gateway_timeout())
        with pytest.raises(LoyaltyError):
            await client.confirm(order_id="1", idempotency_key="late-confirm")
        found = await client.reconcile(order_id="1", idempotency_key="late-confirm")
        assert fake.ledger.effects_for("confirm") == []
        assert found.applied is False
        with pytest.raises(LoyaltyError, match="Could not confirm"):
            await client.confirm(order_id="1", idempotency_key="late-confirm")
