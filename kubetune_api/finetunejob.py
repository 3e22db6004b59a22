"""FineTuneJob: one pre-training, fine-tuning or continued pre-training run.

Cross-field rules are stated twice on purpose and kept side by side: as CEL
(`x-kubernetes-validations`, enforced by the API server at `kubectl apply`) and as pydantic
validators (enforced by `kubetune run` and the trainer, which never see the API server).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from .base import ApiModel, ResourceModel, cel_rule, immutable
from .common import (
    Condition,
    DnsLabel,
    ModelUri,
    PodMetadata,
    Quantity,
    SecretReference,
    ShortString,
    StorageSettings,
    StorageUri,
    Toleration,
)

SPLIT_TOLERANCE = 0.001


# --------------------------------------------------------------------------- base model


class BaseModelSource(ApiModel):
    """The model training starts from."""

    uri: ModelUri
    """Where the model lives: hf://org/name, s3://bucket/prefix, pvc://claim/path or file:///path."""
    revision: ShortString | None = None
    """Branch, tag or commit for hf:// models; recorded in the lineage."""
    secret_ref: SecretReference | None = None
    """Secret with HF_TOKEN for gated hf:// models."""
    from_scratch: bool = False
    """Pre-training: read only the model config (and tokenizer) from uri and start from random weights."""
    config_overrides: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """Overrides applied to the model config before building it (e.g. num_hidden_layers for a small model)."""


# --------------------------------------------------------------------------- method


class MethodType(StrEnum):
    FULL = "Full"
    LORA = "LoRA"
    QLORA = "QLoRA"
    REFT = "ReFT"


class LoRASettings(ApiModel):
    """Low-rank adapters (Hu et al., 2021) through PEFT."""

    rank: Annotated[int, Field(ge=1, le=1024)] = 16
    """Rank r of the update matrices."""
    alpha: Annotated[float, Field(gt=0, le=4096)] = 32
    """Scaling numerator: the update is scaled by alpha / rank."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    """Dropout on the adapter input."""
    target_modules: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=64)] = Field(
        default_factory=lambda: ["all-linear"]
    )
    """Module names (or suffixes) to adapt; "all-linear" adapts every linear layer except the output head."""


class QLoRASettings(ApiModel):
    """Quantisation of the frozen base model for QLoRA (GPU only, needs bitsandbytes)."""

    bits: Literal[4, 8] = 4
    """Bits per base weight."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type."""
    double_quant: bool = True
    """Quantise the quantisation constants too."""


class ReFTSettings(ApiModel):
    """LoReFT interventions h + Rᵀ(Wh + b − Rh) on hidden states (Wu et al., 2024)."""

    rank: Annotated[int, Field(ge=1, le=512)] = 4
    """Rank of the low-rank subspace R."""
    layers: Annotated[list[Annotated[int, Field(ge=0, le=1024)]], Field(max_length=256)] = Field(
        default_factory=list
    )
    """Layer indices to intervene on; empty means every layer."""
    positions: Annotated[str, Field(pattern=r"^f[0-9]+(\+l[0-9]+)?$|^l[0-9]+$", max_length=32)] = "f1+l1"
    """Token positions: fN = first N prompt tokens, lN = last N prompt tokens, e.g. f1+l1."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Dropout inside the intervention."""
    share_weights: bool = False
    """Use one intervention for the first and the last positions."""


