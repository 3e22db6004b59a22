"""The Grafana dashboard: valid JSON, the panels the platform promises, known metrics only."""

from __future__ import annotations

import json
from typing import Any

from kubetune_api import observability
from monitoring.promql import dashboard_expressions, dashboard_panels, metric_names

from .conftest import CHART

DASHBOARD = CHART / "dashboards" / "kubetune.json"
KNOWN = set(observability.OPERATOR_METRICS) | set(observability.TRAINER_METRICS)


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_is_valid_and_well_formed() -> None:
    dashboard = load()
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard_panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_expression_reads_only_declared_metrics() -> None:
    seen = set()
    for where, expression in dashboard_expressions(load()):
        names = metric_names(expression, KNOWN)
        assert names, f"{where}: no metric in {expression!r}"
        assert names <= KNOWN, f"{where}: unknown metrics {names - KNOWN} in {expression!r}"
        seen |= names
    # The dashboard covers what DESIGN promises.
    required = {
        observability.FINETUNEJOBS_BY_PHASE,
        observability.FINETUNEJOB_PROGRESS,
        observability.FINETUNEJOB_TRAIN_LOSS,
        observability.FINETUNEJOB_VALIDATION_LOSS,
        observability.FINETUNEJOB_TOKENS_PER_SECOND,
        observability.GPU_SECONDS_REQUESTED,
        observability.QUEUE_WAIT,
    }
    assert required <= seen, f"no panel shows {required - seen}"


def test_panels_by_title() -> None:
    titles = {p["title"] for p in dashboard_panels(load())}
    for title in (
        "FineTuneJobs by phase",
        "Progress",
        "Training loss",
        "Validation loss",
        "Tokens per second",
        "GPU-hours",
        "Queue wait",
    ):
        assert title in titles
