"""Derive a FineTuneJob's phase and conditions from its Job and pods (pure; `now` is passed in).

The result is a merge patch of the operator's own status fields only: progress and the live
metrics belong to the trainer and are never sent, so a patch cannot overwrite them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kubetune_api import conditions
from kubetune_api.common import Condition
from kubetune_api.constants import EXIT_CONFIG_ERROR, EXIT_DATA_ERROR, EXIT_GATE_FAILED
from kubetune_api.finetunejob import TERMINAL_PHASES, FineTuneJob, Phase
from kubetune_api.trainer_contract import FailureReason, TrainerResult

from .common import CONTAINER_NAME

COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
EXIT_CODE_REASONS = {
    EXIT_CONFIG_ERROR: FailureReason.CONFIG_ERROR,
    EXIT_DATA_ERROR: FailureReason.DATA_ERROR,
    EXIT_GATE_FAILED: FailureReason.FORGETTING_GATE_FAILED,
}
MAX_MESSAGE = 1024
# Conditions the operator shows only while they hold (or once they have held).
_TRANSIENT_CONDITIONS = (conditions.QUEUED, conditions.SUSPENDED, conditions.UNSCHEDULABLE)


@dataclass(frozen=True)
class Observation:
    phase: Phase
    reason: str
    message: str
    unschedulable: str | None = None
    """The scheduler's message when a trainer pod cannot be placed."""
    result: TrainerResult | None = None


@dataclass(frozen=True)
class StatusUpdate:
    patch: dict[str, Any]
    """Merge patch for .status (operator-owned fields only)."""
    previous_phase: Phase | None
    observation: Observation

    @property
    def phase_changed(self) -> bool:
        return self.previous_phase != self.observation.phase


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return dict(condition)
    return None


