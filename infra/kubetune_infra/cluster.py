"""EKS control plane, IRSA's OIDC provider, a system node group and a GPU node group that scales
from zero, labelled and tainted exactly as the operator's trainer pods select and tolerate."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pulumi
import pulumi_aws as aws
from pulumi import ComponentResource, Output, ResourceOptions

from kubetune_api.constants import (
    GPU_NODE_LABEL_KEY,
    GPU_NODE_LABEL_VALUE,
    GPU_PRODUCT_LABEL,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
)
from kubetune_infra.config import PlatformConfig
from kubetune_infra.network import Network
from kubetune_infra.policies import EKS_CLUSTER_POLICIES, EKS_NODE_POLICIES, service_trust_policy

# The EKS API spells taint effects in SCREAMING_SNAKE_CASE; Kubernetes in PascalCase.
_EKS_TAINT_EFFECTS = {
    "NoSchedule": "NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
}
NODE_POOL_LABEL = "kubetune.io/node-pool"


def eks_taint_effect(kubernetes_effect: str) -> str:
    """Converts a Kubernetes taint effect (NoSchedule) to the EKS node group form (NO_SCHEDULE)."""
    try:
        return _EKS_TAINT_EFFECTS[kubernetes_effect]
    except KeyError:
        raise ValueError(
            f"unknown taint effect {kubernetes_effect!r}; expected one of {sorted(_EKS_TAINT_EFFECTS)}"
        ) from None


def gpu_node_labels(gpu_product: str) -> dict[str, str]:
    """Labels on every GPU node. Set on the node group (not only by GPU feature discovery) so the
    Cluster Autoscaler knows them while the group is at zero and can pick it for a pending pod."""
    return {GPU_NODE_LABEL_KEY: GPU_NODE_LABEL_VALUE, GPU_PRODUCT_LABEL: gpu_product, NODE_POOL_LABEL: "gpu"}


def gpu_node_taint() -> aws.eks.NodeGroupTaintArgsDict:
    return {"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": eks_taint_effect(GPU_TAINT_EFFECT)}


def oidc_issuer(identities: Sequence[aws.eks.outputs.ClusterIdentity]) -> str:
    """The cluster's OIDC issuer URL (EKS always reports one identity with one OIDC issuer)."""
    oidcs = identities[0].oidcs
    issuer = oidcs[0].issuer if oidcs else None
    if not issuer:
        raise ValueError("the EKS cluster reports no OIDC issuer")
    return issuer


def kubeconfig_document(cluster_name: str, endpoint: str, certificate_authority: str, region: str) -> str:
    """A kubeconfig that authenticates through `aws eks get-token` with the caller's AWS credentials."""
    user = f"{cluster_name}-aws"
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster_name,
                    "cluster": {"server": endpoint, "certificate-authority-data": certificate_authority},
                }
            ],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
            "current-context": cluster_name,
            "users": [
                {
                    "name": user,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region],
                            "interactiveMode": "Never",
                        }
                    },
                }
            ],
        },
        indent=2,
    )


