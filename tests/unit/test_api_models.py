"""The API package: examples parse, cross-field rules hold, the trainer contract derives cleanly."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune_api import ContinuousPretrain, FineTuneJob, MethodType, TrainerConfig, load_manifest
from kubetune_api.conditions import RUNNING, find_condition, set_condition
from kubetune_api.manifests import ManifestError, parse_object
from kubetune_api.trainer_contract import ProgressTarget

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_parses(path: Path) -> None:
    obj = load_manifest(path)
    assert obj.metadata["name"]


def test_examples_cover_every_method_and_a_continuous_pretrain() -> None:
    objects = [load_manifest(p) for p in EXAMPLES]
    methods = {o.spec.method.type for o in objects if isinstance(o, FineTuneJob)}
    assert methods == set(MethodType)
    assert any(isinstance(o, ContinuousPretrain) for o in objects)
    assert any(isinstance(o, FineTuneJob) and len(o.spec.datasets) > 1 for o in objects), "multi-task"


def _minimal() -> dict[str, Any]:
    return yaml.safe_load(
        """
apiVersion: kubetune.io/v1alpha1
kind: FineTuneJob
metadata: {name: t, namespace: ns}
spec:
  baseModel: {uri: "file:///models/base"}
  method: {type: LoRA}
  datasets: [{name: d, uri: "file:///data/d.jsonl", format: prompt-completion}]
  hyperparameters: {epochs: 1}
  output: {uri: "file:///out"}
"""
    )


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = _minimal()
    node = doc
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()


def test_defaults_fill_in() -> None:
    job = parse_object(_minimal())
    assert isinstance(job, FineTuneJob)
    spec = job.spec
    assert (spec.split.train, spec.split.validation, spec.split.test) == (0.8, 0.1, 0.1)
    assert spec.method.lora_settings().rank == 16
    assert spec.hyperparameters.packing is True
    assert spec.resources.gpus_per_node == 1
    assert spec.run_policy.backoff_limit == 3


@pytest.mark.parametrize(
    ("path", "value", "names"),
    [
        ("spec.split", {"train": 0.5, "validation": 0.1, "test": 0.1}, "sum to 1"),
        ("spec.method", {"type": "Full", "lora": {"rank": 8}}, "method.lora"),
        ("spec.method", {"type": "LoRA", "reft": {"rank": 2}}, "method.reft"),
        ("spec.method", {"type": "Adapter"}, "spec.method.type"),
        ("spec.hyperparameters", {"epochs": 1, "maxSteps": 10}, "exactly one of epochs and maxSteps"),
        ("spec.hyperparameters", {}, "exactly one of epochs and maxSteps"),
        ("spec.hyperparameters.learningRate", -1, "spec.hyperparameters.learningRate"),
        ("spec.hyperparameters.batchSize", "eight", "spec.hyperparameters.batchSize"),
        ("spec.datasets.0.uri", "ftp://x/y", "spec.datasets[0].uri"),
        ("spec.datasets.0.weight", 0, "spec.datasets[0].weight"),
        ("spec.datasets.0.format", "csv", "spec.datasets[0].format"),
        ("spec.datasets", [], "spec.datasets"),
        ("spec.baseModel.uri", "http://x", "spec.baseModel.uri"),
        ("spec.output", _DELETE, "spec.output"),
        ("spec.output.mergeAdapter", True, None),  # allowed with LoRA
        ("spec.resources.gpusPerNode", 17, "spec.resources.gpusPerNode"),
        ("spec.resources.memory", "lots", "spec.resources.memory"),
        ("spec.unknownField", 1, "spec.unknownField"),
        ("spec.method.lora", {"rank": 0}, "spec.method.lora.rank"),
        ("spec.method.reft", None, None),
    ],
)
def test_validation_names_the_field(path: str, value: Any, names: str | None) -> None:
    doc = _with(path, value)
    if names is None:
        parse_object(doc)
        return
    with pytest.raises(ManifestError, match=names.replace("[", r"\[").replace("]", r"\]")):
        parse_object(doc)


def test_cross_field_rules() -> None:
    doc = _with("spec.method", {"type": "ReFT"})
    doc["spec"]["output"]["mergeAdapter"] = True
    with pytest.raises(ManifestError, match="mergeAdapter needs method LoRA"):
        parse_object(doc)
    doc = _with("spec.method", {"type": "QLoRA"})
    doc["spec"]["resources"] = {"gpusPerNode": 0}
    with pytest.raises(ManifestError, match="QLoRA needs"):
        parse_object(doc)
    doc = _with("spec.baseModel.fromScratch", True)
    with pytest.raises(ManifestError, match="fromScratch"):
        parse_object(doc)
    doc = _minimal()
    doc["spec"]["datasets"].append(copy.deepcopy(doc["spec"]["datasets"][0]))
    with pytest.raises(ManifestError, match="duplicate name"):
        parse_object(doc)


def test_wrong_kind_and_version_are_named() -> None:
    doc = _minimal()
    doc["kind"] = "TrainJob"
    with pytest.raises(ManifestError, match="kind must be one of"):
        parse_object(doc)
    doc = _minimal()
    doc["apiVersion"] = "kubetune.io/v1"
    with pytest.raises(ManifestError, match=r"apiVersion must be kubetune\.io/v1alpha1"):
        parse_object(doc)


def test_trainer_config_is_derived_from_the_job() -> None:
    doc = _minimal()
    doc["metadata"]["uid"] = "1234"
    doc["spec"]["resources"] = {"gpusPerNode": 4, "nodes": 2}
    job = parse_object(doc)
    assert isinstance(job, FineTuneJob)
    config = TrainerConfig.from_finetunejob(job, image="trainer:1")
    assert config.job.name == "t" and config.job.namespace == "ns" and config.job.uid == "1234"
    assert config.checkpoint.uri == "file:///out/checkpoints"
    assert (config.distributed.nodes, config.distributed.processes_per_node) == (2, 4)
    assert config.progress_target == ProgressTarget.KUBERNETES_STATUS
    assert config.image == "trainer:1"
    # The contract survives a JSON round trip, which is how it reaches the pod.
    assert TrainerConfig.model_validate_json(config.model_dump_json(by_alias=True)) == config


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = t0 + timedelta(minutes=5)
    conditions = set_condition([], type=RUNNING, status=True, reason="PodsRunning", now=t0)
    conditions = set_condition(conditions, type=RUNNING, status=True, reason="StillRunning", now=t1)
    running = find_condition(conditions, RUNNING)
    assert running is not None and running.last_transition_time == t0 and running.reason == "StillRunning"
    conditions = set_condition(conditions, type=RUNNING, status=False, reason="Finished", now=t1)
    running = find_condition(conditions, RUNNING)
    assert running is not None and running.last_transition_time == t1 and len(conditions) == 1
