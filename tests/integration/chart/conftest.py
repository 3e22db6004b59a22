"""Fixtures: the chart installed into its own control plane, the operator running with the
chart's ServiceAccount token, and Prometheus scraping it (helpers in chart_cluster.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_cluster import (
    CHART,
    KUBE_VERSION,
    RELEASE,
    RELEASE_NAMESPACE,
    WATCHED_NAMESPACE,
    Cluster,
    Prometheus,
    chart_operator,
)

from kubetune_dev.controlplane import ControlPlane
from kubetune_dev.operator_process import OperatorProcess


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, kube_binaries: dict[str, Path]) -> Iterator[Cluster]:
    control_plane = ControlPlane(binaries=kube_binaries)
    control_plane.start()
    try:
        yield Cluster(control_plane, kube_binaries)
    finally:
        if request.session.testsfailed:
            control_plane.keep_state = True
        control_plane.stop()


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> dict[str, Any]:
    """The chart installed as a platform team would, scoped to one watched namespace.

    The release namespace enforces the restricted Pod Security Standard, so the API server
    itself refuses an operator pod whose security context falls short.
    """
    values = {"watchNamespaces": [WATCHED_NAMESPACE], "metrics": {"serviceMonitor": {"enabled": False}}}
    for namespace, labels in (
        (RELEASE_NAMESPACE, {"pod-security.kubernetes.io/enforce": "restricted"}),
        (WATCHED_NAMESPACE, {}),
        ("other-team", {}),
    ):
        cluster.kubectl("create", "namespace", namespace)
        for key, value in labels.items():
            cluster.kubectl("label", "namespace", namespace, f"{key}={value}")
    cluster.helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        RELEASE_NAMESPACE,
        "--values",
        "-",
        "--wait-for-jobs=false",
        input=yaml.safe_dump(values),
    )
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd",
        "finetunejobs.kubetune.io",
        "continuouspretrains.kubetune.io",
        "--timeout=60s",
    )
    return values


@pytest.fixture(scope="module")
def service_account(release: dict[str, Any]) -> str:
    return f"system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}"


@pytest.fixture(scope="module")
def operator_kubeconfig(cluster: Cluster, release: dict[str, Any]) -> Path:
    """Credentials of the chart's ServiceAccount (TokenRequest API), never the admin's."""
    return cluster.control_plane.service_account_kubeconfig(RELEASE_NAMESPACE, RELEASE)


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    deployment = cluster.get("deployment", RELEASE, "-n", RELEASE_NAMESPACE)
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    process = chart_operator(operator_kubeconfig, env, tmp_path_factory.mktemp("operator") / "operator.log")
    process.start()
    yield process
    process.stop()
    print(f"operator log: {process.log_path}")


@pytest.fixture(scope="module")
def prometheus(
    cluster: Cluster, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (bash hack/install-system-deps.sh)")
    rendered = cluster.helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        RELEASE_NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--show-only",
        "templates/prometheusrule.yaml",
    )
    server = Prometheus(
        binary, tmp_path_factory.mktemp("prometheus"), operator, yaml.safe_load(rendered.stdout)["spec"]
    )
    yield server
    server.stop()
