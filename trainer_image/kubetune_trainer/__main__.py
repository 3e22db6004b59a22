"""`python -m kubetune_trainer [--config PATH]`: run one TrainerConfig, exit with a contract code.

Exit codes (kubetune_api.constants): 0 success, 3 config error, 4 data error, 5 forgetting
gate failed, 143 SIGTERM (after a checkpoint), 1 anything else. A TrainerResult is written
to the termination-message path in every case.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from kubetune_api.constants import (
    TERMINATION_MESSAGE_PATH,
    TRAINER_CONFIG_ENV,
    TRAINER_CONFIG_FILE,
    TRAINER_CONFIG_MOUNT,
)
from kubetune_api.manifests import describe_validation_error
from kubetune_api.trainer_contract import FailureReason, Outcome, TrainerConfig, TrainerResult

from .errors import ConfigError, TrainerError
from .observability import configure_logging, log

TERMINATION_MESSAGE_ENV = "KUBETUNE_TERMINATION_MESSAGE_PATH"
MAX_TERMINATION_MESSAGE_BYTES = 4096


def load_config(path: str | Path) -> TrainerConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read the trainer config {path}: {error}") from error
    try:
        return TrainerConfig.model_validate_json(text)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, str(path))) from None


def serialize_result(result: TrainerResult) -> bytes:
    """JSON that fits the kubelet's 4096-byte termination message; detail is dropped until it fits."""
    payload = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    encoded = json.dumps(payload, separators=(",", ":")).encode()
    for trim in ("samples", "taskScores", "lineage", "message"):
        if len(encoded) <= MAX_TERMINATION_MESSAGE_BYTES:
            break
        if trim == "taskScores":
            payload.get("metrics", {}).pop("taskScores", None)
        elif trim == "lineage":
            payload.pop("lineage", None)
        elif trim == "message":
            payload["message"] = payload.get("message", "")[:200]
        encoded = json.dumps(payload, separators=(",", ":")).encode()
    return encoded[:MAX_TERMINATION_MESSAGE_BYTES]


def write_termination_message(result: TrainerResult) -> None:
    path = Path(os.environ.get(TERMINATION_MESSAGE_ENV, TERMINATION_MESSAGE_PATH))
    try:
        path.write_bytes(serialize_result(result))
    except OSError as error:
        log.warning(
            "cannot write the termination message", extra={"fields": {"path": str(path), "error": str(error)}}
        )


def failure_result(error: TrainerError) -> TrainerResult:
    return TrainerResult(
        outcome=Outcome.FAILED, reason=error.reason, message=str(error)[:1024], **error.details
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune_trainer", description=__doc__)
    default = os.environ.get(TRAINER_CONFIG_ENV, f"{TRAINER_CONFIG_MOUNT}/{TRAINER_CONFIG_FILE}")
    parser.add_argument(
        "--config", default=default, help=f"TrainerConfig JSON (default: ${TRAINER_CONFIG_ENV})"
    )
    args = parser.parse_args(argv)
    configure_logging(int(os.environ.get("RANK", "0")))
    is_main = os.environ.get("RANK", "0") == "0"
    try:
        config = load_config(args.config)
        from .run import run  # torch is imported only once the config is known to be valid

        result = run(config)
        code = 0
    except TrainerError as error:
        log.error(str(error), extra={"fields": {"reason": error.reason.value, "exitCode": error.exit_code}})
        result, code = failure_result(error), error.exit_code
    except Exception as error:  # a bug or an infrastructure failure: retryable
        log.error(
            "training failed", extra={"fields": {"error": repr(error), "trace": traceback.format_exc()}}
        )
        result = TrainerResult(
            outcome=Outcome.FAILED, reason=FailureReason.TRAINING_ERROR, message=repr(error)[:1024]
        )
        code = 1
    if is_main:
        write_termination_message(result)
    return code


if __name__ == "__main__":
    sys.exit(main())
