"""FineTuneJob reconciliation: validate → create the children → derive the status from Job and pods.

`kube` is a parameter everywhere (default: the real kubetune_operator.kube module) so unit tests
pass a fake with the same functions. Children have deterministic names and are created only
if absent, so a restarted operator (or a second reconcile) never duplicates a Job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubetune_api import conditions
from kubetune_api.constants import FINETUNEJOB_KIND
from kubetune_api.finetunejob import TERMINAL_PHASES, FineTuneJob, Phase
from kubetune_api.manifests import describe_validation_error

from .. import kube as real_kube
from .. import metrics
from ..builders import configmap, job, rbac, references, service, status
from ..config import OperatorConfig
from ..errors import DependencyMissing, ReconcileError, SpecInvalid

logger = logging.getLogger(__name__)
EVENT_COMPONENT = "kubetune-operator"
Clock = Callable[[], datetime]
# The kubetune_operator.kube module, or a fake with the same functions in unit tests.
Kube = Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse(body: Mapping[str, Any]) -> FineTuneJob:
    document = {
        k: body[k] for k in ("apiVersion", "kind", "metadata", "spec", "status") if body.get(k) is not None
    }
    try:
        return FineTuneJob.model_validate(document)
    except ValidationError as error:
        raise SpecInvalid("InvalidSpec", describe_validation_error(error)) from None


# --------------------------------------------------------------------------- validation


def validate(ftj: FineTuneJob, config: OperatorConfig, kube: Kube = real_kube) -> None:
    """The checks the schema cannot make. Raises SpecInvalid or DependencyMissing naming every field."""
    permanent: list[ReconcileError] = []
    waiting: list[ReconcileError] = []
    allowed = ", ".join(f"{s}://" for s in sorted(config.allowed_uri_schemes))
    for ref in references.uri_refs(ftj):
        if ref.scheme not in config.allowed_uri_schemes:
            permanent.append(
                SpecInvalid(
                    "UnsupportedStorageScheme",
                    f"{ref.field}: {ref.scheme}:// is not supported by this cluster (supported: {allowed})",
                )
            )
    for secret_ref in references.secret_refs(ftj):
        secret = kube.get_secret(ftj.namespace, secret_ref.name)
        if secret is None:
            waiting.append(
                DependencyMissing(
                    "SecretNotFound", f'{secret_ref.field}: Secret "{secret_ref.name}" not found'
                )
            )
            continue
        present = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
        missing = [key for key in secret_ref.keys if key not in present]
        if missing:
            waiting.append(
                DependencyMissing(
                    "SecretKeyMissing",
                    f'{secret_ref.field}: Secret "{secret_ref.name}" has no key {", ".join(missing)}',
                )
            )
    claim_fields: dict[str, str] = {}
    for ref in references.uri_refs(ftj):
        if ref.claim is not None:
            claim_fields.setdefault(ref.claim, ref.field)
    for claim, field in claim_fields.items():
        if kube.get_pvc(ftj.namespace, claim) is None:
            waiting.append(
                DependencyMissing(
                    "PersistentVolumeClaimNotFound", f'{field}: PersistentVolumeClaim "{claim}" not found'
                )
            )
    problems = permanent + waiting
    if problems:
        kind = SpecInvalid if permanent else DependencyMissing
        raise kind(problems[0].reason, "; ".join(p.message for p in problems))


# --------------------------------------------------------------------------- children


def trainer_image(ftj: FineTuneJob, config: OperatorConfig) -> str:
    return ftj.spec.image or config.trainer_image


def desired_children(ftj: FineTuneJob, config: OperatorConfig) -> list[dict[str, Any]]:
    """Everything a FineTuneJob owns, in creation order."""
    image = trainer_image(ftj, config)
    trainer_config = configmap.trainer_config(
        ftj, image=image, progress_target=config.progress_target, metrics_port=config.trainer_metrics_port
    )
    # The ServiceAccount must exist before the Job controller creates pods; everything else the pod
    # needs only once it starts, so the Job goes second: apply→Job latency matters under load.
    children = [
        rbac.trainer_service_account(ftj, config.trainer_service_account_annotations),
        job.trainer_job(ftj, image=image, trainer_metrics_port=config.trainer_metrics_port),
        configmap.config_map(ftj, trainer_config),
        rbac.trainer_role(ftj),
        rbac.trainer_role_binding(ftj),
    ]
    if ftj.spec.resources.nodes > 1:
        children.append(service.rendezvous_service(ftj))
    return children


def job_updates(ftj: FineTuneJob, existing: Mapping[str, Any]) -> dict[str, Any]:
    """The mutable part of an existing Job that must follow the spec (suspend, deadline)."""
    spec = existing.get("spec", {})
    patch: dict[str, Any] = {}
    user_suspend = ftj.spec.run_policy.suspend
    # With a queue, Kueue owns unsuspending; the user can still suspend.
    if (ftj.spec.queue_name is None or user_suspend) and bool(spec.get("suspend")) != user_suspend:
        patch["suspend"] = user_suspend
    deadline = ftj.spec.run_policy.active_deadline_seconds
    if deadline is not None and spec.get("activeDeadlineSeconds") != deadline:
        patch["activeDeadlineSeconds"] = deadline
    return {"spec": patch} if patch else {}


# --------------------------------------------------------------------------- the reconcile


@dataclass(frozen=True)
class Launched:
    """A FineTuneJob whose trainer Job exists (created or adopted), and the children still to ensure.

    `rest` holds chains: the children of one chain in creation order (a RoleBinding after its Role:
    the API server checks the bound Role when it admits the binding), independent of other chains.
    """

    ftj: FineTuneJob
    job: dict[str, Any]
    rest: list[list[dict[str, Any]]]


def launch(
    body: Mapping[str, Any], config: OperatorConfig, *, kube: Kube = real_kube, clock: Clock = utcnow
) -> Launched | None:
    """The latency-critical part of a reconcile: validate, then the children the pods need at creation
    (ServiceAccount, then the Job). None for a finished job, which is never restarted."""
    ftj = parse(body)
    if ftj.status is not None and ftj.status.phase in TERMINAL_PHASES:
        return None  # finished runs are never restarted (their Job may be gone after its TTL)
    if ftj.status is None or ftj.status.job_name is None:
        # Validation gates the Job's creation; once it exists only runPolicy can still change it.
        try:
            validate(ftj, config, kube)
        except ReconcileError as error:
            phase = Phase.FAILED if isinstance(error, SpecInvalid) else Phase.PENDING
            _record_validation(ftj, False, error.reason, error.message, phase, kube=kube, clock=clock)
            raise
    children = desired_children(ftj, config)
    split = next(index for index, child in enumerate(children) if child["kind"] == "Job") + 1
    trainer_job: dict[str, Any] | None = None
    for child in children[:split]:
        obj = ensure_child(ftj, child, kube=kube)
        if child["kind"] == "Job":
            trainer_job = obj
    assert trainer_job is not None
    return Launched(ftj, trainer_job, chains(children[split:]))


def chains(children: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Group children (in creation order) into chains that may be created concurrently: each child
    starts a chain of its own, except a RoleBinding, which follows the Role it binds."""
    grouped: list[list[dict[str, Any]]] = []
    roles: dict[str, list[dict[str, Any]]] = {}
    for child in children:
        role_ref = child.get("roleRef") or {}
        chain = roles.get(role_ref.get("name", "")) if child["kind"] == "RoleBinding" else None
        if chain is None:
            chain = []
            grouped.append(chain)
        chain.append(child)
        if child["kind"] == "Role":
            roles[child["metadata"]["name"]] = chain
    return grouped


