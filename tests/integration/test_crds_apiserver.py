"""The generated CRDs on the real API server: install, accept the examples, refuse bad manifests
with a message that names the field, show printer columns and `kubectl explain` descriptions.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

FTJ: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "bad"},
    "spec": {
        "baseModel": {"uri": "file:///models/base"},
        "method": {"type": "LoRA"},
        "datasets": [{"name": "d", "uri": "file:///data/d.jsonl", "format": "prompt-completion"}],
        "hyperparameters": {"epochs": 1},
        "output": {"uri": "file:///out"},
    },
}
CPT: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "ContinuousPretrain",
    "metadata": {"name": "bad"},
    "spec": {
        "baseModel": {"uri": "file:///models/base"},
        "corpus": {"uri": "file:///corpus/"},
        "trigger": {"minNewDocuments": 10},
        "template": {"hyperparameters": {"epochs": 1}},
        "promotion": {"generalEval": {"uri": "file:///general.txt"}},
        "output": "file:///out/",
    },
}


def _edit(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Copy of base with the dotted path set (or removed when value is _DROP)."""
    doc = copy.deepcopy(base)
    node: Any = doc
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    if value is _DROP:
        del node[last]
    elif last.isdigit() and int(last) == len(node):
        node.append(value)
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return doc


_DROP = object()

# (id, manifest, fragments the API server's message must contain: the field and the why)
INVALID = [
    (
        "lr-type",
        _edit(FTJ, "spec.hyperparameters.learningRate", "fast"),
        ["spec.hyperparameters.learningRate", "number"],
    ),
    (
        "lr-negative",
        _edit(FTJ, "spec.hyperparameters.learningRate", -0.1),
        ["spec.hyperparameters.learningRate", "greater than 0"],
    ),
    (
        "batch-zero",
        _edit(FTJ, "spec.hyperparameters.batchSize", 0),
        ["spec.hyperparameters.batchSize", "greater than or equal to 1"],
    ),
    (
        "split-sum",
        _edit(FTJ, "spec.split", {"train": 0.7, "validation": 0.1, "test": 0.1}),
        ["spec.split", "must sum to 1"],
    ),
    (
        "unknown-method",
        _edit(FTJ, "spec.method.type", "Adapter"),
        ["spec.method.type", "Unsupported value"],
    ),
    (
        "lora-under-full",
        _edit(FTJ, "spec.method", {"type": "Full", "lora": {"rank": 8}}),
        ["spec.method.lora", "only with type LoRA or QLoRA"],
    ),
    (
        "reft-under-lora",
        _edit(FTJ, "spec.method", {"type": "LoRA", "reft": {"rank": 2}}),
        ["spec.method.reft", "only with type ReFT"],
    ),
    (
        "qlora-under-lora",
        _edit(FTJ, "spec.method", {"type": "LoRA", "qlora": {"bits": 4}}),
        ["spec.method.qlora", "only with type QLoRA"],
    ),
    (
        "lora-rank-zero",
        _edit(FTJ, "spec.method.lora", {"rank": 0}),
        ["spec.method.lora.rank", "greater than or equal to 1"],
    ),
    ("missing-datasets", _edit(FTJ, "spec.datasets", _DROP), ["spec.datasets", "Required value"]),
    ("empty-datasets", _edit(FTJ, "spec.datasets", []), ["spec.datasets", "at least 1 item"]),
    ("missing-output", _edit(FTJ, "spec.output", _DROP), ["spec.output", "Required value"]),
    (
        "epochs-and-steps",
        _edit(FTJ, "spec.hyperparameters", {"epochs": 1, "maxSteps": 5}),
        ["spec.hyperparameters", "exactly one of epochs and maxSteps"],
    ),
    (
        "no-stopping-rule",
        _edit(FTJ, "spec.hyperparameters", {"learningRate": 0.1}),
        ["spec.hyperparameters", "exactly one of epochs and maxSteps"],
    ),
    (
        "dataset-scheme",
        _edit(FTJ, "spec.datasets.0.uri", "ftp://host/d.jsonl"),
        ["spec.datasets[0].uri", "should match"],
    ),
    (
        "dataset-format",
        _edit(FTJ, "spec.datasets.0.format", "csv"),
        ["spec.datasets[0].format", "Unsupported value"],
    ),
    (
        "dataset-weight",
        _edit(FTJ, "spec.datasets.0.weight", 0),
        ["spec.datasets[0].weight", "greater than 0"],
    ),
    (
        "dataset-name",
        _edit(FTJ, "spec.datasets.0.name", "Has_Caps"),
        ["spec.datasets[0].name", "should match"],
    ),
    (
        "dataset-duplicate",
        _edit(FTJ, "spec.datasets.1", {"name": "d", "uri": "file:///x.txt"}),
        ["spec.datasets[1]", "Duplicate value"],
    ),
    (
        "base-scheme",
        _edit(FTJ, "spec.baseModel.uri", "http://models/x"),
        ["spec.baseModel.uri", "should match"],
    ),
    (
        "too-many-gpus",
        _edit(FTJ, "spec.resources.gpusPerNode", 17),
        ["spec.resources.gpusPerNode", "less than or equal to 16"],
    ),
    (
        "bad-quantity",
        _edit(FTJ, "spec.resources.memory", "lots"),
        ["spec.resources.memory", "should match"],
    ),
    ("unknown-field", _edit(FTJ, "spec.learningRate", 0.1), ['unknown field "spec.learningRate"']),
    (
        "merge-with-reft",
        _edit(_edit(FTJ, "spec.method.type", "ReFT"), "spec.output.mergeAdapter", True),
        ["spec.output.mergeAdapter", "needs method LoRA or QLoRA"],
    ),
    (
        "qlora-on-cpu",
        _edit(_edit(FTJ, "spec.method.type", "QLoRA"), "spec.resources", {"gpusPerNode": 0}),
        ["spec.method.type", "QLoRA needs resources.gpusPerNode > 0"],
    ),
    (
        "scratch-with-lora",
        _edit(FTJ, "spec.baseModel.fromScratch", True),
        ["spec.baseModel.fromScratch", "needs method Full"],
    ),
    (
        "cpt-replay-ratio",
        _edit(CPT, "spec.replay", {"uri": "file:///general/", "ratio": 0.95}),
        ["spec.replay.ratio", "less than or equal to 0.9"],
    ),
    (
        "cpt-no-trigger",
        _edit(CPT, "spec.trigger", {"pollIntervalSeconds": 60}),
        ["spec.trigger", "set schedule, minNewDocuments or both"],
    ),
    (
        "cpt-schedule",
        _edit(CPT, "spec.trigger.schedule", "every day"),
        ["spec.trigger.schedule", "should match"],
    ),
    (
        "cpt-concurrency",
        _edit(CPT, "spec.concurrencyPolicy", "Allow"),
        ["spec.concurrencyPolicy", "Unsupported value"],
    ),
]


