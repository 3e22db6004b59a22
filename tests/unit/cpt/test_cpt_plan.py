"""ContinuousPretrain decisions: triggers, concurrency, promotion, history, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubetune_operator import corpus
from kubetune_operator.builders import continuouspretrain as builders
from kubetune_operator.reconcile import continuouspretrain as rc
from kubetune_operator.reconcile.continuouspretrain import Event, ObservedRun

from kubetune_api.continuouspretrain import ContinuousPretrain
from kubetune_api.finetunejob import Metrics

NOW = datetime(2025, 3, 10, 3, 30, tzinfo=UTC)
CREATED = datetime(2025, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def make_cpt(status: dict[str, Any] | None = None, **spec_overrides: Any) -> ContinuousPretrain:
    spec: dict[str, Any] = {
        "baseModel": {"uri": "s3://models/base/"},
        "corpus": {"uri": "file:///corpus/"},
        "trigger": {"minNewDocuments": 10},
        "template": {"hyperparameters": {"epochs": 1}},
        "replay": {"uri": "file:///general/", "ratio": 0.25},
        "promotion": {"generalEval": {"uri": "file:///eval.txt"}, "maxGeneralLossIncreaseRatio": 0.02},
        "output": "file:///out/",
    }
    spec.update(spec_overrides)
    return ContinuousPretrain.model_validate(
        {
            "metadata": {
                "name": "news",
                "namespace": "ml",
                "uid": "u1",
                "generation": 2,
                "creationTimestamp": CREATED.isoformat(),
            },
            "spec": spec,
            "status": status,
        }
    )


def shard(name: str, day: int, documents: int) -> corpus.Shard:
    return corpus.Shard(f"file:///corpus/{name}", CREATED + day * DAY, documents)


SHARDS = [shard("a.txt", 1, 6), shard("b.txt", 2, 6)]
RUN_1 = builders.run_name("news", 1, [s.uri for s in SHARDS])
GOOD = Metrics(test_loss_base=2.0, test_loss=1.5, general_loss_base=3.0, general_loss=3.03)
FORGETFUL = Metrics(test_loss_base=2.0, test_loss=1.5, general_loss_base=3.0, general_loss=3.3)


def child(
    name: str = RUN_1,
    phase: str | None = "Running",
    metrics: Metrics | None = None,
    generation: int = 1,
    created: datetime = NOW - DAY,
    model: str | None = None,
) -> ObservedRun:
    return ObservedRun(
        name=name,
        generation=generation,
        shards=tuple(s.uri for s in SHARDS),
        data_cutoff=SHARDS[-1].last_modified,
        new_documents=12,
        created=created,
        phase=phase,
        metrics=metrics,
        model_uri=model or (f"file:///out/{name}/model" if metrics else None),
    )


def running_status(name: str = RUN_1) -> dict[str, Any]:
    return {
        "activeRun": name,
        "runs": [
            {
                "name": name,
                "phase": "Running",
                "newDocuments": 12,
                "newShards": [s.uri for s in SHARDS],
                "dataCutoff": SHARDS[-1].last_modified.isoformat(),
                "startTime": (NOW - DAY).isoformat(),
            }
        ],
    }


def conditions(result: rc.Plan) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status.value, c.reason) for c in result.status.conditions}


def test_new_data_starts_one_run_from_the_base_model() -> None:
    result = rc.plan(make_cpt(), [], SHARDS, NOW)

    assert result.create is not None and result.create["metadata"]["name"] == RUN_1
    assert result.create["spec"]["baseModel"]["uri"] == "s3://models/base/"
    assert [d["uri"] for d in result.create["spec"]["datasets"]] == [
        "file:///corpus/a.txt",
        "file:///corpus/b.txt",
        "file:///general/",
    ]
    assert result.delete == []
    assert result.events == [
        Event(
            "Normal",
            "RunStarted",
            f"{RUN_1}: 12 new document(s) in 2 shard(s), from generation 0 (s3://models/base/)",
        )
    ]
    status = result.status
    assert (status.active_run, status.last_run_time, status.observed_generation) == (RUN_1, NOW, 2)
    assert [r.to_wire() for r in status.runs] == [
        {
            "name": RUN_1,
            "phase": "Pending",
            "newDocuments": 12,
            "newShards": [s.uri for s in SHARDS],
            "dataCutoff": "2025-03-03T00:00:00Z",
            "startTime": "2025-03-10T03:30:00Z",
            "promoted": False,
        }
    ]
    assert status.current_model is not None and status.current_model.generation == 0
    assert conditions(result) == {
        "CorpusReadable": ("True", "CorpusListed"),
        "RunActive": ("True", "RunActive"),
        "Ready": ("True", "RunActive"),
    }


@pytest.mark.parametrize(
    ("cpt", "children", "listing", "ready_reason"),
    [
        pytest.param(make_cpt(), [], [], "WaitingForData", id="no-new-data"),
        pytest.param(make_cpt(), [], [shard("a.txt", 1, 9)], "WaitingForData", id="below-minNewDocuments"),
        pytest.param(
            make_cpt(status={"watermark": {"lastModified": (CREATED + 2 * DAY).isoformat()}}),
            [],
            SHARDS,
            "WaitingForData",
            id="all-behind-the-watermark",
        ),
        pytest.param(make_cpt(suspend=True), [], SHARDS, "Suspended", id="suspended"),
        pytest.param(
            make_cpt(
                trigger={"schedule": "0 3 * * *", "minNewDocuments": 10},
                status={"nextRunTime": (NOW + DAY).isoformat()},
            ),
            [],
            SHARDS,
            "WaitingForSchedule",
            id="data-but-schedule-not-due",
        ),
        pytest.param(
            make_cpt(trigger={"schedule": "0 3 * * *"}, status={"nextRunTime": NOW.isoformat()}),
            [],
            [],
            "WaitingForData",
            id="schedule-due-but-no-data",
        ),
        pytest.param(
            make_cpt(status={"runs": [{"name": RUN_1, "phase": "Rejected"}]}),
            [child(phase="Succeeded", metrics=FORGETFUL)],
            SHARDS,
            "WaitingForData",
            id="same-shards-already-tried",
        ),
    ],
)
def test_nothing_starts(
    cpt: ContinuousPretrain, children: list[ObservedRun], listing: list[corpus.Shard], ready_reason: str
) -> None:
    result = rc.plan(cpt, children, listing, NOW)
    assert result.create is None
    assert conditions(result)["Ready"] == ("True", ready_reason)
    assert not [e for e in result.events if e.reason == "RunStarted"]


def test_schedule_with_enough_data_runs_and_moves_next_run_time() -> None:
    cpt = make_cpt(trigger={"schedule": "0 3 * * *", "minNewDocuments": 10})  # first slot after creation
    result = rc.plan(cpt, [], SHARDS, NOW)
    assert result.create is not None
    assert result.status.next_run_time == datetime(2025, 3, 11, 3, 0, tzinfo=UTC)


def test_a_passing_candidate_is_promoted_and_moves_the_watermark() -> None:
    cpt = make_cpt(status=running_status())
    result = rc.plan(cpt, [child(phase="Succeeded", metrics=GOOD)], [], NOW)

    status = result.status
    assert status.current_model is not None
    assert status.current_model.to_wire() == {
        "uri": f"file:///out/{RUN_1}/model",
        "generation": 1,
        "dataCutoff": "2025-03-03T00:00:00Z",
        "run": RUN_1,
        "domainLoss": 1.5,
        "generalLoss": 3.03,
    }
    assert status.watermark is not None
    assert status.watermark.to_wire() == {
        "lastModified": "2025-03-03T00:00:00Z",
        "shards": 2,
        "documents": 12,
    }
    record = status.runs[0]
    assert (record.phase, record.promoted, record.domain_loss_before, record.general_loss_after) == (
        "Promoted",
        True,
        2.0,
        3.03,
    )
    assert status.active_run is None
    assert result.finished == ["promoted"]
    assert [e.reason for e in result.events] == ["Promoted"]
    assert conditions(result)["RunActive"] == ("False", "NoActiveRun")


def test_a_forgetful_candidate_is_rejected_with_the_numbers() -> None:
    result = rc.plan(
        make_cpt(status=running_status()), [child(phase="Succeeded", metrics=FORGETFUL)], [], NOW
    )

    assert result.status.current_model is not None and result.status.current_model.generation == 0
    assert result.status.watermark is not None and result.status.watermark.last_modified is None
    record = result.status.runs[0]
    assert (record.phase, record.promoted) == ("Rejected", False)
    assert record.reason is not None and "general loss 3.0000 -> 3.3000 (+10.00%" in record.reason
    assert result.finished == ["rejected"]
    assert [e.reason for e in result.events] == ["RunRejected"]


def test_a_failed_run_never_touches_the_current_model() -> None:
    failed = child(phase="Failed")
    failed = ObservedRun(**{**failed.__dict__, "message": "DataError: 40% bad rows"})
    result = rc.plan(make_cpt(status=running_status()), [failed], [], NOW)
    assert result.status.current_model is not None and result.status.current_model.generation == 0
    assert result.status.runs[0].phase == "Failed"
    assert "DataError: 40% bad rows" in (result.status.runs[0].reason or "")
    assert result.finished == ["failed"]


def test_manual_mode_waits_for_approval_then_promotes() -> None:
    manual = {"generalEval": {"uri": "file:///eval.txt"}, "mode": "Manual"}
    waiting = rc.plan(
        make_cpt(status=running_status(), promotion=manual), [child(phase="Succeeded", metrics=GOOD)], [], NOW
    )
    assert waiting.status.runs[0].phase == "AwaitingApproval"
    assert waiting.status.current_model is not None and waiting.status.current_model.generation == 0
    assert [e.reason for e in waiting.events] == ["AwaitingApproval"]

    approved = make_cpt(status=waiting.status.to_wire(), promotion={**manual, "approvedRun": RUN_1})
    result = rc.plan(approved, [child(phase="Succeeded", metrics=GOOD)], [], NOW)
    assert result.status.runs[0].phase == "Promoted"
    assert result.status.current_model is not None and result.status.current_model.generation == 1


def test_forbid_skips_while_a_run_is_active() -> None:
    newer = [*SHARDS, shard("c.txt", 3, 20)]
    result = rc.plan(make_cpt(status=running_status()), [child()], newer, NOW)
    assert result.create is None and result.delete == []
    assert conditions(result)["RunActive"] == ("True", "ConcurrencyForbid")
    assert [e.reason for e in result.events] == ["RunSkipped"]
    # The skip is announced once, not on every poll.
    again = rc.plan(make_cpt(status=result.status.to_wire()), [child()], newer, NOW + DAY)
    assert again.events == []


def test_replace_deletes_the_active_run_and_starts_the_new_one() -> None:
    newer = [*SHARDS, shard("c.txt", 3, 20)]
    result = rc.plan(make_cpt(status=running_status(), concurrencyPolicy="Replace"), [child()], newer, NOW)
    assert result.delete == [RUN_1]
    assert result.create is not None and result.create["metadata"]["name"] != RUN_1
    assert len(result.create["spec"]["datasets"]) == 4
    assert {r.name: r.phase for r in result.status.runs}[RUN_1] == "Replaced"


def test_the_next_run_starts_from_the_promoted_model() -> None:
    promoted = rc.plan(make_cpt(status=running_status()), [child(phase="Succeeded", metrics=GOOD)], [], NOW)
    newer = [shard("c.txt", 3, 20)]
    result = rc.plan(
        make_cpt(status=promoted.status.to_wire()),
        [child(phase="Succeeded", metrics=GOOD)],
        [*SHARDS, *newer],
        NOW + DAY,
    )
    assert result.create is not None
    assert result.create["metadata"]["name"] == builders.run_name("news", 2, [newer[0].uri])
    assert result.create["spec"]["baseModel"] == {
        "uri": f"file:///out/{RUN_1}/model",
        "fromScratch": False,
        "configOverrides": {},
    }
    assert [d["uri"] for d in result.create["spec"]["datasets"]] == [
        "file:///corpus/c.txt",
        "file:///general/",
    ]


def test_restart_rebuilds_the_record_from_the_child_and_creates_nothing() -> None:
    # The child exists but the status write after creating it was lost.
    result = rc.plan(make_cpt(), [child()], SHARDS, NOW)
    assert result.create is None
    assert [(r.name, r.phase, r.new_documents) for r in result.status.runs] == [(RUN_1, "Running", 12)]
    assert result.status.active_run == RUN_1


def test_history_is_bounded_but_the_promoted_run_is_kept() -> None:
    old_children = [
        child(name=f"news-g1-old{i}", phase="Succeeded", metrics=FORGETFUL, created=NOW - (10 - i) * DAY)
        for i in range(3)
    ]
    promoted = child(phase="Succeeded", metrics=GOOD, created=NOW - 20 * DAY)
    status = {
        "currentModel": {"uri": f"file:///out/{RUN_1}/model", "generation": 1, "run": RUN_1},
        "runs": [
            {"name": RUN_1, "phase": "Promoted", "promoted": True, "startTime": (NOW - 20 * DAY).isoformat()}
        ],
    }
    result = rc.plan(make_cpt(status=status, historyLimit=2), [promoted, *old_children], [], NOW)
    assert [r.name for r in result.status.runs] == ["news-g1-old2", "news-g1-old1"]
    assert result.delete == ["news-g1-old0"]


@pytest.mark.parametrize(
    ("cpt", "listing", "condition", "message_start"),
    [
        pytest.param(
            make_cpt(trigger={"schedule": "99 * * * *"}),
            SHARDS,
            ("Ready", "InvalidSpec"),
            "spec.trigger.schedule: '99 * * * *' is not a valid cron expression",
            id="bad-cron",
        ),
        pytest.param(
            make_cpt(template={"hyperparameters": {"epochs": 1}, "method": {"type": "ReFT"}}),
            SHARDS,
            ("Ready", "InvalidSpec"),
            "spec.template.method.type: ReFT cannot be merged",
            id="reft",
        ),
        pytest.param(
            make_cpt(),
            corpus.CorpusError("file:///corpus: no such directory"),
            ("CorpusReadable", "CorpusUnreadable"),
            "spec.corpus.uri: file:///corpus: no such directory",
            id="unreadable-corpus",
        ),
    ],
)
def test_bad_input_gives_a_condition_naming_the_field(
    cpt: ContinuousPretrain, listing: Any, condition: tuple[str, str], message_start: str
) -> None:
    result = rc.plan(cpt, [], listing, NOW)
    assert result.create is None
    found = {c.type: c for c in result.status.conditions}[condition[0]]
    assert (found.status.value, found.reason) == ("False", condition[1])
    assert found.message.startswith(message_start)
    assert {c.type: c.status.value for c in result.status.conditions}["Ready"] == "False"


def test_select_shards_caps_a_run_without_splitting_equal_times() -> None:
    many = [shard(f"{i:03}.txt", 1 + i // 2, 1) for i in range(70)]
    selected = rc.select_shards([shard("empty.txt", 0, 0), *many])
    assert len(selected) == 62 and selected[-1].uri.endswith("061.txt")