def ensure_child(ftj: FineTuneJob, child: dict[str, Any], *, kube: Kube = real_kube) -> dict[str, Any]:
    """Create one child unless it exists already."""
    obj, created = kube.create_if_absent(child)
    if created:
        logger.info("created %s %s/%s", child["kind"], ftj.namespace, child["metadata"]["name"])
    return obj  # type: ignore[no-any-return]


def ensure_chain(ftj: FineTuneJob, chain: list[dict[str, Any]], *, kube: Kube = real_kube) -> None:
    """The children of one chain of Launched.rest, in order."""
    for child in chain:
        ensure_child(ftj, child, kube=kube)


def finish(
    launched: Launched,
    *,
    kube: Kube = real_kube,
    clock: Clock = utcnow,
    status_queue: StatusQueue | None = None,
) -> None:
    """After every child exists: make the Job follow the spec (suspend, deadline), then the status."""
    ftj, trainer_job = launched.ftj, launched.job
    job_name = trainer_job["metadata"]["name"]
    patch = job_updates(ftj, trainer_job)
    if patch:
        trainer_job = kube.patch_job(ftj.namespace, job_name, patch)
    if status_queue is not None:
        # No body: the children took a while, the Job may have pods by now; the sync reads it afresh.
        status_queue.enqueue(ftj.namespace, job_name)
    else:
        sync_job(ftj.namespace, job_name, job=trainer_job, kube=kube, clock=clock)


