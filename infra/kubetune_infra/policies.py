"""IAM policy documents as pure functions of ARNs, so tests can read every grant without AWS.

Each function returns a policy document dict; the components serialise it with json.dumps once the
ARNs resolve. Nothing here grants an action on "*" that could touch another team's data: S3
statements name the kubetune buckets, KMS statements name the storage key.
"""

from __future__ import annotations

from typing import Any

PolicyDocument = dict[str, Any]

AWS_MANAGED_POLICY = "arn:aws:iam::aws:policy/"
EKS_CLUSTER_POLICIES = (f"{AWS_MANAGED_POLICY}AmazonEKSClusterPolicy",)
EKS_NODE_POLICIES = (
    f"{AWS_MANAGED_POLICY}AmazonEKSWorkerNodePolicy",
    f"{AWS_MANAGED_POLICY}AmazonEKS_CNI_Policy",
    f"{AWS_MANAGED_POLICY}AmazonEC2ContainerRegistryReadOnly",
)
EFS_CSI_DRIVER_POLICIES = (f"{AWS_MANAGED_POLICY}service-role/AmazonEFSCSIDriverPolicy",)


def _document(*statements: dict[str, Any]) -> PolicyDocument:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def service_trust_policy(service: str) -> PolicyDocument:
    """Lets an AWS service (eks.amazonaws.com, ec2.amazonaws.com) assume the role."""
    return _document({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"})


def oidc_issuer_host_path(issuer_url: str) -> str:
    """IAM condition keys use the issuer without its scheme: oidc.eks.<region>.amazonaws.com/id/<id>."""
    return issuer_url.removeprefix("https://")


def service_account_subject(namespace: str, service_account: str) -> str:
    return f"system:serviceaccount:{namespace}:{service_account}"


def service_account_suffix_pattern(namespace: str, suffix: str) -> str:
    """IAM StringLike pattern for every service account in `namespace` whose name ends in `-<suffix>`.

    The namespace is a validated DNS label (no `*` or `?`), so the wildcard covers the name only.
    """
    return f"system:serviceaccount:{namespace}:*-{suffix}"


def irsa_trust_policy(
    oidc_provider_arn: str,
    issuer_url: str,
    subjects: list[str] | None = None,
    *,
    subject_patterns: list[str] | None = None,
) -> PolicyDocument:
    """IRSA: only tokens the cluster issued for STS, to exactly these service accounts (StringEquals)
    or to service accounts matching these patterns (StringLike), may assume the role."""
    if not subjects and not subject_patterns:
        raise ValueError("an IRSA trust policy needs subjects or subject patterns")
    issuer = oidc_issuer_host_path(issuer_url)
    string_equals: dict[str, Any] = {f"{issuer}:aud": "sts.amazonaws.com"}
    if subjects:
        string_equals[f"{issuer}:sub"] = sorted(subjects)
    condition: dict[str, Any] = {"StringEquals": string_equals}
    if subject_patterns:
        condition["StringLike"] = {f"{issuer}:sub": sorted(subject_patterns)}
    return _document(
        {
            "Effect": "Allow",
            "Principal": {"Federated": oidc_provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": condition,
        }
    )


def trainer_policy(
    datasets_bucket_arn: str, checkpoints_bucket_arn: str, artifacts_bucket_arn: str, storage_key_arn: str
) -> PolicyDocument:
    """Trainer pods read datasets and read/write checkpoints and artifacts (rotation deletes old ones)."""
    writable = [checkpoints_bucket_arn, artifacts_bucket_arn]
    return _document(
        {
            "Sid": "ListKubetuneBuckets",
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
            "Resource": [datasets_bucket_arn, *writable],
        },
        {
            "Sid": "ReadDatasets",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
            "Resource": [f"{datasets_bucket_arn}/*"],
        },
        {
            "Sid": "ReadWriteCheckpointsAndArtifacts",
            "Effect": "Allow",
            "Action": [
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": [f"{arn}/*" for arn in writable],
        },
        {
            # The buckets are SSE-KMS encrypted with this key; S3 calls KMS on the caller's behalf.
            "Sid": "UseStorageKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": [storage_key_arn],
        },
    )


def operator_policy(datasets_bucket_arn: str) -> PolicyDocument:
    """The operator only lists the datasets bucket: ContinuousPretrain counts new corpus shards."""
    return _document(
        {
            "Sid": "WatchCorpusShards",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [datasets_bucket_arn],
        }
    )


def cluster_autoscaler_policy(cluster_name: str) -> PolicyDocument:
    """Cluster Autoscaler: read-only discovery everywhere, scaling only of this cluster's node groups.

    The Describe calls do not support resource-level permissions, so they name "*"; the two calls
    that change capacity are limited by the tag EKS puts on every managed node group's ASG.
    """
    return _document(
        {
            "Sid": "DiscoverNodeGroups",
            "Effect": "Allow",
            "Action": [
                "autoscaling:DescribeAutoScalingGroups",
                "autoscaling:DescribeAutoScalingInstances",
                "autoscaling:DescribeLaunchConfigurations",
                "autoscaling:DescribeScalingActivities",
                "autoscaling:DescribeTags",
                "ec2:DescribeImages",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeLaunchTemplateVersions",
                "ec2:GetInstanceTypesFromInstanceRequirements",
                "eks:DescribeNodegroup",
            ],
            "Resource": ["*"],
        },
        {
            "Sid": "ScaleOwnNodeGroups",
            "Effect": "Allow",
            "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
            "Resource": ["*"],
            "Condition": {
                "StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}
            },
        },
    )


def tls_only_bucket_policy(bucket_arn: str) -> PolicyDocument:
    """Refuses plain-HTTP requests to the bucket."""
    return _document(
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, f"{bucket_arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    )
