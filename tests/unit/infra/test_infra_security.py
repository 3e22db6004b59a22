"""Security properties of the generated infrastructure, read from the inputs sent to the providers."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubetune_infra.addons import device_plugin_values, kubetune_chart_values
from kubetune_infra.cluster import eks_taint_effect
from kubetune_infra.config import PlatformConfig
from kubetune_infra.policies import (
    EFS_CSI_DRIVER_POLICIES,
    EKS_CLUSTER_POLICIES,
    EKS_NODE_POLICIES,
    irsa_trust_policy,
)
from pulumi_harness import OIDC_ISSUER, PlatformRun

from kubetune_api import constants

REPO = Path(__file__).resolve().parents[3]
ISSUER = OIDC_ISSUER.removeprefix("https://")


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _allow_statements(run: PlatformRun) -> list[tuple[str, dict[str, Any]]]:
    return [
        (resource.name, statement)
        for resource, document in run.policy_documents()
        for statement in document["Statement"]
        if statement["Effect"] == "Allow"
    ]


def _role_policy(run: PlatformRun, role: str) -> dict[str, Any]:
    return json.loads(run.one("aws:iam/rolePolicy:RolePolicy", f"kubetune-identity-{role}").inputs["policy"])


def _trust_conditions(run: PlatformRun, role: str) -> dict[str, Any]:
    """The whole Condition block of the role's one trust statement (federated, web identity only)."""
    (statement,) = json.loads(
        run.one("aws:iam/role:Role", f"kubetune-identity-{role}").inputs["assumeRolePolicy"]
    )["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Federated": f"arn:aws:iam::123456789012:oidc-provider/{ISSUER}"}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    conditions: dict[str, Any] = statement["Condition"]
    return conditions


# --- storage -------------------------------------------------------------------------------------


def test_every_bucket_is_kms_encrypted_versioned_private_and_tls_only(any_run: PlatformRun) -> None:
    buckets = any_run.of_type("aws:s3/bucket:Bucket")
    assert len(buckets) == 3
    for bucket in buckets:
        bucket_id = bucket.inputs["bucket"]
        (encryption,) = [
            r
            for r in any_run.of_type(
                "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
            )
            if r.inputs["bucket"] == bucket_id
        ]
        (rule,) = encryption.inputs["rules"]
        assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
        assert (
            rule["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"] == any_run.outputs["storage_key_arn"]
        )

        (versioning,) = [
            r
            for r in any_run.of_type("aws:s3/bucketVersioning:BucketVersioning")
            if r.inputs["bucket"] == bucket_id
        ]
        assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"

        (block,) = [
            r
            for r in any_run.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
            if r.inputs["bucket"] == bucket_id
        ]
        flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        assert all(block.inputs[flag] is True for flag in flags)

        (policy,) = [
            r for r in any_run.of_type("aws:s3/bucketPolicy:BucketPolicy") if r.inputs["bucket"] == bucket_id
        ]
        (statement,) = json.loads(policy.inputs["policy"])["Statement"]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_storage_key_rotates(default_run: PlatformRun) -> None:
    assert all(key.inputs["enableKeyRotation"] is True for key in default_run.of_type("aws:kms/key:Key"))


def test_lifecycle_expires_old_checkpoints_and_old_versions(
    default_run: PlatformRun, default_config: PlatformConfig
) -> None:
    rules = {
        r.inputs["bucket"].split("-")[1]: r.inputs["rules"]
        for r in default_run.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    }
    assert set(rules) == {"datasets", "checkpoints", "artifacts"}
    for purpose, (rule,) in rules.items():
        assert rule["status"] == "Enabled"
        assert (
            rule["noncurrentVersionExpiration"]["noncurrentDays"]
            == default_config.noncurrent_version_retention_days
        )
        assert rule["abortIncompleteMultipartUpload"]["daysAfterInitiation"] > 0
        if purpose == "checkpoints":
            assert rule["expiration"]["days"] == default_config.checkpoint_retention_days
        else:
            assert "expiration" not in rule, f"{purpose} objects must never expire"


def test_shared_file_system_is_encrypted_and_reachable_only_from_the_vpc(full_run: PlatformRun) -> None:
    (file_system,) = full_run.of_type("aws:efs/fileSystem:FileSystem")
    assert file_system.inputs["encrypted"] is True
    assert file_system.inputs["kmsKeyId"] == full_run.outputs["storage_key_arn"]
    (security_group,) = full_run.of_type("aws:ec2/securityGroup:SecurityGroup")
    (rule,) = security_group.inputs["ingress"]
    assert (rule["fromPort"], rule["toPort"], rule["cidrBlocks"]) == (2049, 2049, ["10.42.0.0/16"])


