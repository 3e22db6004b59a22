"""ContinuousPretrain: keep a model current on new data, as CronJob keeps creating Jobs.

Each run is a child FineTuneJob (CausalLM objective) that starts from status.currentModel,
trains on the shards newer than the watermark plus replay data, and is promoted only when
the gate passes.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from .base import ApiModel, ResourceModel, cel_rule, immutable
from .common import Condition, PodMetadata, StorageSettings, StorageUri
from .finetunejob import (
    BaseModelSource,
    CheckpointSpec,
    DataPreparationSpec,
    DatasetFormat,
    EvalDataset,
    Hyperparameters,
    MethodSpec,
    MethodType,
    ResourceSpec,
    RunPolicy,
)

# Five space-separated cron fields or a macro; the operator parses it fully and reports
# errors as a condition naming spec.trigger.schedule.
CRON_PATTERN = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"


class CorpusSpec(ApiModel):
    """Where new domain data lands."""

    uri: StorageUri
    """Prefix watched for new shards (.txt or .jsonl files): s3://bucket/prefix/ or file:///dir/."""
    format: Literal[DatasetFormat.TEXT] = DatasetFormat.TEXT
    """Shard format: text (one document per line, or text JSONL)."""
    text_field: Annotated[str, Field(max_length=128)] = "text"
    """JSONL field with the document."""


class TriggerSpec(ApiModel):
    """When a run starts: on a schedule, on enough new data, or both (schedule checks data)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.schedule) || has(self.minNewDocuments)",
                    "set schedule, minNewDocuments or both",
                )
            ]
        }
    )

    schedule: Annotated[str, Field(pattern=CRON_PATTERN, max_length=128)] | None = None
    """Cron schedule (UTC), e.g. "0 3 * * *"; with minNewDocuments, a run needs enough new data too."""
    min_new_documents: Annotated[int, Field(ge=1)] | None = None
    """Start a run once this many documents newer than the watermark exist."""
    poll_interval_seconds: Annotated[int, Field(ge=10, le=86400)] = 300
    """How often the corpus is listed for new shards."""

    @model_validator(mode="after")
    def _some_trigger(self) -> TriggerSpec:
        if self.schedule is None and self.min_new_documents is None:
            raise ValueError("trigger: set schedule, minNewDocuments or both")
        return self


class RunTemplate(ApiModel):
    """The FineTuneJob settings of each run. The objective is always CausalLM."""

    method: MethodSpec = Field(default_factory=lambda: MethodSpec(type=MethodType.FULL))
    """Full or LoRA (merged after each promoted run so the next run starts from a full model)."""
    hyperparameters: Hyperparameters
    """Optimisation settings of each run."""
    data_preparation: DataPreparationSpec = Field(default_factory=DataPreparationSpec)
    """Cleaning and deduplication of the new shards."""
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    """Compute of each run."""
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    """Checkpoint cadence of each run."""
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    """Retries and deadline of each run (suspend is taken from the ContinuousPretrain)."""
    image: Annotated[str, Field(max_length=1024)] | None = None
    """Trainer image override."""
    queue_name: Annotated[str, Field(max_length=63)] | None = None
    """Kueue LocalQueue for the runs."""
    pod_metadata: PodMetadata = Field(default_factory=PodMetadata)
    """Extra labels and annotations for the trainer pods."""


class ReplaySpec(ApiModel):
    """General data mixed into every run against forgetting."""

    uri: StorageUri
    """General corpus (text)."""
    ratio: Annotated[float, Field(ge=0, le=0.9)] = 0.2
    """Share of replay documents in each run's training mix."""


class PromotionMode(StrEnum):
    AUTOMATIC = "Automatic"
    MANUAL = "Manual"