class MethodSpec(ApiModel):
    """How the model's weights are adapted."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.lora) || self.type == 'LoRA' || self.type == 'QLoRA'",
                    "lora settings are allowed only with type LoRA or QLoRA",
                    ".lora",
                ),
                cel_rule(
                    "!has(self.qlora) || self.type == 'QLoRA'",
                    "qlora settings are allowed only with type QLoRA",
                    ".qlora",
                ),
                cel_rule(
                    "!has(self.reft) || self.type == 'ReFT'",
                    "reft settings are allowed only with type ReFT",
                    ".reft",
                ),
            ]
        }
    )

    type: MethodType
    """Full, LoRA, QLoRA (GPU only) or ReFT."""
    lora: LoRASettings | None = None
    """LoRA / QLoRA adapter settings; defaults apply when omitted."""
    qlora: QLoRASettings | None = None
    """QLoRA quantisation settings; defaults apply when omitted."""
    reft: ReFTSettings | None = None
    """ReFT intervention settings; defaults apply when omitted."""

    @model_validator(mode="after")
    def _settings_match_type(self) -> MethodSpec:
        if self.lora is not None and self.type not in (MethodType.LORA, MethodType.QLORA):
            raise ValueError("method.lora is allowed only with type LoRA or QLoRA")
        if self.qlora is not None and self.type != MethodType.QLORA:
            raise ValueError("method.qlora is allowed only with type QLoRA")
        if self.reft is not None and self.type != MethodType.REFT:
            raise ValueError("method.reft is allowed only with type ReFT")
        return self

    def lora_settings(self) -> LoRASettings:
        return self.lora or LoRASettings()

    def qlora_settings(self) -> QLoRASettings:
        return self.qlora or QLoRASettings()

    def reft_settings(self) -> ReFTSettings:
        return self.reft or ReFTSettings()


class Objective(StrEnum):
    CAUSAL_LM = "CausalLM"
    """Next-token loss on every token: pre-training and continued pre-training."""
    INSTRUCTION = "Instruction"
    """Loss on the completion only: instruction and task tuning."""


# --------------------------------------------------------------------------- data


class DatasetFormat(StrEnum):
    TEXT = "text"
    PROMPT_COMPLETION = "prompt-completion"
    CHAT = "chat"


class DatasetSpec(ApiModel):
    """One training dataset. Several datasets are mixed by weight (multi-task tuning)."""

    name: DnsLabel
    """Unique name within the job; used in reports and per-task metrics."""
    uri: StorageUri
    """A file or a prefix holding .txt / .jsonl files: s3://, pvc:// or file://."""
    format: DatasetFormat = DatasetFormat.TEXT
    """text (one document per line or per .txt file), prompt-completion JSONL, or chat JSONL."""
    template: Annotated[str, Field(max_length=8192)] | None = None
    """Prompt template with {field} placeholders filled from each row, e.g. "Q: {prompt}\\nA: "."""
    text_field: Annotated[str, Field(max_length=128)] = "text"
    """JSONL field holding the document for the text format."""
    prompt_field: Annotated[str, Field(max_length=128)] = "prompt"
    """JSONL field holding the prompt for the prompt-completion format."""
    completion_field: Annotated[str, Field(max_length=128)] = "completion"
    """JSONL field holding the completion for the prompt-completion format."""
    messages_field: Annotated[str, Field(max_length=128)] = "messages"
    """JSONL field holding the list of {role, content} messages for the chat format."""
    weight: Annotated[float, Field(gt=0, le=1000)] = 1.0
    """Relative share of this dataset in the training mix."""
    task: Annotated[str, Field(max_length=63)] | None = None
    """Task label for multi-task runs; metrics are reported per task. Defaults to the dataset name."""
    max_samples: Annotated[int, Field(ge=1)] | None = None
    """Use at most this many rows (after cleaning)."""


