"""Object storage for datasets, checkpoints and artifacts, and an optional shared file system.

Every bucket is SSE-KMS encrypted with one customer-managed key, versioned, closed to the public,
TLS-only, and expires old versions; the checkpoints bucket also expires old checkpoints.
"""

from __future__ import annotations

import json

import pulumi_aws as aws
from pulumi import ComponentResource, Output, ResourceOptions

from kubetune_infra.config import PlatformConfig
from kubetune_infra.network import Network
from kubetune_infra.policies import tls_only_bucket_policy

BUCKET_PURPOSES = ("datasets", "checkpoints", "artifacts")
INCOMPLETE_UPLOAD_DAYS = 7


def lifecycle_rules(
    purpose: str, config: PlatformConfig
) -> list[aws.s3.BucketLifecycleConfigurationRuleArgsDict]:
    """Old versions go after noncurrentVersionRetentionDays everywhere; checkpoints themselves go after
    checkpointRetentionDays (a finished job's adapter and merged model live in the artifacts bucket)."""
    rule: aws.s3.BucketLifecycleConfigurationRuleArgsDict = {
        "id": f"expire-old-{purpose}-versions",
        "status": "Enabled",
        "filter": {"prefix": ""},
        "noncurrent_version_expiration": {"noncurrent_days": config.noncurrent_version_retention_days},
        "abort_incomplete_multipart_upload": {"days_after_initiation": INCOMPLETE_UPLOAD_DAYS},
    }
    if purpose == "checkpoints":
        rule["id"] = "expire-old-checkpoints"
        rule["expiration"] = {"days": config.checkpoint_retention_days}
    return [rule]


class Storage(ComponentResource):
    key_arn: Output[str]
    bucket_names: dict[str, Output[str]]
    bucket_arns: dict[str, Output[str]]
    file_system_id: Output[str] | None

    def __init__(
        self, name: str, *, config: PlatformConfig, network: Network, opts: ResourceOptions | None = None
    ) -> None:
        super().__init__("kubetune:infra:Storage", name, None, opts)
        child = ResourceOptions(parent=self)

        key = aws.kms.Key(
            f"{name}-key",
            description=f"Encryption of {config.cluster_name} datasets, checkpoints and artifacts",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=child,
        )
        self.key_arn = key.arn
        self.bucket_names = {}
        self.bucket_arns = {}
        for purpose in BUCKET_PURPOSES:
            bucket = self._bucket(name, purpose, key, config)
            self.bucket_names[purpose] = bucket.bucket
            self.bucket_arns[purpose] = bucket.arn

        self.file_system_id = None
        if config.enable_shared_filesystem:
            self.file_system_id = self._shared_file_system(name, key, network)

        self.register_outputs(
            {
                "keyArn": self.key_arn,
                "bucketNames": self.bucket_names,
                "fileSystemId": self.file_system_id,
            }
        )

    def _bucket(self, name: str, purpose: str, key: aws.kms.Key, config: PlatformConfig) -> aws.s3.Bucket:
        child = ResourceOptions(parent=self)
        resource_name = f"{name}-{purpose}"
        bucket = aws.s3.Bucket(
            resource_name,
            bucket_prefix=f"{config.bucket_prefix}-{purpose}-",  # AWS appends a globally unique suffix
            tags={"kubetune.io/purpose": purpose, "kubetune.io/cluster": config.cluster_name},
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            resource_name,
            bucket=bucket.id,
            rules=[
                {
                    "apply_server_side_encryption_by_default": {
                        "sse_algorithm": "aws:kms",
                        "kms_master_key_id": key.arn,
                    },
                    "bucket_key_enabled": True,  # one KMS call per object instead of per request
                }
            ],
            opts=child,
        )
        aws.s3.BucketVersioning(
            resource_name, bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=child
        )
        public_access_block = aws.s3.BucketPublicAccessBlock(
            resource_name,
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            resource_name, bucket=bucket.id, rules=lifecycle_rules(purpose, config), opts=child
        )
        aws.s3.BucketPolicy(
            resource_name,
            bucket=bucket.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(tls_only_bucket_policy(arn))),
            # S3 refuses policy changes while the public access block is being applied.
            opts=ResourceOptions(parent=self, depends_on=[public_access_block]),
        )
        return bucket

    def _shared_file_system(self, name: str, key: aws.kms.Key, network: Network) -> Output[str]:
        """Encrypted EFS reachable over NFS from inside the VPC only, with a mount target per AZ."""
        child = ResourceOptions(parent=self)
        security_group = aws.ec2.SecurityGroup(
            f"{name}-efs",
            vpc_id=network.vpc_id,
            description="NFS from inside the VPC to the kubetune shared file system",
            ingress=[
                {"protocol": "tcp", "from_port": 2049, "to_port": 2049, "cidr_blocks": [network.vpc_cidr]}
            ],
            opts=child,
        )
        file_system = aws.efs.FileSystem(
            f"{name}-shared",
            encrypted=True,
            kms_key_id=key.arn,
            performance_mode="generalPurpose",
            throughput_mode="elastic",
            lifecycle_policies=[{"transition_to_ia": "AFTER_30_DAYS"}],
            tags={"Name": f"{name}-shared"},
            opts=child,
        )
        for index, subnet_id in enumerate(network.private_subnet_ids):
            aws.efs.MountTarget(
                f"{name}-shared-{index}",
                file_system_id=file_system.id,
                subnet_id=subnet_id,
                security_groups=[security_group.id],
                opts=child,
            )
        return file_system.id
