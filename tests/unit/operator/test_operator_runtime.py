"""Metrics names, configuration from the environment, Lease leader election."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubetune_operator import metrics
from kubetune_operator.config import OperatorConfig
from kubetune_operator.leader import LeaseElector
from prometheus_client import generate_latest

from kubetune_api import observability
from kubetune_api.trainer_contract import ProgressTarget


def test_every_operator_metric_name_is_exported() -> None:
    metrics.PHASES.set("ns", "job", "Running", 1.0)
    text = generate_latest().decode()
    for name in observability.OPERATOR_METRICS:
        # Counters keep their _total in the TYPE line in newer prometheus-client, drop it in older ones.
        assert re.search(rf"^# TYPE {name.removesuffix('_total')}(_total)? ", text, re.MULTILINE), name
    assert 'kubetune_finetunejobs{namespace="ns",phase="Running"} 1.0' in text
    metrics.PHASES.forget("ns", "job")
    text = generate_latest().decode()
    assert 'kubetune_finetunejobs{namespace="ns",phase="Running"} 0.0' in text
    assert 'kubetune_finetunejob_phase{name="job"' not in text


def test_config_from_env() -> None:
    config = OperatorConfig.from_env(
        {
            "KUBETUNE_TRAINER_IMAGE": "reg/trainer:2",
            "KUBETUNE_WATCH_NAMESPACES": "a, b",
            "KUBETUNE_PROGRESS_TARGET": "None",
            "KUBETUNE_ALLOWED_URI_SCHEMES": "s3,hf",
            "KUBETUNE_LEADER_ELECTION": "false",
            "POD_NAMESPACE": "ops",
            "POD_NAME": "op-0",
        }
    )
    assert (config.trainer_image, config.namespaces, config.progress_target) == (
        "reg/trainer:2",
        ("a", "b"),
        ProgressTarget.NONE,
    )
    assert config.allowed_uri_schemes == frozenset({"s3", "hf"})
    assert (config.leader_election, config.lease_namespace, config.identity) == (False, "ops", "op-0")
    assert OperatorConfig.from_env({}).namespaces == ()
    with pytest.raises(ValueError, match="gs"):
        OperatorConfig.from_env({"KUBETUNE_ALLOWED_URI_SCHEMES": "gs"})


def test_gpu_time_is_counted_in_seconds() -> None:
    counter = metrics.GPU_SECONDS_REQUESTED.labels("gpu-ns", "A100")
    before = counter._value.get()
    metrics.record_gpu_time("gpu-ns", "A100", gpus=4, seconds=1800)
    assert counter._value.get() - before == pytest.approx(7200.0)
    metrics.record_gpu_time("gpu-ns", "A100", gpus=0, seconds=1800)  # CPU-only job: nothing
    metrics.record_gpu_time("gpu-ns", "A100", gpus=2, seconds=-5)  # clock skew: never negative
    assert counter._value.get() - before == pytest.approx(7200.0)
    text = generate_latest().decode()
    assert 'kubetune_gpu_requested_seconds_total{gpu_product="A100",namespace="gpu-ns"}' in text
    assert "gpu_hours" not in text


ANNOTATIONS_ENV = "KUBETUNE_TRAINER_SERVICE_ACCOUNT_ANNOTATIONS"
IRSA_JSON = '{"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/t", "example.com/team": "ml"}'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {}),
        ("", {}),
        ("  ", {}),
        ("{}", {}),
        (
            IRSA_JSON,
            {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/t", "example.com/team": "ml"},
        ),
        ('{"plain-key_1.x": ""}', {"plain-key_1.x": ""}),
    ],
)
def test_trainer_service_account_annotations_from_env(value: str | None, expected: dict[str, str]) -> None:
    env = {} if value is None else {ANNOTATIONS_ENV: value}
    assert OperatorConfig.from_env(env).trainer_service_account_annotations == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("role-arn=x", rf"{ANNOTATIONS_ENV}: not valid JSON .*expected an object like"),
        ('["a"]', rf"{ANNOTATIONS_ENV}: expected a JSON object .*got list"),
        ('{"a": 1}', rf"{ANNOTATIONS_ENV}: 'a': the value must be a string, got int"),
        ('{"a": null}', r"'a': the value must be a string, got NoneType"),
        ('{"Bad_Prefix/x": "v"}', r"key 'Bad_Prefix/x': the prefix before '/' must be a DNS subdomain"),
        ('{"a/b/c": "v"}', r"key 'a/b/c': the prefix before '/' must be a DNS subdomain"),
        ('{"example.com/": "v"}', r"key 'example.com/': the name must be 1-63"),
        ('{"-x": "v"}', r"key '-x': the name must be 1-63"),
        ('{"' + "n" * 64 + '": "v"}', r"the name must be 1-63"),
        # Every problem at once.
        ('{"a": 1, "-x": "v"}', r"'a': the value must be a string, got int; key '-x': the name"),
    ],
)
def test_invalid_trainer_service_account_annotations_are_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorConfig.from_env({ANNOTATIONS_ENV: value})


class FakeLeases:
    class Conflict(Exception):
        pass

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        import copy

        return copy.deepcopy(self.lease)

    def create_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        if self.lease is not None:
            raise self.Conflict()
        return self._store(lease)

    def replace_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        if lease["metadata"].get("resourceVersion") != str(self.version):
            raise self.Conflict()
        return self._store(lease)

    def _store(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        lease["metadata"]["resourceVersion"] = str(self.version)
        self.lease = lease
        return lease


def test_lease_election_standby_takeover_and_release() -> None:
    leases = FakeLeases()
    now = [datetime(2026, 1, 1, tzinfo=UTC)]

    def elector(identity: str) -> LeaseElector:
        config = OperatorConfig(identity=identity, lease_duration_seconds=15)
        return LeaseElector(config, kube=leases, clock=lambda: now[0])

    a, b = elector("a"), elector("b")
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    now[0] += timedelta(seconds=10)
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    now[0] += timedelta(seconds=16)  # a stopped renewing
    assert b.try_acquire_or_renew() and not a.try_acquire_or_renew()
    assert leases.lease is not None and leases.lease["spec"]["leaseTransitions"] == 1
    b.release()
    assert a.try_acquire_or_renew()