class Cluster(ComponentResource):
    name: Output[str]
    kubeconfig: Output[str]
    oidc_provider_arn: Output[str]
    oidc_issuer_url: Output[str]
    node_role_arn: Output[str]

    def __init__(
        self, name: str, *, config: PlatformConfig, network: Network, opts: ResourceOptions | None = None
    ) -> None:
        super().__init__("kubetune:infra:Cluster", name, None, opts)
        child = ResourceOptions(parent=self)

        secrets_key = aws.kms.Key(
            f"{name}-secrets",
            description=f"Envelope encryption of Kubernetes Secrets in {config.cluster_name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=child,
        )
        control_plane_role, control_plane_policies = self._role(
            f"{name}-control-plane", "eks.amazonaws.com", EKS_CLUSTER_POLICIES
        )
        cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=config.cluster_name,
            version=config.kubernetes_version,
            role_arn=control_plane_role.arn,
            vpc_config={
                "subnet_ids": [*network.private_subnet_ids, *network.public_subnet_ids],
                "endpoint_private_access": True,
                "endpoint_public_access": True,
                "public_access_cidrs": config.api_public_access_cidrs,
            },
            # Access entries instead of the aws-auth ConfigMap; whoever runs `pulumi up` becomes admin.
            access_config={"authentication_mode": "API", "bootstrap_cluster_creator_admin_permissions": True},
            encryption_config={"provider": {"key_arn": secrets_key.arn}, "resources": ["secrets"]},
            enabled_cluster_log_types=["api", "audit", "authenticator"],
            opts=ResourceOptions(parent=self, depends_on=control_plane_policies),
        )
        issuer_url = cluster.identities.apply(oidc_issuer)
        oidc_provider = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc", url=issuer_url, client_id_lists=["sts.amazonaws.com"], opts=child
        )

        node_role, node_policies = self._role(f"{name}-node", "ec2.amazonaws.com", EKS_NODE_POLICIES)
        self.system_node_group = aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=cluster.name,
            node_group_name_prefix=f"{config.cluster_name}-system-",
            node_role_arn=node_role.arn,
            subnet_ids=network.private_subnet_ids,
            ami_type="AL2023_x86_64_STANDARD",
            instance_types=config.system_instance_types,
            disk_size=config.system_node_disk_gib,
            scaling_config={
                "min_size": config.system_node_min_count,
                "desired_size": config.system_node_desired_count,
                "max_size": config.system_node_max_count,
            },
            labels={NODE_POOL_LABEL: "system"},
            update_config={"max_unavailable": 1},
            opts=ResourceOptions(
                parent=self,
                depends_on=node_policies,
                ignore_changes=["scalingConfig.desiredSize"],  # owned by the autoscaler after creation
            ),
        )
        self.gpu_node_group = aws.eks.NodeGroup(
            f"{name}-gpu",
            cluster_name=cluster.name,
            node_group_name_prefix=f"{config.cluster_name}-gpu-",
            node_role_arn=node_role.arn,
            subnet_ids=network.private_subnet_ids,
            ami_type="AL2023_x86_64_NVIDIA",  # NVIDIA driver and container toolkit preinstalled
            instance_types=config.gpu_instance_types,
            capacity_type=config.gpu_capacity_type,
            disk_size=config.gpu_node_disk_gib,
            scaling_config={
                "min_size": config.gpu_node_min_count,
                "desired_size": config.gpu_node_min_count,
                "max_size": config.gpu_node_max_count,
            },
            labels=gpu_node_labels(config.gpu_product),
            taints=[gpu_node_taint()],
            update_config={"max_unavailable": 1},
            opts=ResourceOptions(
                parent=self, depends_on=node_policies, ignore_changes=["scalingConfig.desiredSize"]
            ),
        )

        self.name = cluster.name
        self.oidc_provider_arn = oidc_provider.arn
        self.oidc_issuer_url = issuer_url
        self.node_role_arn = node_role.arn
        self.kubeconfig = Output.secret(
            Output.all(cluster.name, cluster.endpoint, cluster.certificate_authority.data).apply(
                lambda parts: kubeconfig_document(parts[0], parts[1], parts[2], config.region)
            )
        )
        self.register_outputs(
            {
                "name": self.name,
                "kubeconfig": self.kubeconfig,
                "oidcProviderArn": self.oidc_provider_arn,
                "systemNodeGroup": self.system_node_group.node_group_name,
                "gpuNodeGroup": self.gpu_node_group.node_group_name,
            }
        )

    def _role(
        self, name: str, service: str, managed_policy_arns: tuple[str, ...]
    ) -> tuple[aws.iam.Role, list[pulumi.Resource]]:
        """A service role and its policy attachments; users depend on the attachments because EKS
        checks the role's permissions when it creates the cluster or node group."""
        role = aws.iam.Role(
            name,
            assume_role_policy=json.dumps(service_trust_policy(service)),
            opts=ResourceOptions(parent=self),
        )
        attachments: list[pulumi.Resource] = [
            aws.iam.RolePolicyAttachment(
                f"{name}-{policy_arn.rsplit('/', 1)[-1]}",
                role=role.name,
                policy_arn=policy_arn,
                opts=ResourceOptions(parent=self),
            )
            for policy_arn in managed_policy_arns
        ]
        return role, attachments
