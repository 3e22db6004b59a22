"""Recommended labels and deterministic child names."""

from __future__ import annotations

import hashlib

from . import constants

MAX_NAME_LENGTH = 63


def child_name(owner_name: str, suffix: str = "", max_length: int = MAX_NAME_LENGTH) -> str:
    """Deterministic child name; too-long names are cut and made unique by a hash of the full name."""
    full = f"{owner_name}-{suffix}" if suffix else owner_name
    if len(full) <= max_length:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: max_length - 9].rstrip('-')}-{digest}"


def finetunejob_labels(job_name: str, component: str) -> dict[str, str]:
    """Labels on every object the operator creates for a FineTuneJob."""
    return {
        constants.LABEL_NAME: "kubetune-trainer",
        constants.LABEL_INSTANCE: child_name(job_name),
        constants.LABEL_COMPONENT: component,
        constants.LABEL_PART_OF: "kubetune",
        constants.LABEL_MANAGED_BY: "kubetune-operator",
        constants.LABEL_FINETUNEJOB: child_name(job_name),
    }


def selector_labels(job_name: str) -> dict[str, str]:
    """The stable subset used in selectors (never changes for the life of a job)."""
    return {constants.LABEL_FINETUNEJOB: child_name(job_name)}
