"""Fixtures for tests against the real local control plane (see kubetune_dev.controlplane).

One ControlPlane per session; each test gets a fresh namespace. Binaries come from
hack/build-kube-binaries.sh (a cold build takes many minutes: run it once beforehand, or set
KUBETUNE_BUILD_BINARIES=0 to skip these tests instead of building).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from kubetune_dev.binaries import BinariesError, ensure_binaries
from kubetune_dev.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pyproject.toml; repeated so the suite runs from any rootdir.
    config.addinivalue_line("markers", "integration: needs the local control plane")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        item.session.stash[_FAILED] = True
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def kube_binaries() -> dict[str, Path]:
    """The pinned binaries, built when missing unless KUBETUNE_BUILD_BINARIES=0 (then skipped)."""
    build = os.environ.get("KUBETUNE_BUILD_BINARIES", "1") != "0"
    try:
        return ensure_binaries(build=build)
    except BinariesError as error:
        if os.environ.get("CI"):
            raise  # CI must never skip the tests against the real control plane.
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest, kube_binaries: dict[str, Path]) -> Iterator[ControlPlane]:
    control_plane = ControlPlane(binaries=kube_binaries)
    control_plane.start()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"control plane up in {control_plane.startup_seconds:.1f}s "
            f"({control_plane.server}, state {control_plane.state_dir})"
        )
    previous = os.environ.get("KUBECONFIG")
    # Subprocesses (kubectl, helm, the operator) talk to this cluster.
    os.environ["KUBECONFIG"] = str(control_plane.kubeconfig)
    try:
        yield control_plane
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        if request.session.stash.get(_FAILED, False):
            control_plane.keep_state = True  # stop() logs where the component logs are
            if reporter is not None:
                reporter.write_line(f"control-plane logs kept in {control_plane.log_dir}")
        control_plane.stop()


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> None:
    """The committed CRDs, established."""
    control_plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


class Kubectl(Protocol):
    def __call__(
        self, *args: str, check: bool = ..., input: str | None = ..., timeout: float = ...
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """Run the pinned kubectl as cluster admin; returns the CompletedProcess."""

    def run(
        *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [
                str(control_plane.binaries["kubectl"]),
                f"--kubeconfig={control_plane.kubeconfig}",
                *args,
            ],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    return run


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards without waiting."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def apply(kubectl: Kubectl, namespace: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Create an object (a dict) in the test namespace and return it as the server stored it."""

    def create(manifest: dict[str, Any]) -> dict[str, Any]:
        result = kubectl(
            "create", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(manifest)
        )
        created: dict[str, Any] = json.loads(result.stdout)
        return created

    return create
