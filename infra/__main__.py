"""Pulumi entry point: read the stack config, build the platform, export what users need next."""

from __future__ import annotations

import pulumi
from kubetune_infra.config import CONFIG_NAMESPACE, config_keys, load_platform_config
from kubetune_infra.platform import DEFAULT_CHART_PATH, build_platform
from pulumi.runtime.config import CONFIG

stack_config = pulumi.Config(CONFIG_NAMESPACE)
values = {key: stack_config.get(key) for key in config_keys()}
# Also hand over keys the loader does not know, so a typo fails instead of silently using a default.
prefix = f"{CONFIG_NAMESPACE}:"
values |= {key.removeprefix(prefix): value for key, value in CONFIG.get().items() if key.startswith(prefix)}
config = load_platform_config(values, region=pulumi.Config("aws").get("region"))

platform = build_platform(config, chart_path=DEFAULT_CHART_PATH)

pulumi.export("region", config.region)
pulumi.export("clusterName", platform.cluster.name)
pulumi.export("kubeconfig", platform.cluster.kubeconfig)
pulumi.export("datasetsBucket", platform.storage.bucket_names["datasets"])
pulumi.export("checkpointsBucket", platform.storage.bucket_names["checkpoints"])
pulumi.export("artifactsBucket", platform.storage.bucket_names["artifacts"])
pulumi.export("operatorRepositoryUrl", platform.registries.repository_urls["operator"])
pulumi.export("trainerRepositoryUrl", platform.registries.repository_urls["trainer"])
pulumi.export("operatorRoleArn", platform.identity.operator_role_arn)
pulumi.export("trainerRoleArn", platform.identity.trainer_role_arn)
pulumi.export("clusterAutoscalerRoleArn", platform.identity.cluster_autoscaler_role_arn)
if platform.storage.file_system_id is not None:
    pulumi.export("sharedFileSystemId", platform.storage.file_system_id)
