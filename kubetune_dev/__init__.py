"""Developer and test tooling: a real local Kubernetes control plane with kwok fake nodes.

Imports are lazy so that e.g. ``kubetune_dev.kwok_stages`` works without ``cryptography``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ControlPlane": "kubetune_dev.controlplane",
    "ControlPlaneError": "kubetune_dev.controlplane",
    "up": "kubetune_dev.controlplane",
    "down": "kubetune_dev.controlplane",
    "bin_dir": "kubetune_dev.binaries",
    "ensure_binaries": "kubetune_dev.binaries",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
