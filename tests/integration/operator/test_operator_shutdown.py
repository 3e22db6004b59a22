"""SIGTERM stops the operator: exit 0 within a correctness bound, the leader's Lease released."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from operator_api import Api
from test_operator_lifecycle import MakeFtj, phase_is

from kubetune_dev.operator_process import OPERATOR_NAMESPACE, OperatorProcess, eventually

pytestmark = pytest.mark.integration

LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NAMESPACE}/leases/kubetune-operator"
EXIT_BOUND_SECONDS = 20  # correctness, not speed: before the fix the process never exited


def test_sigterm_exits_zero_and_releases_the_lease(
    api: Api, namespace: str, make_ftj: MakeFtj, operator_process: OperatorProcess
) -> None:
    make_ftj("finished")
    eventually(phase_is(api, namespace, "finished", "Succeeded"), timeout=60, what="Succeeded")
    make_ftj("inflight", {"kwok.kubetune.io/run-seconds": "30"})
    eventually(phase_is(api, namespace, "inflight", "Running"), timeout=60, what="Running")
    assert api.get(LEASE_PATH)["spec"]["holderIdentity"] == "primary"
    leaderships = operator_process.log().count("leading as primary")
    process = operator_process.process
    assert process is not None and process.poll() is None
    try:
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=EXIT_BOUND_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"operator still running {EXIT_BOUND_SECONDS}s after SIGTERM; log {operator_process.log_path}"
            )
        elapsed = time.monotonic() - started
        assert returncode == 0, operator_process.log()[-3000:]
        print(f"operator exited {elapsed:.1f}s after SIGTERM")
        spec = api.get(LEASE_PATH)["spec"]
        assert not spec.get("holderIdentity"), spec
        assert "released lease" in operator_process.log()
    finally:
        operator_process.start()  # later tests expect a running leader
        eventually(
            lambda: operator_process.log().count("leading as primary") > leaderships, what="leadership again"
        )
    # The restarted leader picks the job up again and finishes it.
    eventually(phase_is(api, namespace, "inflight", "Succeeded"), timeout=90, what="Succeeded after restart")
