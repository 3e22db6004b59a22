"""Headless Service giving multi-node trainer pods stable DNS names for the torchrun rendezvous."""

from __future__ import annotations

from typing import Any

from kubetune_api import labels
from kubetune_api.finetunejob import FineTuneJob

from .common import RENDEZVOUS_PORT, child_metadata, rendezvous_service_name


def rendezvous_service(ftj: FineTuneJob) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(ftj, rendezvous_service_name(ftj.name), "rendezvous"),
        "spec": {
            "clusterIP": "None",
            # Rank 0 must be resolvable before its readiness matters: torchrun waits for all peers.
            "publishNotReadyAddresses": True,
            "selector": labels.selector_labels(ftj.name),
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}],
        },
    }
