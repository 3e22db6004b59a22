"""The resource graph: every expected resource exists, in the expected number, under its component."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter

import pytest
from kubetune_infra.network import plan_subnets
from pulumi_harness import COMPONENT_TYPES, ZONES, PlatformRun

PER_BUCKET = (
    "aws:s3/bucket:Bucket",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketVersioning:BucketVersioning",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "aws:s3/bucketPolicy:BucketPolicy",
)

DEFAULT_COUNTS = {
    # Network: 3 AZs, one shared NAT gateway.
    "aws:ec2/vpc:Vpc": 1,
    "aws:ec2/internetGateway:InternetGateway": 1,
    "aws:ec2/subnet:Subnet": 6,
    "aws:ec2/eip:Eip": 1,
    "aws:ec2/natGateway:NatGateway": 1,
    "aws:ec2/routeTable:RouteTable": 4,
    "aws:ec2/routeTableAssociation:RouteTableAssociation": 6,
    # Cluster.
    "aws:eks/cluster:Cluster": 1,
    "aws:eks/nodeGroup:NodeGroup": 2,
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": 1,
    # Control plane, node, operator, trainer and cluster-autoscaler roles.
    "aws:iam/role:Role": 5,
    "aws:iam/rolePolicy:RolePolicy": 3,
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": 4,
    # Secrets envelope key and storage key.
    "aws:kms/key:Key": 2,
    **dict.fromkeys(PER_BUCKET, 3),
    "aws:ecr/repository:Repository": 2,
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": 2,
    "pulumi:providers:kubernetes": 1,
    # Device plugin, cluster autoscaler, kube-prometheus-stack, kubetune.
    "kubernetes:helm.sh/v3:Release": 4,
    # No ServiceAccount: the operator creates one per FineTuneJob, annotated through the chart.
    **dict.fromkeys(COMPONENT_TYPES, 1),
}

FULL_COUNTS = {
    **DEFAULT_COUNTS,
    # 2 AZs, a NAT gateway in each.
    "aws:ec2/subnet:Subnet": 4,
    "aws:ec2/eip:Eip": 2,
    "aws:ec2/natGateway:NatGateway": 2,
    "aws:ec2/routeTable:RouteTable": 3,
    "aws:ec2/routeTableAssociation:RouteTableAssociation": 4,
    # EFS with its security group and a mount target per private subnet, the CSI driver and its role.
    "aws:ec2/securityGroup:SecurityGroup": 1,
    "aws:efs/fileSystem:FileSystem": 1,
    "aws:efs/mountTarget:MountTarget": 2,
    "aws:eks/addon:Addon": 1,
    "kubernetes:storage.k8s.io/v1:StorageClass": 1,
    "aws:iam/role:Role": 6,
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": 5,
    # No kube-prometheus-stack.
    "kubernetes:helm.sh/v3:Release": 3,
}


@pytest.mark.parametrize(("run_name", "expected"), [("default", DEFAULT_COUNTS), ("full", FULL_COUNTS)])
def test_resource_counts_by_type(
    run_name: str, expected: dict[str, int], request: pytest.FixtureRequest
) -> None:
    run: PlatformRun = request.getfixturevalue(f"{run_name}_run")
    assert dict(Counter(r.type for r in run.resources)) == expected


def test_components_are_top_level_and_every_resource_has_a_component_parent(any_run: PlatformRun) -> None:
    for resource in any_run.resources:
        if resource.type in COMPONENT_TYPES:
            assert resource.parent_type == "pulumi:pulumi:Stack", resource.urn
        else:
            assert resource.parent_type in COMPONENT_TYPES, resource.urn


@pytest.mark.parametrize(
    ("type_token", "component"),
    [
        ("aws:ec2/vpc:Vpc", "kubetune:infra:Network"),
        ("aws:eks/nodeGroup:NodeGroup", "kubetune:infra:Cluster"),
        ("aws:s3/bucket:Bucket", "kubetune:infra:Storage"),
        ("aws:ecr/repository:Repository", "kubetune:infra:Registries"),
        ("aws:iam/rolePolicy:RolePolicy", "kubetune:infra:Identity"),
        ("kubernetes:helm.sh/v3:Release", "kubetune:infra:Addons"),
    ],
)
def test_resources_live_in_their_component(default_run: PlatformRun, type_token: str, component: str) -> None:
    assert {r.parent_type for r in default_run.of_type(type_token)} == {component}


def test_helm_releases_use_the_cluster_provider(default_run: PlatformRun) -> None:
    releases = {r.inputs["name"]: r for r in default_run.of_type("kubernetes:helm.sh/v3:Release")}
    assert set(releases) == {
        "nvidia-device-plugin",
        "cluster-autoscaler",
        "kube-prometheus-stack",
        "kubetune",
    }
    assert releases["kubetune"].inputs["chart"] == "charts/kubetune"
    for release in releases.values():
        if release.inputs["name"] != "kubetune":
            assert release.inputs["version"], "third-party charts are pinned to a version"


def test_kubeconfig_is_a_secret_that_authenticates_with_aws_credentials(default_run: PlatformRun) -> None:
    assert default_run.outputs["kubeconfig_is_secret"] is True
    kubeconfig = json.loads(default_run.outputs["kubeconfig"])
    assert kubeconfig["clusters"][0]["cluster"]["server"].startswith("https://")
    exec_config = kubeconfig["users"][0]["user"]["exec"]
    assert exec_config["command"] == "aws"
    assert exec_config["args"][:4] == ["eks", "get-token", "--cluster-name", "kubetune"]


def test_subnets_span_the_requested_zones_inside_the_vpc(default_run: PlatformRun) -> None:
    subnets = default_run.of_type("aws:ec2/subnet:Subnet")
    vpc = ipaddress.IPv4Network(default_run.of_type("aws:ec2/vpc:Vpc")[0].inputs["cidrBlock"])
    networks = [ipaddress.IPv4Network(s.inputs["cidrBlock"]) for s in subnets]
    assert all(network.subnet_of(vpc) for network in networks)
    assert not any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])
    assert {s.inputs["availabilityZone"] for s in subnets} == set(ZONES[:3])
    private = [s for s in subnets if "kubernetes.io/role/internal-elb" in s.inputs["tags"]]
    public = [s for s in subnets if "kubernetes.io/role/elb" in s.inputs["tags"]]
    assert len(private) == len(public) == 3
    assert all(s.inputs["tags"]["kubernetes.io/cluster/kubetune"] == "shared" for s in subnets)


def test_node_groups_run_in_private_subnets_only(default_run: PlatformRun) -> None:
    private_ids = {
        f"{s.name}-id"
        for s in default_run.of_type("aws:ec2/subnet:Subnet")
        if "kubernetes.io/role/internal-elb" in s.inputs["tags"]
    }
    for node_group in default_run.of_type("aws:eks/nodeGroup:NodeGroup"):
        assert set(node_group.inputs["subnetIds"]) == private_ids


@pytest.mark.parametrize("vpc", ["10.0.0.0/16", "172.16.0.0/20"])
def test_subnet_plan_fits_six_zones_without_overlap(vpc: str) -> None:
    network = ipaddress.IPv4Network(vpc)
    plan = plan_subnets(network, [f"zone-{i}" for i in range(6)])
    blocks = [ipaddress.IPv4Network(c) for p in plan for c in (p.private_cidr, p.public_cidr)]
    assert all(block.subnet_of(network) for block in blocks)
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])
    # Private subnets hold the pods (one VPC address each): each is 8x a public one.
    assert (
        ipaddress.IPv4Network(plan[0].private_cidr).num_addresses
        == 8 * ipaddress.IPv4Network(plan[0].public_cidr).num_addresses
    )
