"""The batch/v1 Job that runs the trainer image: one pod per node, restricted security context."""

from __future__ import annotations

from typing import Any

from kubetune_api import labels
from kubetune_api.constants import (
    EXIT_CONFIG_ERROR,
    EXIT_DATA_ERROR,
    EXIT_GATE_FAILED,
    GPU_NODE_LABEL_KEY,
    GPU_NODE_LABEL_VALUE,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    TERMINATION_MESSAGE_PATH,
    TRAINER_CONFIG_ENV,
    TRAINER_CONFIG_FILE,
    TRAINER_CONFIG_MOUNT,
)
from kubetune_api.finetunejob import FineTuneJob

from .common import (
    CONTAINER_NAME,
    RENDEZVOUS_PORT,
    TRAINER_COMPONENT,
    child_metadata,
    config_map_name,
    job_name,
    rendezvous_service_name,
    service_account_name,
)
from .references import HF_TOKEN_KEY, pvc_claims

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PVC_ROOT = "/mnt/pvc"
PVC_ROOT_ENV = "KUBETUNE_PVC_ROOT"
MODEL_CACHE_PATH = "/var/cache/kubetune"
SCRATCH_PATH = "/tmp"
TRAINER_UID = 1000
CONFIG_PATH = f"{TRAINER_CONFIG_MOUNT}/{TRAINER_CONFIG_FILE}"


def trainer_command(ftj: FineTuneJob) -> list[str]:
    resources = ftj.spec.resources
    if resources.nodes == 1:
        return ["python", "-m", "kubetune_trainer", "--config", CONFIG_PATH]
    # Rank 0 is the pod with completion index 0; its stable name comes from the headless Service.
    master = f"{job_name(ftj.name)}-0.{rendezvous_service_name(ftj.name)}"
    return [
        "torchrun",
        "--nnodes", str(resources.nodes),
        "--nproc-per-node", str(max(1, resources.gpus_per_node)),
        "--node-rank", "$(JOB_COMPLETION_INDEX)",
        "--master-addr", master,
        "--master-port", str(RENDEZVOUS_PORT),
        "-m", "kubetune_trainer",
    ]  # fmt: skip


def _env(ftj: FineTuneJob) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": TRAINER_CONFIG_ENV, "value": CONFIG_PATH},
        {"name": PVC_ROOT_ENV, "value": PVC_ROOT},
        # The root filesystem is read-only: every cache and scratch path points at an emptyDir.
        {"name": "HOME", "value": SCRATCH_PATH},
        {"name": "TMPDIR", "value": SCRATCH_PATH},
        {"name": "HF_HOME", "value": f"{MODEL_CACHE_PATH}/huggingface"},
        {"name": "XDG_CACHE_HOME", "value": MODEL_CACHE_PATH},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    secret_ref = ftj.spec.base_model.secret_ref
    if secret_ref is not None:
        env.append(
            {
                "name": HF_TOKEN_KEY,
                "valueFrom": {"secretKeyRef": {"name": secret_ref.name, "key": HF_TOKEN_KEY}},
            }
        )
    return env


def _resources(ftj: FineTuneJob) -> dict[str, Any]:
    spec = ftj.spec.resources
    requests: dict[str, Any] = {"cpu": spec.cpu, "memory": spec.memory}
    limits: dict[str, Any] = {"memory": spec.memory}
    if spec.gpus_per_node > 0:
        # Extended resources must have requests == limits.
        requests[GPU_RESOURCE] = str(spec.gpus_per_node)
        limits[GPU_RESOURCE] = str(spec.gpus_per_node)
    return {"requests": requests, "limits": limits}


def _volumes_and_mounts(ftj: FineTuneJob) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "trainer-config", "configMap": {"name": config_map_name(ftj.name)}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": ftj.spec.resources.shared_memory}},
        {"name": "model-cache", "emptyDir": {}},
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "trainer-config", "mountPath": TRAINER_CONFIG_MOUNT, "readOnly": True},
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": MODEL_CACHE_PATH},
        {"name": "scratch", "mountPath": SCRATCH_PATH},
    ]
    for index, (claim, writable) in enumerate(pvc_claims(ftj).items()):
        volume = f"pvc-{index}"
        volumes.append(
            {"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": not writable}}
        )
        mounts.append({"name": volume, "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": not writable})
    return volumes, mounts