class SplitSpec(ApiModel):
    """Deterministic train/validation/test split by content hash."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "self.train + self.validation + self.test > 0.999 && "
                    "self.train + self.validation + self.test < 1.001",
                    "train + validation + test must sum to 1",
                )
            ]
        }
    )

    train: Annotated[float, Field(gt=0, le=1)] = 0.8
    """Fraction of rows used for training."""
    validation: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Fraction of rows used for validation during training."""
    test: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Fraction of rows held out for the final test metrics."""
    seed: Annotated[int, Field(ge=0)] = 42
    """Salt of the content hash; change it to draw a different split."""

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitSpec:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > SPLIT_TOLERANCE:
            raise ValueError(f"split: train + validation + test must sum to 1, got {total:g}")
        return self


class Deduplication(StrEnum):
    NONE = "None"
    EXACT = "Exact"
    NEAR = "Near"


class UnicodeNormalization(StrEnum):
    NONE = "None"
    NFC = "NFC"
    NFKC = "NFKC"


class DataPreparationSpec(ApiModel):
    """Cleaning and validation applied to every dataset before the split."""

    unicode_normalization: UnicodeNormalization = UnicodeNormalization.NFKC
    """Unicode normal form applied to every text."""
    collapse_whitespace: bool = True
    """Collapse runs of spaces and tabs, strip leading and trailing whitespace."""
    min_chars: Annotated[int, Field(ge=0)] = 1
    """Drop rows shorter than this (characters, after cleaning)."""
    max_chars: Annotated[int, Field(ge=1)] = 1_000_000
    """Drop rows longer than this (characters, after cleaning)."""
    deduplication: Deduplication = Deduplication.NEAR
    """Exact removes identical rows; Near also removes MinHash near-duplicates, across splits."""
    near_duplicate_threshold: Annotated[float, Field(gt=0, le=1)] = 0.85
    """Estimated Jaccard similarity of word 5-grams above which two rows are duplicates."""
    max_bad_record_ratio: Annotated[float, Field(ge=0, le=1)] = 0.01
    """Fail the job when more than this fraction of rows is malformed; bad rows are always reported."""


# --------------------------------------------------------------------------- training


class SchedulerType(StrEnum):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


class Precision(StrEnum):
    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Hyperparameters(ApiModel):
    """Optimisation settings. Set exactly one of epochs and maxSteps."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule("has(self.epochs) != has(self.maxSteps)", "set exactly one of epochs and maxSteps")
            ]
        }
    )

    epochs: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Passes over the training set."""
    max_steps: Annotated[int, Field(ge=1)] | None = None
    """Optimizer steps to run, whatever the dataset size."""
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 2e-4
    """Peak learning rate (AdamW)."""
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    """Sequences per device per micro-batch."""
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=1024)] = 1
    """Micro-batches per optimizer step."""
    max_seq_length: Annotated[int, Field(ge=8, le=1_048_576)] = 512
    """Tokens per training sequence."""
    packing: bool = True
    """Concatenate examples into full sequences (no padding waste); attention never crosses examples."""
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.03
    """Fraction of steps with a linear learning-rate warm-up."""
    scheduler: SchedulerType = SchedulerType.COSINE
    """Learning-rate schedule after warm-up."""
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    """AdamW weight decay."""
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    """Gradient clipping norm."""
    precision: Precision = Precision.AUTO
    """auto picks bf16 on GPUs that support it, else fp32."""
    gradient_checkpointing: bool = False
    """Trade compute for memory on large models."""
    seed: Annotated[int, Field(ge=0)] = 42
    """Seed for initialisation, shuffling and dropout."""

    @model_validator(mode="after")
    def _one_stopping_rule(self) -> Hyperparameters:
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError("hyperparameters: set exactly one of epochs and maxSteps")
        return self


class EvalMetric(StrEnum):
    LOSS = "loss"
    PERPLEXITY = "perplexity"
    EXACT_MATCH = "exactMatch"


class EarlyStopping(ApiModel):
    """Stop when the validation loss stops improving."""

    patience: Annotated[int, Field(ge=1, le=1000)] = 3
    """Evaluations without improvement before stopping."""
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    """Smallest decrease that counts as an improvement."""


class EvalDataset(ApiModel):
    """A dataset used only for evaluation."""

    uri: StorageUri
    """File or prefix with the evaluation data."""
    format: DatasetFormat = DatasetFormat.TEXT
    """Format of the rows, as for training datasets."""
    template: Annotated[str, Field(max_length=8192)] | None = None
    """Prompt template for prompt-completion rows."""
    max_samples: Annotated[int, Field(ge=1)] | None = None
    """Evaluate on at most this many rows."""


class GuardAction(StrEnum):
    FAIL = "Fail"
    WARN = "Warn"


class ForgettingGuard(ApiModel):
    """Catastrophic-forgetting gate: base and candidate are scored on general data."""

    dataset: EvalDataset
    """General-domain regression set (text the model must keep modelling well)."""
    max_loss_increase_ratio: Annotated[float, Field(ge=0, le=10)] = 0.05
    """Largest allowed relative increase of the general loss, e.g. 0.05 = 5%."""
    action: GuardAction = GuardAction.FAIL
    """Fail marks the job Failed (artifacts kept, flagged); Warn only sets a condition."""


class EvaluationSpec(ApiModel):
    """Evaluation during and after training."""

    every_steps: Annotated[int, Field(ge=1)] | None = None
    """Validate every N optimizer steps; default: at the end of each epoch (and of training)."""
    metrics: Annotated[list[EvalMetric], Field(max_length=8)] = Field(
        default_factory=lambda: [EvalMetric.LOSS, EvalMetric.PERPLEXITY]
    )
    """Test-set metrics to report; exactMatch needs prompt-completion or chat data."""
    early_stopping: EarlyStopping | None = None
    """Stop early when validation loss stalls."""
    forgetting_guard: ForgettingGuard | None = None
    """Regression suite on general data with the largest allowed loss increase."""
    max_generate_tokens: Annotated[int, Field(ge=1, le=4096)] = 64
    """Tokens generated per prompt for exactMatch."""
    compare_with_base: bool = False
    """Also score the base model on the test set, so before/after is measured on identical data."""


# --------------------------------------------------------------------------- runtime


class ResourceSpec(ApiModel):
    """Compute for each trainer pod."""

    gpus_per_node: Annotated[int, Field(ge=0, le=16)] = 1
    """GPUs per pod (nvidia.com/gpu); 0 trains on CPU."""
    nodes: Annotated[int, Field(ge=1, le=256)] = 1
    """Pods (nodes) in the run; more than one runs torchrun across an Indexed Job."""
    gpu_product: ShortString | None = None
    """Required GPU product (node label nvidia.com/gpu.product), e.g. NVIDIA-H100-80GB-HBM3."""
    cpu: Quantity = "4"
    """CPU request per pod."""
    memory: Quantity = "32Gi"
    """Memory request and limit per pod."""
    shared_memory: Quantity = "8Gi"
    """Size of the memory-backed /dev/shm (dataloader workers, NCCL)."""
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict)
    """Extra node labels the pods require."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = Field(default_factory=list)
    """Extra tolerations; the GPU taint is tolerated automatically when GPUs are requested."""
    priority_class_name: ShortString | None = None
    """PriorityClass of the pods."""


