"""ContinuousPretrain on the real control plane: the operator subprocess lists a file:// corpus,
creates child FineTuneJobs, kwok finishes their pods with a TrainerResult, the gate decides."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubetune_api import observability
from kubetune_api.finetunejob import Artifacts, Metrics
from kubetune_api.trainer_contract import Outcome, TrainerResult
from kubetune_dev.controlplane import ControlPlane
from kubetune_dev.operator_process import eventually

pytestmark = pytest.mark.integration
CPT_PATH = "/apis/kubetune.io/v1alpha1/namespaces/{ns}/continuouspretrains"
FTJ_PATH = "/apis/kubetune.io/v1alpha1/namespaces/{ns}/finetunejobs"


MakeCpt = Callable[..., dict[str, Any]]


def write_shard(tmp_path: Path, name: str, documents: int, age_seconds: float = 60) -> None:
    path = tmp_path / "corpus" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"document {i} of {name}\n" for i in range(documents)))
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))


def result_message(general_after: float) -> dict[str, str]:
    result = TrainerResult(
        outcome=Outcome.SUCCEEDED,
        metrics=Metrics(test_loss_base=2.0, test_loss=1.6, general_loss_base=3.0, general_loss=general_after),
        artifacts=Artifacts(model="file:///out/candidate/model"),
    )
    return {"kwok.kubetune.io/message": result.model_dump_json(by_alias=True, exclude_none=True)}


def get_cpt(cp: ControlPlane, ns: str, name: str = "cpt") -> dict[str, Any]:
    status, body = cp.api("GET", f"{CPT_PATH.format(ns=ns)}/{name}")
    assert status == 200, body
    return body


def children(cp: ControlPlane, ns: str) -> list[dict[str, Any]]:
    _, body = cp.api("GET", FTJ_PATH.format(ns=ns) + "?labelSelector=kubetune.io%2Fcontinuouspretrain")
    return list(body.get("items", []))


def condition(cpt: dict[str, Any], type_: str) -> tuple[str, str, str] | None:
    for c in cpt.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c["status"], c["reason"], c["message"]
    return None


def run_phase(cp: ControlPlane, ns: str, *phases: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        cpt = get_cpt(cp, ns)
        runs = cpt.get("status", {}).get("runs", [])
        return cpt if runs and runs[0]["phase"] in phases else None

    return check


def event_reasons(cp: ControlPlane, ns: str, name: str = "cpt") -> list[str]:
    _, body = cp.api("GET", f"/api/v1/namespaces/{ns}/events")
    return [e["reason"] for e in body.get("items", []) if e["involvedObject"]["name"] == name]


def test_new_data_runs_and_a_passing_candidate_is_promoted(
    control_plane: ControlPlane, cpt_namespace: str, make_cpt: MakeCpt, cpt_operator: Any, tmp_path: Path
) -> None:
    write_shard(tmp_path, "day1.txt", 5)
    make_cpt(pod_annotations=result_message(general_after=3.03))

    cpt = eventually(run_phase(control_plane, cpt_namespace, "Promoted"), timeout=90, what="promotion")

    (child,) = children(control_plane, cpt_namespace)
    assert child["metadata"]["ownerReferences"][0]["kind"] == "ContinuousPretrain"
    assert child["spec"]["objective"] == "CausalLM"
    assert [d["name"] for d in child["spec"]["datasets"]] == ["new-0", "replay"]
    status = cpt["status"]
    assert status["currentModel"]["generation"] == 1
    assert status["currentModel"]["uri"] == "file:///out/candidate/model"
    assert status["currentModel"]["run"] == child["metadata"]["name"]
    assert status["watermark"]["documents"] == 5 and status["watermark"]["shards"] == 1
    assert status["runs"][0]["promoted"] is True and status["runs"][0]["domainLossAfter"] == 1.6
    assert {"RunStarted", "Promoted"} <= set(event_reasons(control_plane, cpt_namespace))
    assert condition(cpt, "RunActive")[:2] == ("False", "NoActiveRun")
    scraped = cpt_operator.metrics()
    labels = f'name="cpt",namespace="{cpt_namespace}"'
    assert f"{observability.CPT_GENERATION}{{{labels}}} 1.0" in scraped
    assert f'{observability.CPT_RUNS}{{{labels},result="promoted"}} 1.0' in scraped


def test_a_candidate_that_forgets_is_rejected_and_the_model_stays(
    control_plane: ControlPlane, cpt_namespace: str, make_cpt: MakeCpt, tmp_path: Path
) -> None:
    write_shard(tmp_path, "day1.txt", 5)
    make_cpt(pod_annotations=result_message(general_after=3.6))

    cpt = eventually(run_phase(control_plane, cpt_namespace, "Rejected"), timeout=90, what="rejection")

    assert cpt["status"]["currentModel"] == {"uri": "file:///models/base", "generation": 0}
    assert "general loss 3.0000 -> 3.6000 (+20.00%" in cpt["status"]["runs"][0]["reason"]
    assert "RunRejected" in event_reasons(control_plane, cpt_namespace)


def test_no_new_data_starts_nothing(
    control_plane: ControlPlane, cpt_namespace: str, make_cpt: MakeCpt, tmp_path: Path
) -> None:
    write_shard(tmp_path, "small.txt", 2)  # below minNewDocuments
    make_cpt()
    cpt = eventually(
        lambda: (c := get_cpt(control_plane, cpt_namespace)) and condition(c, "Ready") and c,
        timeout=60, what="first reconcile",
    )  # fmt: skip
    assert condition(cpt, "Ready")[:2] == ("True", "WaitingForData")
    assert condition(cpt, "CorpusReadable")[:2] == ("True", "CorpusListed")
    assert children(control_plane, cpt_namespace) == []


def test_forbid_skips_while_a_run_is_active_and_a_restart_creates_nothing_twice(
    control_plane: ControlPlane, cpt_namespace: str, make_cpt: MakeCpt, cpt_operator: Any, tmp_path: Path
) -> None:
    write_shard(tmp_path, "day1.txt", 5)
    make_cpt(pod_annotations={"kwok.kubetune.io/outcome": "Running"})
    eventually(run_phase(control_plane, cpt_namespace, "Running"), timeout=90, what="run Running")

    write_shard(tmp_path, "day2.txt", 5, age_seconds=1)
    cpt = eventually(
        lambda: (c := get_cpt(control_plane, cpt_namespace))
        and (condition(c, "RunActive") or ("", ""))[1] == "ConcurrencyForbid" and c,
        timeout=30, what="Forbid skip",
    )  # fmt: skip
    assert "spec.concurrencyPolicy Forbid" in condition(cpt, "RunActive")[2]
    assert "RunSkipped" in event_reasons(control_plane, cpt_namespace)

    cpt_operator.stop(signal.SIGKILL)
    cpt_operator.start()
    eventually(lambda: cpt_operator.log().count("leading as cpt") == 2, timeout=30, what="leadership again")
    time.sleep(12)  # more than one poll interval of the restarted operator
    assert len(children(control_plane, cpt_namespace)) == 1


@pytest.mark.parametrize(
    ("spec", "condition_type", "reason", "field"),
    [
        (
            {"corpus": {"uri": "file:///nonexistent/corpus/"}},
            "CorpusReadable",
            "CorpusUnreadable",
            "spec.corpus.uri",
        ),
        ({"trigger": {"schedule": "99 * * * *"}}, "Ready", "InvalidSpec", "spec.trigger.schedule"),
    ],
)
def test_bad_input_gives_a_condition_naming_the_field(
    control_plane: ControlPlane, cpt_namespace: str, make_cpt: MakeCpt,
    spec: dict[str, Any], condition_type: str, reason: str, field: str,
) -> None:  # fmt: skip
    make_cpt(**spec)
    cpt = eventually(
        lambda: (c := get_cpt(control_plane, cpt_namespace)) and condition(c, condition_type) and c,
        timeout=60, what=condition_type,
    )  # fmt: skip
    found = condition(cpt, condition_type)
    assert found[:2] == ("False", reason) and found[2].startswith(field)
    assert condition(cpt, "Ready")[0] == "False"
    assert children(control_plane, cpt_namespace) == []


def test_replay_ratio_out_of_range_is_refused_by_the_schema(
    control_plane: ControlPlane, cpt_namespace: str, make_cpt: MakeCpt
) -> None:
    with pytest.raises(AssertionError) as refused:
        make_cpt(replay={"uri": "file:///data/general/", "ratio": 1.5})
    assert str(refused.value).startswith("HTTP 422: ") and "spec.replay.ratio" in str(refused.value)
