"""reconcile(): an unknown outcome decided from the API, recorded, and its refund derived."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from rees46_loyalty import (
    CartItem,
    IdempotencyError,
    LoyaltyClient,
    OrderChange,
    OrderRef,
    OutcomeUnknownError,
)
from rees46_loyalty.idempotency import (
    IdempotencyStore,
    Intent,
    RedisIdempotencyStore,
)
from rees46_loyalty.middleware.idempotency import record_key
from rees46_loyalty.testing import FakeClock, FakeRees46, Fault
from tests.conftest import PHONE, SHOP_ID, SHOP_SECRET

pytestmark = pytest.mark.integration

CART = [
    CartItem(product_id="A", price=Decimal("1000"), quantity=4),
    CartItem(product_id="B", price=Decimal("350.50"), quantity=2),
]
RETURN = [
    CartItem(product_id="A", price=Decimal("1000"), quantity=3),
    CartItem(product_id="B", price=Decimal("350.50"), quantity=2),
]
OTHER = [CartItem(product_id="A", price=Decimal("1000"), quantity=1)]


@pytest.fixture
def fake(fake_in_one_style: FakeRees46) -> FakeRees46:
    """The shared fake server, in one envelope style: these tests are about other layers."""
    return fake_in_one_style


@pytest.fixture
async def client(
    fake: FakeRees46, store: IdempotencyStore, clock: FakeClock
) -> AsyncIterator[LoyaltyClient]:
    async with fake.client(clock=clock, idempotency=store) as c:
        await c.apply(order_id="1", cart_items=CART, identifier=PHONE, charge_bonuses=True)
        await c.confirm(order_id="1")
        yield c


def _committed_changes(fake: FakeRees46) -> list[Decimal]:
    return [Decimal(str(e.order_total_change)) for e in fake.ledger.effects_for("change")]


async def test_a_change_whose_answer_was_lost_is_applied_with_its_exact_refund(
    fake: FakeRees46, client: LoyaltyClient
) -> None:
    """Committed, then the answer dropped: applied, the ledger's refund, and the redelivered
    change is replayed with it (nothing sent)."""
    fake.faults.on("change", Fault.drop_after_commit())
    with pytest.raises(OutcomeUnknownError, match=r"reconcile\(order_id='1'\)") as lost:
        await client.change(order_id="1", cart_items=RETURN)
    assert lost.value.order_id == "1"
    found = await client.reconcile(order_id="1")
    [refund] = _committed_changes(fake)
    assert (found.applied, found.operation, found.decided_by) == (True, "change", "details")
    assert isinstance(found.result, OrderChange)
    assert found.result.order_total_change == found.order_total_change == refund
    again = await client.change(order_id="1", cart_items=RETURN)
    assert again.replayed is True
    assert again.order_total_change == refund
    assert len(fake.ledger.requests_for("change")) == 1


async def test_a_change_never_processed_is_not_applied_and_is_sent_again(
    fake: FakeRees46, client: LoyaltyClient
) -> None:
    """A 504 before processing: not applied; the redelivery is sent once and succeeds."""
    fake.faults.on("change", Fault.gateway_timeout())
    with pytest.raises(OutcomeUnknownError):
        await client.change(order_id="1", cart_items=RETURN)
    found = await client.reconcile(order_id="1")
    assert (found.applied, found.result, found.order_total_change) == (False, None, Decimal(0))
    again = await client.change(order_id="1", cart_items=RETURN)
    assert again.replayed is False
    assert _committed_changes(fake) == [again.order_total_change]


async def test_someone_else_changing_the_order_keeps_it_unknown(
    fake: FakeRees46, client: LoyaltyClient, clock: FakeClock
) -> None:
    """The order holds neither its old cart nor the asked one: OutcomeUnknownError, nothing
    sent or recorded, the order still blocked."""
    fake.faults.on("change", Fault.drop_after_commit())
    with pytest.raises(OutcomeUnknownError):
        await client.change(order_id="1", cart_items=RETURN)
    async with fake.client(clock=clock, idempotency=None) as other_system:
        await other_system.change(order_id="1", cart_items=OTHER)
    with pytest.raises(OutcomeUnknownError, match="someone else changed it"):
        await client.reconcile(order_id="1")
    with pytest.raises(OutcomeUnknownError):
        await client.change(order_id="1", cart_items=RETURN)
    assert len(fake.ledger.requests_for("change")) == 2  # the lost one and the other system's


async def test_a_cancel_whose_answer_was_lost_is_decided_from_history(
    fake: FakeRees46, client: LoyaltyClient
) -> None:
    """Every attempt's answer lost after commit: applied (the order is cancelled in the
    member's history); the next cancel is replayed."""
    fake.faults.on("cancel", Fault.gateway_timeout(after_commit=True), times=3)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the 504 after every attempt
        await client.cancel(order_id="1")
    found = await client.reconcile(order_id="1")
    assert (found.applied, found.operation, found.decided_by) == (True, "cancel", "history")
    assert isinstance(found.result, OrderRef)
    again = await client.cancel(order_id="1")
    assert again.replayed is True
    assert len(fake.ledger.effects_for("cancel")) == 1


