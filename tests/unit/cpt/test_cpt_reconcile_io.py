"""reconcile(): observe (fake kube.py, real file:// corpus), plan, apply."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubetune_operator import kube
from kubetune_operator.reconcile import continuouspretrain as rc

NOW = datetime(2025, 3, 10, tzinfo=UTC)


class FakeKube:
    def __init__(self) -> None:
        self.children: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []

    def list_continuouspretrain_runs(self, namespace: str, cpt_name: str) -> list[dict[str, Any]]:
        return list(self.children.values())

    def create_finetunejob(self, namespace: str, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.calls.append(("create", manifest["metadata"]["name"]))
        self.children[manifest["metadata"]["name"]] = manifest
        return manifest, True

    def delete_finetunejob(self, namespace: str, name: str) -> None:
        self.calls.append(("delete", name))

    def patch_continuouspretrain_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(("status", patch))


@pytest.fixture
def fake_kube(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    fake = FakeKube()
    for name in (
        "list_continuouspretrain_runs",
        "create_finetunejob",
        "delete_finetunejob",
        "patch_continuouspretrain_status",
    ):
        monkeypatch.setattr(kube, name, getattr(fake, name))
    return fake


def body(corpus_dir: Path, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ContinuousPretrain",
        "metadata": {
            "name": "news",
            "namespace": "ml",
            "uid": "u1",
            "generation": 1,
            "creationTimestamp": "2025-03-01T00:00:00Z",
        },
        "spec": {
            "baseModel": {"uri": "file:///models/base"},
            "corpus": {"uri": f"file://{corpus_dir}/"},
            "trigger": {"minNewDocuments": 2},
            "template": {"hyperparameters": {"maxSteps": 5}},
            "promotion": {"generalEval": {"uri": "file:///eval.txt"}},
            "output": "file:///out/",
            **spec,
        },
        # kopf's own bookkeeping next to ours must neither break parsing nor be patched away.
        "status": {"kopf": {"progress": {}}, **(status or {})},
    }


def test_creates_the_run_then_writes_status_and_is_idempotent(tmp_path: Path, fake_kube: FakeKube) -> None:
    shard = tmp_path / "day1.txt"
    shard.write_text("first document\nsecond document\n")
    os.utime(shard, (NOW.timestamp() - 3600, NOW.timestamp() - 3600))

    first = rc.reconcile(body(tmp_path), NOW)

    assert first.create is not None
    name = first.create["metadata"]["name"]
    assert [c[0] for c in fake_kube.calls] == ["create", "status"]
    patch = fake_kube.calls[1][1]
    assert "kopf" not in patch
    assert patch["activeRun"] == name and patch["runs"][0]["name"] == name

    # A restarted operator that lost the status write sees the child and creates nothing.
    fake_kube.calls.clear()
    again = rc.reconcile(body(tmp_path), NOW)
    assert again.create is None
    assert [c[0] for c in fake_kube.calls] == ["status"]
    assert fake_kube.calls[0][1]["activeRun"] == name


def test_status_unchanged_means_no_patch(tmp_path: Path, fake_kube: FakeKube) -> None:
    first = rc.reconcile(body(tmp_path), NOW)
    fake_kube.calls.clear()
    rc.reconcile(body(tmp_path, status=first.status.to_wire()), NOW)
    assert fake_kube.calls == []


def test_a_spec_only_the_models_refuse_is_reported_as_a_condition(
    tmp_path: Path, fake_kube: FakeKube
) -> None:
    bad = body(tmp_path, template={"hyperparameters": {"maxSteps": 5, "epochs": 1}})
    with pytest.raises(ValueError, match="exactly one of epochs and maxSteps"):
        rc.reconcile(bad, NOW)
    ((kind, patch),) = fake_kube.calls
    assert kind == "status"
    assert patch["conditions"][0]["reason"] == "InvalidSpec"
    assert "spec.template.hyperparameters" in patch["conditions"][0]["message"]
