"""The chaos run's checks, on a ledger and worker reports written by hand."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from benchmarks.chaos import IDLE_CLOSE, Options, Report, _check
from rees46_loyalty.testing import Effect, FakeRees46, RequestRecord


class _Ledger:
    """Writes requests (and the effects of the committed ones) into a fake server's ledger."""

    def __init__(self) -> None:
        self.fake = FakeRees46()

    def request(
        self,
        operation: str,
        order_id: str,
        delivery: str,
        *,
        committed: bool = True,
        fault: str | None = None,
        refund: str = "0",
    ) -> int:
        ledger = self.fake.ledger
        seq = len(ledger.requests) + 1
        ledger.requests.append(
            RequestRecord(
                seq=seq,
                operation=operation,
                order_id=order_id,
                status=None if fault else 200,
                fault=fault,
                committed=committed,
                request_id=delivery,
            )
        )
        if committed and operation != "details":
            ledger.effects.append(
                Effect(
                    seq=len(ledger.effects) + 1,
                    operation=operation,
                    order_id=order_id,
                    identifier=None,
                    order_to_pay=Decimal(0),
                    order_total_change=Decimal(refund),
                )
            )
        return seq


def _ok(job: str, delivery: str, **extra: Any) -> dict[str, Any]:
    return {"job": job, "delivery": delivery, "status": "ok", **extra}


def _holds(report: Report) -> bool:
    """Every check but the share of faulted requests (there is no fault plan here)."""
    return all(held for name, held in report.checks.items() if "met a fault" not in name)


def _first_steps(ledger: _Ledger, outcomes: list[dict[str, Any]], n: int) -> None:
    for op in ("apply", "confirm"):
        ledger.request(op, f"C-{n}", f"{op}-{n}~1")
        outcomes.append(_ok(f"{op}-{n}", f"{op}-{n}~1"))


def test_a_keepalive_close_reported_unknown_is_a_false_unknown() -> None:
    """A change closed unprocessed on a reused connection, reported as unknown: one false
    unknown outcome, from an idle keep-alive close; the later delivery's refund is right."""
    ledger = _Ledger()
    outcomes: list[dict[str, Any]] = []
    _first_steps(ledger, outcomes, 0)
    ledger.request("change", "C-0", "change-0~1", committed=False, fault=IDLE_CLOSE)
    ledger.request("details", "C-0", "change-0~1", committed=False)
    outcomes.append(
        {"job": "change-0", "delivery": "change-0~1", "status": "requeue", "unknown": True}
    )
    ledger.request("change", "C-0", "change-0~2", refund="-100")
    outcomes.append(_ok("change-0", "change-0~2", order_total_change="-100"))

    report = Report(orders=1, workers=1)
    _check(report, ledger.fake, outcomes, [0], set())
    assert report.unknown_outcomes == report.unknown_reconciled == 1
    assert report.false_unknowns == report.false_unknowns_keepalive == 1
    assert report.false_unknown_causes == {IDLE_CLOSE: 1}
    assert report.refunds_reported == report.refunds_matching == 1
    assert report.duplicated_effects == report.silent_losses == 0
    assert not report.checks["no false unknown outcome from an idle keep-alive close"]


def test_an_unknown_after_a_commit_is_not_false() -> None:
    """A change committed and then dropped, reported as unknown: a true unknown outcome."""
    ledger = _Ledger()
    outcomes: list[dict[str, Any]] = []
    _first_steps(ledger, outcomes, 0)
    ledger.request("change", "C-0", "change-0~1", fault="drop after commit", refund="-100")
    ledger.request("details", "C-0", "change-0~1", committed=False)
    outcomes.append(
        {
            "job": "change-0",
            "delivery": "change-0~1",
            "status": "unknown-applied",
            "unknown": True,
            "reconciled": True,
            "order_total_change": "-100",  # the refund reconcile() derived
        }
    )
    report = Report(orders=1, workers=1)
    _check(report, ledger.fake, outcomes, [0], set())
    assert report.unknown_outcomes == 1
    assert report.false_unknowns == 0
    assert report.refunds_known == report.refunds_expected == 1
    assert _holds(report), report.render()


def test_a_refund_nobody_knows_fails_the_run() -> None:
    """A change committed, reported unknown and never reconciled: its refund is not known."""
    ledger = _Ledger()
    outcomes: list[dict[str, Any]] = []
    _first_steps(ledger, outcomes, 0)
    ledger.request("change", "C-0", "change-0~1", fault="drop after commit", refund="-100")
    outcomes.append(
        {
            "job": "change-0",
            "delivery": "change-0~1",
            "status": "requeue",
            "unknown": True,
            "unresolved": True,
        }
    )
    report = Report(orders=1, workers=1)
    _check(report, ledger.fake, outcomes, [0], set())
    assert (report.refunds_known, report.refunds_expected, report.unresolved) == (0, 1, 1)
    assert not _holds(report)


@pytest.mark.parametrize(("wiped", "explained"), [(True, 1), (False, 0)])
def test_a_change_committed_twice(wiped: bool, explained: int) -> None:
    """A change committed twice is a duplicated effect and a wrong refund; it is counted
    apart when the store lost its records between the two commits."""
    ledger = _Ledger()
    outcomes: list[dict[str, Any]] = []
    _first_steps(ledger, outcomes, 0)
    ledger.request("change", "C-0", "change-0~1", refund="-100")
    outcomes.append(_ok("change-0", "change-0~1", order_total_change="-100"))
    report = Report(orders=1, workers=1)
    if wiped:
        report.store_wipes.append(len(ledger.fake.ledger.requests))
    ledger.request("change", "C-0", "change-0~2")
    outcomes.append(_ok("change-0", "change-0~2", order_total_change="0"))

    _check(report, ledger.fake, outcomes, [0], set())
    assert report.duplicated_effects == 1
    assert report.duplicated_after_store_loss == explained
    assert report.refunds_reported == 2
    assert report.refunds_matching == 1  # the ledger's refunds add up to the first one's
    assert report.refunds_wrong_after_store_loss == explained
    assert _holds(report) is wiped


def test_a_committed_cancel_nobody_heard_of_is_a_silent_loss() -> None:
    """A cancel the server committed while its worker was told it failed (and not that the
    outcome was unknown) is a silent loss; flagged as possibly applied, it is not."""
    for flagged, lost in ((False, 1), (True, 0)):
        ledger = _Ledger()
        outcomes: list[dict[str, Any]] = []
        _first_steps(ledger, outcomes, 0)
        ledger.request("change", "C-0", "change-0~1", refund="-100")
        outcomes.append(_ok("change-0", "change-0~1", order_total_change="-100"))
        ledger.request("cancel", "C-0", "cancel-0~1", fault="504 empty after commit")
        outcomes.append(
            {
                "job": "cancel-0",
                "delivery": "cancel-0~1",
                "status": "terminal",
                "previous_outcome_unknown": flagged,
            }
        )
        report = Report(orders=1, workers=1)
        _check(report, ledger.fake, outcomes, [0], {0})
        assert report.silent_losses == lost


def test_options_refuse_nonsense() -> None:
    """Bad knobs are refused with a clear error before anything starts."""
    with pytest.raises(ValueError, match="persistence"):
        Options(persistence="rdb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stale_connections"):
        Options(stale_connections=1.5)
    with pytest.raises(ValueError, match="kill_workers"):
        Options(kill_workers=-1)
    assert "persistence aof" in Options(redis_chaos=True, persistence="aof").setup
