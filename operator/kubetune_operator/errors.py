"""Errors the reconcilers raise; handlers turn them into kopf.PermanentError / kopf.TemporaryError."""

from __future__ import annotations


class ReconcileError(Exception):
    """A problem worth a condition: `reason` is CamelCase, the message names the field."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SpecInvalid(ReconcileError):
    """The spec can never work as written (e.g. a URI scheme this cluster does not support)."""


class DependencyMissing(ReconcileError):
    """Something the spec refers to does not exist yet (a Secret, a PVC); it may appear later."""