# --- IAM -----------------------------------------------------------------------------------------


def test_no_policy_allows_every_action_on_every_resource(any_run: PlatformRun) -> None:
    statements = _allow_statements(any_run)
    trust = [(owner, s) for owner, s in statements if "Principal" in s]
    permissions = [(owner, s) for owner, s in statements if "Principal" not in s]
    assert len(trust) >= 5 and len(permissions) >= 5, "every trust policy and inline policy is parsed"
    for owner, statement in statements:
        actions = _as_list(statement["Action"])
        assert "NotAction" not in statement and "NotResource" not in statement, owner
        assert not any(action == "*" or action.endswith(":*") for action in actions), (owner, actions)
    for owner, statement in trust:
        assert statement["Principal"] != "*" and "AWS" not in statement["Principal"], owner
    for owner, statement in permissions:
        if "*" in _as_list(statement["Resource"]):
            # Only calls AWS cannot scope to a resource (Describe/Get), or calls limited by a tag condition.
            actions = _as_list(statement["Action"])
            readonly = all(a.split(":")[1].startswith(("Describe", "Get")) for a in actions)
            assert readonly or "Condition" in statement, (owner, actions)


def test_only_aws_managed_policies_that_eks_requires_are_attached(any_run: PlatformRun) -> None:
    allowed = set(EKS_CLUSTER_POLICIES + EKS_NODE_POLICIES + EFS_CSI_DRIVER_POLICIES)
    attached = {
        r.inputs["policyArn"] for r in any_run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    }
    assert attached <= allowed
    assert not any("FullAccess" in arn or "AdministratorAccess" in arn for arn in attached)


def test_trainer_policy_names_only_the_kubetune_buckets_and_storage_key(any_run: PlatformRun) -> None:
    arns = any_run.outputs["bucket_arns"]
    allowed = {arns[p] for p in arns} | {f"{arns[p]}/*" for p in arns} | {any_run.outputs["storage_key_arn"]}
    statements = _role_policy(any_run, "trainer")["Statement"]
    named = {resource for statement in statements for resource in _as_list(statement["Resource"])}
    assert named <= allowed
    writes = {"s3:PutObject", "s3:DeleteObject"}
    for statement in statements:
        if writes & set(statement["Action"]):
            assert set(statement["Resource"]) == {f"{arns['checkpoints']}/*", f"{arns['artifacts']}/*"}
    reads_datasets = [s for s in statements if f"{arns['datasets']}/*" in s["Resource"]]
    assert all(set(s["Action"]) <= {"s3:GetObject", "s3:GetObjectVersion"} for s in reads_datasets)


def test_operator_may_only_list_the_datasets_bucket(default_run: PlatformRun) -> None:
    (statement,) = _role_policy(default_run, "operator")["Statement"]
    assert statement["Action"] == ["s3:ListBucket"]
    assert statement["Resource"] == [default_run.outputs["bucket_arns"]["datasets"]]


def test_cluster_autoscaler_scales_only_this_clusters_node_groups(default_run: PlatformRun) -> None:
    scaling = [
        s
        for s in _role_policy(default_run, "cluster-autoscaler")["Statement"]
        if "autoscaling:SetDesiredCapacity" in s["Action"]
    ]
    (statement,) = scaling
    assert statement["Condition"] == {
        "StringEquals": {"aws:ResourceTag/k8s.io/cluster-autoscaler/kubetune": "owned"}
    }


@pytest.mark.parametrize(
    ("role", "subjects"),
    [
        ("operator", ["system:serviceaccount:kubetune-system:kubetune-operator"]),
        ("cluster-autoscaler", ["system:serviceaccount:kube-system:cluster-autoscaler"]),
    ],
)
def test_irsa_roles_trust_exactly_their_service_accounts(
    default_run: PlatformRun, role: str, subjects: list[str]
) -> None:
    assert _trust_conditions(default_run, role) == {
        "StringEquals": {f"{ISSUER}:sub": subjects, f"{ISSUER}:aud": "sts.amazonaws.com"}
    }


def _iam_string_like(pattern: str, value: str) -> bool:
    """IAM StringLike: `*` any run of characters, `?` one character, everything else literal."""
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