class PromotionSpec(ApiModel):
    """The gate a candidate must pass before it becomes the current model."""

    mode: PromotionMode = PromotionMode.AUTOMATIC
    """Automatic promotes when the gate passes; Manual waits for approvedRun as well."""
    general_eval: EvalDataset
    """General regression set: the candidate may not be much worse here than the current model."""
    max_general_loss_increase_ratio: Annotated[float, Field(ge=0, le=10)] = 0.02
    """Largest allowed relative increase of the general loss, e.g. 0.02 = 2%."""
    min_domain_loss_decrease_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Smallest required relative decrease of the loss on held-out new data."""
    approved_run: Annotated[str, Field(max_length=253)] | None = None
    """Manual mode: name of the candidate run a person approved."""


class ConcurrencyPolicy(StrEnum):
    FORBID = "Forbid"
    REPLACE = "Replace"


class ContinuousPretrainSpec(ApiModel):
    """Desired state of a ContinuousPretrain."""

    base_model: Annotated[BaseModelSource, Field(json_schema_extra=immutable("baseModel"))]
    """Generation-0 model: the first run starts from it."""
    corpus: CorpusSpec
    """Where new domain data lands."""
    trigger: TriggerSpec
    """Schedule and/or new-data threshold."""
    template: RunTemplate
    """Settings of each run's FineTuneJob."""
    replay: ReplaySpec | None = None
    """General data mixed into each run."""
    promotion: PromotionSpec
    """Gate for promoting a candidate."""
    output: Annotated[StorageUri, Field(json_schema_extra=immutable("output"))]
    """Prefix under which each run writes its artifacts (one folder per run)."""
    storage: StorageSettings = Field(default_factory=StorageSettings)
    """Endpoint and credentials for s3:// URIs."""
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    """Forbid skips a trigger while a run is active; Replace cancels the active run."""
    history_limit: Annotated[int, Field(ge=1, le=100)] = 5
    """Finished child FineTuneJobs kept; the promoted model's artifacts are never pruned."""
    suspend: bool = False
    """Stop starting new runs (an active run continues)."""


class CurrentModel(ApiModel):
    """The promoted model new runs start from."""

    uri: Annotated[str, Field(max_length=2048)]
    """Where the model is."""
    generation: Annotated[int, Field(ge=0)] = 0
    """0 for the base model, +1 per promotion."""
    data_cutoff: datetime | None = None
    """Newest shard time the model was trained on (its training-data cutoff)."""
    run: Annotated[str, Field(max_length=253)] | None = None
    """Run (child FineTuneJob) that produced it."""
    domain_loss: float | None = None
    """Its loss on the held-out domain data at promotion."""
    general_loss: float | None = None
    """Its loss on the general regression set at promotion."""


class Watermark(ApiModel):
    """How far into the corpus the current model has seen."""

    last_modified: datetime | None = None
    """Modification time of the newest shard trained on."""
    shards: Annotated[int, Field(ge=0)] = 0
    """Shards trained on so far."""
    documents: Annotated[int, Field(ge=0)] = 0
    """Documents trained on so far."""


class RunRecord(ApiModel):
    """One run in the bounded history."""

    name: Annotated[str, Field(max_length=253)]
    """Child FineTuneJob name."""
    phase: Annotated[str, Field(max_length=32)]
    """Phase of the child job, or Promoted / Rejected / AwaitingApproval once gated."""
    new_documents: Annotated[int, Field(ge=0)] = 0
    """New documents the run trained on."""
    new_shards: Annotated[list[Annotated[str, Field(max_length=2048)]], Field(max_length=1000)] = Field(
        default_factory=list
    )
    """Shard URIs the run trained on."""
    data_cutoff: datetime | None = None
    """Newest shard time in the run."""
    start_time: datetime | None = None
    """When the run was created."""
    completion_time: datetime | None = None
    """When the run finished."""
    domain_loss_before: float | None = None
    """Current model's loss on the run's held-out domain data."""
    domain_loss_after: float | None = None
    """Candidate's loss on the same data."""
    general_loss_before: float | None = None
    """Current model's loss on the general regression set."""
    general_loss_after: float | None = None
    """Candidate's loss on the general regression set."""
    promoted: bool = False
    """Whether the candidate became the current model."""
    reason: Annotated[str, Field(max_length=4096)] | None = None
    """Why it was (not) promoted."""
    model_uri: Annotated[str, Field(max_length=2048)] | None = None
    """The candidate model."""


class ContinuousPretrainStatus(ApiModel):
    """Observed state of a ContinuousPretrain."""

    current_model: CurrentModel | None = None
    """Model that new runs start from and users should serve."""
    watermark: Watermark | None = None
    """How much of the corpus the current model has seen."""
    active_run: Annotated[str, Field(max_length=253)] | None = None
    """Child FineTuneJob currently running."""
    last_run_time: datetime | None = None
    """When the last run was created."""
    next_run_time: datetime | None = None
    """When the schedule fires next."""
    runs: Annotated[list[RunRecord], Field(max_length=100)] = Field(default_factory=list)
    """Recent runs, newest first, bounded by historyLimit."""
    conditions: Annotated[
        list[Condition],
        Field(
            max_length=32,
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        ),
    ] = Field(default_factory=list)
    """Latest observations."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The .metadata.generation the status describes."""


class ContinuousPretrain(ResourceModel):
    """Keep a model current: new data triggers a run, a gate decides promotion."""

    api_version: Literal["kubetune.io/v1alpha1"] = "kubetune.io/v1alpha1"
    kind: Literal["ContinuousPretrain"] = "ContinuousPretrain"
    spec: ContinuousPretrainSpec
    status: ContinuousPretrainStatus | None = None