class CheckpointSpec(ApiModel):
    """Preemption-safe checkpoints."""

    every_steps: Annotated[int, Field(ge=1)] = 100
    """Save every N optimizer steps (and always on SIGTERM)."""
    keep: Annotated[int, Field(ge=1, le=100)] = 3
    """Keep the newest K checkpoints."""
    uri: StorageUri | None = None
    """Where checkpoints go; default: <output.uri>/checkpoints."""


class OutputSpec(ApiModel):
    """Where artifacts go."""

    uri: StorageUri
    """Prefix for the adapter or model, evaluation report, data report and model card."""
    merge_adapter: bool = False
    """LoRA only: also save the base model with the adapter merged in."""


class RunPolicy(ApiModel):
    """Retries, deadlines and suspension of the underlying batch/v1 Job."""

    backoff_limit: Annotated[int, Field(ge=0, le=100)] = 3
    """Retries after infrastructure failures; config and data errors never retry."""
    active_deadline_seconds: Annotated[int, Field(ge=60)] | None = None
    """Kill the run after this long."""
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = None
    """Delete the finished Job (not the FineTuneJob or its artifacts) after this long."""
    suspend: bool = False
    """Suspend the run (pods are deleted; a checkpoint is taken on SIGTERM). Set false to resume."""


class FineTuneJobSpec(ApiModel):
    """Desired state of a FineTuneJob."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.output.mergeAdapter) || !self.output.mergeAdapter || "
                    "self.method.type == 'LoRA' || self.method.type == 'QLoRA'",
                    "output.mergeAdapter needs method LoRA or QLoRA",
                    ".output.mergeAdapter",
                ),
                cel_rule(
                    "self.method.type != 'QLoRA' || self.resources.gpusPerNode > 0",
                    "method QLoRA needs resources.gpusPerNode > 0",
                    ".method.type",
                ),
                cel_rule(
                    "!self.baseModel.fromScratch || self.method.type == 'Full'",
                    "baseModel.fromScratch (pre-training) needs method Full",
                    ".baseModel.fromScratch",
                ),
            ]
        }
    )

    base_model: Annotated[BaseModelSource, Field(json_schema_extra=immutable("baseModel"))]
    """The model to start from."""
    method: Annotated[MethodSpec, Field(json_schema_extra=immutable("method"))]
    """Full fine-tuning, LoRA, QLoRA or ReFT."""
    objective: Annotated[Objective, Field(json_schema_extra=immutable("objective"))] = Objective.INSTRUCTION
    """CausalLM (pre-training, continued pre-training) or Instruction (completion-only loss)."""
    datasets: Annotated[
        list[DatasetSpec],
        Field(
            min_length=1,
            max_length=64,
            # A map keyed by name: the API server refuses duplicate names.
            json_schema_extra=immutable("datasets")
            | {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    ]
    """Training data; several datasets are mixed by weight."""
    split: Annotated[SplitSpec, Field(json_schema_extra=immutable("split"))] = Field(
        default_factory=SplitSpec
    )
    """Train/validation/test fractions."""
    data_preparation: Annotated[
        DataPreparationSpec, Field(json_schema_extra=immutable("dataPreparation"))
    ] = Field(default_factory=DataPreparationSpec)
    """Cleaning, deduplication and row validation."""
    hyperparameters: Annotated[Hyperparameters, Field(json_schema_extra=immutable("hyperparameters"))]
    """Optimisation settings."""
    evaluation: Annotated[EvaluationSpec, Field(json_schema_extra=immutable("evaluation"))] = Field(
        default_factory=EvaluationSpec
    )
    """Validation, test metrics, early stopping and the forgetting guard."""
    resources: Annotated[ResourceSpec, Field(json_schema_extra=immutable("resources"))] = Field(
        default_factory=ResourceSpec
    )
    """GPUs, nodes, CPU, memory and placement."""
    checkpoint: Annotated[CheckpointSpec, Field(json_schema_extra=immutable("checkpoint"))] = Field(
        default_factory=CheckpointSpec
    )
    """Checkpoint cadence and retention."""
    output: Annotated[OutputSpec, Field(json_schema_extra=immutable("output"))]
    """Where artifacts go."""
    storage: StorageSettings = Field(default_factory=StorageSettings)
    """Endpoint and credentials for s3:// URIs."""
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    """Retries, deadline, TTL and suspension."""
    queue_name: Annotated[str, Field(max_length=63)] | None = None
    """Kueue LocalQueue; the Job is created suspended and Kueue admits it."""
    image: Annotated[str, Field(max_length=1024)] | None = None
    """Trainer image override; default: the operator's configured trainer image."""
    pod_metadata: PodMetadata = Field(default_factory=PodMetadata)
    """Extra labels and annotations for the trainer pods."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> FineTuneJobSpec:
        lora_like = (MethodType.LORA, MethodType.QLORA)
        if self.output.merge_adapter and self.method.type not in lora_like:
            raise ValueError("output.mergeAdapter needs method LoRA or QLoRA")
        if self.method.type == MethodType.QLORA and self.resources.gpus_per_node == 0:
            raise ValueError("method QLoRA needs resources.gpusPerNode > 0")
        if self.base_model.from_scratch and self.method.type != MethodType.FULL:
            raise ValueError("baseModel.fromScratch (pre-training) needs method Full")
        names = [d.name for d in self.datasets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"datasets: duplicate name(s) {', '.join(duplicates)}")
        return self


# --------------------------------------------------------------------------- status


class Phase(StrEnum):
    PENDING = "Pending"
    VALIDATING = "Validating"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})


class Progress(ApiModel):
    """Live training progress, published by the trainer."""

    step: Annotated[int, Field(ge=0)] = 0
    """Optimizer steps done."""
    total_steps: Annotated[int, Field(ge=0)] = 0
    """Optimizer steps planned."""
    epoch: Annotated[float, Field(ge=0)] = 0.0
    """Fractional epoch."""
    percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    """step / totalSteps in percent."""
    eta_seconds: Annotated[int, Field(ge=0)] | None = None
    """Estimated seconds to the end of training."""
    last_update_time: datetime | None = None
    """When the trainer last reported."""


class Metrics(ApiModel):
    """Latest metrics of the run."""

    train_loss: float | None = None
    """Training loss (running mean since the last report)."""
    validation_loss: float | None = None
    """Latest validation loss."""
    test_loss: float | None = None
    """Test loss after training."""
    perplexity: float | None = None
    """Test perplexity (exp of the test loss)."""
    test_loss_base: float | None = None
    """Base model's loss on the same test set (evaluation.compareWithBase)."""
    learning_rate: float | None = None
    """Current learning rate."""
    tokens_per_second: float | None = None
    """Training throughput over all pods."""
    task_scores: dict[str, float] = Field(default_factory=dict)
    """Per-task scores, e.g. {"qa/exactMatch": 0.8, "qa/loss": 1.2}."""
    general_loss_base: float | None = None
    """Base model loss on the forgetting-guard set."""
    general_loss: float | None = None
    """Candidate loss on the forgetting-guard set."""
    forgetting_gate_passed: bool | None = None
    """Whether the general loss stayed within the guard's limit."""


