"""The reconcile decisions with kube.py replaced by an in-memory fake."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from kubetune_operator import metrics
from kubetune_operator.config import OperatorConfig
from kubetune_operator.errors import DependencyMissing, SpecInvalid
from kubetune_operator.reconcile import finetunejob as reconcile
from operator_fixtures import ftj_body

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig(trainer_image="trainer:default")


class FakeKube:
    """Same functions as kubetune_operator.kube, backed by dicts; records every write."""

    class Conflict(Exception):
        pass

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, Any]] = []
        self.events: list[tuple[str, str]] = []
        self.pods: list[dict[str, Any]] = []
        for obj in objects:
            self.objects[(obj["kind"], obj["metadata"]["name"])] = obj

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(("Secret", name))

    def get_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(("PersistentVolumeClaim", name))

    def get_finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get(("FineTuneJob", name)))

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get(("Job", name)))

    def list_job_pods(self, namespace: str, job_uid: str) -> list[dict[str, Any]]:
        return self.pods

    def create_if_absent(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        key = (manifest["kind"], manifest["metadata"]["name"])
        if key in self.objects:
            return self.objects[key], False
        created = copy.deepcopy(manifest)
        created["metadata"]["uid"] = f"uid-{manifest['kind'].lower()}"
        self.objects[key] = created
        self.writes.append(("create", manifest["kind"], manifest["metadata"]["name"]))
        return created, True

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.objects[("Job", name)]["spec"].update(patch["spec"])
        self.writes.append(("patch", "Job", patch))
        return self.objects[("Job", name)]

    def patch_finetunejob_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        ftj = self.objects[("FineTuneJob", name)]
        ftj.setdefault("status", {}).update(patch)
        self.writes.append(("status", name, patch))
        return ftj

    def create_event(
        self, involved: dict[str, Any], *, type_: str, reason: str, message: str, **_: Any
    ) -> None:
        self.events.append((type_, reason))


def secret(name: str, *keys: str) -> dict[str, Any]:
    return {"kind": "Secret", "metadata": {"name": name}, "data": dict.fromkeys(keys, "eA==")}


def stored_ftj(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = ftj_body(**spec)
    return body


def apply(kube: FakeKube, config: OperatorConfig = CONFIG) -> None:
    body = kube.get_finetunejob("ml", "demo")
    assert body is not None
    reconcile.apply(body, config, kube=kube, clock=lambda: NOW)


def test_creates_every_child_once_then_only_syncs() -> None:
    kube = FakeKube(stored_ftj())
    apply(kube)
    created = [(kind, name) for op, kind, name in kube.writes if op == "create"]
    assert created == [
        ("ServiceAccount", "demo-trainer"),
        ("Job", "demo"),
        ("ConfigMap", "demo-config"),
        ("Role", "demo-trainer"),
        ("RoleBinding", "demo-trainer"),
    ]
    job = kube.objects[("Job", "demo")]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "trainer:default"
    status = kube.objects[("FineTuneJob", "demo")]["status"]
    assert (status["phase"], status["jobName"]) == ("Pending", "demo")
    assert [c["type"] for c in status["conditions"]] == ["Validated", "Running"]

    writes_before = len(kube.writes)
    apply(kube)  # e.g. after an operator restart: nothing new is created or written
    assert kube.writes[writes_before:] == []


def test_spec_image_overrides_and_multi_node_adds_the_service() -> None:
    kube = FakeKube(stored_ftj(image="custom:2", resources={"nodes": 2}))
    apply(kube)
    assert ("Service", "demo-rdzv") in kube.objects
    job = kube.objects[("Job", "demo")]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "custom:2"


def test_missing_secret_and_claim_are_named_and_nothing_is_created() -> None:
    kube = FakeKube(
        stored_ftj(
            baseModel={"uri": "hf://org/m", "secretRef": {"name": "hf-token"}},
            datasets=[{"name": "qa", "uri": "pvc://data/qa.jsonl"}],
            storage={"secretRef": {"name": "s3-credentials"}},
        ),
        secret("hf-token", "OTHER"),
    )
    with pytest.raises(DependencyMissing) as raised:
        apply(kube)
    expected = (
        'spec.baseModel.secretRef.name: Secret "hf-token" has no key HF_TOKEN; '
        'spec.storage.secretRef.name: Secret "s3-credentials" not found; '
        'spec.datasets[0].uri: PersistentVolumeClaim "data" not found'
    )
    assert (raised.value.reason, raised.value.message) == ("SecretKeyMissing", expected)
    status = kube.objects[("FineTuneJob", "demo")]["status"]
    assert status["phase"] == "Pending"
    (validated,) = status["conditions"]
    assert (validated["status"], validated["message"]) == ("False", expected)
    assert [w for w in kube.writes if w[0] == "create"] == []
    assert kube.events == [("Warning", "SecretKeyMissing")]

    writes_before = len(kube.writes)
    with pytest.raises(DependencyMissing):
        apply(kube)  # the retry re-checks but writes nothing new and posts no second Event
    assert kube.writes[writes_before:] == [] and len(kube.events) == 1


def test_unsupported_scheme_fails_permanently() -> None:
    kube = FakeKube(stored_ftj())
    with pytest.raises(SpecInvalid, match=r"spec.datasets\[0\].uri: s3:// is not supported"):
        apply(kube, OperatorConfig(allowed_uri_schemes=frozenset({"hf", "pvc"})))
    assert kube.objects[("FineTuneJob", "demo")]["status"]["phase"] == "Failed"


def test_suspend_toggles_the_existing_job_and_queue_owns_resume() -> None:
    kube = FakeKube(stored_ftj())
    apply(kube)
    kube.objects[("FineTuneJob", "demo")]["spec"]["runPolicy"] = {"suspend": True}
    apply(kube)
    assert kube.objects[("Job", "demo")]["spec"]["suspend"] is True
    assert kube.objects[("FineTuneJob", "demo")]["status"]["phase"] == "Suspended"

    queued = reconcile.parse(stored_ftj(queueName="q"))
    assert reconcile.job_updates(queued, {"spec": {"suspend": True}}) == {}
    assert reconcile.job_updates(queued, {"spec": {"suspend": False}}) == {}


def test_finished_jobs_are_left_alone() -> None:
    body = stored_ftj()
    body["status"] = {"phase": "Succeeded", "completionTime": "2026-01-01T00:00:00Z"}
    kube = FakeKube(body)
    apply(kube)
    assert kube.writes == []


def test_transition_to_succeeded_posts_an_event_and_counts_the_job() -> None:
    kube = FakeKube(stored_ftj(resources={"gpusPerNode": 2, "gpuProduct": "H100"}))
    apply(kube)
    kube.objects[("Job", "demo")]["status"] = {
        "conditions": [{"type": "Complete", "status": "True"}],
        "completionTime": "2026-01-01T11:00:00Z",
        "succeeded": 1,
    }
    kube.pods = [
        {
            "metadata": {"name": "demo-x"},
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "state": {"terminated": {"exitCode": 0, "startedAt": "2026-01-01T10:00:00Z",
                                                 "finishedAt": "2026-01-01T11:00:00Z"}},
                    }
                ],
            },
        }
    ]  # fmt: skip
    finished = metrics.JOBS_FINISHED.labels("ml", "Succeeded", "TrainingSucceeded")
    gpu_seconds = metrics.GPU_SECONDS_REQUESTED.labels("ml", "H100")
    before = (finished._value.get(), gpu_seconds._value.get())
    reconcile.sync_job("ml", "demo", kube=kube, clock=lambda: NOW)
    assert kube.objects[("FineTuneJob", "demo")]["status"]["phase"] == "Succeeded"
    assert kube.events[-1] == ("Normal", "TrainingSucceeded")
    assert finished._value.get() - before[0] == 1
    assert gpu_seconds._value.get() - before[1] == pytest.approx(7200.0)  # 2 GPUs x 3600 s


def test_coalescer_runs_one_more_time_for_events_during_a_run() -> None:
    coalescer = reconcile.Coalescer()
    runs: list[int] = []

    def sync() -> None:
        runs.append(len(runs))
        if len(runs) == 1:  # two events arrive while the first sync runs
            coalescer.run("k", sync)
            coalescer.run("k", sync)

    coalescer.run("k", sync)
    assert runs == [0, 1]


def test_status_queue_dedupes_bursts_and_retries_failures() -> None:
    import threading
    import time

    calls: list[tuple[str, Any]] = []
    release = threading.Event()
    fail_once = [True]

    def sync(namespace: str, job_name: str, job: Any) -> None:
        calls.append((job_name, job))
        if job_name == "a" and len(calls) == 1:
            release.wait(5)
        if job_name == "b" and fail_once[0]:
            fail_once[0] = False
            raise RuntimeError("API hiccup")

    queue = reconcile.StatusQueue(sync, workers=2, retry_seconds=0.05)
    queue.enqueue("ns", "a", {"v": 1})
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    for version in (2, 3, 4):  # a burst while "a" is being synced: one more sync, newest body
        queue.enqueue("ns", "a", {"v": version})
    queue.enqueue("ns", "b")
    release.set()
    while (not queue.idle() or len(calls) < 4) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(calls, key=lambda c: (c[0], str(c[1]))) == [
        ("a", {"v": 1}),
        ("a", {"v": 4}),
        ("b", None),
        ("b", None),
    ]
