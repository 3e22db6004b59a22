"""The contract between the operator and the trainer.

The operator derives a TrainerConfig from a FineTuneJob and mounts it as JSON; the trainer
reads nothing else. While training, the trainer publishes ProgressReports into the job's
status; at the end it writes a TrainerResult to the termination-message path, which the
operator reads back from the pod. All three are defined here so the two sides cannot drift.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from .base import ApiModel
from .common import StorageSettings
from .finetunejob import (
    Artifacts,
    BaseModelSource,
    CheckpointSpec,
    DataPreparationSpec,
    DatasetSpec,
    EvaluationSpec,
    FineTuneJob,
    Hyperparameters,
    Lineage,
    MethodSpec,
    Metrics,
    Objective,
    OutputSpec,
    Progress,
    SplitSpec,
)

TRAINER_CONFIG_SCHEMA_VERSION = 1
DEFAULT_METRICS_PORT = 9400


class JobRef(ApiModel):
    """The FineTuneJob a trainer run belongs to."""

    name: str
    """FineTuneJob name."""
    namespace: str = "default"
    """FineTuneJob namespace."""
    uid: str | None = None
    """FineTuneJob UID (for lineage)."""


class ProgressTarget(StrEnum):
    NONE = "None"
    KUBERNETES_STATUS = "KubernetesStatus"


class DistributedSettings(ApiModel):
    """How many processes take part; the rendezvous itself comes from torchrun's environment."""

    nodes: Annotated[int, Field(ge=1)] = 1
    """Pods in the run."""
    processes_per_node: Annotated[int, Field(ge=1)] = 1
    """Processes per pod (one per GPU)."""


class TrainerConfig(ApiModel):
    """Everything the trainer needs for one run, and nothing it must discover itself."""

    schema_version: int = TRAINER_CONFIG_SCHEMA_VERSION
    """Bumped on incompatible changes; the trainer refuses versions it does not know."""
    job: JobRef
    """Which FineTuneJob this run belongs to."""
    base_model: BaseModelSource
    """The model to start from."""
    method: MethodSpec
    """Full, LoRA, QLoRA or ReFT."""
    objective: Objective
    """CausalLM or Instruction."""
    datasets: Annotated[list[DatasetSpec], Field(min_length=1)]
    """Training datasets."""
    split: SplitSpec = Field(default_factory=SplitSpec)
    """Split fractions."""
    data_preparation: DataPreparationSpec = Field(default_factory=DataPreparationSpec)
    """Cleaning and validation."""
    hyperparameters: Hyperparameters
    """Optimisation settings."""
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    """Evaluation settings."""
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    """Checkpoint settings; checkpoint.uri is always resolved."""
    output: OutputSpec
    """Artifact location."""
    storage: StorageSettings = Field(default_factory=StorageSettings)
    """S3 endpoint and region (credentials come through the environment)."""
    distributed: DistributedSettings = Field(default_factory=DistributedSettings)
    """World layout."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_METRICS_PORT
    """Port of the Prometheus endpoint; 0 disables it."""
    progress_target: ProgressTarget = ProgressTarget.NONE
    """KubernetesStatus: patch the FineTuneJob's status with in-cluster credentials."""
    progress_interval_seconds: Annotated[float, Field(ge=0)] = 10.0
    """Minimum seconds between two progress reports."""
    image: str | None = None
    """Trainer image, recorded in the lineage."""

    @classmethod
    def from_finetunejob(
        cls,
        job: FineTuneJob,
        *,
        image: str | None = None,
        progress_target: ProgressTarget = ProgressTarget.KUBERNETES_STATUS,
        metrics_port: int = DEFAULT_METRICS_PORT,
    ) -> TrainerConfig:
        spec = job.spec
        checkpoint = spec.checkpoint.model_copy(
            update={"uri": spec.checkpoint.uri or f"{spec.output.uri.rstrip('/')}/checkpoints"}
        )
        return cls(
            job=JobRef(name=job.name, namespace=job.namespace, uid=job.metadata.get("uid")),
            base_model=spec.base_model,
            method=spec.method,
            objective=spec.objective,
            datasets=spec.datasets,
            split=spec.split,
            data_preparation=spec.data_preparation,
            hyperparameters=spec.hyperparameters,
            evaluation=spec.evaluation,
            checkpoint=checkpoint,
            output=spec.output,
            storage=spec.storage,
            distributed=DistributedSettings(
                nodes=spec.resources.nodes,
                processes_per_node=max(1, spec.resources.gpus_per_node),
            ),
            metrics_port=metrics_port,
            progress_target=progress_target,
            image=image or spec.image,
        )


class ProgressReport(ApiModel):
    """What the trainer publishes while it runs (merged into the FineTuneJob's status)."""

    progress: Progress
    """Steps, epoch, percent and ETA."""
    metrics: Metrics = Field(default_factory=Metrics)
    """Latest losses and throughput."""


class Outcome(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class FailureReason(StrEnum):
    CONFIG_ERROR = "ConfigError"
    DATA_ERROR = "DataError"
    FORGETTING_GATE_FAILED = "ForgettingGateFailed"
    PREEMPTED = "Preempted"
    TRAINING_ERROR = "TrainingError"


class TrainerResult(ApiModel):
    """The final word of a trainer run, written as JSON to the termination-message path.

    The kubelet keeps at most 4096 bytes of a termination message, so it carries only
    locations and headline numbers; the full reports are artifacts.
    """

    outcome: Outcome
    """Succeeded or Failed."""
    reason: FailureReason | None = None
    """Why it failed."""
    message: Annotated[str, Field(max_length=1024)] = ""
    """Human-readable summary, e.g. the first bad rows."""
    metrics: Metrics = Field(default_factory=Metrics)
    """Final metrics."""
    artifacts: Artifacts = Field(default_factory=Artifacts)
    """Artifact locations."""
    lineage: Lineage | None = None
    """Dataset hashes and base model revision."""
    steps: Annotated[int, Field(ge=0)] = 0
    """Optimizer steps done."""
