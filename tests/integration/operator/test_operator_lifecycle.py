"""FineTuneJob lifecycle on the real control plane: the operator (a subprocess with its own least-
privilege ServiceAccount) creates the children, kwok moves the pods, the status follows.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from typing import Any

import pytest
from operator_api import Api, Manifest

from kubetune_api import observability
from kubetune_api.trainer_contract import TrainerResult
from kubetune_dev.controlplane import ControlPlane, ControlPlaneError
from kubetune_dev.operator_process import TEST_ENV, OperatorProcess, eventually

pytestmark = pytest.mark.integration

FTJ_PATH = "/apis/kubetune.io/v1alpha1/namespaces/{ns}/finetunejobs"
MakeFtj = Callable[..., Manifest]


def phase_is(api: Api, ns: str, name: str, *phases: str) -> Callable[[], Manifest | None]:
    def check() -> Manifest | None:
        ftj = api.ftj(ns, name)
        return ftj if ftj and ftj.get("status", {}).get("phase") in phases else None

    return check


def condition(obj: Manifest, type_: str) -> Manifest | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def jobs(api: Api, ns: str) -> list[Manifest]:
    return (api.get(f"/apis/batch/v1/namespaces/{ns}/jobs") or {}).get("items", [])


def events_for(api: Api, ns: str, name: str) -> list[str]:
    items = (api.get(f"/api/v1/namespaces/{ns}/events") or {}).get("items", [])
    return [e["reason"] for e in items if e["involvedObject"]["name"] == name]


def test_success_reports_artifacts_and_final_metrics(api: Api, namespace: str, make_ftj: MakeFtj) -> None:
    result = TrainerResult.model_validate(
        {
            "outcome": "Succeeded",
            "message": "trained 4 steps",
            "metrics": {"testLoss": 1.25, "perplexity": 3.49},
            "artifacts": {"adapter": "file:///out/adapter", "evalReport": "file:///out/eval.json"},
            "steps": 4,
        }
    )
    created = make_ftj(
        "ok", {"kwok.kubetune.io/message": result.model_dump_json(by_alias=True, exclude_none=True)}
    )
    done = eventually(phase_is(api, namespace, "ok", "Succeeded"), timeout=60, what="Succeeded")
    status = done["status"]
    assert status["artifacts"] == {"adapter": "file:///out/adapter", "evalReport": "file:///out/eval.json"}
    assert status["metrics"]["testLoss"] == 1.25
    assert status["attempts"] == 1
    assert status["jobName"] == "ok"
    assert status["observedGeneration"] == 1
    assert status["startTime"] and status["completionTime"]
    assert condition(done, "Succeeded")["status"] == "True"
    assert condition(done, "Validated")["status"] == "True"
    assert condition(done, "Running")["status"] == "False"

    owner = {"kind": "FineTuneJob", "name": "ok", "uid": created["metadata"]["uid"]}
    for path in (
        f"/apis/batch/v1/namespaces/{namespace}/jobs/ok",
        f"/api/v1/namespaces/{namespace}/configmaps/ok-config",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/ok-trainer",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/ok-trainer",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/ok-trainer",
    ):
        child = api.get(path)
        assert child is not None, path
        (ref,) = child["metadata"]["ownerReferences"]
        assert {k: ref[k] for k in owner} == owner and ref["controller"] and ref["blockOwnerDeletion"]
    job = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/ok")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "kubetune/trainer:test"
    assert job["spec"]["template"]["spec"]["nodeSelector"]["kubetune.io/accelerator"] == "nvidia-gpu"
    reasons = eventually(lambda: (r := events_for(api, namespace, "ok")) and "TrainingSucceeded" in r and r)
    assert "TrainerRunning" in reasons


def test_retries_until_backoff_limit_and_counts_attempts(api: Api, namespace: str, make_ftj: MakeFtj) -> None:
    make_ftj(
        "flaky",
        {"kwok.kubetune.io/outcome": "Failed", "kwok.kubetune.io/exit-code": "1",
         "kwok.kubetune.io/message": "CUDA error: an illegal memory access"},
        runPolicy={"backoffLimit": 1},
    )  # fmt: skip
    done = eventually(phase_is(api, namespace, "flaky", "Failed"), timeout=90, what="Failed")
    assert done["status"]["attempts"] == 2
    failed = condition(done, "Failed")
    assert failed["status"] == "True"
    assert failed["message"] == "CUDA error: an illegal memory access"


def test_config_error_fails_at_once_with_the_trainers_reason(
    api: Api, namespace: str, make_ftj: MakeFtj
) -> None:
    result = TrainerResult.model_validate(
        {
            "outcome": "Failed",
            "reason": "ConfigError",
            "message": "hyperparameters.maxSteps: must be positive",
        }
    )
    make_ftj(
        "badcfg",
        {"kwok.kubetune.io/outcome": "Failed", "kwok.kubetune.io/exit-code": "3",
         "kwok.kubetune.io/message": result.model_dump_json(by_alias=True, exclude_none=True)},
        runPolicy={"backoffLimit": 5},
    )  # fmt: skip
    done = eventually(phase_is(api, namespace, "badcfg", "Failed"), timeout=60, what="Failed")
    assert done["status"]["attempts"] == 1
    failed = condition(done, "Failed")
    assert (failed["reason"], failed["message"]) == (
        "ConfigError",
        "hyperparameters.maxSteps: must be positive",
    )
    assert done["status"]["message"] == "hyperparameters.maxSteps: must be positive"


def test_too_many_gpus_is_unschedulable_with_the_schedulers_message(
    api: Api, namespace: str, make_ftj: MakeFtj
) -> None:
    make_ftj("huge", resources={"gpusPerNode": 16, "cpu": "1", "memory": "1Gi"})

    def unschedulable() -> Manifest | None:
        ftj = api.ftj(namespace, "huge")
        found = ftj and condition(ftj, "Unschedulable")
        return ftj if found and found["status"] == "True" else None

    try:
        ftj = eventually(unschedulable, timeout=60, what="Unschedulable")
    except AssertionError as error:
        pods = api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
        seen = {"ftj": (api.ftj(namespace, "huge") or {}).get("status"), "pods": [p["status"] for p in pods]}
        raise AssertionError(f"{error}\nobserved: {json.dumps(seen, indent=1)}") from None
    assert ftj["status"]["phase"] == "Pending"
    assert "Insufficient nvidia.com/gpu" in condition(ftj, "Unschedulable")["message"]
    assert "Unschedulable" in eventually(lambda: events_for(api, namespace, "huge"))


def test_suspend_and_resume(control_plane: ControlPlane, api: Api, namespace: str, make_ftj: MakeFtj) -> None:
    make_ftj("pausable", {"kwok.kubetune.io/outcome": "Running"}, runPolicy={"suspend": True})
    ftj = eventually(phase_is(api, namespace, "pausable", "Suspended"), what="Suspended")
    assert condition(ftj, "Suspended")["status"] == "True"
    job_path = f"/apis/batch/v1/namespaces/{namespace}/jobs/pausable"
    assert api.get(job_path)["spec"]["suspend"] is True

    def set_suspend(value: bool) -> None:
        patch = json.dumps({"spec": {"runPolicy": {"suspend": value}}})
        control_plane.kubectl("patch", "-n", namespace, "ftj", "pausable", "--type=merge", "-p", patch)

    set_suspend(False)
    ftj = eventually(phase_is(api, namespace, "pausable", "Running"), timeout=60, what="Running")
    assert condition(ftj, "Suspended")["status"] == "False"
    assert api.get(job_path)["spec"]["suspend"] is False
    set_suspend(True)
    eventually(phase_is(api, namespace, "pausable", "Suspended"), timeout=60, what="Suspended again")
    pods = lambda: [  # noqa: E731
        p
        for p in api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]
    eventually(lambda: not pods(), timeout=30, what="pods deleted on suspend")


def test_queue_name_creates_a_suspended_job_for_kueue(api: Api, namespace: str, make_ftj: MakeFtj) -> None:
    make_ftj("queued", queueName="team-a")
    ftj = eventually(phase_is(api, namespace, "queued", "Queued"), what="Queued")
    assert "team-a" in condition(ftj, "Queued")["message"]
    job = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/queued")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"


def test_delete_cancels_and_garbage_collects(
    control_plane: ControlPlane, api: Api, namespace: str, make_ftj: MakeFtj
) -> None:
    make_ftj("doomed", {"kwok.kubetune.io/outcome": "Running"})
    eventually(phase_is(api, namespace, "doomed", "Running"), timeout=60, what="Running")
    control_plane.kubectl("delete", "-n", namespace, "ftj", "doomed", "--wait=false")

    def all_gone() -> bool:
        return (
            not jobs(api, namespace)
            and not api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
            and api.get(f"/api/v1/namespaces/{namespace}/configmaps/doomed-config") is None
        )

    eventually(all_gone, timeout=60, what="children garbage-collected")


def test_immutable_field_is_refused(control_plane: ControlPlane, namespace: str, make_ftj: MakeFtj) -> None:
    make_ftj("fixed")
    with pytest.raises(ControlPlaneError, match="method is immutable"):
        control_plane.kubectl(
            "patch",
            "-n",
            namespace,
            "ftj",
            "fixed",
            "--type=merge",
            "-p",
            '{"spec": {"method": {"type": "Full"}}}',
        )


def test_metadata_edit_leaves_the_training_alone(
    control_plane: ControlPlane, api: Api, namespace: str, make_ftj: MakeFtj
) -> None:
    make_ftj("steady", {"kwok.kubetune.io/outcome": "Running"})
    eventually(phase_is(api, namespace, "steady", "Running"), timeout=60, what="Running")
    job_path = f"/apis/batch/v1/namespaces/{namespace}/jobs/steady"
    before = api.get(job_path)
    control_plane.kubectl("label", "-n", namespace, "ftj", "steady", "team=search")
    control_plane.kubectl("annotate", "-n", namespace, "ftj", "steady", "note=hello")
    ftj = eventually(
        lambda: (f := api.ftj(namespace, "steady")) and "note" in f["metadata"]["annotations"] and f
    )
    after = api.get(job_path)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert ftj["metadata"]["generation"] == 1 and ftj["status"]["phase"] == "Running"


def test_missing_secret_is_reported_and_job_waits_for_it(api: Api, namespace: str, make_ftj: MakeFtj) -> None:
    make_ftj("needs-creds", storage={"secretRef": {"name": "s3-credentials"}})

    def validated_false() -> Manifest | None:
        ftj = api.ftj(namespace, "needs-creds")
        found = ftj and condition(ftj, "Validated")
        return ftj if found and found["status"] == "False" else None

    ftj = validated_false() or eventually(validated_false, what="Validated=False")
    found = condition(ftj, "Validated")
    assert found["reason"] == "SecretNotFound"
    assert found["message"] == 'spec.storage.secretRef.name: Secret "s3-credentials" not found'
    assert ftj["status"]["phase"] == "Pending"
    assert jobs(api, namespace) == []
    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials"},
         "stringData": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}},
    )  # fmt: skip
    eventually(lambda: jobs(api, namespace), timeout=30, what="Job after the Secret appeared")
    job = jobs(api, namespace)[0]
    assert job["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "s3-credentials"}}
    ]


def test_multi_node_runs_an_indexed_job_with_rendezvous_service(
    api: Api, namespace: str, make_ftj: MakeFtj
) -> None:
    make_ftj("wide", resources={"gpusPerNode": 2, "nodes": 2, "cpu": "1", "memory": "1Gi"})
    done = eventually(phase_is(api, namespace, "wide", "Succeeded"), timeout=60, what="Succeeded")
    assert done["status"]["attempts"] == 1
    job = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/wide")
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == (
        "Indexed",
        2,
        2,
    )
    service = api.get(f"/api/v1/namespaces/{namespace}/services/wide-rdzv")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True


def test_trainer_token_patches_only_its_own_jobs_status(
    control_plane: ControlPlane, api: Api, namespace: str, make_ftj: MakeFtj
) -> None:
    make_ftj("mine", {"kwok.kubetune.io/outcome": "Running"})
    make_ftj("theirs", {"kwok.kubetune.io/outcome": "Running"})
    eventually(
        lambda: api.get(
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/mine-trainer"
        )
    )
    kubeconfig = control_plane.service_account_kubeconfig(namespace, "mine-trainer")
    progress = {
        "status": {"progress": {"step": 2, "totalSteps": 4, "percent": 50.0}, "metrics": {"trainLoss": 2.5}}
    }

    assert "patched" in _patch_status_as(control_plane, kubeconfig, namespace, "mine", progress)
    with pytest.raises(ControlPlaneError, match="forbidden"):
        _patch_status_as(control_plane, kubeconfig, namespace, "theirs", progress)
    ftj = api.ftj(namespace, "mine")
    assert ftj["status"]["progress"]["step"] == 2
    # The operator's own status writes leave the trainer's fields alone.
    eventually(phase_is(api, namespace, "mine", "Running"), timeout=60)
    assert api.ftj(namespace, "mine")["status"]["metrics"]["trainLoss"] == 2.5


def _patch_status_as(cp: ControlPlane, kubeconfig: Any, ns: str, name: str, body: Manifest) -> str:
    return cp.kubectl(
        f"--kubeconfig={kubeconfig}", "patch", "-n", ns, "ftj", name, "--subresource=status", "--type=merge",
        "-p", json.dumps(body),
    )  # fmt: skip


def test_operator_restart_recovers_status_without_a_second_job(
    api: Api, namespace: str, make_ftj: MakeFtj, operator_process: OperatorProcess
) -> None:
    make_ftj("durable", {"kwok.kubetune.io/run-seconds": "6"})
    eventually(phase_is(api, namespace, "durable", "Running"), timeout=60, what="Running")
    job_uid = jobs(api, namespace)[0]["metadata"]["uid"]
    operator_process.stop(signal.SIGKILL)
    # The Job finishes while no operator is running.

    def job_complete() -> bool:
        job_conditions = jobs(api, namespace)[0].get("status", {}).get("conditions", [])
        return any(c["type"] == "Complete" for c in job_conditions)

    eventually(job_complete, timeout=60, what="Job complete while the operator is down")
    assert api.ftj(namespace, "durable")["status"]["phase"] == "Running"
    operator_process.start()
    eventually(phase_is(api, namespace, "durable", "Succeeded"), timeout=60, what="status recovered")
    assert [j["metadata"]["uid"] for j in jobs(api, namespace)] == [job_uid]


def test_second_replica_stays_passive(
    api: Api, namespace: str, make_ftj: MakeFtj, operator_process: OperatorProcess
) -> None:
    standby = OperatorProcess(
        operator_process.kubeconfig, operator_process.log_path.with_name("standby.log"),
        {**TEST_ENV, "KUBETUNE_OPERATOR_IDENTITY": "standby"},
    )  # fmt: skip
    standby.start()
    try:
        eventually(
            lambda: (standby.probe("/readyz") or (0, ""))[1].strip().endswith("standby"), what="standby"
        )
        make_ftj("single", {"kwok.kubetune.io/outcome": "Running"})
        eventually(phase_is(api, namespace, "single", "Running"), timeout=60)
        assert "leading as" not in standby.log()
        assert "created Job" not in standby.log()
        assert "kubetune_reconcile_duration_seconds_count" not in standby.metrics()
        lease = api.get("/apis/coordination.k8s.io/v1/namespaces/kubetune-system/leases/kubetune-operator")
        assert lease["spec"]["holderIdentity"] == "primary"
    finally:
        standby.stop()


def test_metrics_and_probes(
    api: Api, namespace: str, make_ftj: MakeFtj, operator_process: OperatorProcess
) -> None:
    make_ftj("measured")
    eventually(phase_is(api, namespace, "measured", "Succeeded"), timeout=60)
    assert operator_process.probe("/healthz")[0] == 200
    assert operator_process.probe("/readyz")[0] == 200
    text = eventually(
        lambda: (t := operator_process.metrics()) and 'name="measured"' in t and t, what="per-job series"
    )
    for name in observability.OPERATOR_METRICS:
        # Counters keep their _total in the TYPE line in newer prometheus-client, drop it in older ones.
        assert re.search(rf"^# TYPE {name.removesuffix('_total')}(_total)? ", text, re.MULTILINE), name
    assert (
        f'{observability.FINETUNEJOB_PHASE}{{name="measured",namespace="{namespace}",phase="Succeeded"}} 1.0'
        in text
    )
    assert (
        f'{observability.JOBS_FINISHED}{{namespace="{namespace}",outcome="Succeeded",reason="TrainingSucceeded"}}'
        in text
    )
    assert f'{observability.GPU_SECONDS_REQUESTED}{{gpu_product="any",namespace="{namespace}"}}' in text
