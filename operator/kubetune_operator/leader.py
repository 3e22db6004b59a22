"""Leader election on a coordination.k8s.io Lease, the way client-go does it.

Only the replica holding the Lease runs kopf; a standby keeps trying and takes over when the
leader has not renewed for leaseDurationSeconds. kopf's own peering cannot do this: replicas
of equal priority all pause.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from . import kube as real_kube
from .config import OperatorConfig

logger = logging.getLogger(__name__)


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class LeaseElector:
    def __init__(
        self,
        config: OperatorConfig,
        *,
        kube: Any = real_kube,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.namespace = config.lease_namespace
        self.name = config.lease_name
        self.identity = config.identity
        self.duration = max(1, round(config.lease_duration_seconds))
        self._kube = kube
        self._clock = clock

    def try_acquire_or_renew(self) -> bool:
        """One round: True when this replica holds the Lease afterwards."""
        now = self._clock()
        lease = self._kube.get_lease(self.namespace, self.name)
        if lease is None:
            return self._write(self._kube.create_lease, self._new_lease(now))
        spec: dict[str, Any] = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity")
        renewed = _parse(spec.get("renewTime"))
        duration = int(spec.get("leaseDurationSeconds") or self.duration)
        expired = renewed is None or renewed + timedelta(seconds=duration) < now
        if holder and holder != self.identity and not expired:
            return False
        if holder != self.identity:
            logger.info("taking over lease %s/%s from %s", self.namespace, self.name, holder or "nobody")
            spec["acquireTime"] = _micro_time(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(
            holderIdentity=self.identity, leaseDurationSeconds=self.duration, renewTime=_micro_time(now)
        )
        return self._write(self._kube.replace_lease, lease)

    def release(self) -> None:
        """Give the Lease up on a clean shutdown so a standby takes over at once."""
        try:
            lease = self._kube.get_lease(self.namespace, self.name)
            if lease is None or lease.get("spec", {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity=None, renewTime=None, acquireTime=None)
            self._kube.replace_lease(lease)
        except Exception:
            logger.warning("could not release lease %s/%s", self.namespace, self.name, exc_info=True)

    def _new_lease(self, now: datetime) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.duration,
                "acquireTime": _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": 0,
            },
        }

    def _write(self, write: Callable[[dict[str, Any]], dict[str, Any]], lease: dict[str, Any]) -> bool:
        try:
            write(lease)
        except self._kube.Conflict:
            return False  # another replica wrote first
        return True