async def test_nothing_to_reconcile_says_so(client: LoyaltyClient) -> None:
    """No record of the order: IdempotencyError; a finished change: its recorded outcome."""
    with pytest.raises(IdempotencyError, match="nothing to reconcile"):
        await client.reconcile(order_id="never-seen")
    done = await client.change(order_id="1", cart_items=RETURN, idempotency_key="job-1")
    found = await client.reconcile(order_id="1", idempotency_key="job-1")
    assert (found.applied, found.decided_by) == (True, "record")
    assert found.result == done


async def test_a_dead_worker_is_reconciled_from_another_process(
    fake: FakeRees46, redis_url: str
) -> None:
    """A worker process is SIGKILLed while the server holds its change (which then commits);
    another process sharing the Redis store reconciles it, and the redelivery is replayed."""
    namespace = f"proc-{uuid.uuid4().hex}"
    script = f"""
import asyncio
from decimal import Decimal
from rees46_loyalty import CartItem, LoyaltyClient
from rees46_loyalty.idempotency import RedisIdempotencyStore

async def main():
    store = RedisIdempotencyStore({redis_url!r}, namespace={namespace!r}, ttl=60, lease=1)
    async with LoyaltyClient(
        {SHOP_ID!r}, {SHOP_SECRET!r}, base_url={fake.url!r}, idempotency=store, timeout=0.8
    ) as client:
        cart = [CartItem(product_id="A", price=Decimal("1000"), quantity=3),
                CartItem(product_id="B", price=Decimal("350.50"), quantity=2)]
        await client.change(order_id="1", cart_items=cart)

asyncio.run(main())
"""
    async with fake.client(idempotency=None) as setup:
        await setup.apply(order_id="1", cart_items=CART, identifier=PHONE)
        await setup.confirm(order_id="1")
    fake.faults.on("change", Fault.latency(0.3))  # held, then committed: nobody hears it
    worker = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
    await fake.wait_received("change")
    worker.kill()
    await worker.wait()
    store = RedisIdempotencyStore(redis_url, namespace=namespace, ttl=60, lease=1)
    async with fake.client(idempotency=store, timeout=0.8) as other:
        for _ in range(200):  # the change commits, and the dead worker's lease runs out
            book = await store.get(record_key(SHOP_ID, "1"))
            if fake.ledger.effects_for("change") and book is not None and book.lease is None:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(OutcomeUnknownError):  # the redelivery, before anyone reconciled
            await other.change(order_id="1", cart_items=RETURN)
        found = await other.reconcile(order_id="1")
        again = await other.change(order_id="1", cart_items=RETURN)
    await store.close()
    [refund] = _committed_changes(fake)
    assert found.applied is True
    assert again.replayed is True
    assert again.order_total_change == refund


def test_intents_name_their_key() -> None:
    """An explicit key names the intent inside its order's book."""
    assert Intent(operation="change", fingerprint="f", key="job").id == "k:job"


async def test_a_change_found_not_applied_that_lands_late_is_derived_not_lost(
    fake: FakeRees46, store: IdempotencyStore, clock: FakeClock
) -> None:
    """The change times out while the server still holds it; reconcile (at once) finds it not
    applied; then the server commits it. Its redelivery finds the order holding its cart and
    answers the derived refund, the ledger's, without sending it again."""
    async with fake.client(clock=clock, idempotency=store, timeout=0.1) as client:
        await client.apply(order_id="1", cart_items=CART, identifier=PHONE)
        await client.confirm(order_id="1")
        fake.faults.on("change", Fault.latency(0.3))
        with pytest.raises(OutcomeUnknownError):
            await client.change(order_id="1", cart_items=RETURN)
        found = await client.reconcile(order_id="1")
        assert found.applied is False
        for _ in range(200):  # the server's real-time hold ends, and it commits
            if fake.ledger.effects_for("change"):
                break
            await asyncio.sleep(0.01)
        again = await client.change(order_id="1", cart_items=RETURN)
    [refund] = _committed_changes(fake)
    assert again.order_total_change == refund
    assert again.replayed is True
    assert len(fake.ledger.requests_for("change")) == 1
