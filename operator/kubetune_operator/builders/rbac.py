"""Per-job identity for the trainer pods, and the operator's own ClusterRole rules.

A trainer pod may read its own FineTuneJob and patch that job's status, nothing else:
the Role names the job in resourceNames.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetune_api.constants import CONTINUOUSPRETRAIN_PLURAL, FINETUNEJOB_PLURAL, GROUP
from kubetune_api.finetunejob import FineTuneJob

from .common import TRAINER_COMPONENT, child_metadata, service_account_name


def trainer_service_account(ftj: FineTuneJob, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The job's own ServiceAccount, `...-trainer`; `annotations` (OperatorConfig's
    trainer_service_account_annotations) carry e.g. the IRSA role that gives the pods bucket access."""
    metadata = child_metadata(ftj, service_account_name(ftj.name), TRAINER_COMPONENT)
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}


def trainer_role(ftj: FineTuneJob) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": child_metadata(ftj, service_account_name(ftj.name), TRAINER_COMPONENT),
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": [f"{FINETUNEJOB_PLURAL}/status"],
                "resourceNames": [ftj.name],
                "verbs": ["get", "patch"],
            },
            {
                "apiGroups": [GROUP],
                "resources": [FINETUNEJOB_PLURAL],
                "resourceNames": [ftj.name],
                "verbs": ["get"],
            },
        ],
    }


def trainer_role_binding(ftj: FineTuneJob) -> dict[str, Any]:
    name = service_account_name(ftj.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": child_metadata(ftj, name, TRAINER_COMPONENT),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ftj.namespace}],
    }


# Everything the operator does, resource by resource (see operator/RBAC.md for why).
# The Helm chart's ClusterRole and the integration tests' operator identity use exactly this.
OPERATOR_RULES: tuple[dict[str, list[str]], ...] = (
    # FineTuneJobs: kopf watches them; the ContinuousPretrain controller creates and prunes its runs.
    {
        "apiGroups": [GROUP],
        "resources": [FINETUNEJOB_PLURAL, CONTINUOUSPRETRAIN_PLURAL],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {"apiGroups": [GROUP], "resources": [FINETUNEJOB_PLURAL], "verbs": ["create", "delete"]},
    {
        "apiGroups": [GROUP],
        "resources": [f"{FINETUNEJOB_PLURAL}/status", f"{CONTINUOUSPRETRAIN_PLURAL}/status"],
        "verbs": ["get", "patch"],
    },
    {
        "apiGroups": [GROUP],
        "resources": [f"{FINETUNEJOB_PLURAL}/finalizers", f"{CONTINUOUSPRETRAIN_PLURAL}/finalizers"],
        "verbs": ["update"],
    },
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": [""],
        "resources": ["configmaps", "services", "serviceaccounts"],
        "verbs": ["get", "create"],
    },
    {"apiGroups": [""], "resources": ["secrets", "persistentvolumeclaims"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["roles", "rolebindings"],
        "verbs": ["get", "create"],
    },
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
)


def operator_cluster_role(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [dict(rule) for rule in OPERATOR_RULES],
    }
