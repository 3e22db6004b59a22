"""Pure builders for ContinuousPretrain: the child FineTuneJob of a run and the status patch.

No I/O and no clock: every input (shards, time, current model) is an argument.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubetune_api import constants
from kubetune_api.continuouspretrain import ContinuousPretrain
from kubetune_api.finetunejob import (
    BaseModelSource,
    DatasetFormat,
    DatasetSpec,
    EvaluationSpec,
    FineTuneJob,
    FineTuneJobSpec,
    ForgettingGuard,
    GuardAction,
    MethodType,
    Objective,
    OutputSpec,
)
from kubetune_api.labels import child_name

# Annotations on each child FineTuneJob: what the run trained on, so the operator can rebuild
# its run record from the child alone (after a restart between creating it and writing status).
ANNOTATION_GENERATION = "kubetune.io/generation"
ANNOTATION_DATA_CUTOFF = "kubetune.io/data-cutoff"
ANNOTATION_NEW_DOCUMENTS = "kubetune.io/new-documents"
ANNOTATION_SHARDS = "kubetune.io/shards"

COMPONENT_RUN = "continuous-pretrain-run"
REPLAY_DATASET_NAME = "replay"
SHARD_DATASET_PREFIX = "new"
MAX_DATASETS = 64
# One dataset per new shard plus the replay dataset must fit FineTuneJob.spec.datasets.
MAX_SHARDS_PER_RUN = MAX_DATASETS - 1
# Methods whose result can be merged into a full model the next run starts from.
MERGEABLE_METHODS = (MethodType.FULL, MethodType.LORA, MethodType.QLORA)


@dataclass(frozen=True)
class RunShard:
    """A shard chosen for a run (the builder's view of corpus.Shard, kept free of I/O modules)."""

    uri: str
    last_modified: datetime
    documents: int


def shard_set_hash(shard_uris: Sequence[str]) -> str:
    """Short, order-independent digest of a shard set: the same data always gives the same run name."""
    return hashlib.sha256("\n".join(sorted(shard_uris)).encode()).hexdigest()[:8]


def run_name(cpt_name: str, generation: int, shard_uris: Sequence[str]) -> str:
    """Deterministic child name `<cpt>-g<generation>-<hash>`; a restarted operator computes the same one."""
    suffix = f"g{generation}-{shard_set_hash(shard_uris)}"
    return child_name(cpt_name[: 63 - len(suffix) - 1].rstrip("-"), suffix)


def run_labels(cpt_name: str) -> dict[str, str]:
    return {
        constants.LABEL_NAME: "kubetune-continuouspretrain",
        constants.LABEL_INSTANCE: child_name(cpt_name),
        constants.LABEL_COMPONENT: COMPONENT_RUN,
        constants.LABEL_PART_OF: "kubetune",
        constants.LABEL_MANAGED_BY: "kubetune-operator",
        constants.LABEL_CONTINUOUSPRETRAIN: child_name(cpt_name),
    }


def dataset_weights(shards: Sequence[RunShard], replay_ratio: float) -> tuple[list[float], float]:
    """Per-shard weights proportional to documents, and the replay weight, summing to 1.

    Weights are shares of the training mix, so replay's share is exactly replay_ratio and each
    new document is as likely to be drawn as any other.
    """
    total = sum(s.documents for s in shards)
    if total <= 0:
        raise ValueError("a run needs at least one new document")
    new_share = 1.0 - replay_ratio
    return [new_share * s.documents / total for s in shards], replay_ratio


def replay_rows(new_documents: int, replay_ratio: float) -> int:
    """Replay rows that make up `replay_ratio` of a mix with `new_documents` new rows."""
    # Rounded first so that e.g. 10 * 0.9 / 0.1 = 90.00000000000001 is 90 rows, not 91.
    return max(1, math.ceil(round(new_documents * replay_ratio / (1.0 - replay_ratio), 6)))


def build_run_finetunejob(
    cpt: ContinuousPretrain,
    *,
    name: str,
    generation: int,
    shards: Sequence[RunShard],
) -> dict[str, Any]:
    """The child FineTuneJob manifest for one run that produces model generation `generation`.

    It starts from status.currentModel (spec.baseModel for generation 1), trains with the causal
    LM objective on exactly `shards` (one dataset per shard) plus replay, and evaluates with the
    forgetting guard on promotion.generalEval (Warn: the ContinuousPretrain's gate decides) and
    compareWithBase, so testLossBase/testLoss and generalLossBase/generalLoss are measured on
    identical data for the gate.
    """
    if not shards:
        raise ValueError("a run needs at least one shard")
    if len(shards) > MAX_SHARDS_PER_RUN:
        raise ValueError(f"a run takes at most {MAX_SHARDS_PER_RUN} shards, got {len(shards)}")
    spec = cpt.spec
    template = spec.template
    if template.method.type not in MERGEABLE_METHODS:
        raise ValueError(f"spec.template.method.type {template.method.type} cannot produce a full model")

    replay_ratio = spec.replay.ratio if spec.replay is not None else 0.0
    shard_weights, replay_weight = dataset_weights(shards, replay_ratio)
    datasets = [
        DatasetSpec(
            name=f"{SHARD_DATASET_PREFIX}-{index}",
            uri=shard.uri,
            format=DatasetFormat.TEXT,
            text_field=spec.corpus.text_field,
            weight=weight,
            task="domain",
        )
        for index, (shard, weight) in enumerate(zip(shards, shard_weights, strict=True))
    ]
    if spec.replay is not None and replay_weight > 0:
        datasets.append(
            DatasetSpec(
                name=REPLAY_DATASET_NAME,
                uri=spec.replay.uri,
                format=DatasetFormat.TEXT,
                weight=replay_weight,
                task="replay",
                # Read only as many general rows as the mix uses, so a large general corpus neither
                # slows every run nor swamps the held-out test split that measures the new data.
                max_samples=replay_rows(sum(s.documents for s in shards), replay_ratio),
            )
        )

    current = cpt.status.current_model if cpt.status else None
    base_model = (
        BaseModelSource(uri=current.uri)
        if current is not None and current.generation > 0
        else spec.base_model
    )
    job_spec = FineTuneJobSpec(
        base_model=base_model,
        method=template.method,
        objective=Objective.CAUSAL_LM,
        datasets=datasets,
        data_preparation=template.data_preparation,
        hyperparameters=template.hyperparameters,
        evaluation=EvaluationSpec(
            forgetting_guard=ForgettingGuard(
                dataset=spec.promotion.general_eval,
                max_loss_increase_ratio=spec.promotion.max_general_loss_increase_ratio,
                action=GuardAction.WARN,
            ),
            compare_with_base=True,
        ),
        resources=template.resources,
        checkpoint=template.checkpoint,
        # LoRA runs are merged so that the next run (and users) start from a full model.
        output=OutputSpec(
            uri=f"{spec.output.rstrip('/')}/{name}/",
            merge_adapter=template.method.type in (MethodType.LORA, MethodType.QLORA),
        ),
        storage=spec.storage,
        # suspend belongs to the ContinuousPretrain: it stops new runs, an active run continues.
        run_policy=template.run_policy.model_copy(update={"suspend": False}),
        queue_name=template.queue_name,
        image=template.image,
        pod_metadata=template.pod_metadata,
    )
    job = FineTuneJob(
        metadata={
            "name": name,
            "namespace": cpt.namespace,
            "labels": run_labels(cpt.name),
            "annotations": {
                ANNOTATION_GENERATION: str(generation),
                ANNOTATION_DATA_CUTOFF: max(s.last_modified for s in shards).isoformat(),
                ANNOTATION_NEW_DOCUMENTS: str(sum(s.documents for s in shards)),
                ANNOTATION_SHARDS: json.dumps([s.uri for s in shards]),
            },
            "ownerReferences": [owner_reference(cpt)],
        },
        spec=job_spec,
    )
    return job.to_wire()


def owner_reference(cpt: ContinuousPretrain) -> dict[str, Any]:
    """Controller reference: children are garbage-collected with their ContinuousPretrain."""
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.CONTINUOUSPRETRAIN_KIND,
        "name": cpt.name,
        "uid": str(cpt.metadata.get("uid", "")),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 JSON merge patch that turns `old` into `new` (None means nothing to change).

    Fields that disappeared become explicit nulls, so e.g. status.activeRun is cleared.
    Lists are replaced whole, as merge patches do for custom resources.
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None if old == new else new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
            continue
        nested = merge_patch(old[key], value)
        if nested is not None or (value is None and old[key] is not None):
            patch[key] = nested
    return patch or None


# What the ContinuousPretrain controller needs beyond the FineTuneJob controller's rules; the
# operator's ClusterRole (builders.rbac.OPERATOR_RULES) must include these.
OPERATOR_RULES: tuple[dict[str, list[str]], ...] = (
    # kopf watches them and keeps its finalizer and handler state in annotations.
    {
        "apiGroups": [constants.GROUP],
        "resources": [constants.CONTINUOUSPRETRAIN_PLURAL],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {
        "apiGroups": [constants.GROUP],
        "resources": [f"{constants.CONTINUOUSPRETRAIN_PLURAL}/status"],
        "verbs": ["get", "patch"],
    },
    # Children carry blockOwnerDeletion owner references to their ContinuousPretrain.
    {
        "apiGroups": [constants.GROUP],
        "resources": [f"{constants.CONTINUOUSPRETRAIN_PLURAL}/finalizers"],
        "verbs": ["update"],
    },
    # Runs are created, and pruned by historyLimit or cancelled by concurrencyPolicy Replace.
    {
        "apiGroups": [constants.GROUP],
        "resources": [constants.FINETUNEJOB_PLURAL],
        "verbs": ["create", "delete"],
    },
)
