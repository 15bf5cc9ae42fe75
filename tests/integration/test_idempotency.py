"""The idempotency layer against the fake server, with the memory store and a real Redis.

Every test runs once per store; each asserts what reached the server with the fake's ledger.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from rees46_loyalty import (
    CartItem,
    IdempotencyError,
    LoyaltyClient,
    OrderStatusError,
    OutcomeUnknownError,
    ServerError,
)
from rees46_loyalty.idempotency import (
    IdempotencyStore,
    Intent,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
    SqliteIdempotencyStore,
    State,
)
from rees46_loyalty.middleware.idempotency import record_key
from rees46_loyalty.testing import FakeClock, FakeRees46, Fault
from tests.conftest import PHONE, SHOP_ID
from tests.integration.conftest import age_redis_book

pytestmark = pytest.mark.integration

CART = [CartItem(product_id="A", price=Decimal("1000"), quantity=4)]
SMALLER = [CartItem(product_id="A", price=Decimal("1000"), quantity=3)]
SMALLEST = [CartItem(product_id="A", price=Decimal("1000"), quantity=1)]


@pytest.fixture
async def client(
    fake: FakeRees46, store: IdempotencyStore, clock: FakeClock
) -> AsyncIterator[LoyaltyClient]:
    """A client of the fake server with the idempotency layer on the store under test."""
    async with fake.client(clock=clock, idempotency=store) as c:
        yield c


async def confirmed(client: LoyaltyClient, order_id: str = "1") -> None:
    await client.apply(order_id=order_id, cart_items=CART, identifier=PHONE)
    await client.confirm(order_id=order_id)


def key_of(order_id: str) -> str:
    """The store key of an order's book, as the client makes it."""
    return record_key(SHOP_ID, order_id)


def sent(fake: FakeRees46, operation: str) -> int:
    return len(fake.ledger.requests_for(operation))


async def test_a_repeated_change_replays_the_first_refund(
    fake: FakeRees46, client: LoyaltyClient
) -> None:
    """The same change again: the first order_total_change, replayed, and one change sent."""
    await confirmed(client)
    first = await client.change(order_id="1", cart_items=SMALLER)
    again = await client.change(order_id="1", cart_items=SMALLER)
    assert again == first
    assert again.order_total_change == Decimal(-1000) == first.order_total_change
    assert (first.replayed, again.replayed) == (False, True)
    assert sent(fake, "change") == 1
    assert len(fake.ledger.effects_for("change")) == 1


async def test_a_repeated_cancel_replays_the_first_success(
    fake: FakeRees46, client: LoyaltyClient
) -> None:
    """The duplicate cancel answers the first success instead of a terminal error."""
    await confirmed(client)
    first = await client.cancel(order_id="1")
    again = await client.cancel(order_id="1")
    assert again == first
    assert again.replayed is True
    assert sent(fake, "cancel") == 1


async def test_every_finished_intent_on_an_order_is_kept(
    fake: FakeRees46, client: LoyaltyClient
) -> None:
    """change X, change Y, then X redelivered: X is replayed with its own refund, not sent."""
    await confirmed(client)
    x1 = await client.change(order_id="1", cart_items=SMALLER)
    y = await client.change(order_id="1", cart_items=SMALLEST)
    x2 = await client.change(order_id="1", cart_items=SMALLER)
    assert sent(fake, "change") == 2
    assert (x1.order_total_change, y.order_total_change, x2.order_total_change) == (
        Decimal(-1000),
        Decimal(-2000),
        Decimal(-1000),
    )
    assert (x1.replayed, y.replayed, x2.replayed) == (False, False, True)


async def test_a_redelivered_change_is_replayed_after_other_jobs_on_its_order(
    fake: FakeRees46, client: LoyaltyClient
) -> None:
    """change A, the order's confirm redelivered, then change A redelivered: A is replayed.

    One record per order kept only the last intent, so the confirm in between made the
    redelivered change go again and answer 0.
    """
    await confirmed(client)
    first = await client.change(order_id="1", cart_items=SMALLER)
    await client.confirm(order_id="1")  # the confirm job, redelivered after a crash
    again = await client.change(order_id="1", cart_items=SMALLER)
    assert again.replayed is True
    assert again.order_total_change == first.order_total_change == Decimal(-1000)
    assert sent(fake, "change") == 1


