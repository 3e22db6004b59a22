"""Helpers for the chart's integration tests: a control plane of the chart's own, the operator
as a local process with the chart's identity, a real Prometheus, raw requests with a token.

The chart gets a control plane of its own (not the session's `control_plane`): `helm install`
is tested the way a platform team runs it, on a cluster without the CRDs, and no other
operator (e.g. the operator tests' cluster-wide one) can reconcile the jobs here, so what
succeeds was done with the chart's ServiceAccount alone.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubetune_dev.controlplane import ControlPlane
from kubetune_dev.operator_process import OperatorProcess, eventually, free_port, stop_process

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "kubetune"
RELEASE = "kubetune"
RELEASE_NAMESPACE = "kubetune-system"
WATCHED_NAMESPACE = "ml-team"
KUBE_VERSION = "1.36.0"


@dataclass
class Cluster:
    control_plane: ControlPlane
    binaries: dict[str, Path]

    def run(
        self,
        tool: str,
        *args: str,
        check: bool = True,
        input: str | None = None,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        config = kubeconfig or self.control_plane.kubeconfig
        result = subprocess.run(
            [str(self.binaries[tool]), f"--kubeconfig={config}", *args],
            capture_output=True,
            text=True,
            input=input,
            check=False,
            timeout=180,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, **kwargs)

    def helm(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, **kwargs)

    def get(self, *args: str) -> dict[str, Any] | None:
        result = self.kubectl("get", *args, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None


def chart_operator(kubeconfig: Path, deployment_env: dict[str, str], log_path: Path) -> OperatorProcess:
    """`python -m kubetune_operator` with the environment the chart's Deployment gives it; only
    what a local process needs differs from the pod: free ports (OperatorProcess), its name."""
    env = {**deployment_env, "POD_NAME": "kubetune-chart-test", "POD_NAMESPACE": RELEASE_NAMESPACE}
    return OperatorProcess(kubeconfig, log_path, env)


class Prometheus:
    """Debian's prometheus on loopback, scraping the local operator every second."""

    def __init__(
        self, binary: str, directory: Path, operator: OperatorProcess, rules: dict[str, Any]
    ) -> None:
        self.port = free_port()
        self.directory = directory
        (directory / "rules.yaml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(directory / "rules.yaml")],
            "scrape_configs": [
                {
                    # Named and labelled like the chart's ServiceMonitor target would be.
                    "job_name": f"{RELEASE}-metrics",
                    "honor_labels": True,
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{operator.metrics_port}"],
                            "labels": {"namespace": RELEASE_NAMESPACE},
                        }
                    ],
                }
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = directory / "prometheus.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        eventually(self.ready, timeout=60, what=f"prometheus /-/ready (log {self.log_path})")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=promql)["result"])

    def stop(self) -> None:
        stop_process(self.process)


def https_status(kubeconfig: Path, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    """A raw request with the kubeconfig's bearer token; returns the HTTP status."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster_config = config["clusters"][0]["cluster"]
    token = config["users"][0]["user"]["token"]
    context = ssl.create_default_context()
    context.load_verify_locations(
        cadata=base64.b64decode(cluster_config["certificate-authority-data"]).decode()
    )
    request = urllib.request.Request(
        cluster_config["server"] + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
