"""Just enough PromQL lexing to list the metric names an expression reads, and the
expressions of the Grafana dashboard. The chart's tests use it to hold the dashboard and the
alerts to the metric names in kubetune_api/observability.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
# by (...), without (...), on (...), ignoring (...), group_left (...), group_right (...)
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_LABEL_VALUES = re.compile(r"\blabel_values\s*\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*\w+\s*\)")
_IDENTIFIER = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?=\s*(\(?))")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
DASHBOARD = Path(__file__).resolve().parent.parent / "charts" / "kubetune" / "dashboards" / "kubetune.json"


def metric_names(expression: str, known: Iterable[str] = ()) -> set[str]:
    """Metric names in the expression; suffixed forms of a known metric map back to it.

    `known` lets `x_bucket`/`x_sum`/`x_count` (histograms) and `x_total` (counters declared
    without the suffix) resolve to the declared name `x`.
    """
    text = _STRING.sub('""', expression)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LISTS.sub(" ", text)
    text = _LABEL_VALUES.sub(r" \1 ", text)  # Grafana's label_values(metric, label)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, paren = match.group(1), match.group(2)
        if paren or name.lower() in _KEYWORDS:
            continue  # a function call or a keyword
        names.add(_declared_name(name, set(known)))
    return names


def _declared_name(name: str, known: set[str]) -> str:
    if name in known:
        return name
    for suffix in (*_HISTOGRAM_SUFFIXES, "_total"):
        if name.endswith(suffix) and name[: -len(suffix)] in known:
            return name[: -len(suffix)]
    return name


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query


def dashboard_metrics(known: Iterable[str], path: Path = DASHBOARD) -> set[str]:
    """Metric names the dashboard reads (suffixed forms folded onto the `known` names)."""
    dashboard = json.loads(path.read_text())
    return set().union(*(metric_names(e, known) for _, e in dashboard_expressions(dashboard)))
