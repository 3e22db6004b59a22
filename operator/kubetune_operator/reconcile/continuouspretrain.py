"""ContinuousPretrain decisions: when to start a run, what it trains on, and whether to promote it.

`plan` is pure: given the resource, its observed child FineTuneJobs, the corpus listing and
the time, it returns the next status plus what to create, delete and announce. `reconcile`
observes (kube.py, corpus.py), plans, and applies. All state lives in the status and in
deterministic child names/annotations, so a restarted operator repeats nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from croniter import croniter
from pydantic import ValidationError

from kubetune_api import conditions as cond
from kubetune_api.continuouspretrain import (
    ConcurrencyPolicy,
    ContinuousPretrain,
    ContinuousPretrainStatus,
    CurrentModel,
    PromotionMode,
    PromotionSpec,
    RunRecord,
    Watermark,
)
from kubetune_api.finetunejob import Metrics, Phase
from kubetune_api.manifests import describe_validation_error
from kubetune_operator.builders import continuouspretrain as builders

from .. import corpus, kube

# Run-record phases once the operator has decided on a finished child.
PROMOTED = "Promoted"
REJECTED = "Rejected"
AWAITING_APPROVAL = "AwaitingApproval"
FAILED = Phase.FAILED.value
REPLACED = "Replaced"
DELETED = "Deleted"
DECIDED_PHASES = frozenset({PROMOTED, REJECTED, FAILED, REPLACED, DELETED})
CHILD_TERMINAL_PHASES = frozenset({Phase.SUCCEEDED.value, Phase.FAILED.value})

# CPT_RUNS `result` label values.
RESULT_PROMOTED = "promoted"
RESULT_REJECTED = "rejected"
RESULT_FAILED = "failed"


# --------------------------------------------------------------------------- observed children


@dataclass(frozen=True)
class ObservedRun:
    """A child FineTuneJob as the reconciler needs it."""

    name: str
    generation: int
    shards: tuple[str, ...]
    data_cutoff: datetime | None
    new_documents: int
    created: datetime | None
    phase: str | None = None
    message: str | None = None
    completion_time: datetime | None = None
    metrics: Metrics | None = None
    model_uri: str | None = None
    deleting: bool = False

    @property
    def active(self) -> bool:
        return not self.deleting and self.phase not in CHILD_TERMINAL_PHASES


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def observed_run(body: dict[str, Any]) -> ObservedRun:
    """Read a child FineTuneJob (wire dict); what it trained on comes from its annotations."""
    metadata = body.get("metadata", {})
    annotations = metadata.get("annotations") or {}
    status = body.get("status") or {}
    metrics = Metrics.model_validate(status["metrics"]) if status.get("metrics") else None
    artifacts = status.get("artifacts") or {}
    return ObservedRun(
        name=metadata["name"],
        generation=int(annotations.get(builders.ANNOTATION_GENERATION, 0)),
        shards=tuple(json.loads(annotations.get(builders.ANNOTATION_SHARDS, "[]"))),
        data_cutoff=_time(annotations.get(builders.ANNOTATION_DATA_CUTOFF)),
        new_documents=int(annotations.get(builders.ANNOTATION_NEW_DOCUMENTS, 0)),
        created=_time(metadata.get("creationTimestamp")),
        phase=status.get("phase"),
        message=status.get("message"),
        completion_time=_time(status.get("completionTime")),
        metrics=metrics,
        model_uri=artifacts.get("model"),
        deleting=bool(metadata.get("deletionTimestamp")),
    )


# --------------------------------------------------------------------------- promotion gate


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str


def _relative_change(before: float, after: float) -> float:
    return (after - before) / before if before > 0 else math.inf if after > before else 0.0


def evaluate_gate(promotion: PromotionSpec, metrics: Metrics | None) -> GateResult:
    """Candidate vs current model on identical data: domain loss must fall enough, general loss
    may rise only a little. The reason states the numbers either way."""
    metrics = metrics or Metrics()
    values = {
        "testLossBase": metrics.test_loss_base,
        "testLoss": metrics.test_loss,
        "generalLossBase": metrics.general_loss_base,
        "generalLoss": metrics.general_loss,
    }
    missing = [name for name, value in values.items() if value is None]
    if missing:
        return GateResult(False, f"the run reported no {', '.join(missing)}; the gate needs all four losses")
    not_finite = [name for name, value in values.items() if value is not None and not math.isfinite(value)]
    if not_finite:
        return GateResult(False, f"non-finite {', '.join(not_finite)} (the run diverged)")
    domain_before, domain_after = float(values["testLossBase"] or 0), float(values["testLoss"] or 0)
    general_before, general_after = float(values["generalLossBase"] or 0), float(values["generalLoss"] or 0)

    domain_decrease = -_relative_change(domain_before, domain_after)
    general_increase = _relative_change(general_before, general_after)
    # A tiny tolerance so a limit given as 0.02 accepts a measured 2.0000000001%.
    domain_ok = domain_decrease >= promotion.min_domain_loss_decrease_ratio - 1e-9
    general_ok = general_increase <= promotion.max_general_loss_increase_ratio + 1e-9
    domain = (
        f"domain loss {domain_before:.4f} -> {domain_after:.4f} ({-domain_decrease:+.2%}, "
        f"needs a decrease of at least {promotion.min_domain_loss_decrease_ratio:.2%})"
        f"{'' if domain_ok else ': not enough'}"
    )
    general = (
        f"general loss {general_before:.4f} -> {general_after:.4f} ({general_increase:+.2%}, "
        f"may rise at most {promotion.max_general_loss_increase_ratio:.2%})"
        f"{'' if general_ok else ': too much forgetting'}"
    )
    return GateResult(domain_ok and general_ok, f"{domain}; {general}")


# --------------------------------------------------------------------------- schedule and validation


def schedule_error(schedule: str) -> str | None:
    """Why croniter cannot use the schedule (the CRD pattern only checks the field count)."""
    try:
        croniter(schedule, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except (ValueError, KeyError, TypeError) as error:  # croniter's errors derive from ValueError
        return str(error) or "invalid cron expression"
    return None


def next_fire_time(schedule: str, after: datetime) -> datetime:
    """The first schedule time strictly after `after`, in UTC."""
    result: datetime = croniter(schedule, after.astimezone(UTC)).get_next(datetime)
    return result.astimezone(UTC)


def spec_errors(cpt: ContinuousPretrain) -> list[str]:
    """What the schema cannot check; each message names its field."""
    errors = []
    schedule = cpt.spec.trigger.schedule
    if schedule is not None and (problem := schedule_error(schedule)) is not None:
        errors.append(f"spec.trigger.schedule: {schedule!r} is not a valid cron expression: {problem}")
    if cpt.spec.template.method.type not in builders.MERGEABLE_METHODS:
        errors.append(
            f"spec.template.method.type: {cpt.spec.template.method.type} cannot be merged into a full model "
            "for the next run; use Full, LoRA or QLoRA"
        )
    return errors


def select_shards(pending: Sequence[corpus.Shard]) -> list[corpus.Shard]:
    """The oldest new shards that fit one run (one dataset each). When the cap falls between shards
    with the same modification time, those are left for the next run so the watermark skips none."""
    shards = [s for s in pending if s.documents > 0]
    if len(shards) <= builders.MAX_SHARDS_PER_RUN:
        return shards
    chosen = shards[: builders.MAX_SHARDS_PER_RUN]
    first_left_out = shards[builders.MAX_SHARDS_PER_RUN].last_modified
    trimmed = [s for s in chosen if s.last_modified < first_left_out]
    return trimmed or chosen


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    status: ContinuousPretrainStatus
    create: dict[str, Any] | None = None
    delete: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    """CPT_RUNS results decided in this reconcile."""
    pending_documents: int | None = None
    """Documents newer than the watermark; None when the corpus could not be listed."""


def _record_from_child(child: ObservedRun) -> RunRecord:
    return RunRecord(
        name=child.name,
        phase=child.phase or Phase.PENDING.value,
        new_documents=child.new_documents,
        new_shards=list(child.shards),
        data_cutoff=child.data_cutoff,
        start_time=child.created,
    )


def _with_metrics(record: RunRecord, child: ObservedRun) -> RunRecord:
    metrics = child.metrics or Metrics()
    return record.model_copy(
        update={
            "completion_time": child.completion_time or record.completion_time,
            "domain_loss_before": metrics.test_loss_base,
            "domain_loss_after": metrics.test_loss,
            "general_loss_before": metrics.general_loss_base,
            "general_loss_after": metrics.general_loss,
            "model_uri": child.model_uri,
        }
    )


def plan(
    cpt: ContinuousPretrain,
    children: Sequence[ObservedRun],
    listing: Sequence[corpus.Shard] | corpus.CorpusError,
    now: datetime,
) -> Plan:
    spec = cpt.spec
    old = cpt.status or ContinuousPretrainStatus()
    generation = cpt.metadata.get("generation")
    current = old.current_model or CurrentModel(uri=spec.base_model.uri, generation=0)
    watermark = old.watermark or Watermark()
    records = {r.name: r for r in old.runs}
    result = Plan(status=old)
    events, conditions = result.events, list(old.conditions)

    def set_condition(type_: str, status: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = cond.set_condition(
            conditions,
            type=type_,
            status=status,
            reason=reason,
            message=message,
            now=now,
            observed_generation=generation,
        )

    # 1. Fold each child's state into its run record, oldest first so promotions apply in order.
    by_name = {c.name: c for c in children}
    for child in sorted(children, key=lambda c: (c.created or now, c.name)):
        record = records.get(child.name) or _record_from_child(child)
        if record.phase in DECIDED_PHASES:
            records[child.name] = record
            continue
        if child.active or child.deleting:
            records[child.name] = record.model_copy(update={"phase": child.phase or Phase.PENDING.value})
            continue
        record = _with_metrics(record, child)
        if child.phase == Phase.FAILED.value:
            reason = f"the run failed: {child.message or 'no message'}; the current model is unchanged"
            record = record.model_copy(update={"phase": FAILED, "reason": reason})
            events.append(Event("Warning", "RunFailed", f"{child.name}: {reason}"))
            result.finished.append(RESULT_FAILED)
        else:
            record, promoted = _gate(cpt, record, child, current, events, result)
            if promoted:
                current = CurrentModel(
                    uri=child.model_uri or "",
                    generation=child.generation,
                    data_cutoff=record.data_cutoff,
                    run=child.name,
                    domain_loss=record.domain_loss_after,
                    general_loss=record.general_loss_after,
                )
                watermark = Watermark(
                    last_modified=record.data_cutoff,
                    shards=watermark.shards + len(record.new_shards),
                    documents=watermark.documents + record.new_documents,
                )
        records[child.name] = record
    # Records of runs that are gone but never finished: someone deleted the child.
    for name, record in list(records.items()):
        if name not in by_name and record.phase not in DECIDED_PHASES | {AWAITING_APPROVAL}:
            records[name] = record.model_copy(
                update={"phase": DELETED, "reason": "the child FineTuneJob was deleted before it finished"}
            )
    active = [c for c in children if c.active]

    # 2. What the schema cannot validate.
    errors = spec_errors(cpt)

    # 3. The corpus: shards newer than the (possibly just moved) watermark.
    pending: list[corpus.Shard] = []
    corpus_ok = not isinstance(listing, corpus.CorpusError)
    if isinstance(listing, corpus.CorpusError):
        set_condition(cond.CORPUS_READABLE, False, "CorpusUnreadable", f"spec.corpus.uri: {listing}")
    else:
        pending = [
            s for s in listing if watermark.last_modified is None or s.last_modified > watermark.last_modified
        ]
        result.pending_documents = sum(s.documents for s in pending)
        set_condition(
            cond.CORPUS_READABLE,
            True,
            "CorpusListed",
            f"{len(pending)} shard(s) with {result.pending_documents} document(s) newer than the watermark",
        )

    # 4. The trigger.
    schedule = spec.trigger.schedule if not errors else None
    next_run_time = old.next_run_time
    schedule_due = False
    if schedule is not None:
        reference = _time(cpt.metadata.get("creationTimestamp")) or now
        next_run_time = next_run_time or next_fire_time(schedule, reference)
        if now >= next_run_time:
            schedule_due = True
            # Missed slots are not caught up one by one (like a CronJob): the next slot is after now.
            next_run_time = next_fire_time(schedule, now)
    else:
        next_run_time = None
    threshold = spec.trigger.min_new_documents or 1
    pending_documents = result.pending_documents or 0
    data_ready = corpus_ok and pending_documents >= threshold
    triggered = data_ready and (schedule_due or schedule is None) and not errors

    ready_reason, ready_message = (
        "WaitingForData",
        (f"{pending_documents} new document(s), a run needs {threshold}"),
    )
    if schedule is not None and not schedule_due:
        ready_reason, ready_message = "WaitingForSchedule", f"next run at {next_run_time:%Y-%m-%dT%H:%M:%SZ}"
    run_active_reason, run_active_message = (
        ("RunActive", f"{active[0].name} is running") if active else ("NoActiveRun", "no run is active")
    )
    active_name = active[0].name if active else None
    if triggered and spec.suspend:
        ready_reason, ready_message = "Suspended", "spec.suspend is true: no new runs start"
    elif triggered:
        selected = select_shards(pending)
        name = builders.run_name(cpt.name, current.generation + 1, [s.uri for s in selected])
        if name in records or name in by_name:
            ready_reason, ready_message = (
                "WaitingForData",
                (f"run {name} already trained on these {len(selected)} shard(s); waiting for new data"),
            )
        elif active and spec.concurrency_policy == ConcurrencyPolicy.FORBID:
            previous = cond.find_condition(old.conditions, cond.RUN_ACTIVE)
            run_active_reason = "ConcurrencyForbid"
            run_active_message = (
                f"{active[0].name} is still running; a new run was skipped (spec.concurrencyPolicy Forbid)"
            )
            if previous is None or previous.reason != run_active_reason:
                events.append(Event("Normal", "RunSkipped", run_active_message))
            ready_reason, ready_message = "RunActive", run_active_message
        else:
            for running in active:
                result.delete.append(running.name)
                records[running.name] = records[running.name].model_copy(
                    update={"phase": REPLACED, "reason": f"replaced by {name} (concurrencyPolicy Replace)"}
                )
                events.append(Event("Normal", "RunReplaced", f"{running.name} replaced by {name}"))
            cpt_now = cpt.model_copy(
                update={"status": old.model_copy(update={"current_model": current, "watermark": watermark})}
            )
            shards = [builders.RunShard(s.uri, s.last_modified, s.documents) for s in selected]
            result.create = builders.build_run_finetunejob(
                cpt_now, name=name, generation=current.generation + 1, shards=shards
            )
            documents = sum(s.documents for s in selected)
            records[name] = RunRecord(
                name=name,
                phase=Phase.PENDING.value,
                new_documents=documents,
                new_shards=[s.uri for s in selected],
                data_cutoff=max(s.last_modified for s in selected),
                start_time=now,
            )
            events.append(
                Event(
                    "Normal",
                    "RunStarted",
                    f"{name}: {documents} new document(s) in {len(selected)} shard(s), "
                    f"from generation {current.generation} ({current.uri})",
                )
            )
            active_name = name
            run_active_reason, run_active_message = "RunActive", f"{name} started"
            ready_reason, ready_message = "RunActive", f"{name} started"
    elif active:
        ready_reason, ready_message = "RunActive", run_active_message
    elif spec.suspend:
        ready_reason, ready_message = "Suspended", "spec.suspend is true: no new runs start"

    set_condition(cond.RUN_ACTIVE, active_name is not None, run_active_reason, run_active_message)
    if errors:
        set_condition(cond.READY, False, "InvalidSpec", "; ".join(errors))
    elif not corpus_ok:
        set_condition(cond.READY, False, "CorpusUnreadable", f"spec.corpus.uri: {listing}")
    else:
        set_condition(cond.READY, True, ready_reason, ready_message)

    # 5. History: newest first, bounded; the promoted run and the active run are never pruned.
    ordered = sorted(records.values(), key=lambda r: (r.start_time or now, r.name), reverse=True)
    kept = ordered[: spec.history_limit]
    kept_names = {r.name for r in kept}
    for child in children:
        if (
            child.name not in kept_names
            and child.name != current.run
            and not child.active
            and not child.deleting
            and child.name not in result.delete
        ):
            result.delete.append(child.name)

    result.status = old.model_copy(
        update={
            "current_model": current,
            "watermark": watermark,
            "active_run": active_name,
            "last_run_time": now if result.create is not None else old.last_run_time,
            "next_run_time": next_run_time,
            "runs": kept,
            "conditions": conditions,
            "observed_generation": generation,
        }
    )
    return result


def _gate(
    cpt: ContinuousPretrain,
    record: RunRecord,
    child: ObservedRun,
    current: CurrentModel,
    events: list[Event],
    result: Plan,
) -> tuple[RunRecord, bool]:
    """Decide on a succeeded child: Promoted, Rejected or AwaitingApproval."""
    promotion = cpt.spec.promotion
    gate = evaluate_gate(promotion, child.metrics)
    reason = gate.reason
    passed = gate.passed
    if passed and child.generation != current.generation + 1:
        passed, reason = (
            False,
            (
                f"started from generation {child.generation - 1}, but the current model is generation "
                f"{current.generation} ({current.run}); {gate.reason}"
            ),
        )
    if passed and not child.model_uri:
        passed, reason = False, f"the run reported no full model artifact (status.artifacts.model); {reason}"
    if not passed:
        record = record.model_copy(update={"phase": REJECTED, "promoted": False, "reason": reason})
        events.append(Event("Warning", "RunRejected", f"{child.name}: {reason}"))
        result.finished.append(RESULT_REJECTED)
        return record, False
    if promotion.mode == PromotionMode.MANUAL and promotion.approved_run != child.name:
        waiting_reason = f"gate passed: {reason}; set spec.promotion.approvedRun to {child.name} to promote"
        if record.phase != AWAITING_APPROVAL:
            events.append(Event("Normal", "AwaitingApproval", f"{child.name}: {waiting_reason}"))
        return record.model_copy(update={"phase": AWAITING_APPROVAL, "reason": waiting_reason}), False
    record = record.model_copy(
        update={"phase": PROMOTED, "promoted": True, "reason": f"gate passed: {reason}"}
    )
    message = f"{child.name} is generation {child.generation} ({child.model_uri}): {reason}"
    events.append(Event("Normal", "Promoted", message))
    result.finished.append(RESULT_PROMOTED)
    return record, True


# --------------------------------------------------------------------------- I/O


EVENT_COMPONENT = "kubetune-operator"


def reconcile_named(namespace: str, name: str, *, instance: str, now: datetime | None = None) -> Plan | None:
    """Reconcile from a fresh read (None when the resource is gone) and post the plan's Events."""
    body = kube.get_continuouspretrain(namespace, name)
    if body is None:
        return None
    result = reconcile(body, now)
    for event in result.events:
        kube.create_event(
            body,
            type_=event.type,
            reason=event.reason,
            message=event.message,
            component=EVENT_COMPONENT,
            instance=instance,
        )
    return result