async def test_the_same_cart_in_another_line_order_is_the_same_intent(
    fake: FakeRees46, client: LoyaltyClient
) -> None:
    """A job that rebuilds its cart in another order of lines is replayed, not sent again."""
    two_lines = [*SMALLER, CartItem(product_id="B", price=Decimal("500"), quantity=1)]
    await client.apply(order_id="1", cart_items=[*CART, two_lines[1]], identifier=PHONE)
    await client.confirm(order_id="1")
    first = await client.change(order_id="1", cart_items=two_lines)
    again = await client.change(order_id="1", cart_items=list(reversed(two_lines)))
    assert again.replayed is True
    assert again.order_total_change == first.order_total_change
    assert sent(fake, "change") == 1


async def test_explicit_keys_make_a_genuine_repeat_possible(
    fake: FakeRees46, client: LoyaltyClient
) -> None:
    """Return 1, return 2, return 1 again under their own job ids: three changes are sent."""
    await confirmed(client)
    await client.change(order_id="1", cart_items=SMALLER, idempotency_key="return-1")
    await client.change(order_id="1", cart_items=SMALLEST, idempotency_key="return-2")
    third = await client.change(order_id="1", cart_items=SMALLER, idempotency_key="return-3")
    assert third.replayed is False
    assert third.order_total_change == Decimal(2000)
    assert sent(fake, "change") == 3


async def test_an_explicit_key_reused_with_another_request_is_refused(
    fake: FakeRees46, client: LoyaltyClient
) -> None:
    """Stripe's rule: one key, one request. The second request is not sent."""
    await confirmed(client)
    await client.change(order_id="1", cart_items=SMALLER, idempotency_key="job-7")
    with pytest.raises(IdempotencyError, match="job-7"):
        await client.change(order_id="1", cart_items=SMALLEST, idempotency_key="job-7")
    replay = await client.change(order_id="1", cart_items=SMALLER, idempotency_key="job-7")
    assert replay.replayed is True
    assert sent(fake, "change") == 1


async def test_a_change_to_the_cart_the_order_holds_is_never_sent(
    fake: FakeRees46, client: LoyaltyClient
) -> None:
    """Two jobs with their own keys are two intents; but the second asks for the cart the
    order already holds, which the API would answer with order_total_change 0 (the refund
    trap): it is refused, not sent."""
    await confirmed(client)
    await client.change(order_id="1", cart_items=SMALLER, idempotency_key="job-1")
    with pytest.raises(OutcomeUnknownError, match="already holds the cart") as refused:
        await client.change(order_id="1", cart_items=SMALLER, idempotency_key="job-2")
    assert refused.value.idempotency_key == "job-2"
    assert sent(fake, "change") == 1


async def test_transient_failures_leave_no_record(
    fake: FakeRees46, client: LoyaltyClient, store: IdempotencyStore
) -> None:
    """A change that failed with 503s (never processed) is sent afresh next time."""
    await confirmed(client)
    fake.faults.on("change", Fault.unavailable(), times=3)
    with pytest.raises(ServerError):
        await client.change(order_id="1", cart_items=SMALLER)
    book = await store.get(key_of("1"))
    assert book is not None
    assert book.lease is None
    assert [o.intent.operation for o in book.outcomes.values()] == ["apply", "confirm"]
    changed = await client.change(order_id="1", cart_items=SMALLER)
    assert changed.order_total_change == Decimal(-1000)
    assert sent(fake, "change") == 4
    assert len(fake.ledger.effects_for("change")) == 1


async def test_terminal_errors_are_replayed_without_sending(
    fake: FakeRees46, client: LoyaltyClient
) -> None:
    """A cancel the order's state refused is refused again from the record."""
    with pytest.raises(OrderStatusError) as first:
        await client.cancel(order_id="404")
    with pytest.raises(OrderStatusError) as again:
        await client.cancel(order_id="404")
    assert again.value.message == first.value.message
    assert (first.value.attempts, again.value.attempts) == (1, 0)
    assert sent(fake, "cancel") == 1