def _trainer_state(pod: dict[str, Any]) -> dict[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER_NAME:
            return status.get("state") or {}
    return {}


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    return _trainer_state(pod).get("terminated")


def _started_at(pod: dict[str, Any]) -> datetime | None:
    state = _trainer_state(pod)
    for key in ("running", "terminated"):
        if key in state and state[key].get("startedAt"):
            return parse_time(state[key]["startedAt"])
    return None


def parse_result(message: str | None) -> TrainerResult | None:
    if not message:
        return None
    try:
        return TrainerResult.model_validate(json.loads(message))
    except (ValueError, ValidationError):
        return None  # FallbackToLogsOnError: the last log lines, not a result


def _by_finish_time(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(pod: dict[str, Any]) -> str:
        terminated = _terminated(pod) or {}
        return str(terminated.get("finishedAt") or pod["metadata"].get("creationTimestamp") or "")

    return sorted(pods, key=key)


def _succeeded(job: dict[str, Any], pods: list[dict[str, Any]]) -> Observation:
    finished = [p for p in _by_finish_time(pods) if (_terminated(p) or {}).get("exitCode") == 0]
    # Rank 0 (completion index 0, or the only pod) writes the result.
    rank0 = [
        p
        for p in finished
        if p["metadata"].get("annotations", {}).get(COMPLETION_INDEX_ANNOTATION, "0") == "0"
    ]
    result = None
    for pod in reversed(rank0 or finished):
        result = parse_result((_terminated(pod) or {}).get("message"))
        if result is not None:
            break
    message = (result.message if result else "") or "Training finished"
    return Observation(Phase.SUCCEEDED, "TrainingSucceeded", message, result=result)


def _failed(job: dict[str, Any], pods: list[dict[str, Any]], job_failed: dict[str, Any]) -> Observation:
    failed = [p for p in _by_finish_time(pods) if (_terminated(p) or {}).get("exitCode", 0) != 0]
    reason = str(job_failed.get("reason") or "JobFailed")
    message = str(job_failed.get("message") or "")
    result = None
    if failed:
        terminated = _terminated(failed[-1]) or {}
        raw = str(terminated.get("message") or "").strip()
        result = parse_result(raw)
        exit_reason = EXIT_CODE_REASONS.get(int(terminated.get("exitCode", 0)))
        if result is not None:
            reason = str(result.reason or exit_reason or reason)
            message = result.message or message
        elif raw:
            reason = str(exit_reason or reason)
            message = raw
        elif exit_reason is not None:
            reason = str(exit_reason)
    return Observation(Phase.FAILED, reason, message[-MAX_MESSAGE:] or "Training failed", result=result)


def _unschedulable_message(pods: list[dict[str, Any]]) -> str | None:
    for pod in pods:
        if pod.get("status", {}).get("phase") != "Pending":
            continue
        for condition in pod.get("status", {}).get("conditions") or []:
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                return str(condition.get("message") or "no node fits the trainer pod")
    return None


def observe(ftj: FineTuneJob, job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> Observation:
    """What phase the run is in, judged from the Job first and its pods second."""
    if job is None:
        return Observation(Phase.PENDING, "JobPending", "Creating the trainer Job")
    if _job_condition(job, "Complete"):
        return _succeeded(job, pods)
    job_failed = _job_condition(job, "Failed")
    if job_failed:
        return _failed(job, pods, job_failed)
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    if job.get("spec", {}).get("suspend"):
        if ftj.spec.run_policy.suspend:
            return Observation(Phase.SUSPENDED, "SuspendedByUser", "spec.runPolicy.suspend is true")
        return Observation(
            Phase.QUEUED, "WaitingForAdmission", f"Waiting for queue {ftj.spec.queue_name} to admit the job"
        )
    if any(p.get("status", {}).get("phase") == "Running" for p in live):
        return Observation(Phase.RUNNING, "TrainerRunning", "Trainer pods are running")
    if any(p.get("status", {}).get("phase") == "Succeeded" for p in live):
        # The trainer is done; the Job controller marks the Job Complete a moment later. Saying
        # Pending in between would flap the phase (and post an Event) on every successful run.
        return Observation(
            Phase.RUNNING, "TrainerFinished", "Trainer finished; waiting for the Job to complete"
        )
    unschedulable = _unschedulable_message(live)
    if unschedulable is not None:
        return Observation(Phase.PENDING, "Unschedulable", unschedulable, unschedulable=unschedulable)
    if job.get("status", {}).get("failed"):
        return Observation(Phase.PENDING, "Retrying", "Starting a new trainer pod after a failure")
    return Observation(Phase.PENDING, "PodsPending", "Waiting for trainer pods to start")


def _attempts(ftj: FineTuneJob, pods: list[dict[str, Any]], previous: int) -> int:
    started = sum(1 for p in pods if _started_at(p) is not None)
    return max(previous, math.ceil(started / ftj.spec.resources.nodes))


def derive_status(
    ftj: FineTuneJob, job: dict[str, Any] | None, pods: list[dict[str, Any]], *, now: datetime
) -> StatusUpdate:
    status = ftj.status
    previous_phase = status.phase if status else None
    old_conditions: list[Condition] = list(status.conditions) if status else []
    generation = ftj.metadata.get("generation")

    if previous_phase in TERMINAL_PHASES and (job is None or status is None or status.completion_time):
        # A finished job never changes again, even after its Job is garbage-collected (TTL).
        observation = Observation(previous_phase, "Finished", status.message or "" if status else "")
        return StatusUpdate({}, previous_phase, observation)

    observation = observe(ftj, job, pods)
    phase = observation.phase

    def set_condition(
        current: list[Condition], type_: str, holds: bool, reason: str, message: str
    ) -> list[Condition]:
        return conditions.set_condition(
            current, type=type_, status=holds, reason=reason, message=message, now=now,
            observed_generation=generation,
        )  # fmt: skip

    new_conditions = old_conditions
    if job is not None:
        # A Job exists only for a spec that passed validation.
        new_conditions = set_condition(
            new_conditions, conditions.VALIDATED, True, "Validated", "References resolved"
        )
    for type_, holds in (
        (conditions.QUEUED, phase == Phase.QUEUED),
        (conditions.SUSPENDED, phase == Phase.SUSPENDED),
        (conditions.UNSCHEDULABLE, observation.unschedulable is not None),
    ):
        if holds or conditions.find_condition(old_conditions, type_) is not None:
            reason = observation.reason if holds else "NotApplicable"
            new_conditions = set_condition(
                new_conditions, type_, holds, reason, observation.message if holds else ""
            )
    running = phase == Phase.RUNNING
    new_conditions = set_condition(
        new_conditions, conditions.RUNNING, running, observation.reason if running else "NotRunning",
        observation.message if running else "",
    )  # fmt: skip
    for type_, terminal in ((conditions.SUCCEEDED, Phase.SUCCEEDED), (conditions.FAILED, Phase.FAILED)):
        if phase == terminal:
            new_conditions = set_condition(
                new_conditions, type_, True, observation.reason, observation.message
            )

    started = [t for t in (_started_at(p) for p in pods) if t is not None]
    start_time = (status.start_time if status else None) or (min(started) if started else None)
    patch: dict[str, Any] = {
        "phase": phase.value,
        "message": observation.message,
        "conditions": [c.to_wire() for c in new_conditions],
        "attempts": _attempts(ftj, pods, status.attempts if status else 0),
    }
    if job is not None:
        patch["jobName"] = job["metadata"]["name"]
    if generation is not None:
        patch["observedGeneration"] = generation
    if start_time is not None:
        patch["startTime"] = start_time.isoformat().replace("+00:00", "Z")
    if phase in TERMINAL_PHASES:
        finished = (job or {}).get("status", {}).get("completionTime")
        if finished is None:
            finished = (_job_condition(job or {}, "Failed") or {}).get("lastTransitionTime")
        patch["completionTime"] = finished or now.isoformat().replace("+00:00", "Z")
        result = observation.result
        if result is not None:
            patch["artifacts"] = result.artifacts.to_wire()
            final_metrics = result.metrics.to_wire()
            if final_metrics:
                patch["metrics"] = final_metrics
            if result.lineage is not None:
                patch["lineage"] = result.lineage.to_wire()
    return StatusUpdate(patch, previous_phase, observation)


def is_noop(patch: dict[str, Any], current_status: dict[str, Any]) -> bool:
    """True when every patched field already has that value (the patch would change nothing)."""

    def covered(wanted: Any, have: Any) -> bool:
        if isinstance(wanted, dict):
            return isinstance(have, dict) and all(covered(v, have.get(k)) for k, v in wanted.items())
        return bool(wanted == have)

    return covered(patch, current_status)
