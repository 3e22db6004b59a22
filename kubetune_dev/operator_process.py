"""The operator as a local subprocess (`python -m kubetune_operator`) against a local control plane.

One helper for the integration tests and the scale benchmark: each gives it the kubeconfig of the
identity the operator must run as (a ServiceAccount token, never the admin's) and the environment
of its deployment; the helper adds what only a local process needs (the checkout on PYTHONPATH,
free metrics/health ports), logs to a file and stops it with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune_dev.kwok_stages import RUN_SECONDS_ANNOTATION

if TYPE_CHECKING:
    from kubetune_dev.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[1]
# Where the operator's packages live in the checkout (what the image installs).
SOURCE_DIRS = (".", "operator", "trainer_image")
OPERATOR_NAMESPACE = "kubetune-system"
# What tests change from the operator's defaults: a Lease that moves within seconds, quick
# validation retries, an image name no kwok pod ever pulls.
TEST_ENV = {
    "KUBETUNE_LEASE_NAMESPACE": OPERATOR_NAMESPACE,
    "KUBETUNE_LEASE_DURATION_SECONDS": "4",
    "KUBETUNE_LEASE_RENEW_SECONDS": "1",
    "KUBETUNE_VALIDATION_RETRY_SECONDS": "2",
    "KUBETUNE_TRAINER_IMAGE": "kubetune/trainer:test",
}


def simulated_finetunejob(
    name: str, namespace: str, annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A small FineTuneJob for the kwok cluster: its trainer pod runs 1 s and succeeds unless
    `annotations` say otherwise; keyword arguments replace whole spec fields."""
    return {
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
            "podMetadata": {"annotations": {RUN_SECONDS_ANNOTATION: "1", **(annotations or {})}},
            **spec,
        },
    }


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


def cluster_role_kubeconfig(
    control_plane: ControlPlane,
    cluster_role: dict[str, Any],
    account: str,
    namespace: str = OPERATOR_NAMESPACE,
) -> Path:
    """A kubeconfig for ServiceAccount `namespace/account` bound to `cluster_role` and nothing else,
    so the operator run with it fails on any permission its RBAC lacks."""
    role_name = cluster_role["metadata"]["name"]
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": role_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    for manifest in (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}},
        cluster_role,
        binding,
    ):
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    return control_plane.service_account_kubeconfig(namespace, account)


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Send `sig`; SIGKILL if it is still running after `timeout` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class OperatorProcess:
    """One operator process; start() again after stop() restarts it on the same ports and log."""

    def __init__(self, kubeconfig: Path, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.env = {
            **os.environ,
            **(env or {}),
            # After the caller's environment: a deployment's env names the pod's ports and identity.
            "KUBECONFIG": str(kubeconfig),
            "PYTHONPATH": os.pathsep.join(str(REPO / d) for d in SOURCE_DIRS),
            "KUBETUNE_METRICS_PORT": str(self.metrics_port),
            "KUBETUNE_HEALTH_PORT": str(self.health_port),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "operator not started"
        return self.process.pid

    def start(self, ready_timeout: float = 60) -> OperatorProcess:
        """Start it and wait until /readyz answers 200 (leader or standby)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kubetune_operator"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"operator exited {self.process.returncode}; log {self.log_path}")
            return (self.probe("/readyz") or (0, ""))[0] == 200

        eventually(ready, timeout=timeout, what=f"operator /readyz (log {self.log_path})")

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        eventually(lambda: text in self.log(), timeout=timeout, what=f"{text!r} in {self.log_path}")

    def probe(self, path: str) -> tuple[int, str] | None:
        """(status, body) from the health server, or None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as response:
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

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.process is not None:
            stop_process(self.process, sig, timeout)