def reconcile(body: dict[str, Any], now: datetime | None = None) -> Plan:
    """Observe the children and the corpus, plan, then apply: delete, create, write status."""
    now = now or datetime.now(UTC)
    old_status = {k: v for k, v in (body.get("status") or {}).items() if k in _STATUS_FIELDS}
    try:
        cpt = ContinuousPretrain.model_validate({**body, "status": old_status or None})
    except ValidationError as error:
        # The schema accepted it, so this is a rule only the models know; report it, don't crash.
        _report_invalid(body, old_status, describe_validation_error(error), now)
        raise
    children = [observed_run(c) for c in kube.list_continuouspretrain_runs(cpt.namespace, cpt.name)]
    watermark = cpt.status.watermark if cpt.status else None
    listing: list[corpus.Shard] | corpus.CorpusError
    try:
        listing = corpus.list_new_shards(
            cpt.spec.corpus.uri,
            newer_than=watermark.last_modified if watermark else None,
            storage=cpt.spec.storage,
            text_field=cpt.spec.corpus.text_field,
        )
    except corpus.CorpusError as error:
        listing = error
    result = plan(cpt, children, listing, now)
    for name in result.delete:
        kube.delete_finetunejob(cpt.namespace, name)
    if result.create is not None:
        kube.create_finetunejob(cpt.namespace, result.create)
    patch = builders.merge_patch(old_status, result.status.to_wire())
    if patch:
        kube.patch_continuouspretrain_status(cpt.namespace, cpt.name, patch)
    return result


