"""Prometheus metric names exported by the operator and the trainer.

The operator, the trainer, the chart's alerts and the Grafana dashboard all use these
names; the chart's tests check that every query refers to a metric listed here and that
the running components really export it.
"""

from __future__ import annotations

from typing import Final

# ---- operator (port 8080, path /metrics)
FINETUNEJOBS_BY_PHASE: Final = "kubetune_finetunejobs"
"""Gauge {namespace, phase}: FineTuneJobs per phase."""
FINETUNEJOB_PHASE: Final = "kubetune_finetunejob_phase"
"""Gauge {namespace, name, phase}: 1 for the job's current phase (0 for the others)."""
FINETUNEJOB_PHASE_SINCE: Final = "kubetune_finetunejob_phase_since_timestamp_seconds"
"""Gauge {namespace, name}: when the job entered its current phase."""
FINETUNEJOB_PROGRESS: Final = "kubetune_finetunejob_progress_ratio"
"""Gauge {namespace, name}: step / totalSteps, 0..1."""
FINETUNEJOB_LAST_PROGRESS: Final = "kubetune_finetunejob_last_progress_timestamp_seconds"
"""Gauge {namespace, name}: when the trainer last reported progress."""
FINETUNEJOB_TRAIN_LOSS: Final = "kubetune_finetunejob_train_loss"
"""Gauge {namespace, name}: latest training loss (NaN when the run diverged)."""
FINETUNEJOB_VALIDATION_LOSS: Final = "kubetune_finetunejob_validation_loss"
"""Gauge {namespace, name}: latest validation loss."""
FINETUNEJOB_TOKENS_PER_SECOND: Final = "kubetune_finetunejob_tokens_per_second"
"""Gauge {namespace, name}: training throughput."""
RECONCILE_DURATION: Final = "kubetune_reconcile_duration_seconds"
"""Histogram {kind}: time spent in one reconcile."""
RECONCILE_ERRORS: Final = "kubetune_reconcile_errors_total"
"""Counter {kind, reason}: reconciles that raised."""
QUEUE_WAIT: Final = "kubetune_queue_wait_seconds"
"""Histogram: from creation to the first trainer pod running."""
JOB_DURATION: Final = "kubetune_job_duration_seconds"
"""Histogram {outcome}: from start to completion."""
GPU_SECONDS_REQUESTED: Final = "kubetune_gpu_requested_seconds_total"
"""Counter {namespace, gpu_product}: GPU-seconds held by trainer pods (requested GPUs x seconds);
dashboards show GPU-hours by dividing by 3600 (Prometheus names carry base units only)."""
JOBS_FINISHED: Final = "kubetune_finetunejobs_finished_total"
"""Counter {namespace, outcome, reason}: jobs that reached Succeeded or Failed."""
CPT_GENERATION: Final = "kubetune_continuouspretrain_generation"
"""Gauge {namespace, name}: generation of the promoted model."""
CPT_RUNS: Final = "kubetune_continuouspretrain_runs_total"
"""Counter {namespace, name, result}: runs by result (promoted, rejected, failed)."""
CPT_NEW_DOCUMENTS: Final = "kubetune_continuouspretrain_pending_documents"
"""Gauge {namespace, name}: documents newer than the watermark."""

# ---- trainer (port TrainerConfig.metrics_port, path /metrics)
TRAINER_STEP: Final = "kubetune_trainer_step"
TRAINER_TOTAL_STEPS: Final = "kubetune_trainer_total_steps"
TRAINER_LOSS: Final = "kubetune_trainer_loss"
TRAINER_VALIDATION_LOSS: Final = "kubetune_trainer_validation_loss"
TRAINER_LEARNING_RATE: Final = "kubetune_trainer_learning_rate"
TRAINER_TOKENS_PER_SECOND: Final = "kubetune_trainer_tokens_per_second"
TRAINER_PROGRESS: Final = "kubetune_trainer_progress_ratio"
TRAINER_ETA: Final = "kubetune_trainer_eta_seconds"
TRAINER_ACCELERATOR_MEMORY: Final = "kubetune_trainer_accelerator_memory_bytes"

OPERATOR_METRICS: Final = (
    FINETUNEJOBS_BY_PHASE,
    FINETUNEJOB_PHASE,
    FINETUNEJOB_PHASE_SINCE,
    FINETUNEJOB_PROGRESS,
    FINETUNEJOB_LAST_PROGRESS,
    FINETUNEJOB_TRAIN_LOSS,
    FINETUNEJOB_VALIDATION_LOSS,
    FINETUNEJOB_TOKENS_PER_SECOND,
    RECONCILE_DURATION,
    RECONCILE_ERRORS,
    QUEUE_WAIT,
    JOB_DURATION,
    GPU_SECONDS_REQUESTED,
    JOBS_FINISHED,
    CPT_GENERATION,
    CPT_RUNS,
    CPT_NEW_DOCUMENTS,
)
TRAINER_METRICS: Final = (
    TRAINER_STEP,
    TRAINER_TOTAL_STEPS,
    TRAINER_LOSS,
    TRAINER_VALIDATION_LOSS,
    TRAINER_LEARNING_RATE,
    TRAINER_TOKENS_PER_SECOND,
    TRAINER_PROGRESS,
    TRAINER_ETA,
    TRAINER_ACCELERATOR_MEMORY,
)
OPERATOR_METRICS_PORT: Final = 8080
OPERATOR_HEALTH_PORT: Final = 8081
