"""`kubetune run FILE.yaml`: run a FineTuneJob manifest on this machine with the shared trainer.

No cluster: the manifest is parsed with the API models, turned into the same TrainerConfig
the operator would mount, and handed to the trainer in-process. Relative file:// URIs of
inputs resolve against the manifest's directory, outputs against --output-dir (default: the
manifest's directory as well).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from kubetune_api.finetunejob import FineTuneJob, Metrics
from kubetune_api.manifests import ManifestError, load_manifest
from kubetune_api.trainer_contract import FailureReason, ProgressTarget, TrainerConfig, TrainerResult


def _absolute(uri: str | None, base: Path) -> str | None:
    if uri is None or not uri.startswith("file://") or uri.startswith("file:///"):
        return uri
    return f"file://{(base / uri[len('file://') :]).resolve()}"


def resolve_paths(job: FineTuneJob, manifest_dir: Path, output_dir: Path) -> FineTuneJob:
    """A copy of the job with every relative file:// URI made absolute."""
    wire: dict[str, Any] = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec = wire["spec"]
    spec["baseModel"]["uri"] = _absolute(spec["baseModel"]["uri"], manifest_dir)
    for dataset in spec["datasets"]:
        dataset["uri"] = _absolute(dataset["uri"], manifest_dir)
    guard = spec.get("evaluation", {}).get("forgettingGuard")
    if guard:
        guard["dataset"]["uri"] = _absolute(guard["dataset"]["uri"], manifest_dir)
    spec["output"]["uri"] = _absolute(spec["output"]["uri"], output_dir)
    if spec.get("checkpoint", {}).get("uri"):
        spec["checkpoint"]["uri"] = _absolute(spec["checkpoint"]["uri"], output_dir)
    return FineTuneJob.model_validate(wire)


def trainer_config_for(path: str | Path, output_dir: str | Path | None = None) -> TrainerConfig:
    manifest = Path(path)
    job = load_manifest(manifest)
    if not isinstance(job, FineTuneJob):
        raise ManifestError(f"{manifest}: kubetune run needs a FineTuneJob, got {job.kind}")
    job = resolve_paths(job, manifest.parent.resolve(), Path(output_dir or manifest.parent).resolve())
    return TrainerConfig.from_finetunejob(job, progress_target=ProgressTarget.NONE, metrics_port=0)


def summary(result: TrainerResult) -> str:
    m = result.metrics
    rows = [
        ("outcome", result.outcome.value + (f" ({result.reason.value})" if result.reason else "")),
        ("steps", str(result.steps)),
        ("train loss", _fmt(m.train_loss)),
        ("validation loss", _fmt(m.validation_loss)),
        ("test loss", _fmt(m.test_loss)),
        *([("test loss of the base", _fmt(m.test_loss_base))] if m.test_loss_base is not None else []),
        ("test perplexity", _fmt(m.perplexity)),
        *[(name, _fmt(value)) for name, value in sorted(m.task_scores.items())],
    ]
    if m.forgetting_gate_passed is not None:
        rows.append(("forgetting guard", f"{guard_verdict(result)} {_general_loss_change(m)}"))
    for name in ("adapter", "model", "eval_report", "data_report", "model_card"):
        value = getattr(result.artifacts, name)
        if value:
            rows.append((name.replace("_", " "), value))
    if result.message:
        rows.append(("message", result.message))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def guard_verdict(result: TrainerResult) -> str:
    """passed; FAILED when the guard failed the run (action Fail); exceeded (warn only) otherwise."""
    if result.metrics.forgetting_gate_passed:
        return "passed"
    if result.reason == FailureReason.FORGETTING_GATE_FAILED:
        return "FAILED"
    return "exceeded (warn only)"


def _general_loss_change(m: Metrics) -> str:
    change = ""
    if m.general_loss_base and m.general_loss is not None:
        change = f", {(m.general_loss - m.general_loss_base) / m.general_loss_base:+.1%}"
    return f"(general loss {_fmt(m.general_loss_base)} -> {_fmt(m.general_loss)}{change})"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def execute(
    config: TrainerConfig, progress: bool = True, label: str = "training"
) -> tuple[int, TrainerResult]:
    """Run the trainer in-process; (exit code, result) as the pod would report them."""
    from kubetune_trainer.__main__ import failure_result
    from kubetune_trainer.errors import TrainerError
    from kubetune_trainer.run import run

    bar: Any = None

    def on_step(update: dict[str, Any]) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=update["totalSteps"], desc=label, unit="step", file=sys.stderr)
        bar.update(update["step"] - bar.n)
        bar.set_postfix(loss=f"{update['loss']:.3f}")

    try:
        result = run(config, callback=on_step if progress else None)
        return 0, result
    except TrainerError as error:
        return error.exit_code, failure_result(error)
    finally:
        if bar is not None:
            bar.close()


def run_manifest(path: str | Path, output_dir: str | Path | None = None, progress: bool = True) -> int:
    try:
        config = trainer_config_for(path, output_dir)
    except (ManifestError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from kubetune_trainer.observability import configure_logging

    configure_logging()
    code, result = execute(config, progress, label=config.job.name)
    print(f"\n{config.job.name}:\n{summary(result)}")
    return code
