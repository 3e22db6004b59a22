"""The chart on a real control plane: helm install, the operator running with the chart's
ServiceAccount token takes a FineTuneJob to Succeeded, RBAC refuses what it must not do, a
real Prometheus scrapes the operator and loads the chart's alerts, and uninstall keeps CRDs.

The tests share one release and run in order.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from chart_cluster import (
    CHART,
    RELEASE,
    RELEASE_NAMESPACE,
    REPO,
    WATCHED_NAMESPACE,
    Cluster,
    Prometheus,
    https_status,
)

from kubetune_api import observability
from kubetune_dev.operator_process import OperatorProcess, eventually, simulated_finetunejob
from monitoring.promql import dashboard_metrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOB = "chart-lora"
FTJ_PATH = f"/apis/kubetune.io/v1alpha1/namespaces/{WATCHED_NAMESPACE}/finetunejobs"


def test_release_is_deployed_with_an_admitted_restricted_operator_pod(cluster: Cluster, release: Any) -> None:
    status = json.loads(cluster.helm("status", RELEASE, "-n", RELEASE_NAMESPACE, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    # The namespace enforces Pod Security "restricted": a pod exists only if the API server admitted it.
    pods = eventually(
        lambda: (
            cluster.get("pods", "-n", RELEASE_NAMESPACE, "-l", "app.kubernetes.io/component=operator") or {}
        ).get("items"),
        timeout=60,
        what="operator pod admitted",
    )
    assert pods[0]["spec"]["serviceAccountName"] == RELEASE
    events = cluster.get("events", "-n", RELEASE_NAMESPACE) or {"items": []}
    assert not [e["message"] for e in events["items"] if e["reason"] == "FailedCreate"]


CAN_I = [
    # (verb, resource, namespace, allowed)
    ("watch", "finetunejobs.kubetune.io", WATCHED_NAMESPACE, True),
    ("patch", "finetunejobs.kubetune.io/status", WATCHED_NAMESPACE, True),
    ("create", "jobs.batch", WATCHED_NAMESPACE, True),
    ("get", "secrets", WATCHED_NAMESPACE, True),
    ("create", "roles.rbac.authorization.k8s.io", WATCHED_NAMESPACE, True),
    ("update", "leases.coordination.k8s.io", RELEASE_NAMESPACE, True),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", None, True),
    # Refused: other namespaces, enumerating Secrets, deleting, nodes, cluster-wide RBAC.
    ("get", "secrets", "other-team", False),
    ("get", "secrets", "kube-system", False),
    ("list", "secrets", WATCHED_NAMESPACE, False),
    ("create", "jobs.batch", "other-team", False),
    ("watch", "finetunejobs.kubetune.io", "other-team", False),
    ("delete", "finetunejobs.kubetune.io", WATCHED_NAMESPACE, True),
    ("delete", "continuouspretrains.kubetune.io", WATCHED_NAMESPACE, False),
    ("delete", "jobs.batch", WATCHED_NAMESPACE, False),
    ("delete", "pods", WATCHED_NAMESPACE, False),
    ("delete", "nodes", None, False),
    ("get", "nodes", None, False),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", None, False),
    ("create", "clusterroles.rbac.authorization.k8s.io", None, False),
    ("update", "leases.coordination.k8s.io", "kube-system", False),
    ("delete", "namespaces", None, False),
]


@pytest.mark.parametrize(("verb", "resource", "namespace", "allowed"), CAN_I)
def test_kubectl_auth_can_i(
    cluster: Cluster, service_account: str, verb: str, resource: str, namespace: str | None, allowed: bool
) -> None:
    args = ["auth", "can-i", verb, resource, f"--as={service_account}"]
    args += ["-n", namespace] if namespace else []
    result = cluster.kubectl(*args, check=False)
    assert result.stdout.strip() == ("yes" if allowed else "no"), (args, result.stdout, result.stderr)


def test_real_requests_with_the_token_are_refused(cluster: Cluster, operator_kubeconfig: Path) -> None:
    cluster.kubectl("create", "secret", "generic", "payroll", "-n", "other-team", "--from-literal=k=v")
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "kubetune-escalation"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": RELEASE, "namespace": RELEASE_NAMESPACE}],
    }
    node = cluster.get("nodes")["items"][0]["metadata"]["name"]
    refused = {
        "read a Secret in another namespace": ("GET", "/api/v1/namespaces/other-team/secrets/payroll", None),
        "list Secrets in its own watched namespace": (
            "GET",
            f"/api/v1/namespaces/{WATCHED_NAMESPACE}/secrets",
            None,
        ),
        "delete a node": ("DELETE", f"/api/v1/nodes/{node}", None),
        "create a ClusterRoleBinding": (
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            binding,
        ),
        "delete a trainer Job": ("DELETE", f"/apis/batch/v1/namespaces/{WATCHED_NAMESPACE}/jobs/{JOB}", None),
    }
    for what, (method, path, body) in refused.items():
        assert https_status(operator_kubeconfig, method, path, body) == 403, what
    # The same token is good for what the operator does need (so the 403s above are RBAC, not a bad token).
    # (A new CRD's watch cache may answer 429 for a moment while it initialises.)
    eventually(
        lambda: https_status(operator_kubeconfig, "GET", FTJ_PATH) == 200, timeout=30, what="list as operator"
    )
    # And kubectl with the token says Forbidden too.
    result = cluster.kubectl(
        "get", "secret", "payroll", "-n", "other-team", kubeconfig=operator_kubeconfig, check=False
    )
    assert result.returncode != 0 and "Forbidden" in result.stderr
    assert cluster.get("node", node) is not None
    assert cluster.get("clusterrolebinding", "kubetune-escalation") is None


def finetunejob() -> dict[str, Any]:
    # kwok plays the kubelet: the trainer pod runs 1 s and succeeds.
    return simulated_finetunejob(JOB, WATCHED_NAMESPACE)


def test_operator_with_the_chart_identity_takes_a_job_to_succeeded(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.kubectl("create", "-f", "-", input=json.dumps(finetunejob()))
    done = eventually(
        lambda: (
            (cluster.get("finetunejob", JOB, "-n", WATCHED_NAMESPACE) or {}).get("status", {}).get("phase")
            in {"Succeeded", "Failed"}
            and cluster.get("finetunejob", JOB, "-n", WATCHED_NAMESPACE)
        ),
        timeout=120,
        what=f"{JOB} finished (operator log {operator.log_path})",
    )
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert cluster.get("job", JOB, "-n", WATCHED_NAMESPACE) is not None


def test_operator_needs_no_permission_the_chart_lacks(operator: OperatorProcess) -> None:
    forbidden = [line for line in operator.log().splitlines() if "Forbidden" in line or " 403 " in line]
    assert not forbidden, "\n".join(line[:300] for line in forbidden[:5])


def promtool_check_metrics(text: str) -> list[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (bash hack/install-system-deps.sh)")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def test_promtool_check_metrics_is_clean(operator: OperatorProcess) -> None:
    # Naming lint included: base units only (GPU time is counted in seconds, not hours).
    assert promtool_check_metrics(operator.metrics()) == []


def test_operator_exports_every_metric_the_dashboard_reads(operator: OperatorProcess) -> None:
    text = operator.metrics()
    declared_types = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))
    operator_metrics = set(observability.OPERATOR_METRICS)
    dashboard = dashboard_metrics(operator_metrics | set(observability.TRAINER_METRICS))
    assert dashboard & operator_metrics, "the dashboard reads no operator metric"
    # prometheus_client declares counters without their _total suffix.
    missing = {
        m
        for m in operator_metrics
        if m not in declared_types and m.removesuffix("_total") not in declared_types
    }
    assert not (dashboard & missing), f"dashboard metrics the operator does not export: {dashboard & missing}"
    assert not missing, f"declared in observability.py but not exported: {missing}"


def test_prometheus_scrapes_the_operator_and_loads_the_alerts(prometheus: Prometheus) -> None:
    succeeded = eventually(
        lambda: prometheus.query(
            f'{observability.FINETUNEJOBS_BY_PHASE}{{namespace="{WATCHED_NAMESPACE}",phase="Succeeded"}} >= 1'
        ),
        timeout=60,
        what="kubetune_finetunejobs{phase=Succeeded} in Prometheus",
    )
    (series,) = succeeded
    assert series["metric"]["job"] == f"{RELEASE}-metrics"
    up = prometheus.query(f'up{{job="{RELEASE}-metrics",namespace="{RELEASE_NAMESPACE}"}}')
    assert [s["value"][1] for s in up] == ["1"]
    rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
    assert len(rules) == 7 and all(r["health"] == "ok" for r in rules), rules
    # The operator is up, so its alert stays quiet; the finished job is not stuck.
    firing = {r["name"] for r in rules if r["state"] == "firing"}
    assert not firing & {"KubetuneOperatorDown", "KubetuneFineTuneJobStuckPending"}


def test_upgrade_reaches_the_templated_crds(cluster: Cluster) -> None:
    # Helm never upgrades crds/; templated CRDs follow the release. Toggling crds.keep shows
    # the upgrade rewrote the CRD's metadata in place (same object, jobs untouched).
    def upgrade(*settings: str) -> dict[str, Any]:
        args = ["upgrade", RELEASE, str(CHART), "-n", RELEASE_NAMESPACE, "--reuse-values"]
        cluster.helm(*args, *[arg for setting in settings for arg in ("--set", setting)])
        crd = cluster.get("crd", "finetunejobs.kubetune.io")
        assert crd is not None
        return crd

    before = cluster.get("crd", "finetunejobs.kubetune.io")
    unkept = upgrade("replicaCount=2", "crds.keep=false")
    assert "helm.sh/resource-policy" not in unkept["metadata"]["annotations"]
    kept = upgrade("crds.keep=true")
    assert kept["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert kept["metadata"]["uid"] == before["metadata"]["uid"]
    status = json.loads(cluster.helm("status", RELEASE, "-n", RELEASE_NAMESPACE, "-o", "json").stdout)
    assert status["version"] == 3 and status["info"]["status"] == "deployed"
    assert cluster.get("deployment", RELEASE, "-n", RELEASE_NAMESPACE)["spec"]["replicas"] == 2
    assert cluster.get("finetunejob", JOB, "-n", WATCHED_NAMESPACE)["status"]["phase"] == "Succeeded"


def test_uninstall_keeps_the_crds_and_the_jobs(cluster: Cluster, operator: OperatorProcess) -> None:
    operator.stop()
    cluster.helm("uninstall", RELEASE, "-n", RELEASE_NAMESPACE)
    assert cluster.get("crd", "finetunejobs.kubetune.io") is not None
    assert cluster.get("crd", "continuouspretrains.kubetune.io") is not None
    assert cluster.get("finetunejob", JOB, "-n", WATCHED_NAMESPACE) is not None
    assert cluster.get("clusterrole", RELEASE) is None
    assert cluster.get("role", RELEASE, "-n", WATCHED_NAMESPACE) is None


def test_plain_manifests_apply_on_the_same_cluster(cluster: Cluster) -> None:
    # For users without Helm; the CRDs kept from the uninstalled release are taken over as they are.
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "deploy" / "kubetune.yaml"))
    selector = "app.kubernetes.io/component=operator"
    pods = eventually(
        lambda: (cluster.get("pods", "-n", "kubetune", "-l", selector) or {}).get("items"),
        timeout=60,
        what="operator pod from deploy/kubetune.yaml admitted under restricted Pod Security",
    )
    assert pods[0]["spec"]["serviceAccountName"] == "kubetune"
    namespace = cluster.get("namespace", "kubetune")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
