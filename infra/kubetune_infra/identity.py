"""IAM roles for service accounts (IRSA): each role trusts only the cluster's OIDC provider and
exactly the service accounts named here, and grants only what that component uses.

The trainer role is the one exception to exact names: the operator gives every FineTuneJob its own
ServiceAccount `<job>-trainer` (kubetune_api.labels.TRAINER_SERVICE_ACCOUNT_SUFFIX), so the role trusts
`system:serviceaccount:<namespace>:*-trainer` in each trainer namespace, and nothing outside them."""

from __future__ import annotations

import json

import pulumi_aws as aws
from pulumi import ComponentResource, Output, ResourceOptions

from kubetune_api.labels import TRAINER_SERVICE_ACCOUNT_SUFFIX
from kubetune_infra.cluster import Cluster
from kubetune_infra.config import PlatformConfig
from kubetune_infra.policies import (
    EFS_CSI_DRIVER_POLICIES,
    PolicyDocument,
    cluster_autoscaler_policy,
    irsa_trust_policy,
    operator_policy,
    service_account_subject,
    service_account_suffix_pattern,
    trainer_policy,
)
from kubetune_infra.storage import Storage

# Service accounts of the add-ons, as their Helm releases in Addons name them.
CLUSTER_AUTOSCALER_NAMESPACE = "kube-system"
CLUSTER_AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"
EFS_CSI_NAMESPACE = "kube-system"
EFS_CSI_SERVICE_ACCOUNT = "efs-csi-controller-sa"


class Identity(ComponentResource):
    operator_role_arn: Output[str]
    trainer_role_arn: Output[str]
    cluster_autoscaler_role_arn: Output[str]
    efs_csi_role_arn: Output[str] | None

    def __init__(
        self,
        name: str,
        *,
        config: PlatformConfig,
        cluster: Cluster,
        storage: Storage,
        opts: ResourceOptions | None = None,
    ) -> None:
        super().__init__("kubetune:infra:Identity", name, None, opts)
        self._cluster = cluster
        buckets = storage.bucket_arns

        self.operator_role_arn = self._service_account_role(
            f"{name}-operator",
            [service_account_subject(config.kubetune_namespace, config.operator_service_account)],
            inline_policy=buckets["datasets"].apply(operator_policy),
        )
        # One ServiceAccount per FineTuneJob, all named `...-trainer` (the operator guarantees the suffix).
        self.trainer_role_arn = self._service_account_role(
            f"{name}-trainer",
            subject_patterns=[
                service_account_suffix_pattern(namespace, TRAINER_SERVICE_ACCOUNT_SUFFIX)
                for namespace in config.trainer_namespaces
            ],
            inline_policy=Output.all(
                buckets["datasets"], buckets["checkpoints"], buckets["artifacts"], storage.key_arn
            ).apply(lambda arns: trainer_policy(*arns)),
        )
        self.cluster_autoscaler_role_arn = self._service_account_role(
            f"{name}-cluster-autoscaler",
            [service_account_subject(CLUSTER_AUTOSCALER_NAMESPACE, CLUSTER_AUTOSCALER_SERVICE_ACCOUNT)],
            inline_policy=cluster.name.apply(cluster_autoscaler_policy),
        )
        self.efs_csi_role_arn = None
        if config.enable_shared_filesystem:
            self.efs_csi_role_arn = self._service_account_role(
                f"{name}-efs-csi",
                [service_account_subject(EFS_CSI_NAMESPACE, EFS_CSI_SERVICE_ACCOUNT)],
                managed_policy_arns=EFS_CSI_DRIVER_POLICIES,
            )
        self.register_outputs(
            {
                "operatorRoleArn": self.operator_role_arn,
                "trainerRoleArn": self.trainer_role_arn,
                "clusterAutoscalerRoleArn": self.cluster_autoscaler_role_arn,
                "efsCsiRoleArn": self.efs_csi_role_arn,
            }
        )

    def _service_account_role(
        self,
        name: str,
        subjects: list[str] | None = None,
        *,
        subject_patterns: list[str] | None = None,
        inline_policy: Output[PolicyDocument] | None = None,
        managed_policy_arns: tuple[str, ...] = (),
    ) -> Output[str]:
        child = ResourceOptions(parent=self)
        trust = Output.all(self._cluster.oidc_provider_arn, self._cluster.oidc_issuer_url).apply(
            lambda parts: json.dumps(
                irsa_trust_policy(parts[0], parts[1], subjects, subject_patterns=subject_patterns)
            )
        )
        role = aws.iam.Role(name, assume_role_policy=trust, max_session_duration=3600, opts=child)
        if inline_policy is not None:
            aws.iam.RolePolicy(name, role=role.id, policy=inline_policy.apply(json.dumps), opts=child)
        for policy_arn in managed_policy_arns:
            aws.iam.RolePolicyAttachment(
                f"{name}-{policy_arn.rsplit('/', 1)[-1]}", role=role.name, policy_arn=policy_arn, opts=child
            )
        return role.arn
