"""One trainer run as a straight line: validate → prepare data → build model → train → evaluate → save."""

from __future__ import annotations

import json
import math
import random
import resource
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kubetune_api.finetunejob import (
    Artifacts,
    DatasetFormat,
    EvalMetric,
    GuardAction,
    Lineage,
    MethodType,
    Metrics,
    Objective,
    Precision,
    Progress,
    SchedulerType,
)
from kubetune_api.trainer_contract import (
    TRAINER_CONFIG_SCHEMA_VERSION,
    JobRef,
    Outcome,
    ProgressTarget,
    TrainerConfig,
    TrainerResult,
)

from . import __version__, data, evaluation, models, packing
from .checkpoint import CheckpointStore
from .distributed import World, all_mean, any_true, barrier, init_world
from .errors import ConfigError, GateFailed, Preempted
from .observability import ProgressReporter, TrainerMetrics, event
from .reft import ReftSpec
from .storage import Storage, join

StepCallback = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------- validation


def validate(config: TrainerConfig) -> None:
    """Everything that can be checked without data, model or accelerator."""
    if config.schema_version != TRAINER_CONFIG_SCHEMA_VERSION:
        raise ConfigError(
            f"schemaVersion: this trainer reads version {TRAINER_CONFIG_SCHEMA_VERSION}, "
            f"got {config.schema_version}"
        )
    method = config.method.type
    if config.base_model.from_scratch and method != MethodType.FULL:
        raise ConfigError("baseModel.fromScratch (pre-training) needs method Full")
    if config.output.merge_adapter and method not in (MethodType.LORA, MethodType.QLORA):
        raise ConfigError("output.mergeAdapter needs method LoRA or QLoRA")
    if method == MethodType.QLORA:
        ok, why = models.qlora_available()
        if not ok:
            raise ConfigError(why)
    if config.hyperparameters.precision in (Precision.BF16, Precision.FP16) and not torch.cuda.is_available():
        raise ConfigError(f"hyperparameters.precision: {config.hyperparameters.precision.value} needs a GPU")
    if config.method.type == MethodType.REFT:
        try:
            ReftSpec.parse_positions(config.method.reft_settings().positions)
        except ValueError as error:
            raise ConfigError(f"method.reft.positions: {error}") from error
    if EvalMetric.EXACT_MATCH in config.evaluation.metrics and all(
        d.format == DatasetFormat.TEXT for d in config.datasets
    ):
        raise ConfigError("evaluation.metrics: exactMatch needs a prompt-completion or chat dataset")


# --------------------------------------------------------------------------- state


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_index: int = 0
    """Micro-batches of the current epoch already consumed."""
    best_validation_loss: float | None = None
    evaluations_without_improvement: int = 0
    stopped_early: bool = False
    base_general_loss: float | None = None
    """The base model's forgetting-guard loss, scored before the first update."""
    base_test_loss: float | None = None
    """The base model's test loss (evaluation.compareWithBase), scored before the first update."""
    base_task_scores: dict[str, float] = field(default_factory=dict)
    """The base model's per-task scores: "<task>/lossBase", "<task>/exactMatchBase"."""
    last_train_loss: float | None = None
    last_validation_loss: float | None = None
    validation_history: list[list[float]] = field(default_factory=list)


