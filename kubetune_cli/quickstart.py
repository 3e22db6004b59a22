"""`kubetune quickstart`: pre-train a tiny model from its config, LoRA-tune it on a task, compare.

Everything is generated locally (no downloads): a corpus and a question/answer task about a
fictional world, and a tokenizer trained on the corpus. The two manifests are ordinary
FineTuneJobs (examples/quickstart/), copied into the work directory so they can be read,
edited and re-run with `kubetune run`.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path

from kubetune_api.finetunejob import Metrics

MANIFEST_NAMES = ("pretrain.yaml", "finetune.yaml")


def manifest_dir() -> Path:
    """examples/quickstart in a checkout; kubetune_cli/quickstart_manifests in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "quickstart_manifests", here.parent / "examples" / "quickstart"):
        if all((candidate / name).is_file() for name in MANIFEST_NAMES):
            return candidate
    raise FileNotFoundError("quickstart manifests not found (examples/quickstart)")


def prepare_work_dir(work_dir: Path) -> None:
    from kubetune_trainer import tiny

    data = work_dir / "data"
    tiny.write_tiny_corpus(data / "corpus.txt", documents=800, seed=0)
    tiny.write_tiny_corpus(data / "general.txt", documents=200, seed=1)
    tiny.write_tiny_task(data / "capitals.jsonl", task="capitals")
    tiny.write_tiny_base_model(
        work_dir / "base-config", corpus=data / "corpus.txt", with_weights=False, hidden_size=64, num_layers=2
    )
    for name in MANIFEST_NAMES:
        shutil.copy(manifest_dir() / name, work_dir / name)


def comparison_table(task: str, metrics: Metrics) -> str:
    """Base vs LoRA on the task's held-out test rows (compareWithBase) and on the guard's general text."""

    def row(label: str, a: float | None, b: float | None, better: str) -> str:
        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        return f"| {label:<22} | {fmt(a):>10} | {fmt(b):>10} | {better:^7} |"

    scores = metrics.task_scores
    base_loss, loss = scores.get(f"{task}/lossBase"), scores.get(f"{task}/loss")
    lines = [
        f"| {'held-out test set':<22} | {'base':>10} | {'LoRA':>10} | better  |",
        f"|{'-' * 24}|{'-' * 12}|{'-' * 12}|{'-' * 9}|",
        row(f"{task} loss", base_loss, loss, "lower"),
        row(f"{task} perplexity", perplexity(base_loss), perplexity(loss), "lower"),
        row(
            f"{task} exact match",
            scores.get(f"{task}/exactMatchBase"),
            scores.get(f"{task}/exactMatch"),
            "higher",
        ),
        row("general loss (guard)", metrics.general_loss_base, metrics.general_loss, "lower"),
    ]
    return "\n".join(lines)


def perplexity(loss: float | None) -> float | None:
    return None if loss is None else math.exp(min(loss, 50.0))


def quickstart(work_dir: str | Path = "runs/quickstart", progress: bool = True) -> int:
    from kubetune_trainer.observability import configure_logging

    from kubetune_cli.local_run import execute, summary, trainer_config_for

    started = time.monotonic()
    work = Path(work_dir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    configure_logging(level=30)  # warnings only: the progress bars tell the story
    print(f"kubetune quickstart in {work}")
    prepare_work_dir(work)

    print("1/2 pre-training a tiny Llama-style model from its config (pretrain.yaml)")
    code, result = execute(trainer_config_for(work / "pretrain.yaml"), progress, "pre-train")
    print(summary(result))
    if code:
        return code

    print("2/2 LoRA instruction tuning on the capitals task, with general replay (finetune.yaml)")
    config = trainer_config_for(work / "finetune.yaml")
    code, result = execute(config, progress, "LoRA")
    print(summary(result))
    task = config.datasets[0].task or config.datasets[0].name
    if result.metrics.task_scores:  # also when the forgetting guard rejected the model: show why
        print(f"\n{comparison_table(task, result.metrics)}\n")
    if code:
        return code
    print(f"done in {time.monotonic() - started:.0f}s; artifacts under {work}")
    print(f"re-run a step: kubetune run {work / 'finetune.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(quickstart())