async def test_an_unknown_change_is_never_resent_until_cleared(
    fake: FakeRees46, client: LoyaltyClient, store: IdempotencyStore
) -> None:
    """The answer of a change is lost after commit: the same change is refused without sending
    until the caller reconciles and clears the record."""
    await confirmed(client)
    fake.faults.on("change", Fault.drop_after_commit())
    with pytest.raises(OutcomeUnknownError):
        await client.change(order_id="1", cart_items=SMALLER)
    with pytest.raises(OutcomeUnknownError, match="reconcile") as again:
        await client.change(order_id="1", cart_items=SMALLER)
    assert again.value.attempts == 0
    # Every mutating call on the order is blocked, identical or not (a finished one, like the
    # order's confirm, is still replayed: that sends nothing).
    with pytest.raises(OutcomeUnknownError, match="a change on order '1'"):
        await client.change(order_id="1", cart_items=SMALLEST)
    with pytest.raises(OutcomeUnknownError):
        await client.cancel(order_id="1")
    assert (await client.confirm(order_id="1")).replayed is True
    assert (sent(fake, "change"), sent(fake, "cancel")) == (1, 0)
    book = await store.get(key_of("1"))
    assert book is not None
    assert book.blocker is not None
    assert book.blocker.state is State.UNKNOWN
    details = await client.details(order_id="1")  # reconcile: the change did happen
    assert details.order_total == Decimal(3000)
    forgotten = await client.clear_idempotency(order_id="1")
    assert [o.intent.operation for o in forgotten] == ["change"]
    book = await store.get(key_of("1"))
    assert book is not None
    assert book.blocker is None


async def test_fifty_concurrent_changes_send_one(fake: FakeRees46, store: IdempotencyStore) -> None:
    """50 tasks run the same change on one order at once: one request, 50 equal amounts."""
    if isinstance(store, MemoryIdempotencyStore):
        store = MemoryIdempotencyStore()  # on the real clock, like the client: waiters wait
    async with fake.client(idempotency=store) as client:
        await confirmed(client)
        fake.faults.on("change", Fault.latency(0.05))  # keep the first one in flight a while
        results = await asyncio.gather(
            *(client.change(order_id="1", cart_items=SMALLER) for _ in range(50))
        )
    assert sent(fake, "change") == 1
    assert {r.order_total_change for r in results} == {Decimal(-1000)}
    assert sum(not r.replayed for r in results) == 1


async def test_waiting_for_a_busy_key_is_bounded(
    fake: FakeRees46, store: IdempotencyStore, clock: FakeClock
) -> None:
    """A key held by a live call longer than idempotency_wait: IdempotencyError, nothing sent.

    The memory store waits on the fake clock; Redis leases run on Redis time, so that client
    waits a real tenth of a second.
    """
    intent = Intent(operation="cancel", fingerprint="other", safety="cancel")
    await store.begin(key_of("1"), intent, owner="someone-else")
    redis = isinstance(store, RedisIdempotencyStore | SqliteIdempotencyStore)  # real time
    limit = 0.1 if redis else 5
    async with fake.client(
        clock=None if redis else clock, idempotency=store, idempotency_wait=limit
    ) as client:
        with pytest.raises(IdempotencyError, match=f"waited {limit:g}s for another call") as caught:
            await client.cancel(order_id="1")
    assert caught.value.retryable is True
    assert sent(fake, "cancel") == 0


async def test_a_dead_holder_of_a_change_leaves_an_unknown_outcome(
    fake: FakeRees46, redis_url: str, clock: FakeClock
) -> None:
    """A change whose holder died (its lease ran out) is never sent again by the next caller."""
    stores: list[IdempotencyStore] = [
        MemoryIdempotencyStore(clock=clock, lease=30),
        RedisIdempotencyStore(redis_url, namespace=f"test-{uuid.uuid4().hex}", lease=30),
    ]
    for number, store in enumerate(stores):
        order_id = f"dead-{number}"
        async with fake.client(idempotency=store, clock=clock) as client:
            await confirmed(client, order_id)
            dead = await _take_lease_like_a_dead_worker(client, store, order_id, SMALLER)
            await _until_lease_expired(store, dead, clock)
            with pytest.raises(OutcomeUnknownError):
                await client.change(order_id=order_id, cart_items=SMALLER)
        await store.close()
    assert sent(fake, "change") == 0


async def test_a_dead_holder_of_a_cancel_is_resent(
    fake: FakeRees46, redis_url: str, clock: FakeClock
) -> None:
    """A cancel whose holder died is safe to send again, and succeeds."""
    store = RedisIdempotencyStore(redis_url, namespace=f"test-{uuid.uuid4().hex}", lease=30)
    async with fake.client(idempotency=store, clock=clock) as client:
        await confirmed(client)
        dead = await _take_lease_like_a_dead_worker(client, store, "1", None)
        await _until_lease_expired(store, dead, clock)
        cancelled = await client.cancel(order_id="1")
    await store.close()
    assert cancelled.replayed is False
    assert sent(fake, "cancel") == 1


