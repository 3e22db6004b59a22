"""Runs the Pulumi program against `pulumi.runtime.set_mocks` and records every resource.

The mocks echo a resource's inputs back as its state and fill in the outputs other resources read
(ARNs, names, the cluster's OIDC issuer), so the recorded inputs are exactly what the program would
send to AWS. Each resource's URN carries its parent's type, which is how tests check parenting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from kubetune_infra.config import PlatformConfig
from kubetune_infra.platform import build_platform
from pulumi.runtime import settings

ACCOUNT = "123456789012"
REGION = "us-west-2"
ZONES = ["us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d"]
OIDC_ISSUER = "https://oidc.eks.us-west-2.amazonaws.com/id/0123456789ABCDEF"
COMPONENT_TYPES = {
    "kubetune:infra:Network",
    "kubetune:infra:Cluster",
    "kubetune:infra:Storage",
    "kubetune:infra:Registries",
    "kubetune:infra:Identity",
    "kubetune:infra:Addons",
}


@dataclass(frozen=True)
class RecordedResource:
    urn: str
    type: str
    name: str
    inputs: dict[str, Any]

    @property
    def parent_type(self) -> str | None:
        chain = self.urn.split("::")[2].split("$")
        return chain[-2] if len(chain) > 1 else None


@dataclass
class PlatformRun:
    resources: list[RecordedResource]
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_token: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name: str) -> RecordedResource:
        (match,) = [r for r in self.of_type(type_token) if r.name == name]
        return match

    def policy_documents(self) -> list[tuple[RecordedResource, dict[str, Any]]]:
        """Every IAM/S3 policy and trust document the program creates, parsed."""
        documents = []
        for resource in self.resources:
            for key in ("policy", "assumeRolePolicy"):
                text = resource.inputs.get(key)
                if isinstance(text, str) and text.lstrip().startswith("{") and "Statement" in text:
                    documents.append((resource, json.loads(text)))
        return documents


class _EchoMocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        name = args.name
        if args.typ == "aws:s3/bucket:Bucket":
            bucket = state.get("bucket") or f"{state['bucketPrefix']}20250101abcdef"
            state.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}")
            return bucket, state
        if args.typ == "aws:eks/cluster:Cluster":
            state.update(
                arn=f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/{state['name']}",
                endpoint="https://0123456789ABCDEF.gr7.us-west-2.eks.amazonaws.com",
                certificateAuthority={"data": "Y2VydGlmaWNhdGU="},
                identities=[{"oidcs": [{"issuer": OIDC_ISSUER}]}],
            )
        elif args.typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            state["arn"] = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{OIDC_ISSUER.removeprefix('https://')}"
        elif args.typ == "aws:iam/role:Role":
            state.update(arn=f"arn:aws:iam::{ACCOUNT}:role/{name}", name=name)
        elif args.typ == "aws:kms/key:Key":
            state["arn"] = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{name}"
        elif args.typ == "aws:ecr/repository:Repository":
            state["repositoryUrl"] = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{state['name']}"
        elif args.typ == "aws:eks/nodeGroup:NodeGroup":
            state["nodeGroupName"] = f"{state['nodeGroupNamePrefix']}0001"
        return f"{name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": ZONES, "zoneIds": [f"usw2-az{i}" for i in range(len(ZONES))]}
        raise AssertionError(f"the program made an unexpected call: {args.token}")


def run_platform(config: PlatformConfig, chart_path: Path = Path("charts/kubetune")) -> PlatformRun:
    """Builds the platform under mocks, waits for every registration, returns what was registered."""
    mocks = _EchoMocks()
    pulumi.runtime.set_mocks(mocks, project="kubetune", stack="unit", preview=False)
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def build() -> pulumi.Output[Any]:
        platform = build_platform(config, chart_path=chart_path)
        watched = {
            "kubeconfig": platform.cluster.kubeconfig,
            "trainer_role_arn": platform.identity.trainer_role_arn,
            "operator_role_arn": platform.identity.operator_role_arn,
            "bucket_names": pulumi.Output.all(**platform.storage.bucket_names),
            "bucket_arns": pulumi.Output.all(**platform.storage.bucket_arns),
            "storage_key_arn": platform.storage.key_arn,
            "repository_urls": pulumi.Output.all(**platform.registries.repository_urls),
            "kubeconfig_is_secret": pulumi.Output.from_input(platform.cluster.kubeconfig.is_secret()),
        }
        return pulumi.Output.all(**watched).apply(outputs.update)

    build()
    monitor = settings.get_monitor()
    resources = [
        RecordedResource(urn, urn.split("::")[2].split("$")[-1], urn.split("::")[3], dict(registration.state))
        for urn, registration in monitor.get_registered_resources().items()  # type: ignore[union-attr]
    ]
    return PlatformRun(resources, outputs)
