"""The kopf handler's split of the reconcile: launch (ServiceAccount, Job), chains of the rest, finish."""

from __future__ import annotations

from kubetune_operator.config import OperatorConfig
from kubetune_operator.reconcile import finetunejob as reconcile
from test_operator_reconcile import CONFIG, NOW, FakeKube, stored_ftj


def test_launch_creates_only_the_account_and_job_and_chains_the_rest() -> None:
    """The kopf handler creates the Job first and the rest concurrently, chain by chain."""
    kube = FakeKube(stored_ftj(resources={"nodes": 2}))
    body = kube.get_finetunejob("ml", "demo")
    assert body is not None
    launched = reconcile.launch(body, CONFIG, kube=kube, clock=lambda: NOW)
    assert launched is not None
    assert [w[1:] for w in kube.writes] == [("ServiceAccount", "demo-trainer"), ("Job", "demo")]
    assert launched.job["metadata"]["name"] == "demo"
    assert [[(c["kind"], c["metadata"]["name"]) for c in chain] for chain in launched.rest] == [
        [("ConfigMap", "demo-config")],
        [("Role", "demo-trainer"), ("RoleBinding", "demo-trainer")],  # the binding needs its Role
        [("Service", "demo-rdzv")],
    ]
    for chain in reversed(launched.rest):  # any order of chains gives the same children
        reconcile.ensure_chain(launched.ftj, chain, kube=kube)
    reconcile.finish(launched, kube=kube, clock=lambda: NOW)
    created = {w[1] for w in kube.writes if w[0] == "create"}
    assert created == {"ServiceAccount", "Job", "ConfigMap", "Role", "RoleBinding", "Service"}
    assert kube.objects[("FineTuneJob", "demo")]["status"]["jobName"] == "demo"

    body = kube.get_finetunejob("ml", "demo")
    assert body is not None
    body["status"]["phase"] = "Succeeded"
    assert reconcile.launch(body, CONFIG, kube=kube) is None  # finished runs are left alone


def test_the_service_account_carries_the_configured_annotations() -> None:
    config = OperatorConfig(
        trainer_image="trainer:default",
        trainer_service_account_annotations={"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/trainer"},
    )
    kube = FakeKube(stored_ftj())
    body = kube.get_finetunejob("ml", "demo")
    assert body is not None
    reconcile.launch(body, config, kube=kube)
    account = kube.objects[("ServiceAccount", "demo-trainer")]
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/trainer"}
