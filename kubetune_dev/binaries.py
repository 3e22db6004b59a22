"""Locate (and if needed build) the pinned control-plane binaries.

The binaries are built by ``hack/build-kube-binaries.sh`` from the Go module proxy into a
cache directory outside the repo; this module only asks the script where they are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-kube-binaries.sh"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)


class BinariesError(RuntimeError):
    """The binaries are missing and could not be built."""


def _script_env() -> dict[str, str]:
    env = dict(os.environ)
    # The script needs `go`; the image installs it outside PATH.
    if shutil.which("go") is None and Path("/usr/local/go/bin/go").exists():
        env["PATH"] = f"{env.get('PATH', '')}:/usr/local/go/bin"
    return env


def bin_dir() -> Path:
    """Where the pinned binaries live (they may not be built yet)."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"],
        check=True,
        capture_output=True,
        text=True,
        env=_script_env(),
    )
    return Path(result.stdout.strip().splitlines()[-1])


def ensure_binaries(build: bool = True) -> dict[str, Path]:
    """Return ``{name: path}`` for every binary, building them first if needed.

    A warm run only checks versions (about a second); a cold build takes many minutes,
    so callers that must not build (e.g. a quick unit-test run) pass ``build=False`` and
    get a BinariesError instead.
    """
    args = ["bash", str(BUILD_SCRIPT)] + ([] if build else ["--check"])
    result = subprocess.run(args, capture_output=True, text=True, env=_script_env())
    if result.returncode != 0:
        hint = "" if build else f" (build them with {BUILD_SCRIPT})"
        raise BinariesError(f"control-plane binaries unavailable{hint}:\n{result.stderr[-4000:]}")
    directory = Path(result.stdout.strip().splitlines()[-1])
    return {name: directory / name for name in BINARIES}
