"""Names, owner references and metadata shared by every child of a FineTuneJob."""

from __future__ import annotations

from typing import Any

from kubetune_api import labels
from kubetune_api.constants import API_VERSION, FINETUNEJOB_KIND
from kubetune_api.finetunejob import FineTuneJob

# Indexed Job pods are named <job>-<index>-<random> and get the hostname <job>-<index>;
# keeping the Job name short leaves room for the index within the 63-character DNS label.
JOB_NAME_MAX_LENGTH = 56
TRAINER_COMPONENT = "trainer"
CONTAINER_NAME = "trainer"
RENDEZVOUS_PORT = 29500


def job_name(ftj_name: str) -> str:
    return labels.child_name(ftj_name, max_length=JOB_NAME_MAX_LENGTH)


def config_map_name(ftj_name: str) -> str:
    return labels.child_name(ftj_name, "config")


def service_account_name(ftj_name: str) -> str:
    """Always `...-trainer`: the trainer IAM role (infra/, IRSA) trusts `<namespace>:*-trainer` only."""
    return labels.suffixed_child_name(ftj_name, labels.TRAINER_SERVICE_ACCOUNT_SUFFIX)


def rendezvous_service_name(ftj_name: str) -> str:
    return labels.child_name(ftj_name, "rdzv")


def owner_reference(ftj: FineTuneJob) -> dict[str, Any]:
    """Controller reference: deleting the FineTuneJob garbage-collects the child."""
    return {
        "apiVersion": API_VERSION,
        "kind": FINETUNEJOB_KIND,
        "name": ftj.name,
        "uid": ftj.metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(ftj: FineTuneJob, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ftj.namespace,
        "labels": labels.finetunejob_labels(ftj.name, component),
        "ownerReferences": [owner_reference(ftj)],
    }