class StopSignal:
    """Set by SIGTERM (or by a test's injected stop); checked after each optimizer step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def install(self) -> None:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. a test runner thread): injected stops only
            self._previous = None

    def _handle(self, _signum: int, _frame: Any) -> None:
        self.requested = True
        event("SIGTERM received; checkpointing after the current step")

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def lr_lambda(kind: SchedulerType, warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if kind == SchedulerType.COSINE:
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if kind == SchedulerType.LINEAR:
            return max(0.0, 1 - progress)
        return 1.0

    return factor


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# --------------------------------------------------------------------------- output safety

FINISHED_ARTIFACTS = ("eval_report.json", "MODEL_CARD.md", "trainer-result.json")
"""Written only when a run finished (succeeded, or rejected by the forgetting guard)."""


def checkpoint_store(config: TrainerConfig, storage: Storage, work_dir: Path) -> CheckpointStore:
    return CheckpointStore(
        config.checkpoint.uri or join(config.output.uri, "checkpoints"),
        storage,
        config.checkpoint.keep,
        work_dir / "checkpoint-staging",
        owner=config.job.to_wire(),
    )


def same_job(recorded: Any, job: JobRef) -> bool:
    """Whether a recorded job (wire dict) is this job: same namespace/name, same uid when both have one."""
    if not isinstance(recorded, dict):
        return False
    try:
        other = JobRef.model_validate(recorded)
    except ValueError:
        return False
    if (other.namespace, other.name) != (job.namespace, job.name):
        return False
    return other.uid is None or job.uid is None or other.uid == job.uid


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def check_output(config: TrainerConfig, storage: Storage, store: CheckpointStore) -> None:
    """Refuse to overwrite an earlier run's finished artifacts at output.uri.

    Allowed only when this job resumes from its own checkpoint and either the artifacts are this
    job's own (a retried pod finishing again) or the checkpoint is newer than them (a new attempt
    of this job that already trained past them).
    """
    out = config.output.uri
    found = [name for name in FINISHED_ARTIFACTS if storage.exists(join(out, name))]
    if not found:
        return
    report: dict[str, Any] = {}
    if "eval_report.json" in found:
        try:
            loaded = json.loads(storage.read_bytes(join(out, "eval_report.json")))
            report = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            report = {}
    steps = store.complete_steps()
    owner = store.owner(steps[-1]) if steps else None
    if owner is not None and same_job(owner.get("job"), config.job):
        if same_job(report.get("job"), config.job):
            return
        written, finished = _parse_time(owner.get("writtenAt")), _parse_time(report.get("finishedAt"))
        if written is not None and finished is not None and written > finished:
            return
    earlier = report.get("job") if isinstance(report.get("job"), dict) else None
    who = (
        f"job {earlier.get('namespace', 'default')}/{earlier.get('name')}"
        if earlier
        else "an earlier run"
    )
    raise ConfigError(
        f"output.uri {out} already holds the finished artifacts of {who} ({', '.join(found)}) and "
        f"{store.uri} has no checkpoint of this job newer than them; refusing to overwrite them. "
        "Use a new output.uri, or delete the old artifacts first"
    )


# --------------------------------------------------------------------------- the run


@dataclass
class EvalSets:
    """What is scored after training; the base model is scored on the very same rows before it."""

    test: list[data.Example]
    test_rows: list[packing.Row]
    tasks: dict[str, tuple[list[data.Example], list[packing.Row]]]
    """Per task: its test examples (for exactMatch) and its rows (for loss)."""
    general_rows: list[packing.Row]
    """The forgetting guard's general set, packed, causal LM loss."""


def build_eval_sets(
    config: TrainerConfig,
    test: list[data.Example],
    test_tok: list[packing.TokenizedExample],
    general_rows: list[packing.Row],
) -> EvalSets:
    hp = config.hyperparameters
    tasks = {}
    for task in sorted({e.task for e in test}):
        tokenized = [t for t in test_tok if t.task == task]
        rows = packing.build_rows(tokenized, hp.max_seq_length, hp.packing, hp.seed)
        tasks[task] = ([e for e in test if e.task == task], rows)
    test_rows = packing.build_rows(test_tok, hp.max_seq_length, hp.packing, hp.seed)
    return EvalSets(test, test_rows, tasks, general_rows)


@dataclass
class RunContext:
    config: TrainerConfig
    world: World
    storage: Storage
    work_dir: Path
    bundle: models.ModelBundle
    train_rows: list[packing.Row]
    validation_rows: list[packing.Row]
    packed: bool
    autocast: Any
    metrics: TrainerMetrics | None
    reporter: ProgressReporter
    callback: StepCallback | None


def run(
    config: TrainerConfig,
    *,
    callback: StepCallback | None = None,
    stop_after_step: int | None = None,
    work_dir: Path | None = None,
) -> TrainerResult:
    """Train, evaluate and save; raises TrainerError subclasses for config/data/gate/preemption."""
    validate(config)
    world = init_world()
    storage = Storage(config.storage)
    own_work_dir = work_dir is None
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix="kubetune-trainer-"))
    stop = StopSignal()
    stop.install()
    metrics = TrainerMetrics(config.metrics_port if world.is_main else 0)
    try:
        return _run(config, world, storage, work_dir, stop, metrics, callback, stop_after_step)
    finally:
        metrics.close()
        stop.uninstall()
        if own_work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)


