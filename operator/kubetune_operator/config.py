"""Operator configuration, read once from the environment (the Helm chart sets these)."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from kubetune_api.observability import OPERATOR_HEALTH_PORT, OPERATOR_METRICS_PORT
from kubetune_api.trainer_contract import DEFAULT_METRICS_PORT, ProgressTarget

DEFAULT_TRAINER_IMAGE = "ghcr.io/kubetune/trainer:0.1.0"
ALL_URI_SCHEMES = frozenset({"hf", "s3", "pvc", "file"})


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


ANNOTATIONS_ENV = "KUBETUNE_TRAINER_SERVICE_ACCOUNT_ANNOTATIONS"
# Kubernetes annotation keys: an optional DNS-subdomain prefix and '/', then a name of <= 63 characters.
_ANNOTATION_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ANNOTATION_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _annotation_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if "/" in prefix or (prefix and (len(prefix) > 253 or not _ANNOTATION_PREFIX.match(prefix))):
        return f"key {key!r}: the prefix before '/' must be a DNS subdomain"
    if len(name) > 63 or not _ANNOTATION_NAME.match(name):
        return (
            f"key {key!r}: the name must be 1-63 alphanumerics, '-', '_' or '.', "
            "starting and ending with an alphanumeric"
        )
    return None


def parse_annotations(text: str, variable: str = ANNOTATIONS_ENV) -> dict[str, str]:
    """A JSON object of annotation keys to string values; empty means none. ValueError names each problem."""
    if not text.strip():
        return {}
    example = '{"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/trainer"}'
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{variable}: not valid JSON ({error}); expected an object like {example}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{variable}: expected a JSON object like {example}, got {type(value).__name__}")
    problems = [
        f"{key!r}: the value must be a string, got {type(item).__name__}"
        for key, item in value.items()
        if not isinstance(item, str)
    ]
    problems += [p for p in map(_annotation_key_problem, value) if p is not None]
    if problems:
        raise ValueError(f"{variable}: " + "; ".join(problems))
    return dict(value)


@dataclass(frozen=True)
class OperatorConfig:
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    """Trainer image for jobs without spec.image (KUBETUNE_TRAINER_IMAGE)."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty = cluster-wide (KUBETUNE_WATCH_NAMESPACES, comma-separated)."""
    metrics_port: int = OPERATOR_METRICS_PORT
    """Prometheus /metrics (KUBETUNE_METRICS_PORT; 0 disables)."""
    health_port: int = OPERATOR_HEALTH_PORT
    """/healthz and /readyz (KUBETUNE_HEALTH_PORT; 0 disables)."""
    progress_target: ProgressTarget = ProgressTarget.KUBERNETES_STATUS
    """How trainers report progress (KUBETUNE_PROGRESS_TARGET: KubernetesStatus | None)."""
    trainer_metrics_port: int = DEFAULT_METRICS_PORT
    """Port of the trainer's own /metrics (KUBETUNE_TRAINER_METRICS_PORT)."""
    validation_retry_seconds: float = 60.0
    """How long a job waiting for a missing Secret/PVC waits before the next check
    (KUBETUNE_VALIDATION_RETRY_SECONDS)."""
    allowed_uri_schemes: frozenset[str] = ALL_URI_SCHEMES
    """URI schemes this cluster supports (KUBETUNE_ALLOWED_URI_SCHEMES, e.g. "hf,s3,pvc")."""
    leader_election: bool = True
    """Only the replica holding the Lease acts (KUBETUNE_LEADER_ELECTION)."""
    lease_name: str = "kubetune-operator"
    """coordination.k8s.io Lease used for leader election (KUBETUNE_LEASE_NAME)."""
    lease_namespace: str = "kubetune-system"
    """Namespace of the Lease (KUBETUNE_LEASE_NAMESPACE, else POD_NAMESPACE)."""
    lease_duration_seconds: float = 15.0
    """A leader that has not renewed for this long can be replaced (KUBETUNE_LEASE_DURATION_SECONDS)."""
    lease_renew_seconds: float = 5.0
    """How often the leader renews and a standby retries (KUBETUNE_LEASE_RENEW_SECONDS)."""
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    """Holder identity written into the Lease (KUBETUNE_OPERATOR_IDENTITY, else POD_NAME)."""
    max_workers: int = 16
    """Threads in each of the two FineTuneJob reconcile pools, `launch` (validation, ServiceAccount,
    Job, finish) and `children` (ConfigMap, Role→RoleBinding), so up to 2 x max_workers API calls in
    flight; also kopf's executor for its synchronous handlers (settings.execution.max_workers), and
    the kube connection pool holds 2 x max_workers connections for the pools (KUBETUNE_MAX_WORKERS)."""
    status_workers: int = 4
    """Threads deriving status from Job and pod events (KUBETUNE_STATUS_WORKERS)."""
    trainer_service_account_annotations: Mapping[str, str] = field(default_factory=dict)
    """Annotations on every per-job trainer ServiceAccount, e.g. the IRSA role
    (KUBETUNE_TRAINER_SERVICE_ACCOUNT_ANNOTATIONS, a JSON object)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        defaults = cls()
        schemes = (
            frozenset(_csv(env["KUBETUNE_ALLOWED_URI_SCHEMES"]))
            if env.get("KUBETUNE_ALLOWED_URI_SCHEMES")
            else defaults.allowed_uri_schemes
        )
        unknown = schemes - ALL_URI_SCHEMES
        if unknown:
            raise ValueError(f"KUBETUNE_ALLOWED_URI_SCHEMES: unknown scheme(s) {', '.join(sorted(unknown))}")
        return cls(
            trainer_image=env.get("KUBETUNE_TRAINER_IMAGE", defaults.trainer_image),
            namespaces=_csv(env.get("KUBETUNE_WATCH_NAMESPACES", "")),
            metrics_port=int(env.get("KUBETUNE_METRICS_PORT", defaults.metrics_port)),
            health_port=int(env.get("KUBETUNE_HEALTH_PORT", defaults.health_port)),
            progress_target=ProgressTarget(env.get("KUBETUNE_PROGRESS_TARGET", defaults.progress_target)),
            trainer_metrics_port=int(env.get("KUBETUNE_TRAINER_METRICS_PORT", defaults.trainer_metrics_port)),
            validation_retry_seconds=float(
                env.get("KUBETUNE_VALIDATION_RETRY_SECONDS", defaults.validation_retry_seconds)
            ),
            allowed_uri_schemes=schemes,
            leader_election=_bool(env.get("KUBETUNE_LEADER_ELECTION", "true")),
            lease_name=env.get("KUBETUNE_LEASE_NAME", defaults.lease_name),
            lease_namespace=env.get(
                "KUBETUNE_LEASE_NAMESPACE", env.get("POD_NAMESPACE", defaults.lease_namespace)
            ),
            lease_duration_seconds=float(
                env.get("KUBETUNE_LEASE_DURATION_SECONDS", defaults.lease_duration_seconds)
            ),
            lease_renew_seconds=float(env.get("KUBETUNE_LEASE_RENEW_SECONDS", defaults.lease_renew_seconds)),
            identity=env.get("KUBETUNE_OPERATOR_IDENTITY", env.get("POD_NAME", defaults.identity)),
            max_workers=int(env.get("KUBETUNE_MAX_WORKERS", defaults.max_workers)),
            status_workers=int(env.get("KUBETUNE_STATUS_WORKERS", defaults.status_workers)),
            trainer_service_account_annotations=parse_annotations(env.get(ANNOTATIONS_ENV, "")),
        )
