"""A ContinuousPretrain-scoped operator on the real control plane.

This operator has its own Lease and watches only `cpt-*` namespaces, so it never competes with
the operator tests' session operator for their namespaces.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubetune_operator.builders import continuouspretrain as cpt_builders
from kubetune_operator.builders.rbac import OPERATOR_RULES

from kubetune_dev.controlplane import ControlPlane
from kubetune_dev.operator_process import TEST_ENV, OperatorProcess, cluster_role_kubeconfig

CPT_PATH = "/apis/kubetune.io/v1alpha1/namespaces/{ns}/continuouspretrains"


def _missing_rules() -> list[dict[str, list[str]]]:
    """CPT rules the shared ClusterRole does not grant yet (empty once OPERATOR_RULES includes them)."""
    granted = {(g, r, v) for rule in OPERATOR_RULES for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}  # fmt: skip
    missing = []
    for rule in cpt_builders.OPERATOR_RULES:
        verbs = [v for v in rule["verbs"] if (rule["apiGroups"][0], rule["resources"][0], v) not in granted]
        if verbs:
            missing.append({**rule, "verbs": verbs})
    return missing


@pytest.fixture(scope="session")
def cpt_operator(
    control_plane: ControlPlane, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    account = "kubetune-operator-cpt"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": account},
        "rules": [*OPERATOR_RULES, *_missing_rules()],
    }
    kubeconfig = cluster_role_kubeconfig(control_plane, role, account)
    log_dir = tmp_path_factory.mktemp("cpt-operator")
    process = OperatorProcess(
        kubeconfig,
        log_dir / "operator.log",
        {
            **TEST_ENV,
            "KUBETUNE_OPERATOR_IDENTITY": "cpt",
            "KUBETUNE_LEASE_NAME": "kubetune-operator-cpt",
            "KUBETUNE_WATCH_NAMESPACES": "cpt-*",
        },
    )
    process.start()
    process.wait_for_log("leading as cpt")
    yield process
    process.stop()
    print(f"ContinuousPretrain operator log: {process.log_path}")


@pytest.fixture
def cpt_namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"cpt-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def make_cpt(
    control_plane: ControlPlane, cpt_namespace: str, cpt_operator: OperatorProcess, tmp_path: Path
) -> Callable[..., dict[str, Any]]:
    """Create a ContinuousPretrain whose runs' pods end as `pod_annotations` tell kwok."""

    def create(
        name: str = "cpt", pod_annotations: dict[str, str] | None = None, **spec: Any
    ) -> dict[str, Any]:
        body = {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "ContinuousPretrain",
            "metadata": {"name": name, "namespace": cpt_namespace},
            "spec": {
                "baseModel": {"uri": "file:///models/base"},
                "corpus": {"uri": f"file://{tmp_path}/corpus/"},
                "trigger": {"minNewDocuments": 3, "pollIntervalSeconds": 10},
                "template": {
                    "hyperparameters": {"maxSteps": 4},
                    "resources": {"gpusPerNode": 1, "cpu": "1", "memory": "1Gi", "sharedMemory": "64Mi"},
                    "podMetadata": {
                        "annotations": {"kwok.kubetune.io/run-seconds": "1", **(pod_annotations or {})}
                    },
                },
                "replay": {"uri": "file:///data/general/", "ratio": 0.25},
                "promotion": {"generalEval": {"uri": "file:///data/general-eval.txt"}},
                "output": "file:///out/",
                **spec,
            },
        }
        status, created = control_plane.api("POST", CPT_PATH.format(ns=cpt_namespace), body)
        if status != 201:  # the API server's message names the refused field
            raise AssertionError(f"HTTP {status}: {created.get('message', created)}")
        return dict(created)

    return create
