"""The operator as a subprocess (`python -m kubetune_operator`) against the real control plane.

It runs as ServiceAccount kubetune-system/kubetune-operator bound to exactly
`builders.rbac.OPERATOR_RULES`, so a missing permission fails these tests. One operator
serves the whole session; tests that restart it leave a running one behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubetune_operator.builders.rbac import operator_cluster_role
from operator_api import Api, Manifest

from kubetune_dev.controlplane import ControlPlane
from kubetune_dev.operator_process import (
    TEST_ENV,
    OperatorProcess,
    cluster_role_kubeconfig,
    simulated_finetunejob,
)

OPERATOR_ACCOUNT = "kubetune-operator"


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Api:
    return Api(control_plane)


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: ControlPlane, crds: None) -> Path:
    """A kubeconfig for the operator's ServiceAccount, bound to the operator's ClusterRole only."""
    return cluster_role_kubeconfig(control_plane, operator_cluster_role(OPERATOR_ACCOUNT), OPERATOR_ACCOUNT)


@pytest.fixture(scope="session")
def operator_process(
    operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log_dir = tmp_path_factory.mktemp("operator")
    process = OperatorProcess(
        operator_kubeconfig, log_dir / "operator.log", {**TEST_ENV, "KUBETUNE_OPERATOR_IDENTITY": "primary"}
    )
    process.start()
    process.wait_for_log("leading as primary")
    yield process
    process.stop()
    print(f"operator log: {process.log_path}")


@pytest.fixture
def make_ftj(api: Api, namespace: str, operator_process: OperatorProcess) -> Callable[..., Manifest]:
    """Create a FineTuneJob in the test namespace; keyword arguments go into the spec."""

    def create(name: str = "ftj", annotations: dict[str, str] | None = None, **spec: Any) -> Manifest:
        body = simulated_finetunejob(name, namespace, annotations, **spec)
        return api.create(f"/apis/kubetune.io/v1alpha1/namespaces/{namespace}/finetunejobs", body)

    return create
