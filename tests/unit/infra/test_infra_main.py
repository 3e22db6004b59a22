"""`infra/__main__.py` itself: stack config in, platform out, typos refused."""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from pathlib import Path

import pulumi
import pytest
from kubetune_infra.config import ConfigError
from pulumi.runtime import settings
from pulumi_harness import REGION, _EchoMocks

MAIN = Path(__file__).resolve().parents[3] / "infra" / "__main__.py"


@pytest.fixture
def stack_config() -> Iterator[dict[str, str]]:
    values: dict[str, str] = {"aws:region": REGION}
    yield values
    pulumi.runtime.set_all_config({})


def _run_main(values: dict[str, str]) -> None:
    pulumi.runtime.set_mocks(_EchoMocks(), project="kubetune", stack="unit", preview=False)
    pulumi.runtime.set_all_config(values)

    @pulumi.runtime.test
    def run() -> None:
        runpy.run_path(str(MAIN), run_name="__main__")

    run()


def test_main_reads_the_stack_config(stack_config: dict[str, str]) -> None:
    stack_config |= {"kubetune:gpuNodeMaxCount": "2", "kubetune:clusterName": "research"}
    _run_main(stack_config)
    registered = settings.get_monitor().get_registered_resources()  # type: ignore[union-attr]
    (gpu,) = [r for urn, r in registered.items() if urn.endswith("::research-cluster-gpu")]
    assert gpu.state["scalingConfig"] == {"minSize": 0, "desiredSize": 0, "maxSize": 2}


def test_main_refuses_a_misspelt_key_before_creating_anything(stack_config: dict[str, str]) -> None:
    stack_config["kubetune:gpuNodeMax"] = "2"
    with pytest.raises(ConfigError, match="kubetune:gpuNodeMax: unknown key"):
        _run_main(stack_config)
    assert settings.get_monitor().get_registered_resources() == {}  # type: ignore[union-attr]
