"""Wires the components into the whole platform; `__main__.py` and the tests both call this."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubetune_infra.addons import Addons
from kubetune_infra.cluster import Cluster
from kubetune_infra.config import PlatformConfig
from kubetune_infra.identity import Identity
from kubetune_infra.network import Network
from kubetune_infra.registries import Registries
from kubetune_infra.storage import Storage

DEFAULT_CHART_PATH = Path(__file__).resolve().parents[2] / "charts" / "kubetune"


@dataclass(frozen=True)
class Platform:
    network: Network
    cluster: Cluster
    storage: Storage
    registries: Registries
    identity: Identity
    addons: Addons


def build_platform(config: PlatformConfig, chart_path: Path = DEFAULT_CHART_PATH) -> Platform:
    name = config.cluster_name
    network = Network(
        f"{name}-network",
        cluster_name=name,
        vpc_cidr=config.vpc_cidr,
        availability_zone_count=config.availability_zone_count,
        nat_gateway_per_az=config.nat_gateway_per_az,
    )
    cluster = Cluster(f"{name}-cluster", config=config, network=network)
    storage = Storage(f"{name}-storage", config=config, network=network)
    registries = Registries(f"{name}-registries", cluster_name=name)
    identity = Identity(f"{name}-identity", config=config, cluster=cluster, storage=storage)
    addons = Addons(
        f"{name}-addons",
        config=config,
        chart_path=chart_path,
        cluster=cluster,
        identity=identity,
        storage=storage,
        registries=registries,
    )
    return Platform(network, cluster, storage, registries, identity, addons)