def _run(
    config: TrainerConfig,
    world: World,
    storage: Storage,
    work_dir: Path,
    stop: StopSignal,
    metrics: TrainerMetrics,
    callback: StepCallback | None,
    stop_after_step: int | None,
) -> TrainerResult:
    hp = config.hyperparameters
    started = time.monotonic()
    check_output(config, storage, checkpoint_store(config, storage, work_dir))

    # ---- data (no model, no accelerator needed)
    prepared = data.prepare(config.datasets, config.split, config.data_preparation, storage)
    guard = config.evaluation.forgetting_guard
    general = (
        data.read_eval_dataset(guard.dataset, config.data_preparation, storage, "forgetting-guard")
        if guard
        else []
    )
    event("data prepared", **prepared.report["stages"], split=prepared.report["split"])

    # ---- model
    random.seed(hp.seed)
    np.random.seed(hp.seed)
    torch.manual_seed(hp.seed)
    use_bf16 = world.device.type == "cuda" and hp.precision in (Precision.AUTO, Precision.BF16)
    use_bf16 = use_bf16 and torch.cuda.is_bf16_supported()
    half = torch.bfloat16 if use_bf16 else torch.float16 if hp.precision == Precision.FP16 else None
    bundle = models.build(
        config.base_model,
        config.method,
        storage,
        work_dir / "model-cache",
        hp.seed,
        world.device,
        half or torch.float32,
    )
    autocast = torch.autocast(world.device.type, dtype=half) if half is not None else None
    event(
        "model built",
        method=config.method.type.value,
        trainableParameters=bundle.trainable_parameters,
        totalParameters=bundle.total_parameters,
    )

    # ---- tokenize and pack
    tokenizer, objective, length = bundle.tokenizer, config.objective, hp.max_seq_length
    train_tok, train_stats = packing.tokenize(prepared.train, tokenizer, objective, length)
    validation_tok, validation_stats = packing.tokenize(prepared.validation, tokenizer, objective, length)
    test_tok, test_stats = packing.tokenize(prepared.test, tokenizer, objective, length)
    train_rows = packing.build_rows(train_tok, length, hp.packing, hp.seed)
    validation_rows = packing.build_rows(validation_tok, length, hp.packing, hp.seed)
    prepared.report["tokens"] = {
        "train": train_stats,
        "validation": validation_stats,
        "test": test_stats,
        "trainRows": len(train_rows),
        "packing": hp.packing,
        "paddingFraction": round(
            1 - train_stats["tokens"] / max(1, len(train_rows) * length) if hp.packing else 0.0, 4
        ),
    }

    reporter = ProgressReporter(
        config.job,
        config.progress_interval_seconds,
        world.is_main and config.progress_target == ProgressTarget.KUBERNETES_STATUS,
    )
    context = RunContext(
        config,
        world,
        storage,
        work_dir,
        bundle,
        train_rows,
        validation_rows,
        hp.packing,
        autocast,
        metrics,
        reporter,
        callback,
    )

    # ---- what is evaluated: the test split and the forgetting guard's general set; train() scores
    # the base model on them before any update, evaluate() the trained one
    general_rows: list[packing.Row] = []
    if guard:
        general_tok, _ = packing.tokenize(general, tokenizer, Objective.CAUSAL_LM, length)
        general_rows = packing.build_rows(general_tok, length, True, hp.seed)
    eval_sets = build_eval_sets(config, prepared.test, test_tok, general_rows)

    state = train(context, stop, stop_after_step, eval_sets)
    barrier(world)

    # ---- evaluate (rank 0 alone from here on)
    if not world.is_main:
        return TrainerResult(outcome=Outcome.SUCCEEDED, steps=state.step)
    eval_report, final_metrics = evaluate(context, state, eval_sets)
    gate_passed = final_metrics.forgetting_gate_passed
    gate_failed = guard is not None and gate_passed is False and guard.action == GuardAction.FAIL

    # ---- save
    lineage = Lineage(
        datasets=prepared.lineage,
        base_model_revision=bundle.base_revision,
        image=config.image,
        trainer_version=__version__,
    )
    artifacts = save_artifacts(context, eval_report, prepared.report, lineage, gate_failed)
    final_metrics.tokens_per_second = eval_report["training"]["tokensPerSecond"]
    message = f"trained {state.step} steps in {time.monotonic() - started:.0f}s"
    if gate_failed:
        assert guard is not None
        ratio = eval_report["forgettingGuard"]["increaseRatio"]
        raise GateFailed(
            f"forgetting guard: general loss rose {ratio:.1%} (limit {guard.max_loss_increase_ratio:.1%}); "
            "artifacts saved and flagged",
            metrics=final_metrics,
            artifacts=artifacts,
            lineage=lineage,
            steps=state.step,
        )
    result = TrainerResult(
        outcome=Outcome.SUCCEEDED,
        message=message,
        metrics=final_metrics,
        artifacts=artifacts,
        lineage=lineage,
        steps=state.step,
    )
    storage.write_bytes(
        join(config.output.uri, "trainer-result.json"),
        result.model_dump_json(by_alias=True, indent=2).encode(),
    )
    reporter.report(_progress(state, state.step, 0), final_metrics, force=True)
    return result


