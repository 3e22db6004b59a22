"""The Argo CD health checks in deploy/argocd/, run by real Lua interpreters against objects
in every phase. Argo CD runs them with gopher-lua (Lua 5.1) and a global `obj`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kubetune_api import conditions
from kubetune_api.finetunejob import Phase

from .conftest import REPO

ARGOCD = REPO / "deploy" / "argocd"
INTERPRETERS = [name for name in ("lua5.1", "lua5.4") if shutil.which(name)]


@pytest.fixture(params=["lua5.1", "lua5.4"])
def lua(request: pytest.FixtureRequest) -> str:
    if request.param not in INTERPRETERS:
        pytest.skip(f"{request.param} is not installed (bash hack/install-system-deps.sh)")
    return str(request.param)


def lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid Lua escapes for this text
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    return "{" + ", ".join(f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"


def health(lua: str, script: Path, obj: dict[str, Any]) -> tuple[str, str]:
    """Run the health script the way Argo CD does: `obj` set, the script's return value read."""
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local hs = (function()\n{script.read_text()}\nend)()\n"
        'io.write(hs.status, "\\t", hs.message or "")\n'
    )
    result = subprocess.run([lua, "-"], input=program, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    status, message = result.stdout.split("\t", 1)
    return status, message


def finetunejob(
    phase: str | None, generation: int = 1, observed: int | None = 1, **status: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "j", "generation": generation},
        "spec": {},
    }
    if phase is not None:
        obj["status"] = {"phase": phase, "observedGeneration": observed, **status}
    return obj


@pytest.mark.parametrize(
    ("obj", "status", "message"),
    [
        (finetunejob(None), "Progressing", "Waiting for the operator to accept the job"),
        (finetunejob(Phase.PENDING), "Progressing", "Pending"),
        (finetunejob(Phase.VALIDATING, message="checking datasets"), "Progressing", "checking datasets"),
        (finetunejob(Phase.QUEUED, message="waiting for 8 GPUs"), "Progressing", "waiting for 8 GPUs"),
        (
            finetunejob(Phase.RUNNING, message="step 50/200", progress={"percent": 25.0}),
            "Progressing",
            "step 50/200 (25%)",
        ),
        (finetunejob(Phase.SUCCEEDED, message="adapter saved"), "Healthy", "adapter saved"),
        (
            finetunejob(Phase.FAILED, message="DataError: 40% bad records"),
            "Degraded",
            "DataError: 40% bad records",
        ),
        (finetunejob(Phase.SUSPENDED), "Suspended", "Suspended"),
        # An edited spec the operator has not seen yet: its old Succeeded says nothing.
        (
            finetunejob(Phase.SUCCEEDED, generation=2, observed=1),
            "Progressing",
            "Waiting for the operator to observe generation 2",
        ),
    ],
)
def test_finetunejob_health(lua: str, obj: dict[str, Any], status: str, message: str) -> None:
    assert health(lua, ARGOCD / "finetunejob-health.lua", obj) == (status, message)


def test_every_finetunejob_phase_is_mapped(lua: str) -> None:
    expected = {Phase.SUCCEEDED: "Healthy", Phase.FAILED: "Degraded", Phase.SUSPENDED: "Suspended"}
    for phase in Phase:
        status, _ = health(lua, ARGOCD / "finetunejob-health.lua", finetunejob(phase))
        assert status == expected.get(phase, "Progressing"), phase


def condition(type_: str, status: str, reason: str = "Reason", message: str = "") -> dict[str, str]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def cpt(status: dict[str, Any] | None, suspend: bool = False, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ContinuousPretrain",
        "metadata": {"name": "c", "generation": generation},
        "spec": {"suspend": suspend},
    }
    if status is not None:
        obj["status"] = {"observedGeneration": 1, **status}
    return obj


@pytest.mark.parametrize(
    ("obj", "status", "message"),
    [
        (cpt(None), "Progressing", "Waiting for the operator to accept the ContinuousPretrain"),
        (cpt({"conditions": []}), "Progressing", "Waiting for the first run"),
        (
            cpt(
                {
                    "conditions": [condition(conditions.READY, "True")],
                    "currentModel": {"uri": "s3://m", "generation": 3},
                }
            ),
            "Healthy",
            "Serving generation 3",
        ),
        (
            cpt(
                {
                    "conditions": [condition(conditions.READY, "True")],
                    "currentModel": {"uri": "s3://m", "generation": 3},
                    "activeRun": "c-run-4",
                }
            ),
            "Healthy",
            "Serving generation 3; run c-run-4 in progress",
        ),
        (
            cpt({"conditions": [condition(conditions.READY, "False", "RunFailed", "run c-run-4 failed")]}),
            "Degraded",
            "run c-run-4 failed",
        ),
        (
            cpt(
                {
                    "conditions": [
                        condition(conditions.READY, "True"),
                        condition(conditions.CORPUS_READABLE, "False", "AccessDenied"),
                    ]
                }
            ),
            "Degraded",
            "AccessDenied",
        ),
        (
            cpt({"conditions": [condition(conditions.READY, "True")]}, suspend=True),
            "Suspended",
            "Suspended: no new runs start",
        ),
        (
            cpt({"conditions": [condition(conditions.READY, "True")]}, generation=2),
            "Progressing",
            "Waiting for the operator to observe generation 2",
        ),
    ],
)
def test_continuouspretrain_health(lua: str, obj: dict[str, Any], status: str, message: str) -> None:
    assert health(lua, ARGOCD / "continuouspretrain-health.lua", obj) == (status, message)
