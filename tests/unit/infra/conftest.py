"""Two mocked Pulumi runs shared by the infra tests: the documented defaults, and every optional
feature switched on (shared file system, NAT per AZ, several trainer namespaces, no monitoring)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from kubetune_infra.config import PlatformConfig, load_platform_config
from pulumi_harness import REGION, PlatformRun, run_platform


@pytest.fixture(scope="session", autouse=True)
def _event_loop_for_pulumi() -> Iterator[None]:
    """Pulumi's runtime asks asyncio for the current loop; a test that ran asyncio.run before
    (the operator's) leaves none set, so the mocked runs get a loop of their own."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture(scope="session")
def default_config() -> PlatformConfig:
    return load_platform_config({}, region=REGION)


@pytest.fixture(scope="session")
def full_config() -> PlatformConfig:
    return load_platform_config(
        {
            "enableSharedFilesystem": "true",
            "natGatewayPerAz": "true",
            "availabilityZoneCount": "2",
            "trainerNamespaces": "team-a,team-b",
            "enableMonitoring": "false",
            "gpuProduct": "NVIDIA-H100-80GB-HBM3",
            "gpuInstanceTypes": '["p5.48xlarge"]',
            "gpuNodeMaxCount": "8",
        },
        region=REGION,
    )


@pytest.fixture(scope="session")
def default_run(default_config: PlatformConfig) -> PlatformRun:
    return run_platform(default_config)


@pytest.fixture(scope="session")
def full_run(full_config: PlatformConfig) -> PlatformRun:
    return run_platform(full_config)


@pytest.fixture(scope="session", params=["default", "full"])
def any_run(request: pytest.FixtureRequest) -> PlatformRun:
    run: PlatformRun = request.getfixturevalue(f"{request.param}_run")
    return run
