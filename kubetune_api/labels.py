"""Recommended labels and deterministic child names."""

from __future__ import annotations

import hashlib

from . import constants

MAX_NAME_LENGTH = 63
TRAINER_SERVICE_ACCOUNT_SUFFIX = "trainer"
"""Every per-job trainer ServiceAccount is named `...-trainer`; the trainer IAM role (infra/) trusts
`system:serviceaccount:<namespace>:*-trainer`, so the suffix must survive any name length."""


def child_name(owner_name: str, suffix: str = "", max_length: int = MAX_NAME_LENGTH) -> str:
    """Deterministic child name; too-long names are cut and made unique by a hash of the full name."""
    full = f"{owner_name}-{suffix}" if suffix else owner_name
    if len(full) <= max_length:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: max_length - 9].rstrip('-')}-{digest}"


def suffixed_child_name(owner_name: str, suffix: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """Deterministic child name that always ends in `-<suffix>`, whatever the owner's length.

    Names that fit are `<owner>-<suffix>` (as child_name). Longer ones cut the owner part only and
    keep them unique with a hash of the full name: `<owner cut>-<hash>-<suffix>`. Identities keyed on
    the suffix (the trainer IAM role trusts `*-trainer` service accounts) therefore hold for every job.
    """
    if not suffix:
        raise ValueError("suffixed_child_name needs a suffix")
    full = f"{owner_name}-{suffix}"
    if len(full) <= max_length:
        return full
    tail = f"-{hashlib.sha256(full.encode()).hexdigest()[:8]}-{suffix}"
    if len(tail) >= max_length:
        raise ValueError(f"suffix {suffix!r} leaves no room for the owner's name in {max_length} characters")
    # Strip '-' and '.' so the cut never ends a DNS label with a non-alphanumeric character.
    return f"{owner_name[: max_length - len(tail)].rstrip('-.')}{tail}"


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