def _progress(
    state: TrainState, total_steps: int, eta: float | None, epoch_fraction: float = 0.0
) -> Progress:
    return Progress(
        step=state.step,
        total_steps=total_steps,
        epoch=round(state.epoch + epoch_fraction, 4),
        percent=round(min(100.0, 100.0 * state.step / max(1, total_steps)), 2),
        eta_seconds=int(eta) if eta is not None else None,
    )


# --------------------------------------------------------------------------- training


def _checkpoint_writer(
    ctx: RunContext, optimizer: Any, scheduler: Any, state: TrainState
) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        trainable = {name: p.detach().cpu() for name, p in ctx.bundle.trainable_named_parameters()}
        if ctx.bundle.method == MethodType.FULL:
            trainable = {k: v.detach().cpu() for k, v in ctx.bundle.model.state_dict().items()}
        torch.save(trainable, directory / "weights.pt")
        torch.save(optimizer.state_dict(), directory / "optimizer.pt")
        torch.save(scheduler.state_dict(), directory / "scheduler.pt")
        torch.save(rng_state(), directory / "rng.pt")
        (directory / "trainer_state.json").write_text(json.dumps(asdict(state), indent=2))

    return write


def _restore(ctx: RunContext, directory: Path, optimizer: Any, scheduler: Any) -> TrainState:
    weights = torch.load(directory / "weights.pt", map_location=ctx.world.device, weights_only=True)
    if ctx.bundle.method == MethodType.FULL:
        ctx.bundle.model.load_state_dict(weights)
    else:
        parameters = dict(ctx.bundle.trainable_named_parameters())
        missing = set(parameters) - set(weights)
        if missing:
            raise ConfigError(
                f"checkpoint {directory} does not match this method: missing {sorted(missing)[:3]}"
            )
        with torch.no_grad():
            for name, value in weights.items():
                parameters[name].copy_(value)
    optimizer.load_state_dict(
        torch.load(directory / "optimizer.pt", map_location=ctx.world.device, weights_only=True)
    )
    scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(directory / "rng.pt", weights_only=False))
    return TrainState(**json.loads((directory / "trainer_state.json").read_text()))


def score_base(ctx: RunContext, sets: EvalSets, state: TrainState) -> None:
    """The base model's scores, before any update (LoRA: adapter off; ReFT: interventions off; Full:
    the weights as loaded). Fills only what `state` lacks, so a resumed run keeps the first scores."""
    config, bundle, world = ctx.config, ctx.bundle, ctx.world
    hp = config.hyperparameters
    want_general = bool(sets.general_rows) and state.base_general_loss is None
    want_test = config.evaluation.compare_with_base and state.base_test_loss is None
    if not (want_general or want_test):
        return
    with bundle.base_behaviour():
        if want_general:
            state.base_general_loss = evaluation.mean_loss(
                bundle, sets.general_rows, hp.batch_size, world.device, True, ctx.autocast
            )
        if want_test:
            test_loss, per_task, _ = score_test(ctx, sets, with_perplexity=False)
            state.base_test_loss = test_loss
            state.base_task_scores = {
                f"{task}/{name}Base": round(value, 6)
                for task, scores in per_task.items()
                for name, value in scores.items()
                if name in ("loss", "exactMatch")
            }
    event(
        "base model scored",
        generalLoss=state.base_general_loss,
        testLoss=state.base_test_loss,
        **state.base_task_scores,
    )


