"""Phase and conditions derived from the Job and its pods, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kubetune_operator.builders import status
from operator_fixtures import make_ftj

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T0 = "2026-01-01T11:00:00Z"
T1 = "2026-01-01T11:30:00Z"
RESULT = (
    '{"outcome": "Succeeded", "message": "done", "metrics": {"testLoss": 1.5}, '
    '"artifacts": {"adapter": "s3://b/out/adapter"}, "lineage": {"baseModelRevision": "abc"}}'
)


def job(
    suspend: bool = False, conditions: list[dict[str, Any]] | None = None, **job_status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo", "uid": "job-uid"},
        "spec": {"suspend": suspend},
        "status": {"conditions": conditions or [], **job_status},
    }


def pod(phase: str, *, running: bool = False, exit_code: int | None = None, message: str = "",
        scheduled: dict[str, Any] | None = None, index: str | None = None) -> dict[str, Any]:  # fmt: skip
    state: dict[str, Any] = {}
    if running:
        state = {"running": {"startedAt": T0}}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code, "message": message, "startedAt": T0, "finishedAt": T1}}
    metadata: dict[str, Any] = {"name": f"p-{phase}", "creationTimestamp": T0}
    if index is not None:
        metadata["annotations"] = {"batch.kubernetes.io/job-completion-index": index}
    return {
        "metadata": metadata,
        "status": {
            "phase": phase,
            "conditions": [scheduled] if scheduled else [],
            "containerStatuses": [{"name": "trainer", "state": state}] if state else [],
        },
    }


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/3 nodes are available: 2 Insufficient nvidia.com/gpu.",
}
COMPLETE = {"type": "Complete", "status": "True"}
FAILED_BACKOFF = {
    "type": "Failed",
    "status": "True",
    "reason": "BackoffLimitExceeded",
    "message": "Job has reached the specified backoff limit",
    "lastTransitionTime": T1,
}
FAILED_POLICY = {
    **FAILED_BACKOFF,
    "reason": "PodFailurePolicy",
    "message": "Container trainer failed with exit code 3",
}

# name: (spec overrides, job, pods) -> (phase, reason, message)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]], tuple[str, str, str]]] = {
    "no Job yet": ({}, None, [], ("Pending", "JobPending", "Creating the trainer Job")),
    "pods not started": (
        {},
        job(),
        [pod("Pending")],
        ("Pending", "PodsPending", "Waiting for trainer pods to start"),
    ),
    "no node has enough GPUs": (
        {},
        job(),
        [pod("Pending", scheduled=UNSCHEDULABLE)],
        ("Pending", "Unschedulable", "0/3 nodes are available: 2 Insufficient nvidia.com/gpu."),
    ),
    "running": (
        {},
        job(),
        [pod("Running", running=True)],
        ("Running", "TrainerRunning", "Trainer pods are running"),
    ),
    "retrying after a failure": (
        {},
        job(failed=1),
        [pod("Failed", exit_code=1), pod("Pending")],
        ("Pending", "Retrying", "Starting a new trainer pod after a failure"),
    ),
    "suspended by the user": (
        {"runPolicy": {"suspend": True}},
        job(suspend=True),
        [],
        ("Suspended", "SuspendedByUser", "spec.runPolicy.suspend is true"),
    ),
    "waiting for Kueue": (
        {"queueName": "team-a"},
        job(suspend=True),
        [],
        ("Queued", "WaitingForAdmission", "Waiting for queue team-a to admit the job"),
    ),
    "trainer done, Job not yet Complete: still Running, never back to Pending": (
        {},
        job(),
        [pod("Succeeded", exit_code=0, message=RESULT)],
        ("Running", "TrainerFinished", "Trainer finished; waiting for the Job to complete"),
    ),
    "succeeded with a result": (
        {},
        job(conditions=[COMPLETE], completionTime=T1),
        [pod("Succeeded", exit_code=0, message=RESULT)],
        ("Succeeded", "TrainingSucceeded", "done"),
    ),
    "succeeded, result from rank 0 only": (
        {"resources": {"nodes": 2}},
        job(conditions=[COMPLETE]),
        [
            pod("Succeeded", exit_code=0, message=RESULT, index="0"),
            pod("Succeeded", exit_code=0, message="rank 1 log", index="1"),
        ],
        ("Succeeded", "TrainingSucceeded", "done"),
    ),
    "config error: the trainer's reason and message": (
        {},
        job(conditions=[FAILED_POLICY]),
        [
            pod(
                "Failed",
                exit_code=3,
                message='{"outcome": "Failed", "reason": "ConfigError", "message": "bad maxSteps"}',
            )
        ],
        ("Failed", "ConfigError", "bad maxSteps"),
    ),
    "data error without a result: reason from the exit code, message from the logs": (
        {},
        job(conditions=[FAILED_POLICY]),
        [pod("Failed", exit_code=4, message="Traceback ... bad row 17")],
        ("Failed", "DataError", "Traceback ... bad row 17"),
    ),
    "backoff exhausted without a message: the Job's reason": (
        {},
        job(conditions=[FAILED_BACKOFF]),
        [pod("Failed", exit_code=137)],
        ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
    ),
}


@pytest.mark.parametrize("spec,trainer_job,pods,expected", [c for c in CASES.values()], ids=CASES.keys())
def test_observe(spec: dict[str, Any], trainer_job: dict[str, Any] | None, pods: list[dict[str, Any]],
                 expected: tuple[str, str, str]) -> None:  # fmt: skip
    observation = status.observe(make_ftj(**spec), trainer_job, pods)
    assert (observation.phase.value, observation.reason, observation.message) == expected


def test_success_patch_carries_result_and_never_progress() -> None:
    update = status.derive_status(
        make_ftj(status={"phase": "Running", "startTime": T0}),
        job(conditions=[COMPLETE], completionTime=T1),
        [pod("Succeeded", exit_code=0, message=RESULT)],
        now=NOW,
    )
    conditions = update.patch.pop("conditions")
    assert update.patch == {
        "phase": "Succeeded",
        "message": "done",
        "attempts": 1,
        "jobName": "demo",
        "observedGeneration": 1,
        "startTime": T0,
        "completionTime": T1,
        "artifacts": {"adapter": "s3://b/out/adapter"},
        "metrics": {"testLoss": 1.5, "taskScores": {}},
        "lineage": {"baseModelRevision": "abc", "datasets": []},
    }
    assert [(c["type"], c["status"], c["reason"]) for c in conditions] == [
        ("Validated", "True", "Validated"),
        ("Running", "False", "NotRunning"),
        ("Succeeded", "True", "TrainingSucceeded"),
    ]
    assert update.phase_changed


def test_unschedulable_condition_and_transition_times() -> None:
    first = status.derive_status(make_ftj(), job(), [pod("Pending", scheduled=UNSCHEDULABLE)], now=NOW)
    assert [(c["type"], c["status"]) for c in first.patch["conditions"]] == [
        ("Validated", "True"),
        ("Unschedulable", "True"),
        ("Running", "False"),
    ]
    later = datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    scheduled = status.derive_status(
        make_ftj(status=first.patch), job(), [pod("Running", running=True)], now=later
    )
    by_type = {c["type"]: c for c in scheduled.patch["conditions"]}
    assert by_type["Unschedulable"]["status"] == "False"
    assert by_type["Running"]["status"] == "True"
    assert by_type["Running"]["lastTransitionTime"] == "2026-01-01T13:00:00Z"
    assert scheduled.patch["attempts"] == 1 and scheduled.patch["startTime"] == T0


def test_attempts_count_started_pods_per_node_and_never_decrease() -> None:
    pods = [pod("Failed", exit_code=1), pod("Failed", exit_code=1), pod("Running", running=True)]
    assert status.derive_status(make_ftj(), job(failed=2), pods, now=NOW).patch["attempts"] == 3
    wide = make_ftj(resources={"nodes": 2})
    assert status.derive_status(wide, job(), pods[:2], now=NOW).patch["attempts"] == 1
    remembered = make_ftj(status={"phase": "Pending", "attempts": 5})
    assert status.derive_status(remembered, job(), [], now=NOW).patch["attempts"] == 5


def test_finished_jobs_never_change_again() -> None:
    finished = make_ftj(status={"phase": "Succeeded", "completionTime": T1, "message": "done"})
    update = status.derive_status(finished, job(), [pod("Running", running=True)], now=NOW)
    assert update.patch == {} and not update.phase_changed


@pytest.mark.parametrize(
    "patch,current,noop",
    [
        ({"phase": "Running"}, {"phase": "Running", "progress": {"step": 3}}, True),
        ({"phase": "Running"}, {"phase": "Pending"}, False),
        ({"metrics": {"testLoss": 1.0}}, {"metrics": {"testLoss": 1.0, "trainLoss": 2.0}}, True),
        ({"metrics": {"testLoss": 1.0}}, {}, False),
    ],
)
def test_is_noop(patch: dict[str, Any], current: dict[str, Any], noop: bool) -> None:
    assert status.is_noop(patch, current) is noop
