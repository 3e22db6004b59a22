"""The operator as a subprocess (`python -m kubetune_operator`) against the real control plane.

It runs as ServiceAccount kubetune-system/kubetune-operator bound to exactly
`builders.rbac.OPERATOR_RULES`, so a missing permission fails these tests. One operator
serves the whole session; tests that restart it leave a running one behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubetune_operator.builders.rbac import operator_cluster_role

from kubetune_dev.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[3]
OPERATOR_NAMESPACE = "kubetune-system"
OPERATOR_ACCOUNT = "kubetune-operator"
Manifest = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], Any], timeout: float = 30, interval: float = 0.25, what: str = "") -> Any:
    """Poll until check() returns something truthy; fail with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}; last: {last!r}")


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log_path: Path, **env: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in (".", "operator", "trainer_image")),
            "KUBETUNE_METRICS_PORT": str(self.metrics_port),
            "KUBETUNE_HEALTH_PORT": str(self.health_port),
            "KUBETUNE_LEASE_NAMESPACE": OPERATOR_NAMESPACE,
            "KUBETUNE_LEASE_DURATION_SECONDS": "4",
            "KUBETUNE_LEASE_RENEW_SECONDS": "1",
            "KUBETUNE_VALIDATION_RETRY_SECONDS": "2",
            "KUBETUNE_TRAINER_IMAGE": "kubetune/trainer:test",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kubetune_operator"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        eventually(lambda: self.probe("/readyz") is not None, timeout=30, what="operator /readyz")
        return self

    def probe(self, path: str) -> tuple[int, str] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Api:
    """Admin REST calls that must succeed (or return None on 404)."""

    def __init__(self, control_plane: ControlPlane) -> None:
        self.cp = control_plane

    def get(self, path: str) -> Manifest | None:
        status, body = self.cp.api("GET", path)
        if status == 404:
            return None
        assert status == 200, (path, status, body)
        return body

    def create(self, path: str, body: Manifest) -> Manifest:
        status, created = self.cp.api("POST", path, body)
        assert status == 201, (path, status, created)
        return created

    def ftj(self, namespace: str, name: str) -> Manifest | None:
        return self.get(f"/apis/kubetune.io/v1alpha1/namespaces/{namespace}/finetunejobs/{name}")


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Api:
    return Api(control_plane)


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: ControlPlane, crds: None) -> Path:
    """A kubeconfig for the operator's ServiceAccount, bound to the operator's ClusterRole only."""
    role = operator_cluster_role("kubetune-operator")
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "kubetune-operator"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "kubetune-operator",
        },
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE}],
    }
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE},
    }
    for manifest in (namespace, account, role, binding):
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    return control_plane.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)


@pytest.fixture(scope="session")
def operator_process(
    operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log_dir = tmp_path_factory.mktemp("operator")
    process = OperatorProcess(
        operator_kubeconfig, log_dir / "operator.log", KUBETUNE_OPERATOR_IDENTITY="primary"
    )
    process.start()
    eventually(lambda: "leading as primary" in process.log(), timeout=30, what="leadership")
    yield process
    process.stop()
    print(f"operator log: {process.log_path}")


@pytest.fixture
def make_ftj(api: Api, namespace: str, operator_process: OperatorProcess) -> Callable[..., Manifest]:
    """Create a FineTuneJob in the test namespace; keyword arguments go into the spec."""

    def create(name: str = "ftj", annotations: dict[str, str] | None = None, **spec: Any) -> Manifest:
        body: Manifest = {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "baseModel": {"uri": "file:///models/tiny"},
                "method": {"type": "LoRA"},
                "objective": "Instruction",
                "datasets": [{"name": "qa", "uri": "file:///data/qa.jsonl", "format": "prompt-completion"}],
                "hyperparameters": {"maxSteps": 4},
                "resources": {"gpusPerNode": 1, "cpu": "1", "memory": "1Gi", "sharedMemory": "64Mi"},
                "output": {"uri": "file:///out/"},
                "podMetadata": {"annotations": {"kwok.kubetune.io/run-seconds": "1", **(annotations or {})}},
                **spec,
            },
        }
        return api.create(f"/apis/kubetune.io/v1alpha1/namespaces/{namespace}/finetunejobs", body)

    return create