def train(ctx: RunContext, stop: StopSignal, stop_after_step: int | None, sets: EvalSets) -> TrainState:
    config, world, bundle = ctx.config, ctx.world, ctx.bundle
    hp = config.hyperparameters
    module: torch.nn.Module = models.TrainableModule(bundle)
    if world.distributed:
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[world.local_rank] if world.device.type == "cuda" else None
        )
    parameters = [p for _, p in bundle.trainable_named_parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    per_epoch = packing.steps_per_epoch(
        len(ctx.train_rows), hp.batch_size, hp.gradient_accumulation_steps, world.size
    )
    total_steps = hp.max_steps or per_epoch * (hp.epochs or 1)
    warmup = int(hp.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(hp.scheduler, warmup, total_steps))
    scaler = torch.amp.GradScaler(enabled=hp.precision == Precision.FP16 and world.device.type == "cuda")
    store = checkpoint_store(config, ctx.storage, ctx.work_dir)

    state = TrainState()
    latest = store.latest()
    if latest is not None:
        state = _restore(ctx, latest[1], optimizer, scheduler)
        event("resumed from checkpoint", step=state.step, epoch=state.epoch, batchIndex=state.batch_index)
    # Only rank 0 evaluates. Full fine-tuning changes the base weights themselves: after the first
    # update they can only be scored from a checkpoint that already holds the scores.
    if world.is_main and (state.step == 0 or bundle.method != MethodType.FULL):
        score_base(ctx, sets, state)
    if ctx.metrics:
        ctx.metrics.total_steps.set(total_steps)

    def save_checkpoint() -> None:
        if world.is_main:
            uri = store.save(state.step, _checkpoint_writer(ctx, optimizer, scheduler, state))
            event("checkpoint saved", step=state.step, uri=uri)
        barrier(world)

    def validate_now() -> bool:
        """Validation loss; True when early stopping says stop."""
        loss = evaluation.mean_loss(
            bundle, ctx.validation_rows, hp.batch_size, world.device, ctx.packed, ctx.autocast
        )
        if loss is None:
            return False
        state.last_validation_loss = loss
        state.validation_history.append([state.step, loss])
        if ctx.metrics:
            ctx.metrics.validation_loss.set(loss)
        event("validation", step=state.step, validationLoss=loss)
        early = config.evaluation.early_stopping
        if state.best_validation_loss is None or loss < state.best_validation_loss - (
            early.min_delta if early else 0
        ):
            state.best_validation_loss = loss
            state.evaluations_without_improvement = 0
        else:
            state.evaluations_without_improvement += 1
        return early is not None and state.evaluations_without_improvement >= early.patience

    module.train()
    attempt_start, attempt_first_step = time.monotonic(), state.step
    tokens_seen = 0
    pad_id = bundle.tokenizer.pad_token_id
    every = config.evaluation.every_steps
    done = state.step >= total_steps or state.stopped_early
    while not done:
        batches = packing.epoch_batches(
            len(ctx.train_rows), hp.batch_size, hp.seed, state.epoch, world.rank, world.size
        )
        while state.batch_index < len(batches) and not done:
            group = batches[state.batch_index : state.batch_index + hp.gradient_accumulation_steps]
            losses = []
            for position, indices in enumerate(group):
                rows = [ctx.train_rows[i] for i in indices]
                batch = {k: v.to(world.device) for k, v in packing.collate(rows, pad_id, ctx.packed).items()}
                sync = position == len(group) - 1 or not world.distributed
                with nullcontext() if sync else module.no_sync(), ctx.autocast or nullcontext():  # type: ignore[operator]
                    loss = module(batch, [r.prompt_spans for r in rows]).loss
                scaler.scale(loss / len(group)).backward()
                losses.append(float(loss.detach()))
                tokens_seen += sum(len(r.input_ids) for r in rows)
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, hp.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.batch_index += len(group)
            state.step += 1
            state.last_train_loss = all_mean(sum(losses) / len(losses), world)

            elapsed = time.monotonic() - attempt_start
            steps_this_attempt = state.step - attempt_first_step
            eta = elapsed / steps_this_attempt * (total_steps - state.step)
            tokens_per_second = tokens_seen * world.size / max(elapsed, 1e-9)
            learning_rate = float(scheduler.get_last_lr()[0])  # the optimizer's lr is a float, never a Tensor
            if ctx.metrics:
                ctx.metrics.step.set(state.step)
                ctx.metrics.loss.set(state.last_train_loss)
                ctx.metrics.learning_rate.set(learning_rate)
                ctx.metrics.tokens_per_second.set(tokens_per_second)
                ctx.metrics.progress.set(state.step / total_steps)
                ctx.metrics.eta.set(eta)
                ctx.metrics.accelerator_memory.set(peak_memory_bytes(world.device))

            if every and state.step % every == 0 and validate_now():
                state.stopped_early = True
            progress = _progress(state, total_steps, eta, state.batch_index / len(batches))
            step_metrics = Metrics(
                train_loss=state.last_train_loss,
                validation_loss=state.last_validation_loss,
                test_loss_base=state.base_test_loss,
                learning_rate=learning_rate,
                tokens_per_second=round(tokens_per_second, 2),
            )
            ctx.reporter.report(progress, step_metrics, force=state.step == 1)
            if ctx.callback and world.is_main:
                ctx.callback({"step": state.step, "totalSteps": total_steps, "loss": state.last_train_loss})
            if state.step % 10 == 0 or state.step == total_steps:
                event(
                    "step",
                    step=state.step,
                    totalSteps=total_steps,
                    loss=state.last_train_loss,
                    lr=learning_rate,
                )

            if stop_after_step is not None and state.step >= stop_after_step:
                stop.requested = True
            if any_true(stop.requested, world):
                save_checkpoint()
                raise Preempted(
                    f"stopped by SIGTERM at step {state.step}; checkpoint saved", steps=state.step
                )
            done = state.step >= total_steps or state.stopped_early
            if state.step % config.checkpoint.every_steps == 0 and not done:
                save_checkpoint()
        if state.batch_index >= len(batches):
            state.epoch += 1
            state.batch_index = 0
            if not every and not done and validate_now():
                state.stopped_early = True
                done = True
    if state.last_validation_loss is None or (
        state.validation_history and state.validation_history[-1][0] != state.step
    ):
        validate_now()
    if state.stopped_early:
        event("early stopping", step=state.step, bestValidationLoss=state.best_validation_loss)
    state_tokens_per_second = tokens_seen * world.size / max(time.monotonic() - attempt_start, 1e-9)
    ctx.work_dir.joinpath("throughput.json").write_text(
        json.dumps({"tokensPerSecond": state_tokens_per_second})
    )
    save_checkpoint()
    if ctx.metrics:
        ctx.metrics.accelerator_memory.set(peak_memory_bytes(world.device))
    return state


# --------------------------------------------------------------------------- evaluation


def score_test(
    ctx: RunContext, sets: EvalSets, with_perplexity: bool = True
) -> tuple[float | None, dict[str, dict[str, float]], dict[str, Any]]:
    """(test loss, per-task scores, exactMatch samples) of the model as it is now."""
    config, bundle, world = ctx.config, ctx.bundle, ctx.world
    hp = config.hyperparameters
    wanted = set(config.evaluation.metrics)
    test_loss = evaluation.mean_loss(
        bundle, sets.test_rows, hp.batch_size, world.device, ctx.packed, ctx.autocast
    )
    per_task: dict[str, dict[str, float]] = {}
    samples: dict[str, Any] = {}
    for task, (examples, rows) in sets.tasks.items():
        loss = evaluation.mean_loss(bundle, rows, hp.batch_size, world.device, ctx.packed, ctx.autocast)
        scores: dict[str, float] = {}
        if loss is not None:
            scores["loss"] = loss
            if with_perplexity and EvalMetric.PERPLEXITY in wanted:
                scores["perplexity"] = evaluation.perplexity(loss) or 0.0
        if EvalMetric.EXACT_MATCH in wanted:
            accuracy, task_samples = evaluation.exact_match(
                bundle, examples, config.evaluation.max_generate_tokens, world.device
            )
            if accuracy is not None:
                scores["exactMatch"] = accuracy
                samples[task] = task_samples
        per_task[task] = scores
    return test_loss, per_task, samples


def evaluate(ctx: RunContext, state: TrainState, sets: EvalSets) -> tuple[dict[str, Any], Metrics]:
    config, bundle, world = ctx.config, ctx.bundle, ctx.world
    hp = config.hyperparameters
    wanted = set(config.evaluation.metrics)
    compare = config.evaluation.compare_with_base
    test_loss, scored, samples = score_test(ctx, sets)
    task_scores: dict[str, float] = {}
    per_task: dict[str, Any] = {}
    for task, scores in scored.items():
        base = {
            name: state.base_task_scores[f"{task}/{name}"]
            for name in ("lossBase", "exactMatchBase")
            if compare and f"{task}/{name}" in state.base_task_scores
        }
        per_task[task] = {"examples": len(sets.tasks[task][0]), **scores, **base}
        task_scores.update({f"{task}/{name}": round(value, 6) for name, value in {**scores, **base}.items()})
    metrics = Metrics(
        train_loss=state.last_train_loss,
        validation_loss=state.last_validation_loss,
        test_loss=test_loss,
        test_loss_base=state.base_test_loss if compare else None,
        perplexity=evaluation.perplexity(test_loss) if EvalMetric.PERPLEXITY in wanted else None,
        task_scores=task_scores,
    )
    guard_report: dict[str, Any] | None = None
    guard = config.evaluation.forgetting_guard
    if guard and sets.general_rows and state.base_general_loss is not None:
        candidate = evaluation.mean_loss(
            bundle, sets.general_rows, hp.batch_size, world.device, True, ctx.autocast
        )
        assert candidate is not None
        ratio = evaluation.forgetting_ratio(state.base_general_loss, candidate)
        passed = ratio <= guard.max_loss_increase_ratio
        metrics.general_loss_base = state.base_general_loss
        metrics.general_loss = candidate
        metrics.forgetting_gate_passed = passed
        guard_report = {
            "baseLoss": state.base_general_loss,
            "candidateLoss": candidate,
            "increaseRatio": ratio,
            "maxLossIncreaseRatio": guard.max_loss_increase_ratio,
            "action": guard.action.value,
            "passed": passed,
            "examples": sum(len(r.prompt_spans) for r in sets.general_rows),
        }
        event("forgetting guard", **guard_report)
    throughput_file = ctx.work_dir / "throughput.json"
    tokens_per_second = (
        json.loads(throughput_file.read_text())["tokensPerSecond"] if throughput_file.exists() else None
    )
    report = {
        "job": config.job.to_wire(),
        "method": config.method.type.value,
        "objective": config.objective.value,
        "trainableParameters": bundle.trainable_parameters,
        "totalParameters": bundle.total_parameters,
        "training": {
            "steps": state.step,
            "epochs": state.epoch,
            "stoppedEarly": state.stopped_early,
            "finalTrainLoss": state.last_train_loss,
            "validationHistory": state.validation_history,
            "tokensPerSecond": round(tokens_per_second, 2) if tokens_per_second else None,
            "peakMemoryBytes": peak_memory_bytes(world.device),
        },
        "test": {
            "loss": test_loss,
            "perplexity": evaluation.perplexity(test_loss),
            **({"lossBase": state.base_test_loss} if compare else {}),
            "tasks": per_task,
        },
        "samples": samples,
        "forgettingGuard": guard_report,
    }
    return report, metrics


# --------------------------------------------------------------------------- artifacts


def save_artifacts(
    ctx: RunContext, eval_report: dict[str, Any], data_report: dict[str, Any], lineage: Lineage, flagged: bool
) -> Artifacts:
    config, bundle, storage = ctx.config, ctx.bundle, ctx.storage
    out = config.output.uri.rstrip("/")
    staging = ctx.work_dir / "artifacts"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    artifacts = Artifacts()
    if bundle.method in (MethodType.LORA, MethodType.QLORA):
        bundle.model.save_pretrained(staging / "adapter")  # type: ignore[operator]
        bundle.tokenizer.save_pretrained(staging / "adapter")
        storage.publish_dir(staging / "adapter", join(out, "adapter"))
        artifacts.adapter = join(out, "adapter")
        if config.output.merge_adapter:
            merged = bundle.model.merge_and_unload()  # type: ignore[operator]
            merged.save_pretrained(staging / "model")
            bundle.tokenizer.save_pretrained(staging / "model")
            storage.publish_dir(staging / "model", join(out, "model"))
            artifacts.model = join(out, "model")
    elif bundle.method == MethodType.REFT:
        assert bundle.reft is not None
        bundle.reft.save_pretrained(staging / "adapter")
        bundle.tokenizer.save_pretrained(staging / "adapter")
        storage.publish_dir(staging / "adapter", join(out, "adapter"))
        artifacts.adapter = join(out, "adapter")
    else:
        bundle.model.save_pretrained(staging / "model")  # type: ignore[operator]
        bundle.tokenizer.save_pretrained(staging / "model")
        storage.publish_dir(staging / "model", join(out, "model"))
        artifacts.model = join(out, "model")
    eval_report = {
        **eval_report,
        "flaggedByForgettingGuard": flagged,
        "finishedAt": datetime.now(UTC).isoformat(timespec="microseconds"),
    }
    storage.write_bytes(
        join(out, "eval_report.json"), json.dumps(eval_report, indent=2, default=str).encode()
    )
    storage.write_bytes(
        join(out, "data_report.json"), json.dumps(data_report, indent=2, default=str).encode()
    )
    storage.write_bytes(
        join(out, "MODEL_CARD.md"), model_card(config, eval_report, lineage, flagged).encode()
    )
    artifacts.eval_report = join(out, "eval_report.json")
    artifacts.data_report = join(out, "data_report.json")
    artifacts.model_card = join(out, "MODEL_CARD.md")
    return artifacts


def model_card(config: TrainerConfig, report: dict[str, Any], lineage: Lineage, flagged: bool) -> str:
    test = report["test"]
    lines = [
        f"# {config.job.namespace}/{config.job.name}",
        "",
        "> **Rejected by the forgetting guard**: the general-domain loss rose beyond the allowed limit. "
        "Do not promote this model."
        if flagged
        else "",
        "",
        f"- Base model: `{config.base_model.uri}` (revision `{lineage.base_model_revision}`)"
        + (" — pre-trained from its config (random init)" if config.base_model.from_scratch else ""),
        f"- Method: {config.method.type.value}; objective: {config.objective.value}",
        f"- Trainable parameters: {report['trainableParameters']:,} of {report['totalParameters']:,}",
        f"- Steps: {report['training']['steps']}; trainer {lineage.trainer_version}; "
        f"image `{lineage.image or 'local'}`",
        f"- Written: {datetime.now(UTC).isoformat(timespec='seconds')}",
        "",
        "## Data lineage",
        "",
        "| dataset | uri | rows | sha256 |",
        "|---|---|---|---|",
        *[f"| {d.name} | `{d.uri}` | {d.rows} | `{d.sha256}` |" for d in lineage.datasets],
        "",
        "## Evaluation",
        "",
        f"- Test loss: {test['loss']}; perplexity: {test['perplexity']}"
        + (f"; base model on the same test set: {test['lossBase']}" if "lossBase" in test else ""),
        *[f"- Task `{name}`: {json.dumps(scores)}" for name, scores in test["tasks"].items()],
    ]
    if report.get("forgettingGuard"):
        guard = report["forgettingGuard"]
        lines.append(
            f"- Forgetting guard: base {guard['baseLoss']:.4f} → candidate {guard['candidateLoss']:.4f} "
            f"({guard['increaseRatio']:+.2%}, limit {guard['maxLossIncreaseRatio']:.2%}): "
            + ("passed" if guard["passed"] else "FAILED")
        )
    lines += [
        "",
        "## Configuration",
        "",
        "```json",
        config.model_dump_json(by_alias=True, indent=2, exclude_none=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def baseline_metrics(config: TrainerConfig) -> Metrics:
    """Test metrics of the base model as it is (no training): the "before" of a before/after table."""
    validate(config)
    storage = Storage(config.storage)
    hp = config.hyperparameters
    prepared = data.prepare(config.datasets, config.split, config.data_preparation, storage)
    with tempfile.TemporaryDirectory(prefix="kubetune-baseline-") as work:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        bundle = models.build(
            config.base_model,
            config.method.model_copy(update={"type": MethodType.FULL, "lora": None, "reft": None}),
            storage,
            Path(work),
            hp.seed,
            device,
            torch.float32,
        )
        test_tok, _ = packing.tokenize(prepared.test, bundle.tokenizer, config.objective, hp.max_seq_length)
        rows = packing.build_rows(test_tok, hp.max_seq_length, hp.packing, hp.seed)
        loss = evaluation.mean_loss(bundle, rows, hp.batch_size, device, hp.packing)
        metrics = Metrics(test_loss=loss, perplexity=evaluation.perplexity(loss))
        if EvalMetric.EXACT_MATCH in config.evaluation.metrics:
            for task in sorted({e.task for e in prepared.test}):
                examples = [e for e in prepared.test if e.task == task]
                accuracy, _ = evaluation.exact_match(
                    bundle, examples, config.evaluation.max_generate_tokens, device
                )
                if accuracy is not None:
                    metrics.task_scores[f"{task}/exactMatch"] = accuracy
        return metrics