class CheckpointRecord(ApiModel):
    """A saved checkpoint."""

    step: Annotated[int, Field(ge=0)]
    """Step the checkpoint was taken at."""
    uri: Annotated[str, Field(max_length=2048)]
    """Where it is."""
    time: datetime | None = None
    """When it was written."""


class Artifacts(ApiModel):
    """Where the results are."""

    adapter: Annotated[str, Field(max_length=2048)] | None = None
    """LoRA adapter (PeftModel.from_pretrained) or ReFT interventions."""
    model: Annotated[str, Field(max_length=2048)] | None = None
    """Full model (AutoModelForCausalLM.from_pretrained): full fine-tuning, pre-training or merged LoRA."""
    eval_report: Annotated[str, Field(max_length=2048)] | None = None
    """Evaluation report (JSON)."""
    data_report: Annotated[str, Field(max_length=2048)] | None = None
    """Data preparation report (JSON)."""
    model_card: Annotated[str, Field(max_length=2048)] | None = None
    """Model card (markdown) with lineage."""


class DatasetLineage(ApiModel):
    """Content hash of a dataset as it was used."""

    name: Annotated[str, Field(max_length=253)]
    """Dataset name."""
    uri: Annotated[str, Field(max_length=2048)]
    """Dataset URI."""
    sha256: Annotated[str, Field(max_length=64)]
    """SHA-256 over the raw bytes of every file read."""
    rows: Annotated[int, Field(ge=0)] | None = None
    """Rows kept after cleaning."""


