"""The Celery example (docs/examples/celery_tasks.py): a real Celery worker on a real
redis-server broker, refunds against the fake REES46 API (served from a thread), one change in
the ledger however often a task is delivered."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from queue import Empty
from types import ModuleType
from typing import Any

import celery_tasks
import pytest
from celery.contrib.testing.worker import start_worker
from celery.exceptions import Retry
from celery.signals import task_postrun
from celery.worker import WorkController

from rees46_loyalty import CartItem, SyncLoyaltyClient
from rees46_loyalty.testing import FakeRees46, Fault
from tests.integration.examples.conftest import EXAMPLES

pytestmark = pytest.mark.integration

KEPT = [{"product_id": "A", "price": "1000", "quantity": "3"}]


@pytest.fixture
def tasks(
    threaded_shop: FakeRees46, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """The example module, its app on the test Redis and its client on the fake API."""
    for name, value in {
        "REES46_SHOP_ID": threaded_shop.shop_id,
        "REES46_SHOP_SECRET": threaded_shop.shop_secret,
        "REES46_BASE_URL": threaded_shop.url,
        "REDIS_URL": redis_url,
    }.items():
        monkeypatch.setenv(name, value)
    celery_tasks.app.conf.update(
        broker_url=redis_url,
        worker_hijack_root_logger=False,  # the test suite's log guard keeps its handlers
    )
    celery_tasks._client = None
    yield celery_tasks
    celery_tasks.close_client()
    celery_tasks._client = None


class Runs:
    """The tasks a worker finished: (task id, return value), in order."""

    def __init__(self) -> None:
        self.done: list[tuple[str, Any]] = []
        self._changed = threading.Condition()

    def note(self, task_id: str, retval: Any, **_: Any) -> None:
        with self._changed:
            self.done.append((task_id, retval))
            self._changed.notify_all()

    def wait_for(self, count: int) -> list[tuple[str, Any]]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.done) >= count, timeout=60)
            return list(self.done)


@pytest.fixture
def runs() -> Iterator[Runs]:
    noted = Runs()
    task_postrun.connect(noted.note, weak=False)
    yield noted
    task_postrun.disconnect(noted.note)


@pytest.fixture
def worker(tasks: ModuleType) -> Iterator[WorkController]:
    """A real Celery worker consuming the example's queue: two threads, the Redis broker."""
    with start_worker(
        tasks.app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=30
    ) as controller:
        yield controller


def confirmed_order(shop: FakeRees46) -> str:
    order_id = f"C-{uuid.uuid4().hex[:8]}"
    with SyncLoyaltyClient(shop.shop_id, shop.shop_secret, base_url=shop.url) as client:
        client.apply(
            order_id=order_id, cart_items=[CartItem(product_id="A", price=1000, quantity=4)]
        )
        client.confirm(order_id=order_id)
    return order_id


def test_a_task_delivered_twice_refunds_once(
    tasks: ModuleType, worker: WorkController, runs: Runs, threaded_shop: FakeRees46
) -> None:
    """The same task id sent twice to two worker threads: both deliveries return the refund,
    the fake server's ledger holds one change."""
    order = confirmed_order(threaded_shop)
    task_id = f"refund:{uuid.uuid4().hex}"
    tasks.refund.apply_async((order, KEPT), task_id=task_id)
    tasks.refund.apply_async((order, KEPT), task_id=task_id)
    assert runs.wait_for(2) == [(task_id, "1000"), (task_id, "1000")]
    assert threaded_shop.received("change") == 1
    assert len(threaded_shop.ledger.effects_for("change", order)) == 1
    assert threaded_shop.ledger.refunds(order) == -1000


