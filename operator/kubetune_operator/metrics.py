"""Prometheus metrics of the operator; every name comes from kubetune_api.observability."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter as Tally

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from kubetune_api import observability as names
from kubetune_api.finetunejob import Phase

# Jobs run for minutes to weeks; reconciles take milliseconds to seconds.
_LONG_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200, 604800, float("inf"))
_RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))

FINETUNEJOBS = Gauge(names.FINETUNEJOBS_BY_PHASE, "FineTuneJobs per phase.", ["namespace", "phase"])
FINETUNEJOB_PHASE = Gauge(
    names.FINETUNEJOB_PHASE,
    "1 for the job's current phase, 0 for the others.",
    ["namespace", "name", "phase"],
)
FINETUNEJOB_PHASE_SINCE = Gauge(
    names.FINETUNEJOB_PHASE_SINCE,
    "When the job entered its current phase (Unix time).",
    ["namespace", "name"],
)
FINETUNEJOB_PROGRESS = Gauge(names.FINETUNEJOB_PROGRESS, "step / totalSteps.", ["namespace", "name"])
FINETUNEJOB_LAST_PROGRESS = Gauge(
    names.FINETUNEJOB_LAST_PROGRESS,
    "When the trainer last reported progress (Unix time).",
    ["namespace", "name"],
)
FINETUNEJOB_TRAIN_LOSS = Gauge(names.FINETUNEJOB_TRAIN_LOSS, "Latest training loss.", ["namespace", "name"])
FINETUNEJOB_VALIDATION_LOSS = Gauge(
    names.FINETUNEJOB_VALIDATION_LOSS, "Latest validation loss.", ["namespace", "name"]
)
FINETUNEJOB_TOKENS_PER_SECOND = Gauge(
    names.FINETUNEJOB_TOKENS_PER_SECOND, "Training throughput (tokens/s).", ["namespace", "name"]
)
RECONCILE_DURATION = Histogram(
    names.RECONCILE_DURATION, "Time spent in one reconcile.", ["kind"], buckets=_RECONCILE_BUCKETS
)
RECONCILE_ERRORS = Counter(names.RECONCILE_ERRORS, "Reconciles that raised.", ["kind", "reason"])
QUEUE_WAIT = Histogram(
    names.QUEUE_WAIT, "From creation to the first trainer pod running.", buckets=_LONG_BUCKETS
)
JOB_DURATION = Histogram(names.JOB_DURATION, "From start to completion.", ["outcome"], buckets=_LONG_BUCKETS)
GPU_SECONDS_REQUESTED = Counter(
    names.GPU_SECONDS_REQUESTED,
    "GPU-seconds held by trainer pods (requested GPUs x seconds).",
    ["namespace", "gpu_product"],
)
JOBS_FINISHED = Counter(
    names.JOBS_FINISHED, "Jobs that reached Succeeded or Failed.", ["namespace", "outcome", "reason"]
)
# ContinuousPretrain metrics: updated by the ContinuousPretrain controller.
CPT_GENERATION = Gauge(names.CPT_GENERATION, "Generation of the promoted model.", ["namespace", "name"])
CPT_RUNS = Counter(names.CPT_RUNS, "ContinuousPretrain runs by result.", ["namespace", "name", "result"])
CPT_NEW_DOCUMENTS = Gauge(
    names.CPT_NEW_DOCUMENTS, "Documents newer than the watermark.", ["namespace", "name"]
)

_PER_JOB_GAUGES = (
    FINETUNEJOB_PHASE_SINCE,
    FINETUNEJOB_PROGRESS,
    FINETUNEJOB_LAST_PROGRESS,
    FINETUNEJOB_TRAIN_LOSS,
    FINETUNEJOB_VALIDATION_LOSS,
    FINETUNEJOB_TOKENS_PER_SECOND,
)


class PhaseBook:
    """The last known phase of every FineTuneJob, behind the per-phase counts."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def set(self, namespace: str, name: str, phase: str, since: float | None = None) -> None:
        with self._lock:
            previous = self._phases.get((namespace, name))
            self._phases[(namespace, name)] = phase
            if previous != phase:
                for known in Phase:
                    FINETUNEJOB_PHASE.labels(namespace, name, known.value).set(
                        1 if known.value == phase else 0
                    )
                if since is not None:
                    FINETUNEJOB_PHASE_SINCE.labels(namespace, name).set(since)
            self._publish_counts(namespace, previous, phase)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            previous = self._phases.pop((namespace, name), None)
            if previous is None:
                return
            for known in Phase:
                _remove(FINETUNEJOB_PHASE, namespace, name, known.value)
            for gauge in _PER_JOB_GAUGES:
                _remove(gauge, namespace, name)
            self._publish_counts(namespace, previous, None)

    def _publish_counts(self, namespace: str, *changed: str | None) -> None:
        tally = Tally(phase for (ns, _), phase in self._phases.items() if ns == namespace)
        for phase in {p for p in changed if p is not None}:
            FINETUNEJOBS.labels(namespace, phase).set(tally.get(phase, 0))


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


PHASES = PhaseBook()


def record_gpu_time(namespace: str, gpu_product: str, gpus: int, seconds: float) -> None:
    """Count GPU-seconds a finished job's trainer pods held: requested GPUs x seconds from start to end."""
    if gpus > 0:
        GPU_SECONDS_REQUESTED.labels(namespace, gpu_product).inc(gpus * max(0.0, seconds))


def serve(port: int) -> None:
    """Expose /metrics on all interfaces (0 disables)."""
    if port:
        start_http_server(port)
