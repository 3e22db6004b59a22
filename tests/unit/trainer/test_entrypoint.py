"""`python -m kubetune_trainer`: exit codes and the termination message for config and data errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kubetune_trainer.__main__ import MAX_TERMINATION_MESSAGE_BYTES, serialize_result

from kubetune_api.constants import EXIT_CONFIG_ERROR, EXIT_DATA_ERROR
from kubetune_api.trainer_contract import Outcome, TrainerResult

REPO = Path(__file__).resolve().parents[3]


def _config(tmp_path: Path, **overrides: object) -> dict:
    document = {
        "job": {"name": "j"},
        "baseModel": {"uri": f"file://{tmp_path}/nowhere"},
        "method": {"type": "LoRA"},
        "objective": "Instruction",
        "datasets": [{"name": "d", "uri": f"file://{tmp_path}/d.jsonl", "format": "prompt-completion"}],
        "hyperparameters": {"maxSteps": 1},
        "output": {"uri": f"file://{tmp_path}/out"},
        "metricsPort": 0,
    }
    document.update(overrides)
    return document


def _run(tmp_path: Path, config: dict | str) -> tuple[int, dict, str]:
    path = tmp_path / "trainer-config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    message = tmp_path / "termination-log"
    env = {
        "KUBETUNE_TRAINER_CONFIG": str(path),
        "KUBETUNE_TERMINATION_MESSAGE_PATH": str(message),
        "PYTHONPATH": f"{REPO}:{REPO / 'trainer_image'}",
        "PATH": "/usr/bin:/bin",
    }
    process = subprocess.run(
        [sys.executable, "-m", "kubetune_trainer"], env=env, capture_output=True, text=True, timeout=120
    )
    return process.returncode, json.loads(message.read_text()), process.stderr


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"hyperparameters": {"maxSteps": 1, "epochs": 1}},
            "hyperparameters: set exactly one of epochs and maxSteps",
        ),
        ({"schemaVersion": 9}, "schemaVersion: this trainer reads version 1, got 9"),
        ({"method": {"type": "QLoRA"}}, "method QLoRA needs a CUDA GPU"),
        (
            {"method": {"type": "ReFT"}, "output": {"uri": "file:///x", "mergeAdapter": True}},
            "output.mergeAdapter needs method LoRA or QLoRA",
        ),
    ],
)
def test_config_errors_exit_3_with_a_termination_message(tmp_path, overrides, expected):
    code, result, _ = _run(tmp_path, _config(tmp_path, **overrides))
    assert code == EXIT_CONFIG_ERROR
    assert result["outcome"] == "Failed" and result["reason"] == "ConfigError"
    assert expected in result["message"]


def test_unparseable_config_is_a_config_error(tmp_path):
    code, result, _ = _run(tmp_path, "{not json")
    assert (code, result["reason"]) == (EXIT_CONFIG_ERROR, "ConfigError")


def test_bad_data_exits_4_naming_the_rows(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{broken\n')
    code, result, stderr = _run(tmp_path, _config(tmp_path))
    assert code == EXIT_DATA_ERROR and result["reason"] == "DataError"
    assert f"file://{tmp_path}/d.jsonl:2: malformed JSON" in result["message"]
    assert json.loads(stderr.strip().splitlines()[-1])["level"] == "error"  # structured logs


def test_termination_message_always_fits_4096_bytes():
    result = TrainerResult(outcome=Outcome.SUCCEEDED, message="x" * 1000)
    result.metrics.task_scores = {f"task-{i}/exactMatch": 0.5 for i in range(400)}
    encoded = serialize_result(result)
    assert len(encoded) <= MAX_TERMINATION_MESSAGE_BYTES
    assert json.loads(encoded)["outcome"] == "Succeeded"
