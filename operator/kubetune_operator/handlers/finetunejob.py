"""Thin kopf handlers for FineTuneJob: parse → reconcile → status; errors become kopf retries.

Spec changes (create, resume after an operator restart, spec update) run the full reconcile.
Metadata-only edits never reach it: the update handler watches `spec` only. Job and pod
changes only re-derive the status; FineTuneJob status changes (the trainer's progress) only
update the per-job gauges.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kopf

from kubetune_api.constants import FINETUNEJOB_KIND, FINETUNEJOB_PLURAL, GROUP, LABEL_FINETUNEJOB, VERSION

from .. import metrics
from ..config import OperatorConfig
from ..errors import DependencyMissing, SpecInvalid
from ..reconcile import finetunejob as reconcile

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
_config = OperatorConfig()


def configure(config: OperatorConfig) -> None:
    global _config
    _config = config
    reconcile.STATUS_QUEUE.workers = config.status_workers


@contextmanager
def _measured() -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    except (kopf.TemporaryError, kopf.PermanentError):
        raise
    except Exception as error:
        metrics.RECONCILE_ERRORS.labels(FINETUNEJOB_KIND, type(error).__name__).inc()
        raise
    finally:
        metrics.RECONCILE_DURATION.labels(FINETUNEJOB_KIND).observe(time.monotonic() - started)


@kopf.on.resume(GROUP, VERSION, FINETUNEJOB_PLURAL)
@kopf.on.create(GROUP, VERSION, FINETUNEJOB_PLURAL)
@kopf.on.update(GROUP, VERSION, FINETUNEJOB_PLURAL, field="spec")
def reconcile_finetunejob(body: kopf.Body, **_: Any) -> None:
    with _measured():
        try:
            reconcile.apply(body, _config, status_queue=reconcile.STATUS_QUEUE)
        except DependencyMissing as error:
            # A Secret or PVC may be created later (GitOps ordering): check again, slowly.
            metrics.RECONCILE_ERRORS.labels(FINETUNEJOB_KIND, error.reason).inc()
            raise kopf.TemporaryError(error.message, delay=_config.validation_retry_seconds) from None
        except SpecInvalid as error:
            metrics.RECONCILE_ERRORS.labels(FINETUNEJOB_KIND, error.reason).inc()
            raise kopf.PermanentError(error.message) from None


# Watch events only queue a status sync (see reconcile.StatusQueue); they run on kopf's event loop.
@kopf.on.event("batch", "v1", "jobs", labels={LABEL_FINETUNEJOB: kopf.PRESENT})
async def trainer_job_changed(namespace: str | None, name: str, **_: Any) -> None:
    reconcile.STATUS_QUEUE.enqueue(namespace or "", name)


@kopf.on.event("v1", "pods", labels={LABEL_FINETUNEJOB: kopf.PRESENT, JOB_NAME_LABEL: kopf.PRESENT})
async def trainer_pod_changed(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    reconcile.STATUS_QUEUE.enqueue(namespace or "", labels[JOB_NAME_LABEL])


@kopf.on.event(GROUP, VERSION, FINETUNEJOB_PLURAL)
async def finetunejob_published(body: kopf.Body, type: str | None, **_: Any) -> None:
    reconcile.observe_published(body, deleted=type == "DELETED")