def apply(
    body: Mapping[str, Any],
    config: OperatorConfig,
    *,
    kube: Kube = real_kube,
    clock: Clock = utcnow,
    status_queue: StatusQueue | None = None,
) -> None:
    """Create-or-adopt the children of a FineTuneJob and bring its status up to date. Idempotent.

    launch → ensure_chain for each chain of the rest → finish, one after another (the kopf handler
    runs the same steps, the chains concurrently). With a status_queue the status is written by
    its workers; without one it is written before returning.
    """
    launched = launch(body, config, kube=kube, clock=clock)
    if launched is None:
        return
    for chain in launched.rest:
        ensure_chain(launched.ftj, chain, kube=kube)
    finish(launched, kube=kube, clock=clock, status_queue=status_queue)


def _record_validation(
    ftj: FineTuneJob,
    valid: bool,
    reason: str,
    message: str,
    phase: Phase | None,
    *,
    kube: Kube,
    clock: Clock,
) -> None:
    old = list(ftj.status.conditions) if ftj.status else []
    current = conditions.find_condition(old, conditions.VALIDATED)
    if (
        current is not None
        and current.status == ("True" if valid else "False")
        and current.message == message
    ):
        return  # nothing new: no write, no event
    generation = ftj.metadata.get("generation")
    updated = conditions.set_condition(
        old, type=conditions.VALIDATED, status=valid, reason=reason, message=message, now=clock(),
        observed_generation=generation,
    )  # fmt: skip
    patch: dict[str, Any] = {"conditions": [c.to_wire() for c in updated]}
    if generation is not None:
        patch["observedGeneration"] = generation
    if phase is not None:
        patch["phase"] = phase.value
        patch["message"] = message
    elif ftj.status is None or ftj.status.phase is None:
        patch["phase"] = Phase.PENDING.value
    kube.patch_finetunejob_status(ftj.namespace, ftj.name, patch)
    if not valid:
        _event(ftj, "Warning", reason, message, kube=kube)
        if phase is not None:
            metrics.PHASES.set(ftj.namespace, ftj.name, phase.value, clock().timestamp())
        if phase == Phase.FAILED:
            metrics.JOBS_FINISHED.labels(ftj.namespace, "Failed", reason).inc()


# --------------------------------------------------------------------------- status


