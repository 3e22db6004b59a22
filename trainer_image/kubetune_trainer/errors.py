"""Errors that end a run with a specific exit code and TrainerResult reason."""

from __future__ import annotations

from typing import Any

from kubetune_api.constants import EXIT_CONFIG_ERROR, EXIT_DATA_ERROR, EXIT_GATE_FAILED, EXIT_PREEMPTED
from kubetune_api.trainer_contract import FailureReason


class TrainerError(Exception):
    """Base: a failure the operator should not retry (unless exit_code says otherwise).

    `details` carries what the run still produced (metrics, artifacts, lineage, steps) into
    the TrainerResult.
    """

    exit_code = 1
    reason = FailureReason.TRAINING_ERROR

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class ConfigError(TrainerError):
    """The TrainerConfig cannot work (bad schema, QLoRA without CUDA, unreadable base model)."""

    exit_code = EXIT_CONFIG_ERROR
    reason = FailureReason.CONFIG_ERROR


class DataError(TrainerError):
    """The data cannot be used (unreadable, empty, too many bad rows)."""

    exit_code = EXIT_DATA_ERROR
    reason = FailureReason.DATA_ERROR


class GateFailed(TrainerError):
    """The forgetting guard rejected the candidate (artifacts are saved and flagged)."""

    exit_code = EXIT_GATE_FAILED
    reason = FailureReason.FORGETTING_GATE_FAILED


class Preempted(TrainerError):
    """SIGTERM arrived; a checkpoint was written so the next attempt resumes."""

    exit_code = EXIT_PREEMPTED
    reason = FailureReason.PREEMPTED
