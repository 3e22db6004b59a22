"""Pure builders, compared as whole dicts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubetune_operator.builders import configmap, job, rbac, references, service
from operator_fixtures import make_ftj

from kubetune_api.trainer_contract import ProgressTarget, TrainerConfig

OWNER = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "FineTuneJob",
    "name": "demo",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "kubetune-trainer",
        "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "kubetune",
        "app.kubernetes.io/managed-by": "kubetune-operator",
        "kubetune.io/finetunejob": "demo",
    }


def meta(name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": "ml", "labels": labels(component), "ownerReferences": [OWNER]}


BASE_ENV: list[dict[str, Any]] = [
    {"name": "KUBETUNE_TRAINER_CONFIG", "value": "/etc/kubetune/trainer-config.json"},
    {"name": "KUBETUNE_PVC_ROOT", "value": "/mnt/pvc"},
    {"name": "HOME", "value": "/tmp"},
    {"name": "TMPDIR", "value": "/tmp"},
    {"name": "HF_HOME", "value": "/var/cache/kubetune/huggingface"},
    {"name": "XDG_CACHE_HOME", "value": "/var/cache/kubetune"},
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
]
BASE_VOLUMES: list[dict[str, Any]] = [
    {"name": "trainer-config", "configMap": {"name": "demo-config"}},
    {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
    {"name": "model-cache", "emptyDir": {}},
    {"name": "scratch", "emptyDir": {}},
]
BASE_MOUNTS: list[dict[str, Any]] = [
    {"name": "trainer-config", "mountPath": "/etc/kubetune", "readOnly": True},
    {"name": "shm", "mountPath": "/dev/shm"},
    {"name": "model-cache", "mountPath": "/var/cache/kubetune"},
    {"name": "scratch", "mountPath": "/tmp"},
]
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
POD_FAILURE_POLICY = {
    "rules": [
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [3, 4, 5]},
        },
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "Count", "onExitCodes": {"containerName": "trainer", "operator": "NotIn", "values": [0]}},
    ]
}


def expected_job(
    *,
    command: list[str],
    env: list[dict[str, Any]] = BASE_ENV,
    resources: dict[str, Any] | None = None,
    volumes: list[dict[str, Any]] = BASE_VOLUMES,
    mounts: list[dict[str, Any]] = BASE_MOUNTS,
    placement: dict[str, Any] | None = None,
    ports: list[dict[str, Any]] | None = None,
    container_extra: dict[str, Any] | None = None,
    pod_extra: dict[str, Any] | None = None,
    job_extra: dict[str, Any] | None = None,
    job_labels: dict[str, str] | None = None,
    pod_metadata: dict[str, Any] | None = None,
    suspend: bool = False,
    nodes: int = 1,
) -> dict[str, Any]:
    container = {
        "name": "trainer",
        "image": "trainer:1",
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": env,
        "resources": resources
        or {
            "requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "1"},
            "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
        },
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "ports": ports or [{"name": "metrics", "containerPort": 9400}],
        **(container_extra or {}),
    }
    metadata = meta("demo", "trainer")
    metadata["labels"].update(job_labels or {})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 3,
            "completions": nodes,
            "parallelism": nodes,
            "suspend": suspend,
            "podFailurePolicy": POD_FAILURE_POLICY,
            "template": {
                "metadata": pod_metadata or {"labels": labels("trainer"), "annotations": {}},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": "demo-trainer",
                    "automountServiceAccountToken": True,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                    **(
                        placement
                        if placement is not None
                        else {
                            "nodeSelector": {"kubetune.io/accelerator": "nvidia-gpu"},
                            "tolerations": [GPU_TOLERATION],
                        }
                    ),
                    **(pod_extra or {}),
                },
            },
            **(job_extra or {}),
        },
    }


TORCHRUN = [
    "torchrun", "--nnodes", "4", "--nproc-per-node", "8", "--node-rank", "$(JOB_COMPLETION_INDEX)",
    "--master-addr", "demo-0.demo-rdzv", "--master-port", "29500", "-m", "kubetune_trainer",
]  # fmt: skip
SINGLE = ["python", "-m", "kubetune_trainer", "--config", "/etc/kubetune/trainer-config.json"]

JOB_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "defaults: one GPU node, single process": ({}, expected_job(command=SINGLE)),
    "CPU only: no GPU request, no GPU placement": (
        {"resources": {"gpusPerNode": 0, "cpu": "2", "memory": "4Gi", "sharedMemory": "1Gi"}},
        expected_job(
            command=SINGLE,
            resources={"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}},
            volumes=[
                BASE_VOLUMES[0],
                {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
                *BASE_VOLUMES[2:],
            ],
            placement={},
        ),
    ),
    "placement: product, extra selector, tolerations, priority": (
        {
            "resources": {
                "gpuProduct": "NVIDIA-H100-80GB-HBM3",
                "nodeSelector": {"zone": "a"},
                "tolerations": [{"key": "spot", "operator": "Exists"}],
                "priorityClassName": "training",
            }
        },
        expected_job(
            command=SINGLE,
            placement={
                "nodeSelector": {
                    "kubetune.io/accelerator": "nvidia-gpu",
                    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                    "zone": "a",
                },
                "tolerations": [GPU_TOLERATION, {"key": "spot", "operator": "Exists"}],
                "priorityClassName": "training",
            },
        ),
    ),
    "multi-node: Indexed Job, torchrun rendezvous through the headless Service": (
        {"resources": {"gpusPerNode": 8, "nodes": 4}},
        expected_job(
            command=[
                "torchrun",
                "--nnodes",
                "4",
                "--nproc-per-node",
                "8",
                "--node-rank",
                "$(JOB_COMPLETION_INDEX)",
                "--master-addr",
                "demo-0.demo-rdzv",
                "--master-port",
                "29500",
                "-m",
                "kubetune_trainer",
            ],
            resources={
                "requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "8"},
                "limits": {"memory": "32Gi", "nvidia.com/gpu": "8"},
            },
            ports=[
                {"name": "metrics", "containerPort": 9400},
                {"name": "rendezvous", "containerPort": 29500},
            ],
            pod_extra={"subdomain": "demo-rdzv"},
            job_extra={"completionMode": "Indexed"},
            nodes=4,
        ),
    ),
    "secrets by reference, pvc claims mounted (writable only where the trainer writes)": (
        {
            "baseModel": {"uri": "pvc://models/base", "secretRef": {"name": "hf"}},
            "datasets": [{"name": "qa", "uri": "pvc://data/qa.jsonl"}],
            "output": {"uri": "pvc://models/out/"},
            "storage": {"secretRef": {"name": "s3"}},
        },
        expected_job(
            command=SINGLE,
            env=[
                *BASE_ENV,
                {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}},
            ],
            volumes=[
                *BASE_VOLUMES,
                {"name": "pvc-0", "persistentVolumeClaim": {"claimName": "models", "readOnly": False}},
                {"name": "pvc-1", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}},
            ],
            mounts=[
                *BASE_MOUNTS,
                {"name": "pvc-0", "mountPath": "/mnt/pvc/models", "readOnly": False},
                {"name": "pvc-1", "mountPath": "/mnt/pvc/data", "readOnly": True},
            ],
            container_extra={"envFrom": [{"secretRef": {"name": "s3"}}]},
        ),
    ),
    "run policy, queue, pod metadata (our labels win)": (
        {
            "runPolicy": {"backoffLimit": 3, "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 60},
            "queueName": "team-a",
            "podMetadata": {
                "labels": {"cost-center": "ml", "app.kubernetes.io/name": "mine"},
                "annotations": {"sidecar.istio.io/inject": "false"},
            },
        },
        expected_job(
            command=SINGLE,
            suspend=True,
            job_labels={"kueue.x-k8s.io/queue-name": "team-a"},
            job_extra={"activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 60},
            pod_metadata={
                "labels": {"cost-center": "ml", **labels("trainer")},
                "annotations": {"sidecar.istio.io/inject": "false"},
            },
        ),
    ),
    "user suspend": ({"runPolicy": {"suspend": True}}, expected_job(command=SINGLE, suspend=True)),
}


@pytest.mark.parametrize("spec,expected", JOB_CASES.values(), ids=JOB_CASES.keys())
def test_trainer_job(spec: dict[str, Any], expected: dict[str, Any]) -> None:
    assert job.trainer_job(make_ftj(**spec), image="trainer:1", trainer_metrics_port=9400) == expected


def test_long_names_stay_valid_and_deterministic() -> None:
    ftj = make_ftj("x" * 120)
    manifest = job.trainer_job(ftj, image="trainer:1", trainer_metrics_port=0)
    name = manifest["metadata"]["name"]
    assert (
        len(name) <= 56
        and name == job.trainer_job(ftj, image="t", trainer_metrics_port=0)["metadata"]["name"]
    )
    assert "ports" not in manifest["spec"]["template"]["spec"]["containers"][0]


def test_config_map_holds_the_trainer_config() -> None:
    ftj = make_ftj()
    config = configmap.trainer_config(
        ftj, image="trainer:1", progress_target=ProgressTarget.KUBERNETES_STATUS, metrics_port=9400
    )
    manifest = configmap.config_map(ftj, config)
    data = manifest.pop("data")
    assert manifest == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("demo-config", "config"),
                        "immutable": True}  # fmt: skip
    parsed = TrainerConfig.model_validate(json.loads(data["trainer-config.json"]))
    assert parsed == TrainerConfig.from_finetunejob(ftj, image="trainer:1")
    assert parsed.checkpoint.uri == "s3://bucket/out/checkpoints"


def test_rendezvous_service() -> None:
    assert service.rendezvous_service(make_ftj()) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("demo-rdzv", "rendezvous"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"kubetune.io/finetunejob": "demo"},
            "ports": [{"name": "rendezvous", "port": 29500, "targetPort": 29500}],
        },
    }


def test_trainer_rbac_is_scoped_to_the_one_job() -> None:
    ftj = make_ftj()
    assert rbac.trainer_service_account(ftj) == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta("demo-trainer", "trainer"),
    }
    assert rbac.trainer_role(ftj) == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta("demo-trainer", "trainer"),
        "rules": [
            {"apiGroups": ["kubetune.io"], "resources": ["finetunejobs/status"], "resourceNames": ["demo"],
             "verbs": ["get", "patch"]},
            {"apiGroups": ["kubetune.io"], "resources": ["finetunejobs"], "resourceNames": ["demo"],
             "verbs": ["get"]},
        ],
    }  # fmt: skip
    assert rbac.trainer_role_binding(ftj) == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta("demo-trainer", "trainer"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "demo-trainer"},
        "subjects": [{"kind": "ServiceAccount", "name": "demo-trainer", "namespace": "ml"}],
    }


IRSA = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/kubetune-trainer"}


@pytest.mark.parametrize(
    ("annotations", "expected_metadata"),
    [
        (None, meta("demo-trainer", "trainer")),
        ({}, meta("demo-trainer", "trainer")),
        (IRSA, {**meta("demo-trainer", "trainer"), "annotations": IRSA}),
        (
            {**IRSA, "eks.amazonaws.com/sts-regional-endpoints": "true"},
            {
                **meta("demo-trainer", "trainer"),
                "annotations": {**IRSA, "eks.amazonaws.com/sts-regional-endpoints": "true"},
            },
        ),
    ],
)
def test_trainer_service_account_carries_the_configured_annotations(
    annotations: dict[str, str] | None, expected_metadata: dict[str, Any]
) -> None:
    assert rbac.trainer_service_account(make_ftj(), annotations) == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": expected_metadata,
    }


def test_trainer_service_account_annotations_are_a_copy() -> None:
    annotations = dict(IRSA)
    account = rbac.trainer_service_account(make_ftj(), annotations)
    annotations["changed"] = "later"
    assert account["metadata"]["annotations"] == IRSA


@pytest.mark.parametrize(
    ("ftj_name", "account"),
    [
        ("demo", "demo-trainer"),
        ("j" * 55, "j" * 55 + "-trainer"),
        # Too long for <name>-trainer: the job part is cut and hashed, the suffix stays.
        ("j" * 56, "j" * 46 + "-68cbb514-trainer"),
        ("run-" + "k" * 59, "run-" + "k" * 42 + "-734b4a96-trainer"),
    ],
)
def test_trainer_identity_names_always_end_in_trainer(ftj_name: str, account: str) -> None:
    ftj = make_ftj(ftj_name)
    assert len(account) <= 63
    assert rbac.trainer_service_account(ftj)["metadata"]["name"] == account
    assert rbac.trainer_role(ftj)["metadata"]["name"] == account
    binding = rbac.trainer_role_binding(ftj)
    assert (binding["metadata"]["name"], binding["roleRef"]["name"]) == (account, account)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "ml"}]
    pod = job.trainer_job(ftj, image="t:1", trainer_metrics_port=9400)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account


def test_references_name_their_fields() -> None:
    ftj = make_ftj(
        baseModel={"uri": "hf://org/m", "secretRef": {"name": "hf"}},
        evaluation={"forgettingGuard": {"dataset": {"uri": "pvc://general/wiki.txt"}}},
        checkpoint={"uri": "pvc://ckpt/run"},
        storage={"secretRef": {"name": "s3"}},
    )
    assert [(r.field, r.scheme, r.claim, r.writable) for r in references.uri_refs(ftj)] == [
        ("spec.baseModel.uri", "hf", None, False),
        ("spec.datasets[0].uri", "s3", None, False),
        ("spec.evaluation.forgettingGuard.dataset.uri", "pvc", "general", False),
        ("spec.checkpoint.uri", "pvc", "ckpt", True),
        ("spec.output.uri", "s3", None, True),
    ]
    assert [(s.field, s.name, s.keys) for s in references.secret_refs(ftj)] == [
        ("spec.baseModel.secretRef.name", "hf", ("HF_TOKEN",)),
        ("spec.storage.secretRef.name", "s3", ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
    ]