def _apply(kubectl: Kubectl, namespace: str, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False)


@pytest.fixture(scope="module", autouse=True)
def _crds_installed(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/finetunejobs.kubetune.io",
        "crd/continuouspretrains.kubetune.io",
    )


def test_crds_are_established(kubectl: Kubectl) -> None:
    for name in ("finetunejobs.kubetune.io", "continuouspretrains.kubetune.io"):
        result = kubectl(
            "get",
            "crd",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Established')].status}",
        )
        assert result.stdout == "True"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted(kubectl: Kubectl, namespace: str, path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    manifest["metadata"].pop("namespace", None)
    result = _apply(kubectl, namespace, manifest)
    assert result.returncode == 0, result.stderr
    # Server-side defaults are filled in, so GitOps tools see the same object the models produce.
    plural = "finetunejobs" if manifest["kind"] == "FineTuneJob" else "continuouspretrains"
    stored = json.loads(
        kubectl("get", plural, manifest["metadata"]["name"], "-n", namespace, "-o", "json").stdout
    )
    if manifest["kind"] == "FineTuneJob":
        assert stored["spec"]["split"]["seed"] >= 0
        assert stored["spec"]["runPolicy"]["suspend"] is False


@pytest.mark.parametrize(
    ("manifest", "fragments"), [(m, f) for _, m, f in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_invalid_manifests_are_refused_naming_the_field(
    kubectl: Kubectl, namespace: str, manifest: dict[str, Any], fragments: list[str]
) -> None:
    result = _apply(kubectl, namespace, manifest)
    assert result.returncode != 0, f"accepted: {json.dumps(manifest)}"
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_at_least_twenty_invalid_cases() -> None:
    assert len(INVALID) >= 20


def test_immutable_fields_cannot_change_but_suspend_can(kubectl: Kubectl, namespace: str) -> None:
    job = _edit(FTJ, "metadata.name", "immutable")
    assert _apply(kubectl, namespace, job).returncode == 0
    changed = _apply(kubectl, namespace, _edit(job, "spec.method.type", "Full"))
    assert changed.returncode != 0 and "method is immutable" in changed.stderr
    changed = _apply(kubectl, namespace, _edit(job, "spec.hyperparameters.learningRate", 0.5))
    assert changed.returncode != 0 and "hyperparameters is immutable" in changed.stderr
    suspended = _apply(kubectl, namespace, _edit(job, "spec.runPolicy", {"suspend": True}))
    assert suspended.returncode == 0, suspended.stderr


def test_printer_columns_and_short_names(kubectl: Kubectl, namespace: str) -> None:
    assert _apply(kubectl, namespace, _edit(FTJ, "metadata.name", "columns")).returncode == 0
    assert _apply(kubectl, namespace, _edit(CPT, "metadata.name", "columns")).returncode == 0
    status = {
        "status": {
            "phase": "Running",
            "progress": {"percent": 42.5},
            "metrics": {"trainLoss": 1.25},
        }
    }
    kubectl(
        "patch",
        "ftj",
        "columns",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    header, row = kubectl("get", "ftj", "-n", namespace).stdout.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "LOSS", "AGE"]
    assert row.split()[:4] == ["columns", "Running", "42.5", "1.25"]
    wide = kubectl("get", "ftj", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert {"VAL-LOSS", "ETA", "METHOD"} <= set(wide)
    header = kubectl("get", "cpt", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "GENERATION", "LAST-RUN", "NEXT-RUN", "AGE"]
    both = kubectl("get", "kubetune", "-n", namespace, "-o", "name").stdout.split()
    assert "finetunejob.kubetune.io/columns" in both and "continuouspretrain.kubetune.io/columns" in both


def test_kubectl_explain_shows_the_model_docstrings(kubectl: Kubectl) -> None:
    spec = kubectl("explain", "ftj.spec").stdout
    assert "Desired state of a FineTuneJob" in spec
    assert "Full fine-tuning, LoRA, QLoRA or ReFT" in spec
    guard = kubectl("explain", "ftj.spec.evaluation.forgettingGuard.maxLossIncreaseRatio").stdout
    assert "Largest allowed relative increase of the general loss" in guard
    replay = kubectl("explain", "cpt.spec.replay.ratio").stdout
    assert "Share of replay documents" in replay