async def test_a_cancelled_caller_leaves_an_unknown_outcome(
    fake: FakeRees46, client: LoyaltyClient, store: IdempotencyStore
) -> None:
    """A caller cancelled mid-call never leaves the key blocked. Either may have been sent, so
    both are recorded as unknown: the change is refused from then on, the cancel is sent
    again (and told an earlier attempt may have done it)."""
    await confirmed(client)
    for operation in ("change", "cancel"):
        fake.faults.on(operation, Fault.latency(5))
        call = (
            client.change(order_id="1", cart_items=SMALLER)
            if operation == "change"
            else client.cancel(order_id="1")
        )
        task = asyncio.ensure_future(call)
        await fake.wait_received(operation)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        book = await store.get(key_of("1"))
        assert book is not None
        assert book.lease is None
        assert [o.state for o in book.outcomes.values() if o.intent.operation == operation] == [
            State.UNKNOWN
        ]
        if operation == "change":
            with pytest.raises(OutcomeUnknownError):
                await client.change(order_id="1", cart_items=SMALLER)
            await client.clear_idempotency(order_id="1")
        else:
            cancelled = await client.cancel(order_id="1")
            assert cancelled.replayed is False


async def test_the_layer_can_be_turned_off(fake: FakeRees46, clock: FakeClock) -> None:
    """idempotency=None sends every call, as the API alone would."""
    async with fake.client(clock=clock, idempotency=None) as client:
        assert client.idempotency is None
        await confirmed(client)
        await client.change(order_id="1", cart_items=SMALLER)
        again = await client.change(order_id="1", cart_items=SMALLER)
        await client.clear_idempotency(order_id="1")  # nothing to clear: no error
    assert again.order_total_change == 0
    assert sent(fake, "change") == 2


async def _take_lease_like_a_dead_worker(
    client: LoyaltyClient, store: IdempotencyStore, order_id: str, cart: list[CartItem] | None
) -> str:
    """Take the lease of a call exactly as the client would, then never finish it."""
    from rees46_loyalty import ApiRequest  # noqa: PLC0415
    from rees46_loyalty._operations import CANCEL, CHANGE  # noqa: PLC0415
    from rees46_loyalty._serialization import unstructure  # noqa: PLC0415
    from rees46_loyalty._validation import checkout_request  # noqa: PLC0415
    from rees46_loyalty.middleware.idempotency import fingerprint  # noqa: PLC0415
    from rees46_loyalty.models import OrderRequest  # noqa: PLC0415

    if cart is None:
        request = ApiRequest(operation=CANCEL, data=unstructure(OrderRequest(order_id=order_id)))
    else:
        body = checkout_request(
            "change",
            cart_items=cart,
            order_id_required=True,
            order_id_value=order_id,
        )
        request = ApiRequest(operation=CHANGE, data=unstructure(body))
    intent = Intent(
        operation=request.operation.name,
        fingerprint=fingerprint(request),
        safety=request.operation.safety.value,
    )
    key = key_of(order_id)
    decision = await store.begin(key, intent, owner="dead-worker")
    assert decision.verdict.value == "acquired"
    return key


async def _until_lease_expired(store: IdempotencyStore, key: str, clock: FakeClock) -> None:
    """Move the store's time past the dead holder's lease (Redis's by its stored expiries)."""
    book = await store.get(key)
    assert book is not None
    assert book.lease is not None
    if isinstance(store, RedisIdempotencyStore):
        await age_redis_book(store, key, store.lease + 1)
    else:
        clock.advance(store.lease + 1)


async def test_a_cancel_that_may_have_worked_says_so_on_the_next_call(
    fake: FakeRees46, client: LoyaltyClient
) -> None:
    """Every attempt of a cancel ends in a 504 after commit: the call fails, and the next call
    (a re-run job) learns that an earlier attempt may have cancelled the order."""
    await confirmed(client)
    fake.faults.on("cancel", Fault.gateway_timeout(after_commit=True), times=3)
    with pytest.raises(ServerError):
        await client.cancel(order_id="1")
    with pytest.raises(OrderStatusError) as caught:
        await client.cancel(order_id="1")
    assert caught.value.previous_outcome_unknown is True
    assert len(fake.ledger.effects_for("cancel")) == 1


async def test_clearing_never_forgets_a_success(fake: FakeRees46, client: LoyaltyClient) -> None:
    """clear_idempotency after a success is a no-op: two workers reconciling the same job can
    never let its change go twice."""
    await confirmed(client)
    first = await client.change(order_id="1", cart_items=SMALLER)
    await client.clear_idempotency(order_id="1")
    again = await client.change(order_id="1", cart_items=SMALLER)
    assert again.replayed is True
    assert again.order_total_change == first.order_total_change
    assert sent(fake, "change") == 1
