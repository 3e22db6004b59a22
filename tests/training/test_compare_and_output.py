"""evaluation.compareWithBase (the base model scored on the very same test rows) and the output
guard (a finished run's artifacts are never overwritten without a newer checkpoint of this job)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubetune_trainer.errors import ConfigError, Preempted
from kubetune_trainer.run import baseline_metrics, run

pytestmark = pytest.mark.training

LORA = {"type": "LoRA", "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}}
REFT = {"type": "ReFT", "reft": {"rank": 4, "layers": [1], "positions": "f1+l1"}}
FULL = {"type": "Full"}


def _datasets(world: Path) -> list[dict]:
    return [
        {
            "name": task,
            "uri": f"file://{world}/{task}.jsonl",
            "format": "prompt-completion",
            "template": "question: {prompt}\nanswer:",
        }
        for task in ("capitals", "exports")
    ]


@pytest.mark.parametrize("method", [LORA, REFT, FULL], ids=["LoRA", "ReFT", "Full"])
def test_compare_with_base_reports_the_base_models_loss_on_the_same_test_set(
    make_config, world, tmp_path, method
):
    evaluation = {"compareWithBase": True, "metrics": ["loss", "exactMatch"], "maxGenerateTokens": 8}
    config = make_config(
        method,
        datasets=_datasets(world),
        evaluation=evaluation,
        hyperparameters={"maxSteps": 8, "learningRate": 0.01, "batchSize": 4, "maxSeqLength": 64},
    )
    metrics = run(config).metrics

    # Independently: the untouched base model on the same split (a fresh model, no adapter at all).
    base = baseline_metrics(config)
    assert metrics.test_loss_base == pytest.approx(base.test_loss, rel=1e-5)
    assert metrics.test_loss < metrics.test_loss_base  # trained on the tasks: the loss falls
    for index, task in enumerate(("capitals", "exports")):
        # The split is by content hash, so one dataset alone has exactly this task's test rows.
        alone = baseline_metrics(config.model_copy(update={"datasets": [config.datasets[index]]}))
        assert metrics.task_scores[f"{task}/lossBase"] == pytest.approx(alone.test_loss, rel=1e-5)
        assert metrics.task_scores[f"{task}/exactMatchBase"] == base.task_scores[f"{task}/exactMatch"]
        assert f"{task}/loss" in metrics.task_scores and f"{task}/exactMatch" in metrics.task_scores

    report = json.loads(Path(config.output.uri.removeprefix("file://"), "eval_report.json").read_text())
    assert report["test"]["lossBase"] == metrics.test_loss_base
    assert report["test"]["tasks"]["capitals"]["lossBase"] == metrics.task_scores["capitals/lossBase"]

    if method is LORA:  # and nothing of it without the flag
        plain = run(
            make_config(
                method,
                datasets=_datasets(world),
                hyperparameters={"maxSteps": 2, "learningRate": 0.01, "batchSize": 4, "maxSeqLength": 64},
                output={"uri": f"file://{tmp_path}/plain"},
            )
        )
        assert plain.metrics.test_loss_base is None
        assert not [k for k in plain.metrics.task_scores if k.endswith("Base")]
        report = json.loads((tmp_path / "plain" / "eval_report.json").read_text())
        assert "lossBase" not in report["test"]


def test_compare_with_base_survives_a_resume_of_full_fine_tuning(make_config, tmp_path):
    """Full tuning changes the base weights: the scores taken before step 1 travel in the checkpoint."""
    hyper = {"maxSteps": 6, "learningRate": 0.01, "batchSize": 4, "maxSeqLength": 64}
    config = make_config(FULL, hyperparameters=hyper, evaluation={"compareWithBase": True})
    with pytest.raises(Preempted):
        run(config, stop_after_step=3)
    resumed = run(config).metrics
    assert resumed.test_loss_base == pytest.approx(baseline_metrics(config).test_loss, rel=1e-5)


def test_a_finished_output_is_never_overwritten_by_another_job(make_config, tmp_path):
    hyper = {"maxSteps": 3, "learningRate": 0.01, "batchSize": 4, "maxSeqLength": 64}
    first = make_config(hyperparameters=hyper, job={"name": "first", "namespace": "team", "uid": "u-1"})
    run(first)
    out = first.output.uri

    # The same job again (a retried pod after the artifacts were written): resumes its own final
    # checkpoint and finishes again.
    assert run(first).steps == 3
    before = Path(out.removeprefix("file://"), "eval_report.json").read_bytes()

    # Another job (new uid, or another name) pointed at the same output.uri is refused, untouched.
    for job in (
        {"name": "first", "namespace": "team", "uid": "u-2"},
        {"name": "second", "namespace": "team"},
    ):
        with pytest.raises(ConfigError, match=f"output.uri {out} already holds the finished artifacts"):
            run(make_config(hyperparameters=hyper, job=job))
    again = Path(out.removeprefix("file://"), "eval_report.json").read_bytes()
    assert again == before and json.loads(again)["job"]["uid"] == "u-1"

    # Without any checkpoint (deleted), not even the same job may overwrite its finished output.
    import shutil

    shutil.rmtree(Path(out.removeprefix("file://"), "checkpoints"))
    with pytest.raises(ConfigError, match="no checkpoint of this job newer than them"):
        run(first)


def test_a_newer_checkpoint_of_this_job_may_replace_an_older_finished_output(make_config, tmp_path):
    hyper = {"maxSteps": 4, "learningRate": 0.01, "batchSize": 4, "maxSeqLength": 64}
    checkpoints = {"everySteps": 2, "keep": 2, "uri": f"file://{tmp_path}/ckpt-b"}
    run(make_config(hyperparameters=hyper, job={"name": "a", "namespace": "team"}))
    # Job b shares the output by mistake; its own preempted checkpoint is older than a's artifacts.
    b = make_config(hyperparameters=hyper, job={"name": "b", "namespace": "team"}, checkpoint=checkpoints)
    with pytest.raises(ConfigError, match="already holds the finished artifacts of job team/a"):
        run(b, stop_after_step=2)
    # A checkpoint of b written after a finished (an attempt that trained past them) may resume.
    out = b.output.uri.removeprefix("file://")
    report = json.loads(Path(out, "eval_report.json").read_text())
    report["finishedAt"] = "2000-01-01T00:00:00.000000+00:00"
    Path(out, "eval_report.json").write_text(json.dumps(report))
    from kubetune_trainer.checkpoint import CheckpointStore
    from kubetune_trainer.storage import Storage

    # Stand-in for b's earlier attempt: a real checkpoint written by the trainer under b's name.
    with pytest.raises(Preempted):
        run(
            b.model_copy(update={"output": b.output.model_copy(update={"uri": f"file://{tmp_path}/b0"})}),
            stop_after_step=2,
        )
    assert CheckpointStore(checkpoints["uri"], Storage(), 2, tmp_path).owner(2)["job"]["name"] == "b"
    assert run(b).steps == 4
    assert json.loads(Path(out, "eval_report.json").read_text())["job"]["name"] == "b"
