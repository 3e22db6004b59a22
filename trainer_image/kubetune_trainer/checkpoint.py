"""Atomic, retained checkpoints: <checkpoint.uri>/step-00000042/.

A checkpoint is written into a hidden temporary directory and renamed into place only when
complete (on S3: every object first, the COMPLETE marker last), so a crash mid-write never
leaves a checkpoint that resume would trust. The newest K complete checkpoints are kept.
Each checkpoint records its owner (the job that wrote it) and when, in owner.json, so a run can
tell its own checkpoints from another job's that share the same prefix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .storage import Storage, join, local_path

COMPLETE_MARKER = "COMPLETE"
OWNER_FILE = "owner.json"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


class CheckpointStore:
    def __init__(
        self, uri: str, storage: Storage, keep: int, staging_root: Path, owner: dict[str, Any] | None = None
    ) -> None:
        self.uri = uri.rstrip("/")
        self.storage = storage
        self.keep = keep
        self.staging_root = staging_root
        self.owner_job = owner

    def _write_owner(self, directory: Path) -> None:
        written = datetime.now(UTC).isoformat(timespec="microseconds")
        (directory / OWNER_FILE).write_text(json.dumps({"job": self.owner_job, "writtenAt": written}))

    def save(self, step: int, write: Callable[[Path], None]) -> str:
        """Write a checkpoint with `write(directory)`; returns its URI once it is complete."""
        name = checkpoint_name(step)
        target_uri = join(self.uri, name)
        root = local_path(self.uri)
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
            temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
            write(temporary)
            self._write_owner(temporary)
            (temporary / COMPLETE_MARKER).write_text(str(step))
            _fsync_tree(temporary)
            final = root / name
            if final.exists():  # the same step again (e.g. SIGTERM right after a periodic save)
                retired = root / f".old-{name}-{os.getpid()}"
                final.rename(retired)
                temporary.rename(final)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                temporary.rename(final)
        else:
            self.staging_root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.staging_root))
            write(staging)
            self._write_owner(staging)
            self.storage.publish_dir(staging, target_uri)
            self.storage.write_bytes(join(target_uri, COMPLETE_MARKER), str(step).encode())
            shutil.rmtree(staging, ignore_errors=True)
        self.prune()
        return target_uri

    def complete_steps(self) -> list[int]:
        steps = []
        for name in self.storage.list_subdirs(self.uri):
            match = _NAME.match(name)
            if match and self.storage.exists(join(self.uri, name, COMPLETE_MARKER)):
                steps.append(int(match.group(1)))
        return sorted(steps)

    def owner(self, step: int) -> dict[str, Any] | None:
        """{"job": ..., "writtenAt": ISO time} of a checkpoint; None when unrecorded or unreadable."""
        uri = join(self.uri, checkpoint_name(step), OWNER_FILE)
        try:
            if not self.storage.exists(uri):
                return None
            owner = json.loads(self.storage.read_bytes(uri))
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def latest(self) -> tuple[int, Path] | None:
        """(step, local directory) of the newest complete checkpoint, downloaded if remote."""
        steps = self.complete_steps()
        if not steps:
            return None
        uri = join(self.uri, checkpoint_name(steps[-1]))
        directory = self.storage.materialize_dir(uri, self.staging_root / "download")
        return steps[-1], directory

    def prune(self) -> None:
        steps = self.complete_steps()
        for step in steps[: max(0, len(steps) - self.keep)]:
            self.storage.delete_prefix(join(self.uri, checkpoint_name(step)))
        root = local_path(self.uri)
        if root is not None and root.is_dir():
            # Leftovers of writers that died mid-checkpoint (never of this process's current write).
            for stale in root.glob(".tmp-step-*"):
                shutil.rmtree(stale, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    for file in directory.rglob("*"):
        if file.is_file():
            with file.open("rb") as handle:
                os.fsync(handle.fileno())
