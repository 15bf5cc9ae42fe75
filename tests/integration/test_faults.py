"""Every fault of the fake server reaches the SDK and ends as the retry-safety classes say.

Each test asserts how many requests the server's ledger saw and what it committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest

from rees46_loyalty import (
    CartItem,
    LoyaltyClient,
    MalformedResponseError,
    OrderStatusError,
    OutcomeUnknownError,
    RetryPolicy,
    ServerError,
)
from rees46_loyalty import TimeoutError as LoyaltyTimeoutError
from rees46_loyalty.testing import DEFAULT_MIX, FakeClock, FakeRees46, Fault, Faults
from tests.conftest import PHONE

pytestmark = pytest.mark.integration

CART = [CartItem(product_id="A", price=Decimal("1000"), quantity=4)]
SMALLER = [CartItem(product_id="A", price=Decimal("1000"), quantity=3)]


async def confirmed_order(sdk: LoyaltyClient, order_id: str = "1") -> None:
    await sdk.apply(order_id=order_id, cart_items=CART, identifier=PHONE)
    await sdk.confirm(order_id=order_id)


def requests(fake: FakeRees46, operation: str) -> int:
    return len(fake.ledger.requests_for(operation))


def effects(fake: FakeRees46, operation: str) -> int:
    return len(fake.ledger.effects_for(operation))


# Faults that leave nothing processed: every operation, change included, is retried and succeeds.
NOT_PROCESSED = [
    Fault.rate_limited(retry_after="2"),
    Fault.unavailable(),
    Fault.unavailable(retry_after="1"),
]
# Faults after which the server may have processed the request.
MAYBE_PROCESSED = [
    Fault.server_error(500),
    Fault.server_error(500, after_commit=True),
    Fault.bad_gateway(),
    Fault.gateway_timeout(after_commit=True),
    Fault.close_before_answer(),
    Fault.drop_after_commit(),
    Fault.truncated_body(),
]


@pytest.mark.parametrize("fault", NOT_PROCESSED, ids=lambda f: f.label)
async def test_change_is_retried_after_faults_that_prove_nothing_was_processed(
    fake: FakeRees46, sdk: LoyaltyClient, fault: Fault
) -> None:
    """429 / 503: the change is sent again, succeeds, and the ledger has one change."""
    await confirmed_order(sdk)
    fake.faults.on("change", fault)
    changed = await sdk.change(order_id="1", cart_items=SMALLER)
    assert changed.order_total_change == fake.ledger.refunds("1")
    assert changed.order_total_change < 0
    assert requests(fake, "change") == 2
    assert effects(fake, "change") == 1


@pytest.mark.parametrize("fault", MAYBE_PROCESSED, ids=lambda f: f.label)
async def test_change_is_never_resent_after_faults_that_may_hide_a_commit(
    fake: FakeRees46, sdk: LoyaltyClient, fault: Fault
) -> None:
    """OutcomeUnknownError after exactly one request; what the ledger committed is reconcilable."""
    await confirmed_order(sdk)
    before = await sdk.details(order_id="1")
    fake.faults.on("change", fault)
    with pytest.raises(OutcomeUnknownError):
        await sdk.change(order_id="1", cart_items=SMALLER)
    assert requests(fake, "change") == 1
    assert effects(fake, "change") == (1 if fault.commits else 0)
    after = await sdk.details(order_id="1")  # reconcile: did it happen?
    assert (after.order_to_pay != before.order_to_pay) == fault.commits


async def test_change_with_invalid_json_after_commit_is_unknown(
    fake: FakeRees46, sdk: LoyaltyClient
) -> None:
    """A committed change whose answer is garbage: the amount is unknown, and said so."""
    await confirmed_order(sdk)
    fake.faults.on("change", Fault.invalid_json())
    with pytest.raises(OutcomeUnknownError) as caught:
        await sdk.change(order_id="1", cart_items=SMALLER)
    assert isinstance(caught.value.__cause__, MalformedResponseError)
    assert (requests(fake, "change"), effects(fake, "change")) == (1, 1)


@pytest.mark.parametrize("fault", NOT_PROCESSED + MAYBE_PROCESSED, ids=lambda f: f.label)
@pytest.mark.parametrize("operation", ["estimate", "apply", "confirm", "details", "history"])
async def test_safe_operations_retry_and_succeed(
    fake: FakeRees46, sdk: LoyaltyClient, operation: str, fault: Fault
) -> None:
    """Safe operations are sent again after any transient fault and succeed on the second try."""
    await sdk.apply(order_id="1", cart_items=CART, identifier=PHONE)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "estimate": lambda: sdk.estimate(cart_items=CART),
        "apply": lambda: sdk.apply(order_id="1", cart_items=CART, identifier=PHONE),
        "confirm": lambda: sdk.confirm(order_id="1"),
        "details": lambda: sdk.details(order_id="1"),
        "history": lambda: sdk.history(identifier=PHONE),
    }
    before = requests(fake, operation)
    fake.faults.on(operation, fault)
    assert await calls[operation]() is not None
    assert requests(fake, operation) - before == 2
    assert effects(fake, "confirm") == (1 if operation == "confirm" else 0)


async def test_invalid_json_is_not_retried(fake: FakeRees46, sdk: LoyaltyClient) -> None:
    """A 200 whose body is not JSON is a MalformedResponseError after one request."""
    await sdk.apply(order_id="1", cart_items=CART)
    fake.faults.on("confirm", Fault.invalid_json())
    with pytest.raises(MalformedResponseError):
        await sdk.confirm(order_id="1")
    assert requests(fake, "confirm") == 1
    assert effects(fake, "confirm") == 1  # it was committed: confirm again to see the answer
    assert (await sdk.confirm(order_id="1")).order_id == "1"


async def test_a_cancel_whose_answer_was_lost_is_flagged(
    fake: FakeRees46, sdk: LoyaltyClient
) -> None:
    """The first cancel commits and its answer is dropped; the retry meets the terminal error,
    flagged previous_outcome_unknown. The ledger shows one cancel in two requests."""
    await confirmed_order(sdk)
    fake.faults.on("cancel", Fault.drop_after_commit())
    with pytest.raises(OrderStatusError) as caught:
        await sdk.cancel(order_id="1")
    assert caught.value.previous_outcome_unknown is True
    assert (requests(fake, "cancel"), effects(fake, "cancel")) == (2, 1)
    assert fake.book.orders["1"].status == "cancelled"


async def test_a_cancel_after_a_fault_before_processing_succeeds(
    fake: FakeRees46, sdk: LoyaltyClient
) -> None:
    """cancel is retried after a 502 that processed nothing, and succeeds."""
    await confirmed_order(sdk)
    fake.faults.on("cancel", Fault.bad_gateway())
    assert (await sdk.cancel(order_id="1")).order_id == "1"
    assert (requests(fake, "cancel"), effects(fake, "cancel")) == (2, 1)


async def test_retry_after_from_the_fake_is_honoured(
    fake: FakeRees46, sdk: LoyaltyClient, clock: FakeClock
) -> None:
    """The fake's Retry-After: 2 becomes a 2-second wait of the client."""
    fake.faults.on("estimate", Fault.rate_limited(retry_after="2"))
    await sdk.estimate(cart_items=CART)
    assert clock.sleeps == [2.0]


