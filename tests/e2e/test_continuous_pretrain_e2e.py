"""End to end on the CPU: a ContinuousPretrain run, built by the operator's builder, trained by the
real trainer, judged by the promotion gate.

A tiny model first learns a general corpus (prose about a fictional world); a new-domain shard
(question-and-answer transcripts) then lands in the corpus. The run must learn the new domain
(loss falls on its held-out rows) while replay of general text keeps the loss on a separate
general regression set inside the gate.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubetune_operator import corpus
from kubetune_operator.reconcile import continuouspretrain as rc

from kubetune_api.continuouspretrain import ContinuousPretrain
from kubetune_api.finetunejob import FineTuneJob
from kubetune_api.trainer_contract import ProgressTarget, TrainerConfig, TrainerResult

pytestmark = [pytest.mark.e2e, pytest.mark.training]

tiny = pytest.importorskip("kubetune_trainer.tiny")
trainer_run = pytest.importorskip("kubetune_trainer.run")

HYPERPARAMETERS = {
    "maxSteps": 60,
    "learningRate": 3e-3,
    "batchSize": 8,
    "maxSeqLength": 64,
    "warmupRatio": 0.0,
}
GATE = {"maxGeneralLossIncreaseRatio": 0.05, "minDomainLossDecreaseRatio": 0.10}


def train(job: dict[str, Any]) -> TrainerResult:
    config = TrainerConfig.from_finetunejob(
        FineTuneJob.model_validate(job), progress_target=ProgressTarget.NONE, metrics_port=0
    )
    result: TrainerResult = trainer_run.run(config)
    return result


def write_domain_shard(path: Path) -> Path:
    """New-domain documents: question-and-answer transcripts, a register the general prose never uses."""
    rows = [r for task in ("capitals", "exports") for r in tiny.tiny_task_rows(task)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"q: {r['prompt']} a: {r['completion']}\n" for r in rows), encoding="utf-8")
    return path


def pretrain_base(tmp_path: Path, general_train: Path) -> str:
    """Generation 0: a tiny model that already models world A."""
    init = tiny.write_tiny_base_model(tmp_path / "init", corpus=general_train, hidden_size=64, num_layers=2)
    result = train(
        {
            "metadata": {"name": "pretrain", "namespace": "e2e"},
            "spec": {
                "baseModel": {"uri": f"file://{init}"},
                "method": {"type": "Full"},
                "objective": "CausalLM",
                "datasets": [{"name": "general", "uri": f"file://{general_train}"}],
                "hyperparameters": {**HYPERPARAMETERS, "maxSteps": 150},
                "dataPreparation": {"deduplication": "Exact"},
                "output": {"uri": f"file://{tmp_path}/pretrain/"},
            },
        }
    )
    assert result.artifacts.model is not None
    return result.artifacts.model


def test_continuous_pretrain_learns_new_data_without_forgetting(tmp_path: Path) -> None:
    started = time.monotonic()
    general_train = tiny.write_tiny_corpus(tmp_path / "general" / "train.txt", documents=600, seed=1)
    general_eval = tiny.write_tiny_corpus(tmp_path / "general-eval.txt", documents=120, seed=2)
    replay = tiny.write_tiny_corpus(tmp_path / "replay" / "replay.txt", documents=600, seed=3)
    shard_dir = tmp_path / "corpus"
    shard = write_domain_shard(shard_dir / "day1.txt")
    landed = datetime.now(UTC) - timedelta(minutes=5)
    os.utime(shard, (landed.timestamp(), landed.timestamp()))
    base_uri = pretrain_base(tmp_path, general_train)

    cpt = ContinuousPretrain.model_validate(
        {
            "metadata": {"name": "world", "namespace": "e2e", "uid": "u1", "generation": 1},
            "spec": {
                "baseModel": {"uri": base_uri},
                "corpus": {"uri": f"file://{shard_dir}/"},
                "trigger": {"minNewDocuments": 100},
                "template": {
                    "hyperparameters": {**HYPERPARAMETERS, "learningRate": 1e-3},
                    "dataPreparation": {"deduplication": "Exact"},
                },
                "replay": {"uri": f"file://{replay.parent}/", "ratio": 0.5},
                "promotion": {"generalEval": {"uri": f"file://{general_eval}"}, **GATE},
                "output": f"file://{tmp_path}/runs/",
            },
        }
    )
    now = datetime.now(UTC)
    listing = corpus.list_new_shards(cpt.spec.corpus.uri, newer_than=None)
    started_run = rc.plan(cpt, [], listing, now)
    assert started_run.create is not None, started_run.status.conditions
    child = started_run.create

    result = train(child)
    metrics = result.metrics
    # The child sets evaluation.compareWithBase: the trainer scored the base model on the very same
    # held-out rows before its first update, and reports it as testLossBase.
    assert FineTuneJob.model_validate(child).spec.evaluation.compare_with_base
    assert metrics.test_loss_base is not None, "the trainer did not report testLossBase"
    assert metrics.task_scores.get("domain/lossBase") is not None

    domain = (metrics.test_loss_base, metrics.test_loss)
    general = (metrics.general_loss_base, metrics.general_loss)
    print(
        f"\nContinuousPretrain e2e: domain loss {domain[0]:.4f} -> {domain[1]:.4f}, "
        f"general loss {general[0]:.4f} -> {general[1]:.4f} "
        f"(domain-only test loss {metrics.task_scores.get('domain/lossBase')} -> "
        f"{metrics.task_scores.get('domain/loss')}), "
        f"{time.monotonic() - started:.1f} s"
    )
    assert (
        domain[0] is not None and domain[1] is not None and general[0] is not None and general[1] is not None
    )
    assert domain[1] < domain[0] * (1 - GATE["minDomainLossDecreaseRatio"])
    assert general[1] <= general[0] * (1 + GATE["maxGeneralLossIncreaseRatio"])

    # The operator's gate, fed the finished child as the API server would show it.
    finished = rc.ObservedRun(
        name=child["metadata"]["name"],
        generation=1,
        shards=(f"file://{shard}",),
        data_cutoff=landed,
        new_documents=168,
        created=now,
        phase="Succeeded",
        metrics=metrics,
        model_uri=result.artifacts.model,
    )
    promoted = rc.plan(
        cpt.model_copy(update={"status": started_run.status}), [finished], listing, now + timedelta(minutes=1)
    )
    current = promoted.status.current_model
    assert current is not None and current.generation == 1 and current.uri == result.artifacts.model
    assert promoted.status.runs[0].phase == "Promoted", promoted.status.runs[0].reason
    assert promoted.create is None  # the watermark moved past the shard: nothing new to train on
    assert Path(result.artifacts.model.removeprefix("file://"), "config.json").exists()
