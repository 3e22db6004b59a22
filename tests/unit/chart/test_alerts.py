"""The chart's PrometheusRule: promtool check rules, promtool test rules for every alert, and
the conventions every alert must follow (runbook, summary, description, known metric names)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune_api import observability
from monitoring.promql import metric_names

from .conftest import REPO, helm_template

ALERT_TESTS = REPO / "monitoring" / "tests" / "alerts.test.yaml"
RUNBOOKS = REPO / "monitoring" / "runbooks.md"
# The alerts the platform promises (DESIGN: failed, stuck pending, no progress, loss NaN or
# diverging, operator down, reconcile errors).
EXPECTED_ALERTS = {
    "KubetuneFineTuneJobFailed",
    "KubetuneFineTuneJobStuckPending",
    "KubetuneFineTuneJobNoProgress",
    "KubetuneTrainingLossNaN",
    "KubetuneTrainingLossDiverging",
    "KubetuneOperatorDown",
    "KubetuneReconcileErrors",
}


def rendered_rules(helm: str, **overrides: Any) -> dict[str, Any]:
    values = {"metrics": {"prometheusRule": {"enabled": True, **overrides}}}
    result = helm_template(helm, "--show-only", "templates/prometheusrule.yaml", values=values)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["spec"]


def alert_rules(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in spec["groups"] for rule in group["rules"]}


def promtool_test(promtool: str, spec: dict[str, Any], directory: Path) -> subprocess.CompletedProcess[str]:
    (directory / "rules.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(ALERT_TESTS, directory / ALERT_TESTS.name)
    return subprocess.run(
        [promtool, "test", "rules", str(directory / ALERT_TESTS.name)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_promtool_check_rules(helm: str, promtool: str, tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rendered_rules(helm)))
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_promtool_test_rules(helm: str, promtool: str, tmp_path: Path) -> None:
    result = promtool_test(promtool, rendered_rules(helm), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_tests_notice_a_changed_threshold(helm: str, promtool: str, tmp_path: Path) -> None:
    # The same tests against a rule that waits twice as long must fail: they pin the behaviour.
    result = promtool_test(promtool, rendered_rules(helm, pendingMinutes=60), tmp_path)
    assert result.returncode != 0
    assert "KubetuneFineTuneJobStuckPending" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == EXPECTED_ALERTS
    assert quiet == EXPECTED_ALERTS


def test_alert_conventions(helm: str) -> None:
    rules = alert_rules(rendered_rules(helm))
    assert set(rules) == EXPECTED_ALERTS
    anchors = {
        line[3:].strip().lower() for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")
    }
    known = set(observability.OPERATOR_METRICS) | set(observability.TRAINER_METRICS)
    for name, rule in rules.items():
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        url = annotations["runbook_url"]
        assert re.match(r"^https://", url), name
        assert url.rsplit("#", 1)[1] in anchors, f"{name}: no runbook section for {url}"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        # `up` is Prometheus's own; everything else must be a metric the components export.
        unknown = {m for m in metric_names(rule["expr"], known) if m != "up"} - known
        assert not unknown, f"{name} uses unknown metrics {unknown}"


@pytest.mark.parametrize(
    ("threshold", "alert"),
    [
        ("pendingMinutes", "KubetuneFineTuneJobStuckPending"),
        ("noProgressMinutes", "KubetuneFineTuneJobNoProgress"),
        ("failedJobWindowMinutes", "KubetuneFineTuneJobFailed"),
    ],
)
def test_thresholds_come_from_values(helm: str, threshold: str, alert: str) -> None:
    default = yaml.safe_load((REPO / "charts/kubetune/values.yaml").read_text())["metrics"]["prometheusRule"]
    expression = alert_rules(rendered_rules(helm, **{threshold: 7}))[alert]["expr"]
    assert f" {7 * 60}" in expression
    assert f" {default[threshold] * 60}" not in expression
