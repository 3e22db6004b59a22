"""The local control plane behaves like a real cluster with GPU nodes (kwok fakes kubelets)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubetune_api.constants import (
    GPU_NODE_LABEL_KEY,
    GPU_NODE_LABEL_VALUE,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
)
from kubetune_dev.controlplane import GPU_NODE_NAMES, GPU_PRODUCT, SYSTEM_NODE_NAME, ControlPlane
from kubetune_dev.kwok_stages import (
    DISRUPTION_ANNOTATION,
    EXIT_CODE_ANNOTATION,
    MESSAGE_ANNOTATION,
    OUTCOME_ANNOTATION,
    RUN_SECONDS_ANNOTATION,
)

pytestmark = pytest.mark.integration

Manifest = dict[str, Any]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def get_json(kubectl: Kubectl, *args: str) -> Manifest:
    result: Manifest = json.loads(kubectl("get", "-o", "json", *args).stdout)
    return result


def wait_until(
    kubectl: Kubectl,
    args: tuple[str, ...],
    predicate: Callable[[Manifest], bool],
    timeout: float = 30,
) -> Manifest:
    """Poll `kubectl get -o json ARGS` until predicate(object) holds; fail with the last state."""
    deadline = time.monotonic() + timeout
    while True:
        current = get_json(kubectl, *args)
        if predicate(current):
            return current
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting on {args}; last state:\n{json.dumps(current)[:3000]}")
        time.sleep(0.25)


def condition(obj: Manifest, kind: str) -> Manifest | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def pod_template(annotations: dict[str, str], **spec: Any) -> Manifest:
    return {
        "metadata": {"annotations": annotations},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "trainer", "image": "kubetune/trainer:test"}],
            **spec,
        },
    }


def pod(name: str, annotations: dict[str, str], **spec: Any) -> Manifest:
    manifest = {"apiVersion": "v1", "kind": "Pod", **pod_template(annotations, **spec)}
    manifest["metadata"]["name"] = name
    return manifest


def job(name: str, annotations: dict[str, str], **job_spec: Any) -> Manifest:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": pod_template(annotations), **job_spec},
    }


GPU_TOLERATION = {
    "key": GPU_TAINT_KEY,
    "operator": "Equal",
    "value": GPU_TAINT_VALUE,
    "effect": GPU_TAINT_EFFECT,
}


def test_api_server_reports_pinned_version(control_plane: ControlPlane, kubectl: Kubectl) -> None:
    status, version = control_plane.api("GET", "/version")
    assert status == 200
    assert version["gitVersion"].startswith("v1.36.")
    assert (version["major"], version["minor"]) == ("1", "36")

    versions = json.loads(kubectl("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == version["gitVersion"]
    assert versions["clientVersion"]["gitVersion"] == version["gitVersion"]


def test_fake_nodes_are_ready_with_gpus(kubectl: Kubectl) -> None:
    nodes = {n["metadata"]["name"]: n for n in get_json(kubectl, "nodes")["items"]}
    assert set(nodes) >= {*GPU_NODE_NAMES, SYSTEM_NODE_NAME}
    for node in nodes.values():
        assert condition(node, "Ready")["status"] == "True"  # type: ignore[index]
    for name in GPU_NODE_NAMES:
        node = nodes[name]
        assert node["status"]["allocatable"][GPU_RESOURCE] == "8"
        assert node["status"]["capacity"][GPU_RESOURCE] == "8"
        assert node["metadata"]["labels"][GPU_PRODUCT_LABEL] == GPU_PRODUCT
        assert node["metadata"]["labels"][GPU_NODE_LABEL_KEY] == GPU_NODE_LABEL_VALUE
        assert {"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": GPU_TAINT_EFFECT} in node[
            "spec"
        ]["taints"]
    system = nodes[SYSTEM_NODE_NAME]
    assert GPU_RESOURCE not in system["status"]["allocatable"]
    assert not system["spec"].get("taints")


def test_job_runs_to_completion(
    kubectl: Kubectl, namespace: str, apply: Callable[[Manifest], Manifest]
) -> None:
    apply(job("ok", {RUN_SECONDS_ANNOTATION: "1"}, completions=2, parallelism=2))

    finished = wait_until(
        kubectl,
        ("-n", namespace, "job/ok"),
        lambda j: (condition(j, "Complete") or {}).get("status") == "True",
    )
    assert finished["status"]["succeeded"] == 2
    pods = get_json(kubectl, "-n", namespace, "pods", "-l", "job-name=ok")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Succeeded"
        assert pod["spec"]["nodeName"] == SYSTEM_NODE_NAME  # GPU nodes are tainted
        assert pod["status"]["podIP"]
        assert pod["status"]["hostIP"]
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_gpu_job_lands_on_a_gpu_node(
    kubectl: Kubectl, namespace: str, apply: Callable[[Manifest], Manifest]
) -> None:
    gpu_job = job("gpu", {RUN_SECONDS_ANNOTATION: "0"})
    gpu_job["spec"]["template"]["spec"].update(
        tolerations=[GPU_TOLERATION],
        nodeSelector={GPU_PRODUCT_LABEL: GPU_PRODUCT},
    )
    gpu_job["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {GPU_RESOURCE: "1"}  # other tests may hold GPUs on the shared cluster
    }
    apply(gpu_job)

    wait_until(
        kubectl,
        ("-n", namespace, "job/gpu"),
        lambda j: (condition(j, "Complete") or {}).get("status") == "True",
    )
    (pod,) = get_json(kubectl, "-n", namespace, "pods", "-l", "job-name=gpu")["items"]
    assert pod["spec"]["nodeName"] in GPU_NODE_NAMES


def test_failed_pod_reports_exit_code_and_message(
    kubectl: Kubectl, namespace: str, apply: Callable[[Manifest], Manifest]
) -> None:
    message = json.dumps({"error": "dataset 'train' has no rows", "phase": "data-prep"})
    bad = pod(
        "bad-config",
        {OUTCOME_ANNOTATION: "Failed", EXIT_CODE_ANNOTATION: "3", MESSAGE_ANNOTATION: message},
    )
    bad["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    apply(bad)

    failed = wait_until(
        kubectl, ("-n", namespace, "pod/bad-config"), lambda p: p["status"]["phase"] == "Failed"
    )
    statuses = failed["status"]["containerStatuses"]
    assert {s["name"] for s in statuses} == {"trainer", "sidecar"}
    for container in statuses:
        terminated = container["state"]["terminated"]
        assert terminated["exitCode"] == 3
        assert terminated["message"] == message
        assert terminated["reason"] == "Error"


def test_pod_failure_policy_sees_exit_codes_and_disruptions(
    kubectl: Kubectl, namespace: str, apply: Callable[[Manifest], Manifest]
) -> None:
    """The operator's Jobs rely on these: exit code 3 fails the Job at once, a disruption is
    retried without counting against backoffLimit."""
    policy = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [3]},
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }
    apply(
        job(
            "config-error",
            {OUTCOME_ANNOTATION: "Failed", EXIT_CODE_ANNOTATION: "3", RUN_SECONDS_ANNOTATION: "0"},
            backoffLimit=5,
            podFailurePolicy=policy,
        )
    )
    apply(
        job(
            "preempted",
            {
                OUTCOME_ANNOTATION: "Failed",
                EXIT_CODE_ANNOTATION: "143",
                DISRUPTION_ANNOTATION: "true",
                RUN_SECONDS_ANNOTATION: "0",
            },
            backoffLimit=0,
            podFailurePolicy=policy,
        )
    )

    failed = wait_until(
        kubectl,
        ("-n", namespace, "job/config-error"),
        lambda j: (condition(j, "Failed") or {}).get("status") == "True",
    )
    assert condition(failed, "Failed")["reason"] == "PodFailurePolicy"  # type: ignore[index]
    assert failed["status"].get("failed") == 1  # no retries despite backoffLimit 5

    # backoffLimit 0, yet the disrupted pod is ignored: once the Job controller has taken
    # the pod into account (its tracking finalizer is gone) nothing counts as failed.
    # (Waiting for the replacement pod instead would cost the controller's 10s backoff.)
    wait_until(
        kubectl,
        ("-n", namespace, "pods", "-l", "job-name=preempted"),
        lambda pods: any(
            p["status"]["phase"] == "Failed"
            and condition(p, "DisruptionTarget")
            and not p["metadata"].get("finalizers")
            for p in pods["items"]
        ),
    )
    preempted = get_json(kubectl, "-n", namespace, "job/preempted")
    assert preempted["status"].get("failed", 0) == 0
    for kind in ("Failed", "FailureTarget"):
        assert (condition(preempted, kind) or {}).get("status") != "True"


def test_gpu_pod_too_large_stays_pending(
    kubectl: Kubectl, namespace: str, apply: Callable[[Manifest], Manifest]
) -> None:
    too_big = pod("too-big", {}, tolerations=[GPU_TOLERATION])
    too_big["spec"]["containers"][0]["resources"] = {"limits": {GPU_RESOURCE: "16"}}
    apply(too_big)

    pending = wait_until(
        kubectl,
        ("-n", namespace, "pod/too-big"),
        lambda p: (condition(p, "PodScheduled") or {}).get("reason") == "Unschedulable",
    )
    assert pending["status"]["phase"] == "Pending"
    assert GPU_RESOURCE in condition(pending, "PodScheduled")["message"]  # type: ignore[index]


def test_deleting_owner_garbage_collects_job_and_pods(
    kubectl: Kubectl, namespace: str, apply: Callable[[Manifest], Manifest]
) -> None:
    owner = apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    owned = job("owned", {OUTCOME_ANNOTATION: "Running"})
    owned["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "owner",
            "uid": owner["metadata"]["uid"],
        }
    ]
    apply(owned)
    wait_until(
        kubectl,
        ("-n", namespace, "pods", "-l", "job-name=owned"),
        lambda pods: [p["status"]["phase"] for p in pods["items"]] == ["Running"],
    )

    kubectl("delete", "-n", namespace, "configmap/owner")

    wait_until(
        kubectl,
        ("-n", namespace, "jobs,pods"),  # the namespace holds nothing else
        lambda objects: not objects["items"],
    )
    assert kubectl("get", "-n", namespace, "job/owned", check=False).returncode != 0


def test_service_account_kubeconfig_acts_with_rbac_of_that_account(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    kubectl("create", "serviceaccount", "operator", "-n", namespace)
    config = control_plane.service_account_kubeconfig(
        namespace, "operator", tmp_path / "operator.kubeconfig"
    )
    as_operator = ("--kubeconfig", str(config), "-n", namespace)  # the last --kubeconfig wins

    who = kubectl(*as_operator, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert who.stdout == f"system:serviceaccount:{namespace}:operator"
    denied = kubectl(*as_operator, "get", "pods", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr

    kubectl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", namespace)
    kubectl(
        "create", "rolebinding", "operator-reads-pods", "--role=pod-reader",
        f"--serviceaccount={namespace}:operator", "-n", namespace,
    )  # fmt: skip
    kubectl(*as_operator, "get", "pods")
