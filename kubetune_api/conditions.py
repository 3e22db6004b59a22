"""Condition types and a pure helper that updates a condition list the Kubernetes way."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from .common import Condition, ConditionStatus

# FineTuneJob condition types.
VALIDATED: Final = "Validated"
QUEUED: Final = "Queued"
UNSCHEDULABLE: Final = "Unschedulable"
RUNNING: Final = "Running"
SUSPENDED: Final = "Suspended"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
FORGETTING_GATE: Final = "ForgettingGatePassed"
# ContinuousPretrain condition types.
READY: Final = "Ready"
CORPUS_READABLE: Final = "CorpusReadable"
RUN_ACTIVE: Final = "RunActive"


def set_condition(
    conditions: list[Condition],
    *,
    type: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str = "",
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """Return the list with `type` set; lastTransitionTime moves only when the status changes."""
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    previous = find_condition(conditions, type)
    transition_time = now
    if previous is not None and previous.status == status:
        transition_time = previous.last_transition_time
    updated = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition_time,
        observed_generation=observed_generation,
    )
    return [c for c in conditions if c.type != type] + [updated]


def find_condition(conditions: list[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)


def is_true(conditions: list[Condition], type: str) -> bool:
    condition = find_condition(conditions, type)
    return condition is not None and condition.status == ConditionStatus.TRUE