class Coalescer:
    """Runs at most one sync per key at a time; events arriving meanwhile cause one more run, not many.

    A burst of pod/job events for the same job then costs one or two syncs, and two syncs of
    one job never race each other with stale reads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty: dict[Hashable, bool] = {}

    def run(self, key: Hashable, fn: Callable[[], None]) -> None:
        with self._lock:
            if key in self._dirty:
                self._dirty[key] = True
                return
            self._dirty[key] = False
        try:
            while True:
                fn()
                with self._lock:
                    if not self._dirty[key]:
                        return
                    self._dirty[key] = False
        finally:
            with self._lock:
                self._dirty.pop(key, None)


_COALESCER = Coalescer()


def sync_job(
    namespace: str,
    job_name: str,
    *,
    job: Mapping[str, Any] | None = None,
    kube: Kube = real_kube,
    clock: Clock = utcnow,
) -> None:
    """Bring the owning FineTuneJob's status in line with its Job and pods (after any change to them).

    `job` is the Job as this thread just created or read it, which spares a read; a coalesced
    re-run reads it afresh.
    """
    delivered = [dict(job) if job is not None else None]

    def once() -> None:
        body, delivered[0] = delivered[0], None
        _sync_job_once(namespace, job_name, job=body, kube=kube, clock=clock)

    _COALESCER.run((namespace, job_name), once)


class StatusQueue:
    """A deduplicating work queue in front of sync_job, like client-go's workqueue.

    Watch events only enqueue (cheap, on kopf's event loop); a few worker threads sync. A job
    queued many times before a worker gets to it is synced once, so a burst of pod events costs
    one status read-and-write, and status work never crowds out Job creation in kopf's executor.
    A failed sync is retried after `retry_seconds`.
    """

    def __init__(self, sync: Callable[[str, str, Mapping[str, Any] | None], None], workers: int = 4,
                 retry_seconds: float = 5.0) -> None:  # fmt: skip
        self._sync = sync
        self.workers = workers
        self.retry_seconds = retry_seconds
        self._cv = threading.Condition()
        self._pending: dict[tuple[str, str], Mapping[str, Any] | None] = {}
        self._active: set[tuple[str, str]] = set()
        self._started = False
        self._stopped = False
        self._threads: list[threading.Thread] = []

    def enqueue(self, namespace: str, job_name: str, job: Mapping[str, Any] | None = None) -> None:
        """Queue a sync. Production callers pass no `job`: a Job body from one watch stream can be
        older than the pods seen on another, so the sync reads the Job afresh."""
        with self._cv:
            if self._stopped:
                return
            self._pending[(namespace, job_name)] = job
            if not self._started:
                self._started = True
                for index in range(self.workers):
                    thread = threading.Thread(target=self._work, name=f"status-{index}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
            self._cv.notify()

    def stop(self) -> None:
        """Take no more work: pending syncs are dropped (a restarted operator resyncs every Job), syncs
        in progress finish."""
        with self._cv:
            self._stopped = True
            self._pending.clear()
            self._cv.notify_all()

    def join(self, timeout: float | None = None) -> None:
        """After stop(): wait for the syncs in progress to finish."""
        for thread in self._threads:
            thread.join(timeout)

    def idle(self) -> bool:
        with self._cv:
            return not self._pending and not self._active

    def _next(self) -> tuple[tuple[str, str], Mapping[str, Any] | None] | None:
        with self._cv:
            while True:
                if self._stopped:
                    return None
                key = next((k for k in self._pending if k not in self._active), None)
                if key is not None:
                    self._active.add(key)
                    return key, self._pending.pop(key)
                self._cv.wait()

    def _work(self) -> None:
        while (item := self._next()) is not None:
            (namespace, job_name), job = item
            started = time.monotonic()
            try:
                self._sync(namespace, job_name, job)
            except Exception as error:
                metrics.RECONCILE_ERRORS.labels(FINETUNEJOB_KIND, type(error).__name__).inc()
                logger.warning("status sync of %s/%s failed; retrying", namespace, job_name, exc_info=True)
                timer = threading.Timer(self.retry_seconds, self.enqueue, args=(namespace, job_name))
                timer.daemon = True
                timer.start()
            finally:
                metrics.RECONCILE_DURATION.labels(FINETUNEJOB_KIND).observe(time.monotonic() - started)
                with self._cv:
                    self._active.discard((namespace, job_name))
                    self._cv.notify()


STATUS_QUEUE = StatusQueue(lambda namespace, job_name, job: sync_job(namespace, job_name, job=job))


def _owner_name(obj: Mapping[str, Any]) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == FINETUNEJOB_KIND and ref.get("controller"):
            return str(ref["name"])
    return None


def _may_have_pods(trainer_job: Mapping[str, Any]) -> bool:
    """False only for a Job the Job controller has not started any pod for (saves a LIST per new job)."""
    job_status = trainer_job.get("status") or {}
    counters = ("active", "ready", "succeeded", "failed", "terminating", "uncountedTerminatedPods")
    return any(job_status.get(key) for key in counters)


def _sync_job_once(
    namespace: str, job_name: str, *, job: dict[str, Any] | None, kube: Kube, clock: Clock
) -> None:
    trainer_job = job if job is not None else kube.get_job(namespace, job_name)
    if trainer_job is None:
        return  # deleted (TTL or cascade); the FineTuneJob keeps its last status
    owner = _owner_name(trainer_job)
    if owner is None:
        return
    body = kube.get_finetunejob(namespace, owner)
    if body is None or body["metadata"]["uid"] not in {
        r.get("uid") for r in trainer_job["metadata"].get("ownerReferences") or []
    }:
        return  # the owner is gone or was replaced by a namesake; garbage collection takes the Job
    ftj = parse(body)
    pods = (
        kube.list_job_pods(namespace, trainer_job["metadata"]["uid"]) if _may_have_pods(trainer_job) else []
    )
    now = clock()
    update = status.derive_status(ftj, trainer_job, pods, now=now)
    if update.patch and not status.is_noop(update.patch, body.get("status") or {}):
        kube.patch_finetunejob_status(namespace, ftj.name, update.patch)
    phase = update.observation.phase
    metrics.PHASES.set(namespace, ftj.name, phase.value, now.timestamp())
    if update.phase_changed:
        _on_transition(ftj, update, now, kube=kube)
    elif _unschedulable_appeared(ftj, update):
        _event(ftj, "Warning", "Unschedulable", update.observation.message, kube=kube)


def _unschedulable_appeared(ftj: FineTuneJob, update: status.StatusUpdate) -> bool:
    was = ftj.status is not None and conditions.is_true(ftj.status.conditions, conditions.UNSCHEDULABLE)
    return update.observation.unschedulable is not None and not was


def _on_transition(ftj: FineTuneJob, update: status.StatusUpdate, now: datetime, *, kube: Kube) -> None:
    observation = update.observation
    phase = observation.phase
    warning = phase == Phase.FAILED or observation.unschedulable is not None
    _event(
        ftj,
        "Warning" if warning else "Normal",
        observation.reason,
        f"{phase.value}: {observation.message}",
        kube=kube,
    )
    created = status.parse_time(ftj.metadata.get("creationTimestamp"))
    start = status.parse_time(update.patch.get("startTime"))
    if (
        phase == Phase.RUNNING
        and ftj.status is not None
        and ftj.status.start_time is None
        and created
        and start
    ):
        metrics.QUEUE_WAIT.observe(max(0.0, (start - created).total_seconds()))
    if phase in TERMINAL_PHASES:
        metrics.JOBS_FINISHED.labels(ftj.namespace, phase.value, observation.reason).inc()
        finished = status.parse_time(update.patch.get("completionTime")) or now
        if start is not None:
            seconds = max(0.0, (finished - start).total_seconds())
            metrics.JOB_DURATION.labels(phase.value).observe(seconds)
            resources = ftj.spec.resources
            gpus = resources.gpus_per_node * resources.nodes
            metrics.record_gpu_time(ftj.namespace, resources.gpu_product or "any", gpus, seconds)


def _event(ftj: FineTuneJob, type_: str, reason: str, message: str, *, kube: Kube) -> None:
    try:
        kube.create_event(
            {"apiVersion": ftj.api_version, "kind": ftj.kind, "metadata": ftj.metadata},
            type_=type_, reason=reason, message=message, component=EVENT_COMPONENT, instance=EVENT_COMPONENT,
        )  # fmt: skip
    except Exception:  # an Event is best effort: never fail a reconcile over it
        logger.warning("could not post event %s on %s/%s", reason, ftj.namespace, ftj.name, exc_info=True)


# --------------------------------------------------------------------------- published progress


def observe_published(body: Mapping[str, Any], deleted: bool = False) -> None:
    """Mirror what the trainer published into the job's status as per-job gauges (no API calls)."""
    metadata = body.get("metadata", {})
    namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
    if deleted:
        metrics.PHASES.forget(namespace, name)
        return
    published = body.get("status") or {}
    if published.get("phase"):
        metrics.PHASES.set(namespace, name, published["phase"], time.time())
    progress = published.get("progress") or {}
    if progress.get("totalSteps"):
        metrics.FINETUNEJOB_PROGRESS.labels(namespace, name).set(
            progress.get("step", 0) / progress["totalSteps"]
        )
    last = status.parse_time(progress.get("lastUpdateTime"))
    if last is not None:
        metrics.FINETUNEJOB_LAST_PROGRESS.labels(namespace, name).set(last.timestamp())
    published_metrics = published.get("metrics") or {}
    for key, gauge in (
        ("trainLoss", metrics.FINETUNEJOB_TRAIN_LOSS),
        ("validationLoss", metrics.FINETUNEJOB_VALIDATION_LOSS),
        ("tokensPerSecond", metrics.FINETUNEJOB_TOKENS_PER_SECOND),
    ):
        if published_metrics.get(key) is not None:
            gauge.labels(namespace, name).set(float(published_metrics[key]))