async def test_faults_every_time_exhaust_the_attempts(fake: FakeRees46, sdk: LoyaltyClient) -> None:
    """A fault on every request: the SDK gives up after max_attempts requests."""
    fake.faults.on("details", Fault.server_error(500), times=5)
    with pytest.raises(ServerError):
        await sdk.details(order_id="1")
    assert requests(fake, "details") == 3


async def test_faults_at_given_request_numbers(fake: FakeRees46, sdk: LoyaltyClient) -> None:
    """at=[2, 3] hits the 2nd and 3rd request to the operation and no other."""
    fake.faults.on("estimate", Fault.unavailable(), at=[2, 3])
    await sdk.estimate(cart_items=CART)  # request 1: fine
    await sdk.estimate(cart_items=CART)  # requests 2, 3 fail; 4 succeeds
    assert requests(fake, "estimate") == 4
    assert [n for _, n, _ in fake.faults.injected] == [2, 3]


async def test_latency_past_the_timeout(fake: FakeRees46) -> None:
    """A slow answer times out on the client: safe operations retry, change becomes unknown."""
    async with fake.client(timeout=0.05, clock=FakeClock()) as client:
        fake.faults.on("estimate", Fault.latency(0.5))
        assert (await client.estimate(cart_items=CART)).order_total == Decimal(4000)
        assert fake.received("estimate") == 2  # the slow one is still being held
        await confirmed_order(client)
        fake.faults.on("change", Fault.latency(0.5))
        with pytest.raises(OutcomeUnknownError) as caught:
            await client.change(order_id="1", cart_items=SMALLER)
        assert isinstance(caught.value.__cause__, LoyaltyTimeoutError)
        assert fake.received("change") == 1


async def test_random_faults_are_reproducible() -> None:
    """The same seed injects the same faults into the same sequence of requests."""
    picks = []
    for _ in range(2):
        faults = Faults()
        faults.random(0.5, seed=1234)
        picks.append([faults.pick("change", n) for n in range(1, 200)])
    assert picks[0] == picks[1]
    injected = [fault for fault in picks[0] if fault is not None]
    assert 60 < len(injected) < 140
    assert set(injected) == set(DEFAULT_MIX)


async def test_random_faults_reach_the_sdk_and_nothing_is_double_applied(
    fake: FakeRees46, clock: FakeClock
) -> None:
    """At a 30% fault rate, 40 orders through apply/confirm/change: each change the SDK reports
    equals the ledger's, no change is committed twice, unknown outcomes are reconcilable."""
    fake.faults.random(0.3, seed=7)
    policy = RetryPolicy(max_attempts=5, retry_budget=None)
    reported = unknown = 0
    async with fake.client(clock=clock, retry=policy) as client:
        for n in range(40):
            order = f"R-{n}"
            try:
                await client.apply(order_id=order, cart_items=CART)
                await client.confirm(order_id=order)
                changed = await client.change(order_id=order, cart_items=SMALLER)
            except OutcomeUnknownError:
                unknown += 1
                details = await client.details(order_id=order)  # reconcile with the server
                committed = bool(fake.ledger.effects_for("change", order))
                assert details.order_total == (Decimal(3000) if committed else Decimal(4000))
            except (MalformedResponseError, OrderStatusError):
                continue  # a confirm whose answer was garbage: the order is left as it is
            else:
                reported += 1
                assert changed.order_total_change == fake.ledger.refunds(order)
            assert len(fake.ledger.effects_for("change", order)) <= 1
    assert reported > 10
    assert len(fake.faults.injected) > 20
    assert sum(fake.faults.counts().values()) == len(fake.faults.injected)
