"""The stack configuration loader: documented defaults load, bad values fail naming their key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kubetune_infra.config import ConfigError, PlatformConfig, config_keys, load_platform_config

INFRA = Path(__file__).resolve().parents[3] / "infra"


def _load(region: str | None = "us-west-2", **values: str) -> PlatformConfig:
    return load_platform_config(values, region=region)


def test_defaults_scale_gpus_from_zero() -> None:
    config = _load()
    assert config.gpu_node_min_count == 0
    assert config.gpu_node_max_count >= 1
    assert config.trainer_namespaces == ["default"]


def test_the_example_stack_file_is_valid() -> None:
    settings = yaml.safe_load((INFRA / "Pulumi.dev.yaml").read_text())["config"]
    region = settings.pop("aws:region")
    values = {key.removeprefix("kubetune:"): str(value) for key, value in settings.items()}
    config = load_platform_config(values, region=region)
    assert config.bucket_prefix == "kubetune-dev"


def test_every_key_is_documented_in_the_readme() -> None:
    readme = (INFRA / "README.md").read_text()
    documented = set(re.findall(r"^\| `kubetune:(\w+)`", readme, flags=re.MULTILINE))
    assert documented == set(config_keys())


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"trainerNamespaces": '["team-a", "team-b"]'}, ["team-a", "team-b"]),
        ({"trainerNamespaces": "team-a, team-b"}, ["team-a", "team-b"]),
        ({"gpuInstanceTypes": "p5.48xlarge"}, ["p5.48xlarge"]),
    ],
)
def test_lists_accept_json_or_commas(values: dict[str, str], expected: list[str]) -> None:
    config = _load(**values)
    assert expected in (config.trainer_namespaces, config.gpu_instance_types)


@pytest.mark.parametrize(
    ("region", "values", "message"),
    [
        (
            "us-west-2",
            {"gpuNodeMinCount": "-1"},
            r"kubetune:gpuNodeMinCount: Input should be greater than or equal to 0",
        ),
        (
            "us-west-2",
            {"systemNodeMaxCount": "-3"},
            r"kubetune:systemNodeMaxCount: .*greater than or equal to 0",
        ),
        (
            "us-west-2",
            {"gpuNodeMinCount": "3", "gpuNodeMaxCount": "2"},
            r"kubetune:gpuNodeMaxCount: must be >= kubetune:gpuNodeMinCount \(got 2 < 3\)",
        ),
        ("us-west-2", {"gpuNodeMaxCount": "0"}, r"kubetune:gpuNodeMaxCount: must be at least 1"),
        ("us-west-2", {"systemNodeDesiredCount": "9"}, r"kubetune:systemNodeDesiredCount: must lie between"),
        ("us-west-2", {"systemNodeMinCount": "0"}, r"kubetune:systemNodeMinCount: must be at least 1"),
        (
            "us-west-2",
            {"gpuNodeMaxCount": "many"},
            r"kubetune:gpuNodeMaxCount: Input should be a valid integer",
        ),
        ("uswest2", {}, r"aws:region: is not an AWS region name"),
        ("US-WEST-2", {}, r"aws:region: is not an AWS region name"),
        (None, {}, r"aws:region: is required"),
        ("us-west-2", {"vpcCidr": "10.0.0.0/8"}, r"kubetune:vpcCidr: must be a /16 to /20 network"),
        ("us-west-2", {"vpcCidr": "10.0.0.300/16"}, r"kubetune:vpcCidr: "),
        (
            "us-west-2",
            {"availabilityZoneCount": "1"},
            r"kubetune:availabilityZoneCount: .*greater than or equal to 2",
        ),
        (
            "us-west-2",
            {"gpuInstanceTypes": "h100"},
            r"kubetune:gpuInstanceTypes: 'h100' is not an EC2 instance type",
        ),
        (
            "us-west-2",
            {"gpuProduct": "NVIDIA H100"},
            r"kubetune:gpuProduct: must be a Kubernetes label value",
        ),
        (
            "us-west-2",
            {"gpuCapacityType": "spot"},
            r"kubetune:gpuCapacityType: Input should be 'ON_DEMAND' or 'SPOT'",
        ),
        (
            "us-west-2",
            {"bucketPrefix": "Kubetune_Data"},
            r"kubetune:bucketPrefix: String should match pattern",
        ),
        (
            "us-west-2",
            {"bucketPrefix": "a" * 30},
            r"kubetune:bucketPrefix: String should have at most 24 characters",
        ),
        (
            "us-west-2",
            {"trainerNamespaces": "Team_A"},
            r"kubetune:trainerNamespaces: String should match pattern",
        ),
        ("us-west-2", {"apiPublicAccessCidrs": "10.0.0.0/33"}, r"kubetune:apiPublicAccessCidrs: "),
        (
            "us-west-2",
            {"enableSharedFilesystem": "maybe"},
            r"kubetune:enableSharedFilesystem: Input should be a valid boolean",
        ),
        (
            "us-west-2",
            {"gpuNodeMax": "4"},
            r"kubetune:gpuNodeMax: unknown key; known keys: .*gpuNodeMaxCount",
        ),
        (
            # Gone: every FineTuneJob has its own `<job>-trainer` account, trusted by suffix.
            "us-west-2",
            {"trainerServiceAccount": "kubetune-trainer"},
            r"kubetune:trainerServiceAccount: unknown key; known keys: ",
        ),
    ],
)
def test_invalid_config_names_the_key(region: str | None, values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_platform_config(values, region=region)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        load_platform_config({"gpuNodeMinCount": "-1", "imageTag": "latest tag"}, region="mars-1")
    problems = str(error.value).splitlines()[1:]
    assert [":".join(p.strip().split(":")[:2]) for p in problems] == [
        "aws:region",
        "kubetune:gpuNodeMinCount",
        "kubetune:imageTag",
    ]