def _placement(ftj: FineTuneJob) -> dict[str, Any]:
    spec = ftj.spec.resources
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    if spec.gpus_per_node > 0:
        node_selector[GPU_NODE_LABEL_KEY] = GPU_NODE_LABEL_VALUE
        if spec.gpu_product:
            node_selector[GPU_PRODUCT_LABEL] = spec.gpu_product
        tolerations.append(
            {"key": GPU_TAINT_KEY, "operator": "Equal", "value": GPU_TAINT_VALUE, "effect": GPU_TAINT_EFFECT}
        )
    node_selector.update(spec.node_selector)
    tolerations += [t.to_wire() for t in spec.tolerations]
    placement: dict[str, Any] = {}
    if node_selector:
        placement["nodeSelector"] = node_selector
    if tolerations:
        placement["tolerations"] = tolerations
    if spec.priority_class_name:
        placement["priorityClassName"] = spec.priority_class_name
    return placement


def pod_failure_policy() -> dict[str, Any]:
    return {
        "rules": [
            # A retry cannot fix a bad config, bad data or a failed forgetting gate.
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": [EXIT_CONFIG_ERROR, EXIT_DATA_ERROR, EXIT_GATE_FAILED],
                },
            },
            # Preemption, eviction, node drain: not the trainer's fault, do not spend a retry.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            # Anything else (OOM, NCCL timeout, crash) counts against backoffLimit.
            {
                "action": "Count",
                "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "NotIn", "values": [0]},
            },
        ]
    }


def job_suspended(ftj: FineTuneJob) -> bool:
    """Created suspended when the user suspends it or a Kueue queue must admit it first."""
    return ftj.spec.run_policy.suspend or ftj.spec.queue_name is not None


def trainer_job(ftj: FineTuneJob, *, image: str, trainer_metrics_port: int) -> dict[str, Any]:
    spec = ftj.spec
    nodes = spec.resources.nodes
    metadata = child_metadata(ftj, job_name(ftj.name), TRAINER_COMPONENT)
    if spec.queue_name:
        metadata["labels"][KUEUE_QUEUE_LABEL] = spec.queue_name
    volumes, mounts = _volumes_and_mounts(ftj)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": trainer_command(ftj),
        "env": _env(ftj),
        "resources": _resources(ftj),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if trainer_metrics_port:
        container["ports"] = [{"name": "metrics", "containerPort": trainer_metrics_port}]
    if nodes > 1:
        container.setdefault("ports", []).append({"name": "rendezvous", "containerPort": RENDEZVOUS_PORT})
    if spec.storage.secret_ref is not None:
        container["envFrom"] = [{"secretRef": {"name": spec.storage.secret_ref.name}}]

    pod_labels = {**spec.pod_metadata.labels, **labels.finetunejob_labels(ftj.name, TRAINER_COMPONENT)}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": service_account_name(ftj.name),
        # The trainer needs its token to patch its own job's status (its Role allows nothing else).
        "automountServiceAccountToken": True,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRAINER_UID,
            "runAsGroup": TRAINER_UID,
            "fsGroup": TRAINER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
        **_placement(ftj),
    }
    if nodes > 1:
        pod_spec["subdomain"] = rendezvous_service_name(ftj.name)

    job_spec: dict[str, Any] = {
        "backoffLimit": spec.run_policy.backoff_limit,
        "completions": nodes,
        "parallelism": nodes,
        "suspend": job_suspended(ftj),
        "podFailurePolicy": pod_failure_policy(),
        "template": {
            "metadata": {"labels": pod_labels, "annotations": dict(spec.pod_metadata.annotations)},
            "spec": pod_spec,
        },
    }
    if nodes > 1:
        job_spec["completionMode"] = "Indexed"
    if spec.run_policy.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.run_policy.active_deadline_seconds
    if spec.run_policy.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.run_policy.ttl_seconds_after_finished
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}
