"""Thin kopf handlers for FineTuneJob: parse → reconcile → status; errors become kopf retries.

Spec changes (create, resume after an operator restart, spec update) run the full reconcile.
Metadata-only edits never reach it: the update handler watches `spec` only. Job and pod
changes only re-derive the status; FineTuneJob status changes (the trainer's progress) only
update the per-job gauges.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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


class _Pools:
    """The reconcile's threads: `launch` (validation, ServiceAccount, Job, finish) and `children`."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.launch = ThreadPoolExecutor(workers, thread_name_prefix="launch")
        self.children = ThreadPoolExecutor(workers, thread_name_prefix="children")


_pools = _Pools(_config.max_workers)


def configure(config: OperatorConfig) -> None:
    global _config, _pools
    _config = config
    if _pools.workers != config.max_workers:
        _pools = _Pools(config.max_workers)
    reconcile.STATUS_QUEUE.workers = config.status_workers


def shutdown() -> None:
    """On operator stop: no new reconcile or status work; wait for the API calls already in flight."""
    reconcile.STATUS_QUEUE.stop()
    for pool in (_pools.launch, _pools.children):
        pool.shutdown(wait=False, cancel_futures=True)
    for pool in (_pools.launch, _pools.children):
        pool.shutdown(wait=True)
    reconcile.STATUS_QUEUE.join()


def api_connections(config: OperatorConfig) -> int:
    """HTTP connections kube.py needs so that no thread of the reconcile, the status queue, the
    ContinuousPretrain daemons or the Lease opens (and throws away) a TLS connection of its own."""
    return 2 * config.max_workers + config.status_workers + 8


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
async def reconcile_finetunejob(body: kopf.Body, **_: Any) -> None:
    """reconcile.apply's steps, scheduled for apply→Job latency under a burst of new jobs.

    The launch pool creates only ServiceAccounts and Jobs (and runs `finish`, which rarely calls
    the API), so a new job's Job never queues behind other jobs' ConfigMaps and RBAC objects (the
    slowest creates: the API server checks a Role against the operator's own rights). The other
    children are created in the children pool, their chains concurrently (a RoleBinding after its
    Role). The handler returns, and kopf records success, only once every child exists; an error
    anywhere makes kopf retry the whole, idempotent reconcile.
    """
    loop = asyncio.get_running_loop()
    with _measured():
        try:
            launched = await loop.run_in_executor(_pools.launch, reconcile.launch, body, _config)
            if launched is None:
                return
            await asyncio.gather(*(
                loop.run_in_executor(_pools.children, reconcile.ensure_chain, launched.ftj, chain)
                for chain in launched.rest
            ))  # fmt: skip
            finish = functools.partial(reconcile.finish, launched, status_queue=reconcile.STATUS_QUEUE)
            await loop.run_in_executor(_pools.launch, finish)
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
