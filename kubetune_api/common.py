"""Types shared by FineTuneJob and ContinuousPretrain."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from .base import ApiModel

# URIs the trainer can read from and write to. hf:// is read-only (base models).
STORAGE_URI_PATTERN = r"^(s3|pvc|file)://.+$"
MODEL_URI_PATTERN = r"^(hf|s3|pvc|file)://.+$"
# Kubernetes resource.Quantity, e.g. "500m", "4", "16Gi".
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

DnsLabel = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]
StorageUri = Annotated[str, Field(pattern=STORAGE_URI_PATTERN, max_length=2048)]
ModelUri = Annotated[str, Field(pattern=MODEL_URI_PATTERN, max_length=2048)]
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]
ShortString = Annotated[str, Field(max_length=253)]


class SecretReference(ApiModel):
    """A Secret in the job's namespace."""

    name: DnsLabel
    """Name of the Secret."""


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One aspect of the object's state, following the Kubernetes API conventions."""

    type: Annotated[str, Field(max_length=316, pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9_.-]+$")]
    """Type of the condition, e.g. Ready, Running, Succeeded, Failed."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: Annotated[str, Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    """CamelCase, machine-readable reason for the last transition."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable details about the last transition."""
    last_transition_time: datetime
    """When the condition last changed status."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The .metadata.generation the condition was set for."""


class Toleration(ApiModel):
    """A core/v1 Toleration for the trainer pods."""

    key: ShortString | None = None
    """Taint key the toleration applies to; empty matches all keys (with operator Exists)."""
    operator: Annotated[str, Field(pattern=r"^(Exists|Equal)$")] = "Equal"
    """Exists or Equal."""
    value: ShortString | None = None
    """Taint value the toleration matches with operator Equal."""
    effect: Annotated[str, Field(pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)?$")] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """For NoExecute taints: how long the pod stays bound after the taint appears."""


class StorageSettings(ApiModel):
    """How the trainer reaches s3:// URIs. Credentials come from a Secret, never inline."""

    secret_ref: SecretReference | None = None
    """Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (omit to use IRSA / pod identity)."""
    endpoint: Annotated[str, Field(pattern=r"^https?://.+$", max_length=2048)] | None = None
    """S3-compatible endpoint URL (MinIO, Ceph, ...); omit for AWS S3."""
    region: ShortString | None = None
    """Bucket region."""


class PodMetadata(ApiModel):
    """Extra labels and annotations for the trainer pods (cost allocation, mesh opt-outs, ...)."""

    labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict)
    """Labels added to every trainer pod."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations added to every trainer pod."""