def _report_invalid(body: dict[str, Any], old_status: dict[str, Any], message: str, now: datetime) -> None:
    metadata = body.get("metadata", {})
    try:
        conditions = ContinuousPretrainStatus.model_validate(old_status).conditions
    except ValidationError:
        conditions = []
    conditions = cond.set_condition(
        conditions,
        type=cond.READY,
        status=False,
        reason="InvalidSpec",
        message=message,
        now=now,
        observed_generation=metadata.get("generation"),
    )
    wire = [c.to_wire() for c in conditions]
    namespace = metadata.get("namespace", "default")
    kube.patch_continuouspretrain_status(namespace, metadata["name"], {"conditions": wire})


# Status keys this reconciler owns (kopf keeps its own bookkeeping elsewhere in the status).
_STATUS_FIELDS = frozenset(
    field_info.alias or name for name, field_info in ContinuousPretrainStatus.model_fields.items()
)


def seconds_until_next_check(result: Plan | None, poll_interval_seconds: float, now: datetime) -> float:
    """Poll the corpus every pollIntervalSeconds, but wake for a schedule slot that comes sooner."""
    delay = float(poll_interval_seconds)
    next_run = result.status.next_run_time if result is not None else None
    if next_run is not None:
        delay = min(delay, (next_run - now).total_seconds())
    return max(1.0, delay)
