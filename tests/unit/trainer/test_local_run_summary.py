"""`kubetune run` summary: the forgetting guard's verdict follows its action."""

from __future__ import annotations

import pytest

from kubetune_api.finetunejob import Metrics
from kubetune_api.trainer_contract import FailureReason, Outcome, TrainerResult
from kubetune_cli.local_run import summary


def _guard_line(result: TrainerResult) -> str:
    return next(line for line in summary(result).splitlines() if "forgetting guard" in line).split("guard")[1]


@pytest.mark.parametrize(
    ("outcome", "reason", "passed", "verdict"),
    [
        (Outcome.SUCCEEDED, None, True, "passed"),
        (Outcome.SUCCEEDED, None, False, "exceeded (warn only)"),
        (Outcome.FAILED, FailureReason.FORGETTING_GATE_FAILED, False, "FAILED"),
    ],
)
def test_forgetting_guard_verdict(outcome, reason, passed, verdict):
    metrics = Metrics(
        general_loss_base=0.86, general_loss=2.04, forgetting_gate_passed=passed, test_loss_base=5.6
    )
    line = _guard_line(TrainerResult(outcome=outcome, reason=reason, metrics=metrics))
    assert line.strip() == f"{verdict} (general loss 0.8600 -> 2.0400, +137.2%)"
    assert ("FAILED" in line) is (verdict == "FAILED")


def test_base_test_loss_is_shown_when_reported():
    text = summary(
        TrainerResult(outcome=Outcome.SUCCEEDED, metrics=Metrics(test_loss=0.5, test_loss_base=5.6))
    )
    assert "test loss of the base  5.6000" in text
    assert "of the base" not in summary(
        TrainerResult(outcome=Outcome.SUCCEEDED, metrics=Metrics(test_loss=0.5))
    )
