"""Admin REST helpers shared by the operator tests (a plain module, so imports never depend on
which conftest pytest loaded last)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubetune_dev.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[3]
Manifest = dict[str, Any]


class Api:
    """Admin REST calls that must succeed (or return None on 404)."""

    def __init__(self, control_plane: ControlPlane) -> None:
        self.cp = control_plane

    def get(self, path: str) -> Manifest | None:
        status, body = self.cp.api("GET", path)
        if status == 404:
            return None
        assert status == 200, (path, status, body)
        return body

    def create(self, path: str, body: Manifest) -> Manifest:
        status, created = self.cp.api("POST", path, body)
        assert status == 201, (path, status, created)
        return created

    def ftj(self, namespace: str, name: str) -> Manifest | None:
        return self.get(f"/apis/kubetune.io/v1alpha1/namespaces/{namespace}/finetunejobs/{name}")
