"""The taskiq example (docs/examples/taskiq_worker.py): its task on taskiq's InMemoryBroker, a
real redis-server as the idempotency store, refunds against the fake REES46 API; one change in
the ledger per task id, however often the task is kicked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import taskiq_worker
from taskiq import InMemoryBroker

from rees46_loyalty.testing import FakeRees46, Fault
from tests.integration.examples.conftest import RedeliveryGate

pytestmark = pytest.mark.integration

KEPT = [{"product_id": "A", "price": "1000", "quantity": "3"}]


@pytest.fixture
async def broker(worker_env: dict[str, str]) -> AsyncIterator[InMemoryBroker]:
    """The example's broker, started (its startup event makes the client) and shut down."""
    await taskiq_worker.broker.startup()
    yield taskiq_worker.broker
    await taskiq_worker.broker.shutdown()


def kick(task_id: str) -> Any:
    """A kicker of the example's task under *task_id* (its overloads do not see the context)."""
    return taskiq_worker.refund.kicker().with_task_id(task_id)


async def test_one_task_id_kicked_twice_at_once_refunds_once(
    broker: InMemoryBroker, shop: FakeRees46, order: str, redelivery_gate: RedeliveryGate
) -> None:
    """The second delivery arrives while the first is in flight and waits for it; the result
    (one task id, one result slot: the last delivery's) is the ledger's amount, and the ledger
    has one change. The arq tests read both deliveries' amounts."""
    kicker: Any = taskiq_worker.refund.kicker().with_task_id(f"refund:{uuid.uuid4().hex}")
    first = await kicker.kiq(order, KEPT)
    await redelivery_gate.first_call_held()  # the change is applied, its record not yet written
    await kicker.kiq(order, KEPT)
    await redelivery_gate.redelivery_waiting()  # the second delivery found the key busy
    redelivery_gate.open()
    await broker.wait_all()

    result = await first.get_result()  # one task id, one result: the last delivery's
    assert not result.is_err
    assert Decimal(result.return_value) == -shop.ledger.refunds(order) == 1000
    assert shop.received("change") == 1
    assert len(shop.ledger.effects_for("change", order)) == 1


async def test_a_finished_task_kicked_again_replays_its_amount(
    broker: InMemoryBroker, shop: FakeRees46, order: str
) -> None:
    """Kicked again after it succeeded: the recorded amount, nothing sent."""
    kicker: Any = taskiq_worker.refund.kicker().with_task_id(f"refund:{uuid.uuid4().hex}")
    amounts = []
    for _ in range(2):
        task = await kicker.kiq(order, KEPT)
        await broker.wait_all()
        amounts.append((await task.get_result()).return_value)
    assert amounts == ["1000", "1000"]
    assert shop.received("change") == 1
    assert len(shop.ledger.effects_for("change", order)) == 1


async def test_other_task_ids_are_other_returns(
    broker: InMemoryBroker, shop: FakeRees46, order: str
) -> None:
    """Two returns of one order, one after the other, are two changes."""
    for kept in ("3", "2"):
        lines = [{**KEPT[0], "quantity": kept}]
        await kick(f"refund:{kept}-{order}").kiq(order, lines)
        await broker.wait_all()
    assert [e.order_total_change for e in shop.ledger.effects_for("change", order)] == [
        -1000,
        -1000,
    ]


async def test_a_lost_answer_is_reconciled_to_the_ledgers_refund(
    broker: InMemoryBroker, shop: FakeRees46, order: str
) -> None:
    """The change was applied but its answer lost: the task reconciles and returns the ledger's
    exact refund, so does its redelivery, and the change was sent once."""
    shop.faults.on("change", Fault.drop_after_commit())
    kicker: Any = taskiq_worker.refund.kicker().with_task_id(f"refund:{uuid.uuid4().hex}")
    amounts = []
    for _ in range(2):
        task = await kicker.kiq(order, KEPT)
        await broker.wait_all()
        result = await task.get_result()
        assert not result.is_err, result.error
        amounts.append(Decimal(result.return_value))
    assert amounts == [-shop.ledger.refunds(order)] * 2 == [1000] * 2
    assert shop.received("change") == 1
    assert len(shop.ledger.effects_for("change", order)) == 1


async def test_a_change_never_processed_is_retried_and_sent_once(
    broker: InMemoryBroker, shop: FakeRees46, order: str
) -> None:
    """A 504 before the server processed the change: not applied, SendAgainError, and the retry
    middleware delivers the task again under its id; the retry's change is the one in the
    ledger, and the task's result is its refund."""
    shop.faults.on("change", Fault.gateway_timeout())
    task = await kick(f"refund:{uuid.uuid4().hex}").kiq(order, KEPT)
    for _ in range(3):  # the first delivery, then the retry it kicked
        await broker.wait_all()
    result = await task.wait_result(timeout=30)
    assert not result.is_err, result.error
    assert Decimal(result.return_value) == -shop.ledger.refunds(order) == 1000
    assert shop.received("change") == 2  # the unprocessed one and the retry's
    assert len(shop.ledger.effects_for("change", order)) == 1


async def test_the_worker_events_make_one_client_and_close_it(worker_env: dict[str, str]) -> None:
    """Worker startup puts a client with the Redis store in the broker's state; shutdown
    closes it."""
    await taskiq_worker.broker.startup()
    client = taskiq_worker.broker.state.loyalty
    try:
        assert not client.closed
        assert client.idempotency is taskiq_worker.broker.state.loyalty_store
    finally:
        await taskiq_worker.broker.shutdown()
    assert client.closed


async def test_a_task_redelivered_after_a_later_return_of_its_order_replays(
    broker: InMemoryBroker, shop: FakeRees46, order: str
) -> None:
    """Return 1, return 2, then return 1 again: replayed under its task id, not sent again
    (which would put the item of return 2 back into the order)."""
    fewer = [{**KEPT[0], "quantity": "2"}]
    for task_id, lines in [("r1", KEPT), ("r2", fewer), ("r1", KEPT)]:
        kicked = await kick(f"{task_id}-{order}").kiq(order, lines)
        await broker.wait_all()
        assert (await kicked.get_result()).return_value == "1000"
    assert shop.received("change") == 2
    assert shop.ledger.refunds(order) == -2000