@pytest.mark.parametrize(
    ("run_name", "namespaces"), [("default", ["default"]), ("full", ["team-a", "team-b"])]
)
def test_trainer_role_trusts_only_per_job_trainer_accounts_in_the_trainer_namespaces(
    run_name: str, namespaces: list[str], request: pytest.FixtureRequest
) -> None:
    run: PlatformRun = request.getfixturevalue(f"{run_name}_run")
    conditions = _trust_conditions(run, "trainer")
    # The audience stays exact; only the subject is a pattern, one per listed namespace.
    assert conditions == {
        "StringEquals": {f"{ISSUER}:aud": "sts.amazonaws.com"},
        "StringLike": {f"{ISSUER}:sub": [f"system:serviceaccount:{ns}:*-trainer" for ns in namespaces]},
    }
    patterns = conditions["StringLike"][f"{ISSUER}:sub"]
    for namespace, pattern in zip(namespaces, patterns, strict=True):
        # The wildcard is confined to the name, before a literal `-trainer` suffix, in a listed namespace.
        prefix, _, name_pattern = pattern.rpartition(":")
        assert prefix == f"system:serviceaccount:{namespace}"
        assert "*" not in prefix and "?" not in prefix
        assert name_pattern == "*-trainer"
    trusted = [
        f"system:serviceaccount:{namespaces[0]}:demo-trainer",
        f"system:serviceaccount:{namespaces[-1]}:{'j' * 46}-68cbb514-trainer",  # a cut long job name
    ]
    refused = [
        f"system:serviceaccount:{namespaces[0]}:kubetune-operator",
        f"system:serviceaccount:{namespaces[0]}:default",
        f"system:serviceaccount:{namespaces[0]}:demo-trainer-x",
        f"system:serviceaccount:{namespaces[0]}:trainer",
        "system:serviceaccount:kube-system:demo-trainer",
        "system:serviceaccount:other-team:demo-trainer",
        f"system:serviceaccount:{namespaces[0]}x:demo-trainer",
    ]
    for subject in trusted:
        assert any(_iam_string_like(p, subject) for p in patterns), subject
    for subject in refused:
        assert not any(_iam_string_like(p, subject) for p in patterns), subject


def test_no_trust_policy_allows_any_principal(any_run: PlatformRun) -> None:
    for role in ("operator", "trainer", "cluster-autoscaler"):
        (statement,) = json.loads(
            any_run.one("aws:iam/role:Role", f"kubetune-identity-{role}").inputs["assumeRolePolicy"]
        )["Statement"]
        assert statement["Principal"] != "*" and "*" not in json.dumps(statement["Principal"]), role
        assert set(statement["Condition"]) <= {"StringEquals", "StringLike"}, role


def test_trainer_pods_get_the_role_through_the_operator_not_a_shared_account(full_run: PlatformRun) -> None:
    # No shared `kubetune-trainer` ServiceAccount any more: the chart's per-job accounts carry the role.
    assert full_run.of_type("kubernetes:core/v1:ServiceAccount") == []
    release = full_run.one("kubernetes:helm.sh/v3:Release", "kubetune-addons-kubetune")
    assert release.inputs["values"]["trainer"]["serviceAccountAnnotations"] == {
        "eks.amazonaws.com/role-arn": full_run.outputs["trainer_role_arn"]
    }


# --- cluster -------------------------------------------------------------------------------------


def test_kubernetes_secrets_are_envelope_encrypted_and_audited(default_run: PlatformRun) -> None:
    (cluster,) = default_run.of_type("aws:eks/cluster:Cluster")
    assert cluster.inputs["encryptionConfig"]["resources"] == ["secrets"]
    assert cluster.inputs["encryptionConfig"]["provider"]["keyArn"].startswith("arn:aws:kms:")
    assert "audit" in cluster.inputs["enabledClusterLogTypes"]
    assert cluster.inputs["accessConfig"]["authenticationMode"] == "API"


@pytest.mark.parametrize("run_name", ["default", "full"])
def test_gpu_node_group_is_tainted_and_labelled_from_the_shared_constants_and_scales_from_zero(
    run_name: str, request: pytest.FixtureRequest
) -> None:
    run: PlatformRun = request.getfixturevalue(f"{run_name}_run")
    config: PlatformConfig = request.getfixturevalue(f"{run_name}_config")
    gpu = run.one("aws:eks/nodeGroup:NodeGroup", "kubetune-cluster-gpu")
    assert gpu.inputs["taints"] == [
        {"key": constants.GPU_TAINT_KEY, "value": constants.GPU_TAINT_VALUE, "effect": "NO_SCHEDULE"}
    ]
    assert gpu.inputs["labels"][constants.GPU_NODE_LABEL_KEY] == constants.GPU_NODE_LABEL_VALUE
    assert gpu.inputs["labels"][constants.GPU_PRODUCT_LABEL] == config.gpu_product
    assert gpu.inputs["scalingConfig"]["minSize"] == 0
    assert gpu.inputs["scalingConfig"]["desiredSize"] == 0
    assert gpu.inputs["scalingConfig"]["maxSize"] == config.gpu_node_max_count
    assert gpu.inputs["instanceTypes"] == config.gpu_instance_types
    assert gpu.inputs["amiType"] == "AL2023_x86_64_NVIDIA"


