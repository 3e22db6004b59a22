"""Fixtures for the chart tests: the real helm, promtool and Lua binaries, and rendering."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune_dev.binaries import bin_dir

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "kubetune"
RELEASE = "kubetune"
RELEASE_NAMESPACE = "kubetune"
KUBE_VERSION = "1.36.0"

Render = Callable[..., list[dict[str, Any]]]


def _require(path: Path | str | None, hint: str) -> str:
    if path is None or not Path(path).exists():
        pytest.skip(f"{hint} is not installed")
    return str(path)


@pytest.fixture(scope="session")
def helm() -> str:
    return _require(bin_dir() / "helm", "helm (bash hack/build-kube-binaries.sh)")


@pytest.fixture(scope="session")
def promtool() -> str:
    return _require(shutil.which("promtool"), "promtool (bash hack/install-system-deps.sh)")


def helm_template(
    helm: str, *args: str, values: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart; values are passed as a values file, like a user would."""
    command = [helm, "template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE]
    command += ["--kube-version", KUBE_VERSION, *args]
    return subprocess.run(
        [*command, "--values", "-"],
        input=yaml.safe_dump(values or {}),
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """Render with the given values and return the objects; fails the test on a helm error."""

    def run(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        result = helm_template(helm, values=values)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return run


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
