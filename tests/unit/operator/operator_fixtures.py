"""A FineTuneJob for operator unit tests, with the server-set metadata (uid, generation)."""

from __future__ import annotations

from typing import Any

from kubetune_api.finetunejob import FineTuneJob


def ftj_body(name: str = "demo", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": "uid-1",
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "baseModel": {"uri": "hf://org/model"},
            "method": {"type": "LoRA"},
            "datasets": [{"name": "qa", "uri": "s3://bucket/qa.jsonl", "format": "prompt-completion"}],
            "hyperparameters": {"maxSteps": 10},
            "output": {"uri": "s3://bucket/out/"},
            **spec,
        },
    }


def make_ftj(name: str = "demo", status: dict[str, Any] | None = None, **spec: Any) -> FineTuneJob:
    body = ftj_body(name, **spec)
    if status is not None:
        body["status"] = status
    return FineTuneJob.model_validate(body)
