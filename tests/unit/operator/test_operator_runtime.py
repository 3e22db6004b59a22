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
