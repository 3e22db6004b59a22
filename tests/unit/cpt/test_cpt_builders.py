"""The child FineTuneJob of a ContinuousPretrain run, compared as whole manifests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kubetune_operator.builders import continuouspretrain as builders

from kubetune_api.continuouspretrain import ContinuousPretrain
from kubetune_api.finetunejob import FineTuneJob
from kubetune_api.trainer_contract import TrainerConfig

T1 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T2 = datetime(2025, 3, 2, 12, 0, tzinfo=UTC)


def make_cpt(**spec_overrides: Any) -> ContinuousPretrain:
    spec: dict[str, Any] = {
        "baseModel": {"uri": "s3://models/base/"},
        "corpus": {"uri": "s3://data/news/"},
        "trigger": {"minNewDocuments": 10},
        "template": {"hyperparameters": {"epochs": 1, "learningRate": 3e-5}},
        "replay": {"uri": "s3://data/general/", "ratio": 0.2},
        "promotion": {
            "generalEval": {"uri": "s3://data/general-eval.txt"},
            "maxGeneralLossIncreaseRatio": 0.02,
        },
        "output": "s3://artifacts/news/",
    }
    spec.update(spec_overrides)
    return ContinuousPretrain.model_validate(
        {"metadata": {"name": "news", "namespace": "ml", "uid": "uid-1"}, "spec": spec}
    )


SHARDS = [
    builders.RunShard("s3://data/news/a.txt", T1, 30),
    builders.RunShard("s3://data/news/b.jsonl", T2, 10),
]
NAME = builders.run_name("news", 1, [s.uri for s in SHARDS])


def expected_manifest(
    *, base_model: dict[str, Any], method: dict[str, Any], merge: bool | None
) -> dict[str, Any]:
    output: dict[str, Any] = {"uri": f"s3://artifacts/news/{NAME}/", "mergeAdapter": bool(merge)}
    defaults = FineTuneJob.model_validate(
        {
            "metadata": {"name": "x"},
            "spec": {
                "baseModel": {"uri": "s3://x/"},
                "method": {"type": "Full"},
                "datasets": [{"name": "x", "uri": "s3://x/"}],
                "hyperparameters": {"epochs": 1},
                "output": {"uri": "s3://x/"},
            },
        }
    ).to_wire()["spec"]
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {
            "name": NAME,
            "namespace": "ml",
            "labels": {
                "app.kubernetes.io/name": "kubetune-continuouspretrain",
                "app.kubernetes.io/instance": "news",
                "app.kubernetes.io/component": "continuous-pretrain-run",
                "app.kubernetes.io/part-of": "kubetune",
                "app.kubernetes.io/managed-by": "kubetune-operator",
                "kubetune.io/continuouspretrain": "news",
            },
            "annotations": {
                "kubetune.io/generation": "1",
                "kubetune.io/data-cutoff": "2025-03-02T12:00:00+00:00",
                "kubetune.io/new-documents": "40",
                "kubetune.io/shards": '["s3://data/news/a.txt", "s3://data/news/b.jsonl"]',
            },
            "ownerReferences": [
                {
                    "apiVersion": "kubetune.io/v1alpha1",
                    "kind": "ContinuousPretrain",
                    "name": "news",
                    "uid": "uid-1",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            **defaults,
            "baseModel": base_model,
            "method": method,
            "objective": "CausalLM",
            "datasets": [
                {
                    **defaults["datasets"][0],
                    "name": "new-0",
                    "uri": "s3://data/news/a.txt",
                    "weight": 0.6,
                    "task": "domain",
                },
                {
                    **defaults["datasets"][0],
                    "name": "new-1",
                    "uri": "s3://data/news/b.jsonl",
                    "weight": 0.2,
                    "task": "domain",
                },
                {
                    **defaults["datasets"][0],
                    "name": "replay",
                    "uri": "s3://data/general/",
                    "weight": 0.2,
                    "task": "replay",
                    "maxSamples": 10,  # 40 new documents at ratio 0.2
                },
            ],
            "hyperparameters": {**defaults["hyperparameters"], "learningRate": 3e-5},
            "evaluation": {
                **defaults["evaluation"],
                "forgettingGuard": {
                    "dataset": {"uri": "s3://data/general-eval.txt", "format": "text"},
                    "maxLossIncreaseRatio": 0.02,
                    "action": "Warn",
                },
                "compareWithBase": True,
            },
            "output": output,
        },
    }


@pytest.mark.parametrize(
    ("overrides", "current", "base_model", "method", "merge"),
    [
        pytest.param(
            {},
            None,
            {"uri": "s3://models/base/", "fromScratch": False, "configOverrides": {}},
            {"type": "Full"},
            False,
            id="generation-1-full-from-base",
        ),
        pytest.param(
            {
                "template": {
                    "hyperparameters": {"epochs": 1, "learningRate": 3e-5},
                    "method": {"type": "LoRA"},
                }
            },
            {"uri": "s3://artifacts/news/news-g3-x/model/", "generation": 3},
            {"uri": "s3://artifacts/news/news-g3-x/model/", "fromScratch": False, "configOverrides": {}},
            {"type": "LoRA"},
            True,
            id="lora-merged-from-current-model",
        ),
    ],
)
def test_run_finetunejob(
    overrides: dict[str, Any],
    current: dict[str, Any] | None,
    base_model: dict[str, Any],
    method: dict[str, Any],
    merge: bool,
) -> None:
    cpt = make_cpt(**overrides)
    if current is not None:
        cpt = cpt.model_copy(
            update={
                "status": cpt.model_validate(
                    {"spec": cpt.spec.to_wire(), "status": {"currentModel": current}}
                ).status
            }
        )
    manifest = builders.build_run_finetunejob(cpt, name=NAME, generation=1, shards=SHARDS)
    manifest["spec"]["datasets"] = [
        {**d, "weight": round(d["weight"], 9)} for d in manifest["spec"]["datasets"]
    ]
    assert manifest == expected_manifest(base_model=base_model, method=method, merge=merge)
    # The trainer accepts it as is.
    config = TrainerConfig.from_finetunejob(FineTuneJob.model_validate(manifest))
    assert config.evaluation.compare_with_base


def test_no_replay_means_new_data_only() -> None:
    manifest = builders.build_run_finetunejob(make_cpt(replay=None), name=NAME, generation=1, shards=SHARDS)
    assert [(d["name"], d["weight"]) for d in manifest["spec"]["datasets"]] == [
        ("new-0", 0.75),
        ("new-1", 0.25),
    ]


@pytest.mark.parametrize(
    ("documents", "ratio", "expected"),
    [
        ([10], 0.2, ([0.8], 0.2)),
        ([30, 10], 0.5, ([0.375, 0.125], 0.5)),
        ([1, 1, 2], 0.0, ([0.25, 0.25, 0.5], 0.0)),
    ],
)
def test_dataset_weights_give_replay_its_ratio(
    documents: list[int], ratio: float, expected: tuple[list[float], float]
) -> None:
    shards = [builders.RunShard(f"file:///d/{i}.txt", T1, n) for i, n in enumerate(documents)]
    shard_weights, replay_weight = builders.dataset_weights(shards, ratio)
    assert (shard_weights, replay_weight) == (pytest.approx(expected[0]), pytest.approx(expected[1]))


@pytest.mark.parametrize(
    ("documents", "ratio", "rows"), [(40, 0.2, 10), (3, 0.5, 3), (1, 0.01, 1), (10, 0.9, 90)]
)
def test_replay_rows_match_the_ratio(documents: int, ratio: float, rows: int) -> None:
    assert builders.replay_rows(documents, ratio) == rows


def test_run_name_is_deterministic_and_fits_a_label() -> None:
    uris = ["s3://d/a.txt", "s3://d/b.txt"]
    assert builders.run_name("news", 2, uris) == builders.run_name("news", 2, list(reversed(uris)))
    assert builders.run_name("news", 2, uris) != builders.run_name("news", 2, uris[:1])
    assert builders.run_name("news", 2, uris).startswith("news-g2-")
    long = builders.run_name("n" * 80, 12, uris)
    assert len(long) <= 63 and "-g12-" in long


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({"a": 1}, {"a": 1}, None),
        ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"x": 1}}, {"a": {"y": None}}),
        ({"l": [1, 2]}, {"l": [2]}, {"l": [2]}),
        ({}, {"c": {"d": 1}}, {"c": {"d": 1}}),
        ({"a": 1}, {"a": None}, {"a": None}),
    ],
)
def test_merge_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any] | None) -> None:
    assert builders.merge_patch(old, new) == patch


def test_refuses_what_cannot_run() -> None:
    with pytest.raises(ValueError, match="at least one shard"):
        builders.build_run_finetunejob(make_cpt(), name=NAME, generation=1, shards=[])
    too_many = [builders.RunShard(f"s3://d/{i}.txt", T1, 1) for i in range(64)]
    with pytest.raises(ValueError, match="at most 63"):
        builders.build_run_finetunejob(make_cpt(), name=NAME, generation=1, shards=too_many)