def test_system_node_group_is_not_tainted_and_carries_no_gpu_labels(default_run: PlatformRun) -> None:
    system = default_run.one("aws:eks/nodeGroup:NodeGroup", "kubetune-cluster-system")
    assert not system.inputs.get("taints")
    assert constants.GPU_NODE_LABEL_KEY not in system.inputs["labels"]


@pytest.mark.parametrize(
    ("kubernetes_effect", "eks_effect"),
    [("NoSchedule", "NO_SCHEDULE"), ("NoExecute", "NO_EXECUTE"), ("PreferNoSchedule", "PREFER_NO_SCHEDULE")],
)
def test_taint_effect_conversion(kubernetes_effect: str, eks_effect: str) -> None:
    assert eks_taint_effect(kubernetes_effect) == eks_effect


def test_unknown_taint_effect_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown taint effect 'NO_SCHEDULE'"):
        eks_taint_effect("NO_SCHEDULE")


def test_device_plugin_runs_on_the_gpu_nodes() -> None:
    values = device_plugin_values()
    (term,) = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [
        {"key": constants.GPU_NODE_LABEL_KEY, "operator": "In", "values": [constants.GPU_NODE_LABEL_VALUE]}
    ]
    assert {
        "key": constants.GPU_TAINT_KEY,
        "operator": "Exists",
        "effect": constants.GPU_TAINT_EFFECT,
    } in values["tolerations"]


# --- registries and the chart --------------------------------------------------------------------


def test_image_repositories_are_immutable_and_scanned(default_run: PlatformRun) -> None:
    repositories = default_run.of_type("aws:ecr/repository:Repository")
    assert {r.inputs["name"] for r in repositories} == {"kubetune/operator", "kubetune/trainer"}
    for repository in repositories:
        assert repository.inputs["imageTagMutability"] == "IMMUTABLE"
        assert repository.inputs["imageScanningConfiguration"] == {"scanOnPush": True}


def _leaf_paths(values: Any, prefix: str = "") -> set[str]:
    if isinstance(values, dict) and values:
        return {path for key, value in values.items() for path in _leaf_paths(value, f"{prefix}{key}.")}
    return {prefix.rstrip(".")}


def test_chart_values_exist_in_the_kubetune_chart(default_config: PlatformConfig) -> None:
    values_file = REPO / "charts" / "kubetune" / "values.yaml"
    if not values_file.exists():
        pytest.skip("charts/kubetune is not in this checkout")
    chart_paths = _leaf_paths(yaml.safe_load(values_file.read_text()))
    ours = kubetune_chart_values(
        default_config,
        operator_repository="r/operator",
        trainer_repository="r/trainer",
        operator_role_arn="arn",
        trainer_role_arn="arn:trainer",
    )
    for path in _leaf_paths(ours):
        # A map the chart leaves open ({} default, e.g. annotations) accepts any key below it.
        assert any(path == p or fnmatch.fnmatch(path, f"{p}.*") for p in chart_paths), path


def test_kubetune_release_gets_the_ecr_images_and_the_operator_role(default_run: PlatformRun) -> None:
    release = default_run.one("kubernetes:helm.sh/v3:Release", "kubetune-addons-kubetune")
    values = release.inputs["values"]
    urls = default_run.outputs["repository_urls"]
    assert values["image"] == {"repository": urls["operator"], "tag": "0.1.0"}
    assert values["trainer"]["image"] == f"{urls['trainer']}:0.1.0"
    assert values["serviceAccount"]["name"] == "kubetune-operator"
    assert values["serviceAccount"]["annotations"] == {
        "eks.amazonaws.com/role-arn": default_run.outputs["operator_role_arn"]
    }
    assert values["trainer"]["serviceAccountAnnotations"] == {
        "eks.amazonaws.com/role-arn": default_run.outputs["trainer_role_arn"]
    }
    assert default_run.outputs["trainer_role_arn"] != default_run.outputs["operator_role_arn"]
    assert values["metrics"]["serviceMonitor"]["enabled"] is True


def test_irsa_trust_policy_needs_a_subject() -> None:
    with pytest.raises(ValueError, match="needs subjects or subject patterns"):
        irsa_trust_policy("arn:aws:iam::123456789012:oidc-provider/x", OIDC_ISSUER, [], subject_patterns=[])
