"""The stack configuration: every key, its type, its default and its limits in one place.

Pulumi hands config values over as strings; `load_platform_config` turns them into a typed,
validated `PlatformConfig` or raises one `ConfigError` that names every bad key, so a typo or
an impossible node count stops `pulumi preview` before anything is created.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

CONFIG_NAMESPACE = "kubetune"
REGION_KEY = "aws:region"

# Commercial, GovCloud and ISO partitions: us-west-2, eu-central-1, ap-southeast-4, us-gov-west-1.
_REGION_PATTERN = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
# Kubernetes label values: at most 63 characters, alphanumeric at both ends.
_LABEL_VALUE_PATTERN = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_INSTANCE_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
# An S3 bucket_prefix may be 37 characters; "-checkpoints-" (the longest suffix) takes 13.
_BUCKET_PREFIX_MAX = 37 - len("-checkpoints-")

NodeCount = Annotated[int, Field(ge=0, le=1000)]


class ConfigError(ValueError):
    """The stack configuration is invalid; the message names each offending key."""


def config_key(field_alias: str) -> str:
    """The fully qualified key a user types in `pulumi config set`."""
    return REGION_KEY if field_alias == "region" else f"{CONFIG_NAMESPACE}:{field_alias}"


class PlatformConfig(BaseModel):
    """Stack settings. Field names are the camelCase config keys in the `kubetune` namespace."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
    )

    region: str
    """AWS region (`aws:region`), e.g. us-west-2."""
    cluster_name: str = Field(default="kubetune", pattern=r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
    """EKS cluster name; also the prefix of every resource name."""
    kubernetes_version: str = Field(default="1.33", pattern=r"^1\.\d{2}$")
    """EKS control plane version (major.minor)."""
    vpc_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.42.0.0/16")
    """VPC address range, /16 to /20; split into one private and one public subnet per AZ."""
    availability_zone_count: int = Field(default=3, ge=2, le=6)
    """How many AZs the subnets (and the node groups) span; EKS needs at least two."""
    nat_gateway_per_az: bool = False
    """One NAT gateway per AZ (survives an AZ outage) instead of one shared (cheaper)."""
    api_public_access_cidrs: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"], min_length=1)
    """CIDRs allowed to reach the public Kubernetes API endpoint; narrow this to your office/VPN."""

    system_instance_types: list[str] = Field(default_factory=lambda: ["m6i.xlarge"], min_length=1)
    """Instance types of the system node group (operator, monitoring, add-ons)."""
    system_node_min_count: NodeCount = 2
    system_node_desired_count: NodeCount = 2
    system_node_max_count: NodeCount = 4
    system_node_disk_gib: int = Field(default=50, ge=20, le=16384)

    gpu_instance_types: list[str] = Field(default_factory=lambda: ["g6e.12xlarge"], min_length=1)
    """Instance types of the GPU node group; all must carry the GPU named by gpuProduct."""
    gpu_product: str = "NVIDIA-L40S"
    """Value of the nvidia.com/gpu.product node label, e.g. NVIDIA-H100-80GB-HBM3 for p5.48xlarge."""
    gpu_node_min_count: NodeCount = 0
    """0 lets the GPU node group scale to zero when no training runs."""
    gpu_node_max_count: NodeCount = 4
    gpu_capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    gpu_node_disk_gib: int = Field(default=200, ge=50, le=16384)
    """Root volume per GPU node: the trainer image and the Hugging Face cache live here."""

    bucket_prefix: str = Field(
        default="kubetune", pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=_BUCKET_PREFIX_MAX
    )
    """Prefix of the datasets, checkpoints and artifacts bucket names (AWS appends a unique suffix)."""
    checkpoint_retention_days: int = Field(default=30, ge=1, le=3650)
    """Checkpoint objects older than this are deleted."""
    noncurrent_version_retention_days: int = Field(default=30, ge=1, le=3650)
    """Overwritten or deleted object versions are kept this long in every bucket."""
    enable_shared_filesystem: bool = False
    """Create an encrypted EFS file system, the EFS CSI driver and a `kubetune-shared` StorageClass."""

    kubetune_namespace: str = Field(default="kubetune-system", pattern=_DNS_LABEL_PATTERN)
    """Namespace of the kubetune Helm release (the operator)."""
    operator_service_account: str = Field(default="kubetune-operator", pattern=_DNS_LABEL_PATTERN)
    trainer_namespaces: list[Annotated[str, Field(pattern=_DNS_LABEL_PATTERN)]] = Field(
        default_factory=lambda: ["default"], min_length=1
    )
    """Namespaces whose trainer pods may assume the trainer role (FineTuneJobs run in their own namespace):
    the role trusts every `*-trainer` ServiceAccount there, the per-job accounts the operator creates."""
    image_tag: str = Field(default="0.1.0", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    """Tag of the operator and trainer images to deploy (the repositories are immutable: push a new tag)."""
    enable_monitoring: bool = True
    """Install kube-prometheus-stack and turn on the chart's ServiceMonitor, alerts and dashboard."""
    device_plugin_chart_version: str = "0.17.1"
    cluster_autoscaler_chart_version: str = "9.46.0"
    kube_prometheus_stack_chart_version: str = "65.1.1"

    @field_validator(
        "api_public_access_cidrs",
        "system_instance_types",
        "gpu_instance_types",
        "trainer_namespaces",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        # `pulumi config set k '["a","b"]'` and `pulumi config set k a,b` both arrive as strings.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        if not _REGION_PATTERN.match(value):
            raise ValueError("is not an AWS region name like us-west-2 or eu-central-1")
        return value

    @field_validator("vpc_cidr")
    @classmethod
    def _check_vpc_size(cls, value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not 16 <= value.prefixlen <= 20:
            raise ValueError("must be a /16 to /20 network (room for a subnet per AZ and growth)")
        return value

    @field_validator("api_public_access_cidrs")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.IPv4Network(cidr)  # raises ValueError naming the bad CIDR
        return value

    @field_validator("system_instance_types", "gpu_instance_types")
    @classmethod
    def _check_instance_types(cls, value: list[str]) -> list[str]:
        for instance_type in value:
            if not _INSTANCE_TYPE_PATTERN.match(instance_type):
                raise ValueError(f"{instance_type!r} is not an EC2 instance type like g6e.12xlarge")
        return value

    @field_validator("gpu_product")
    @classmethod
    def _check_label_value(cls, value: str) -> str:
        if not value or not _LABEL_VALUE_PATTERN.match(value):
            raise ValueError("must be a Kubernetes label value (1-63 of A-Z a-z 0-9 - _ .)")
        return value


def _cross_field_problems(config: PlatformConfig) -> list[str]:
    def key(field: str) -> str:
        return config_key(to_camel(field))

    problems = []
    for pool in ("system", "gpu"):
        low, high = getattr(config, f"{pool}_node_min_count"), getattr(config, f"{pool}_node_max_count")
        if high < low:
            max_key, min_key = key(f"{pool}_node_max_count"), key(f"{pool}_node_min_count")
            problems.append(f"{max_key}: must be >= {min_key} (got {high} < {low})")
        if high == 0:
            problems.append(
                f"{key(f'{pool}_node_max_count')}: must be at least 1, or the pool can never run a pod"
            )
    desired = config.system_node_desired_count
    if not config.system_node_min_count <= desired <= config.system_node_max_count:
        problems.append(
            f"{key('system_node_desired_count')}: must lie between {key('system_node_min_count')} and "
            f"{key('system_node_max_count')} (got {desired})"
        )
    if config.system_node_min_count < 1:
        problems.append(
            f"{key('system_node_min_count')}: must be at least 1; the operator runs on system nodes"
        )
    return problems


def load_platform_config(values: Mapping[str, Any], region: str | None) -> PlatformConfig:
    """Validates raw config values (keys without the `kubetune:` namespace) and the AWS region.

    Raises ConfigError listing every invalid or unknown key by its full name.
    """
    raw = {key: value for key, value in values.items() if value is not None}
    problems: list[str] = []
    if region is None:
        problems.append(f"{REGION_KEY}: is required (pulumi config set aws:region us-west-2)")
    else:
        raw["region"] = region
    try:
        config = PlatformConfig.model_validate(raw)
    except ValidationError as error:
        known = sorted(f.alias or name for name, f in PlatformConfig.model_fields.items() if name != "region")
        for detail in error.errors():
            field = str(detail["loc"][0]) if detail["loc"] else "?"
            if detail["type"] == "extra_forbidden":
                problems.append(f"{config_key(field)}: unknown key; known keys: {', '.join(known)}")
            elif detail["type"] != "missing":
                message = detail["msg"].removeprefix("Value error, ")
                problems.append(f"{config_key(field)}: {message} (got {detail.get('input')!r})")
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(problems)) from None
    problems.extend(_cross_field_problems(config))
    if problems:
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(problems))
    return config


def config_keys() -> list[str]:
    """Every key in the `kubetune` namespace, for reading them from Pulumi config."""
    return [field.alias or name for name, field in PlatformConfig.model_fields.items() if name != "region"]