def test_two_returns_of_one_order_are_two_changes(
    tasks: ModuleType, worker: WorkController, runs: Runs, threaded_shop: FakeRees46
) -> None:
    """Two tasks (two ids) for two returns of one order: both are sent."""
    order = confirmed_order(threaded_shop)
    fewer = [{**KEPT[0], "quantity": "2"}]
    tasks.refund.apply_async((order, KEPT), task_id=f"refund:{uuid.uuid4().hex}")
    runs.wait_for(1)
    tasks.refund.apply_async((order, fewer), task_id=f"refund:{uuid.uuid4().hex}")
    assert [value for _, value in runs.wait_for(2)] == ["1000", "1000"]
    assert threaded_shop.received("change") == 2
    assert threaded_shop.ledger.refunds(order) == -2000


def test_a_lost_answer_is_reconciled_to_the_ledgers_refund(
    tasks: ModuleType, worker: WorkController, runs: Runs, threaded_shop: FakeRees46
) -> None:
    """The change was applied but its answer lost: the task reconciles and returns the ledger's
    exact refund, so does its second delivery, and the change was sent once."""
    order = confirmed_order(threaded_shop)
    threaded_shop.faults.on("change", Fault.drop_after_commit())
    task_id = f"refund:{uuid.uuid4().hex}"
    for delivery in range(1, 3):
        tasks.refund.apply_async((order, KEPT), task_id=task_id)
        assert runs.wait_for(delivery)[-1] == (task_id, "1000")
    assert threaded_shop.ledger.refunds(order) == -1000
    assert threaded_shop.received("change") == 1
    assert len(threaded_shop.ledger.effects_for("change", order)) == 1


def test_a_change_never_processed_is_retried_and_sent_once(
    tasks: ModuleType, worker: WorkController, runs: Runs, threaded_shop: FakeRees46
) -> None:
    """A 504 before the server processed the change: not applied, self.retry, and the retry
    (same task id) sends the change once and returns its refund."""
    order = confirmed_order(threaded_shop)
    threaded_shop.faults.on("change", Fault.gateway_timeout())
    task_id = f"refund:{uuid.uuid4().hex}"
    tasks.refund.apply_async((order, KEPT), task_id=task_id)
    first, retried = runs.wait_for(2)
    assert first[0] == task_id
    assert isinstance(first[1], Retry)
    assert retried == (task_id, "1000")
    assert threaded_shop.received("change") == 2  # the unprocessed one and the retry's
    assert len(threaded_shop.ledger.effects_for("change", order)) == 1
    assert threaded_shop.ledger.refunds(order) == -1000


def test_a_prefork_worker_process_runs_a_task_delivered_twice_once(
    tasks: ModuleType, threaded_shop: FakeRees46, redis_url: str
) -> None:
    """``celery -A celery_tasks worker`` with its default prefork pool (2 processes), as a
    subprocess: each child makes its own client after the fork, and the same task id sent
    twice is run twice, returns the same refund twice, and is one change."""
    order = confirmed_order(threaded_shop)
    refunds = f"refunds-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")]),
    }
    worker = subprocess.Popen(  # noqa: S603 - the test's own interpreter
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_tasks",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            f"--queues={refunds}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=INFO",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    stream = worker.stderr

    def pump() -> None:
        with stream:
            for line in stream:
                lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    log: list[str] = []

    def read_until(done: Callable[[], bool]) -> None:
        while not done():
            log.append(next_line())

    def next_line() -> str:
        try:  # bounded: a stuck worker fails the test instead of hanging it
            return lines.get(timeout=60)
        except Empty:
            pytest.fail("the worker said nothing for 60 s:\n" + "".join(log))

    try:
        read_until(lambda: any(" ready." in line for line in log))
        task_id = f"refund:{uuid.uuid4().hex}"
        for _ in range(2):
            tasks.refund.apply_async((order, KEPT), task_id=task_id, queue=refunds)
        read_until(lambda: sum("succeeded in" in line for line in log) >= 2)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        reader.join(timeout=60)
    done = [line for line in log if "succeeded in" in line]
    assert all(task_id in line and "'1000'" in line for line in done)
    assert threaded_shop.received("change") == 1
    assert len(threaded_shop.ledger.effects_for("change", order)) == 1
