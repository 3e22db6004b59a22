"""The promotion gate: candidate vs current model on identical domain and general data."""

from __future__ import annotations

import math

import pytest
from kubetune_operator.reconcile.continuouspretrain import GateResult, evaluate_gate

from kubetune_api.continuouspretrain import PromotionSpec
from kubetune_api.finetunejob import Metrics

PROMOTION = PromotionSpec.model_validate(
    {
        "generalEval": {"uri": "s3://d/eval.txt"},
        "maxGeneralLossIncreaseRatio": 0.02,
        "minDomainLossDecreaseRatio": 0.05,
    }
)


def metrics(domain: tuple[float, float] | None, general: tuple[float, float] | None) -> Metrics:
    return Metrics(
        test_loss_base=domain[0] if domain else None,
        test_loss=domain[1] if domain else None,
        general_loss_base=general[0] if general else None,
        general_loss=general[1] if general else None,
    )


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        pytest.param(
            metrics((2.0, 1.5), (3.0, 3.03)),
            GateResult(
                True,
                "domain loss 2.0000 -> 1.5000 (-25.00%, needs a decrease of at least 5.00%); "
                "general loss 3.0000 -> 3.0300 (+1.00%, may rise at most 2.00%)",
            ),
            id="both-pass",
        ),
        pytest.param(
            metrics((2.0, 1.5), (3.0, 3.3)),
            GateResult(
                False,
                "domain loss 2.0000 -> 1.5000 (-25.00%, needs a decrease of at least 5.00%); "
                "general loss 3.0000 -> 3.3000 (+10.00%, may rise at most 2.00%): too much forgetting",
            ),
            id="general-regression",
        ),
        pytest.param(
            metrics((2.0, 1.96), (3.0, 2.9)),
            GateResult(
                False,
                "domain loss 2.0000 -> 1.9600 (-2.00%, needs a decrease of at least 5.00%): "
                "not enough; general loss 3.0000 -> 2.9000 (-3.33%, may rise at most 2.00%)",
            ),
            id="domain-not-learned",
        ),
        pytest.param(
            metrics((2.0, 1.9), (3.0, 3.06)),
            GateResult(
                True,
                "domain loss 2.0000 -> 1.9000 (-5.00%, needs a decrease of at least 5.00%); "
                "general loss 3.0000 -> 3.0600 (+2.00%, may rise at most 2.00%)",
            ),
            id="exactly-at-both-limits",
        ),
        pytest.param(
            metrics((2.0, 1.5), None),
            GateResult(
                False, "the run reported no generalLossBase, generalLoss; the gate needs all four losses"
            ),
            id="missing-general-metrics",
        ),
        pytest.param(
            metrics((2.0, math.nan), (3.0, 3.0)),
            GateResult(False, "non-finite testLoss (the run diverged)"),
            id="diverged",
        ),
    ],
)
def test_gate(candidate: Metrics, expected: GateResult) -> None:
    assert evaluate_gate(PROMOTION, candidate) == expected


def test_no_metrics_at_all_fails_closed() -> None:
    assert not evaluate_gate(PROMOTION, None).passed
