"""The metric-name lexer the dashboard and alert checks rely on."""

from __future__ import annotations

import pytest

from monitoring.promql import metric_names


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ('sum by (phase) (kubetune_finetunejobs{namespace=~"$namespace"})', {"kubetune_finetunejobs"}),
        (
            "histogram_quantile(0.95, sum by (le) (rate(kubetune_queue_wait_seconds_bucket[5m])))",
            {"kubetune_queue_wait_seconds"},
        ),
        ("a_total > 2 * min_over_time(b[1h]) and on (namespace, name) c == 1", {"a", "b", "c"}),
        ('absent(up{job="x"} == 1)', {"up"}),
        ("label_values(kubetune_finetunejobs, namespace)", {"kubetune_finetunejobs"}),
        ("not_a_kubetune_metric offset 5m", {"not_a_kubetune_metric"}),
    ],
)
def test_metric_names(expression: str, names: set[str]) -> None:
    assert metric_names(expression, known={"kubetune_queue_wait_seconds", "a"}) == names