class Lineage(ApiModel):
    """What went into the model."""

    datasets: Annotated[list[DatasetLineage], Field(max_length=128)] = Field(default_factory=list)
    """Datasets with their content hashes."""
    base_model_revision: Annotated[str, Field(max_length=253)] | None = None
    """Resolved base model revision or content hash."""
    image: Annotated[str, Field(max_length=1024)] | None = None
    """Trainer image (with digest when the kubelet reports one)."""
    trainer_version: Annotated[str, Field(max_length=64)] | None = None
    """kubetune trainer version."""


class FineTuneJobStatus(ApiModel):
    """Observed state of a FineTuneJob."""

    phase: Phase | None = None
    """Pending, Validating, Queued, Running, Succeeded, Failed or Suspended."""
    conditions: Annotated[
        list[Condition],
        Field(
            max_length=32,
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        ),
    ] = Field(default_factory=list)
    """Latest observations of the job's state."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The .metadata.generation the status describes."""
    message: Annotated[str, Field(max_length=32768)] | None = None
    """Human-readable summary of the current phase."""
    job_name: Annotated[str, Field(max_length=253)] | None = None
    """Name of the batch/v1 Job running the trainer."""
    progress: Progress | None = None
    """Live progress."""
    metrics: Metrics | None = None
    """Latest metrics."""
    checkpoints: Annotated[list[CheckpointRecord], Field(max_length=100)] = Field(default_factory=list)
    """Checkpoints that exist."""
    artifacts: Artifacts | None = None
    """Result locations."""
    lineage: Lineage | None = None
    """Dataset hashes, base model revision and image."""
    attempts: Annotated[int, Field(ge=0)] = 0
    """Pods started so far (1 + retries)."""
    start_time: datetime | None = None
    """When the first trainer pod started."""
    completion_time: datetime | None = None
    """When the job finished."""


class FineTuneJob(ResourceModel):
    """Pre-train, fine-tune (full, LoRA, QLoRA, ReFT) or continue pre-training a model."""

    api_version: Literal["kubetune.io/v1alpha1"] = "kubetune.io/v1alpha1"
    kind: Literal["FineTuneJob"] = "FineTuneJob"
    spec: FineTuneJobSpec
    status: FineTuneJobStatus | None = None
