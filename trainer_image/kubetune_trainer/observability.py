"""Structured JSON logs, the Prometheus endpoint and progress reports into the job's status.

The progress reporter PATCHes the FineTuneJob's status subresource with plain urllib and
the pod's service-account token (no kubernetes client in the trainer image). Failures are
logged and ignored: an unreachable API server never fails a training run.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from kubetune_api import observability as names
from kubetune_api.constants import FINETUNEJOB_PLURAL, GROUP, VERSION
from kubetune_api.finetunejob import Metrics, Progress
from kubetune_api.trainer_contract import JobRef, ProgressReport

log = logging.getLogger("kubetune_trainer")

KUBE_API_ENV = "KUBETUNE_KUBE_API"
KUBE_TOKEN_FILE_ENV = "KUBETUNE_KUBE_TOKEN_FILE"
KUBE_CA_FILE_ENV = "KUBETUNE_KUBE_CA_FILE"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(rank: int = 0, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    log.info("logging configured", extra={"fields": {"rank": rank}})


def event(message: str, **fields: Any) -> None:
    log.info(message, extra={"fields": fields})


class TrainerMetrics:
    """Gauges named in kubetune_api.observability, served on their own registry."""

    def __init__(self, port: int) -> None:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, registry=self.registry)

        self.step = gauge(names.TRAINER_STEP, "Optimizer steps done.")
        self.total_steps = gauge(names.TRAINER_TOTAL_STEPS, "Optimizer steps planned.")
        self.loss = gauge(names.TRAINER_LOSS, "Training loss (mean since the previous step).")
        self.validation_loss = gauge(names.TRAINER_VALIDATION_LOSS, "Latest validation loss.")
        self.learning_rate = gauge(names.TRAINER_LEARNING_RATE, "Current learning rate.")
        self.tokens_per_second = gauge(
            names.TRAINER_TOKENS_PER_SECOND, "Training tokens per second (all ranks)."
        )
        self.progress = gauge(names.TRAINER_PROGRESS, "step / total steps.")
        self.eta = gauge(names.TRAINER_ETA, "Estimated seconds to the end of training.")
        self.accelerator_memory = gauge(
            names.TRAINER_ACCELERATOR_MEMORY, "Peak accelerator (or process) memory."
        )
        self.server = None
        if port:
            self.server, _ = start_http_server(port, registry=self.registry)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


class ProgressReporter:
    """Merge-patches ProgressReports into /apis/kubetune.io/v1alpha1/.../finetunejobs/{name}/status."""

    def __init__(self, job: JobRef, interval_seconds: float, enabled: bool) -> None:
        self.job = job
        self.interval = interval_seconds
        self.enabled = enabled
        self.last_sent = float("-inf")
        self.sent = 0
        self.failures = 0
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        self.api = os.environ.get(KUBE_API_ENV, f"https://{host}:{port}").rstrip("/")
        self.token_file = os.environ.get(KUBE_TOKEN_FILE_ENV, f"{SERVICE_ACCOUNT_DIR}/token")
        self.ca_file = os.environ.get(KUBE_CA_FILE_ENV, f"{SERVICE_ACCOUNT_DIR}/ca.crt")

    @property
    def url(self) -> str:
        return (
            f"{self.api}/apis/{GROUP}/{VERSION}/namespaces/{self.job.namespace}/"
            f"{FINETUNEJOB_PLURAL}/{self.job.name}/status"
        )

    def report(self, progress: Progress, metrics: Metrics, force: bool = False) -> bool:
        """Send unless the last report is younger than the interval; True when the PATCH succeeded."""
        if not self.enabled:
            return False
        now = time.monotonic()
        if not force and now - self.last_sent < self.interval:
            return False
        self.last_sent = now
        progress = progress.model_copy(update={"last_update_time": datetime.now(UTC)})
        body = ProgressReport(progress=progress, metrics=metrics).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        data = json.dumps({"status": body}).encode()
        request = urllib.request.Request(
            self.url, data=data, method="PATCH", headers={"Content-Type": "application/merge-patch+json"}
        )
        try:
            with open(self.token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
            request.add_header("Authorization", f"Bearer {token}")
        except OSError:
            pass  # no token: e.g. a local API server that does not need one
        context = None
        if self.url.startswith("https://"):
            context = ssl.create_default_context(
                cafile=self.ca_file if os.path.exists(self.ca_file) else None
            )
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                response.read()
            self.sent += 1
            return True
        except (urllib.error.URLError, OSError, ssl.SSLError) as error:
            self.failures += 1
            detail = (
                error.read().decode(errors="replace")[:300]
                if isinstance(error, urllib.error.HTTPError)
                else ""
            )
            log.warning(
                "progress report failed; training continues",
                extra={"fields": {"url": self.url, "error": str(error), "detail": detail}},
            )
            return False
