"""Shared tiny world for the training tests: data and a tiny Llama model, built once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubetune_trainer import tiny

from kubetune_api.trainer_contract import TrainerConfig


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    tiny.write_tiny_corpus(root / "corpus.txt", documents=300)
    tiny.write_tiny_corpus(root / "general.txt", documents=60, seed=7)
    tiny.write_tiny_task(root / "capitals.jsonl")
    tiny.write_tiny_task(root / "exports.jsonl", task="exports")
    tiny.write_tiny_base_model(root / "base-config", seed=0, with_weights=False)
    # A briefly pre-trained base (the tests fine-tune something that already models the world).
    from kubetune_trainer.run import run

    pretrain = TrainerConfig.model_validate(
        {
            "job": {"name": "pretrain"},
            "baseModel": {"uri": f"file://{root}/base-config", "fromScratch": True},
            "method": {"type": "Full"},
            "objective": "CausalLM",
            "datasets": [{"name": "corpus", "uri": f"file://{root}/corpus.txt"}],
            "hyperparameters": {"maxSteps": 60, "learningRate": 0.004, "batchSize": 8, "maxSeqLength": 128},
            "output": {"uri": f"file://{root}/pretrained"},
            "metricsPort": 0,
        }
    )
    run(pretrain)
    (root / "base").symlink_to(root / "pretrained" / "model")
    return root


@pytest.fixture
def make_config(world: Path, tmp_path: Path) -> Callable[..., TrainerConfig]:
    def make(method: dict[str, Any] | None = None, **overrides: Any) -> TrainerConfig:
        document: dict[str, Any] = {
            "job": {"name": "test-job", "namespace": "team"},
            "baseModel": {"uri": f"file://{world}/base"},
            "method": method or {"type": "LoRA", "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}},
            "objective": "Instruction",
            "datasets": [
                {
                    "name": "capitals",
                    "uri": f"file://{world}/capitals.jsonl",
                    "format": "prompt-completion",
                    "template": "question: {prompt}\nanswer:",
                }
            ],
            "hyperparameters": {"maxSteps": 12, "learningRate": 0.005, "batchSize": 4, "maxSeqLength": 64},
            "checkpoint": {"everySteps": 5, "keep": 2},
            "output": {"uri": f"file://{tmp_path}/out"},
            "metricsPort": 0,
        }
        for key, value in overrides.items():
            document[key] = value
        return TrainerConfig.model_validate(document)

    return make
