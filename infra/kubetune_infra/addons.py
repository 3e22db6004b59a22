"""What runs in the cluster before kubetune can: the NVIDIA device plugin, the Cluster Autoscaler
(which brings the GPU node group up from zero), kube-prometheus-stack, and the kubetune chart itself
wired to the IRSA roles, image repositories and buckets created by the other components.

Trainer pods need no service account from here: the operator creates one per FineTuneJob
(`<job>-trainer`) and annotates it with the trainer role (`trainer.serviceAccountAnnotations`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
from pulumi import ComponentResource, Output, ResourceOptions

from kubetune_api.constants import GPU_NODE_LABEL_KEY, GPU_NODE_LABEL_VALUE, GPU_TAINT_EFFECT, GPU_TAINT_KEY
from kubetune_infra.cluster import NODE_POOL_LABEL, Cluster
from kubetune_infra.config import PlatformConfig
from kubetune_infra.identity import CLUSTER_AUTOSCALER_SERVICE_ACCOUNT, Identity
from kubetune_infra.registries import Registries
from kubetune_infra.storage import Storage

IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
MONITORING_NAMESPACE = "monitoring"
SHARED_STORAGE_CLASS = "kubetune-shared"
_SYSTEM_NODES = {NODE_POOL_LABEL: "system"}


def device_plugin_values() -> dict[str, Any]:
    """The chart's default affinity wants labels from node feature discovery, which this cluster does
    not run; select the GPU nodes by the kubetune label instead and tolerate their taint."""
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": GPU_NODE_LABEL_KEY,
                                    "operator": "In",
                                    "values": [GPU_NODE_LABEL_VALUE],
                                }
                            ]
                        }
                    ]
                }
            }
        },
        "tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}],
    }


def cluster_autoscaler_values(cluster_name: str, region: str, role_arn: str) -> dict[str, Any]:
    return {
        "autoDiscovery": {"clusterName": cluster_name},  # EKS tags managed node group ASGs for this
        "awsRegion": region,
        "rbac": {
            "serviceAccount": {
                "create": True,
                "name": CLUSTER_AUTOSCALER_SERVICE_ACCOUNT,
                "annotations": {IRSA_ANNOTATION: role_arn},
            }
        },
        "extraArgs": {"balance-similar-node-groups": True, "expander": "least-waste"},
        "nodeSelector": _SYSTEM_NODES,
    }


def kube_prometheus_stack_values() -> dict[str, Any]:
    """Pick up ServiceMonitors, PrometheusRules and dashboards from every release, not only this one."""
    return {
        "prometheus": {
            "prometheusSpec": {
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "nodeSelector": _SYSTEM_NODES,
            }
        },
        "grafana": {"sidecar": {"dashboards": {"enabled": True, "searchNamespace": "ALL"}}},
    }


def kubetune_chart_values(
    config: PlatformConfig,
    *,
    operator_repository: str,
    trainer_repository: str,
    operator_role_arn: str,
    trainer_role_arn: str,
) -> dict[str, Any]:
    """Values for charts/kubetune (keys as in its values.yaml; a unit test holds them to it)."""
    return {
        "image": {"repository": operator_repository, "tag": config.image_tag},
        "trainer": {
            "image": f"{trainer_repository}:{config.image_tag}",
            # The operator puts this on every per-job `<job>-trainer` ServiceAccount; the trainer role
            # trusts `*-trainer` accounts in the trainer namespaces, so the pods get its bucket access.
            "serviceAccountAnnotations": {IRSA_ANNOTATION: trainer_role_arn},
        },
        # Named explicitly: the operator role trusts exactly this service account.
        "serviceAccount": {
            "create": True,
            "name": config.operator_service_account,
            "annotations": {IRSA_ANNOTATION: operator_role_arn},
        },
        "nodeSelector": _SYSTEM_NODES,
        "metrics": {
            "serviceMonitor": {"enabled": config.enable_monitoring},
            "podMonitor": {"enabled": config.enable_monitoring},
            "prometheusRule": {"enabled": config.enable_monitoring},
        },
        "grafanaDashboard": {"enabled": config.enable_monitoring},
        # The operator lists ContinuousPretrain corpus shards in S3 over HTTPS.
        "networkPolicy": {"extraEgress": [{"ports": [{"port": 443, "protocol": "TCP"}]}]},
    }


class Addons(ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        config: PlatformConfig,
        chart_path: Path,
        cluster: Cluster,
        identity: Identity,
        storage: Storage,
        registries: Registries,
        opts: ResourceOptions | None = None,
    ) -> None:
        super().__init__("kubetune:infra:Addons", name, None, opts)
        provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=cluster.kubeconfig,
            enable_server_side_apply=True,
            opts=ResourceOptions(parent=self),
        )
        # Releases wait for their pods, so the system nodes must exist first.
        in_cluster = ResourceOptions(parent=self, provider=provider, depends_on=[cluster.system_node_group])

        k8s.helm.v3.Release(
            f"{name}-nvidia-device-plugin",
            name="nvidia-device-plugin",
            chart="nvidia-device-plugin",
            version=config.device_plugin_chart_version,
            repository_opts={"repo": "https://nvidia.github.io/k8s-device-plugin"},
            namespace="kube-system",
            values=device_plugin_values(),
            opts=in_cluster,
        )
        k8s.helm.v3.Release(
            f"{name}-cluster-autoscaler",
            name="cluster-autoscaler",
            chart="cluster-autoscaler",
            version=config.cluster_autoscaler_chart_version,
            repository_opts={"repo": "https://kubernetes.github.io/autoscaler"},
            namespace="kube-system",
            values=Output.all(cluster.name, identity.cluster_autoscaler_role_arn).apply(
                lambda parts: cluster_autoscaler_values(parts[0], config.region, parts[1])
            ),
            opts=in_cluster,
        )
        kubetune_depends_on: list[pulumi.Resource] = [cluster.system_node_group]
        if config.enable_monitoring:
            # Installs the ServiceMonitor and PrometheusRule CRDs the kubetune chart then uses.
            kubetune_depends_on.append(
                k8s.helm.v3.Release(
                    f"{name}-kube-prometheus-stack",
                    name="kube-prometheus-stack",
                    chart="kube-prometheus-stack",
                    version=config.kube_prometheus_stack_chart_version,
                    repository_opts={"repo": "https://prometheus-community.github.io/helm-charts"},
                    namespace=MONITORING_NAMESPACE,
                    create_namespace=True,
                    values=kube_prometheus_stack_values(),
                    opts=in_cluster,
                )
            )
        if config.enable_shared_filesystem:
            self._shared_storage_class(name, config, cluster, identity, storage, provider)

        kubetune = k8s.helm.v3.Release(
            f"{name}-kubetune",
            name="kubetune",
            chart=str(chart_path),
            namespace=config.kubetune_namespace,
            create_namespace=True,
            values=Output.all(
                registries.repository_urls["operator"],
                registries.repository_urls["trainer"],
                identity.operator_role_arn,
                identity.trainer_role_arn,
            ).apply(
                lambda parts: kubetune_chart_values(
                    config,
                    operator_repository=parts[0],
                    trainer_repository=parts[1],
                    operator_role_arn=parts[2],
                    trainer_role_arn=parts[3],
                )
            ),
            opts=ResourceOptions(parent=self, provider=provider, depends_on=kubetune_depends_on),
        )
        self.kubetune_release_status = kubetune.status
        self.register_outputs({"kubetuneRelease": kubetune.status})

    def _shared_storage_class(
        self,
        name: str,
        config: PlatformConfig,
        cluster: Cluster,
        identity: Identity,
        storage: Storage,
        provider: k8s.Provider,
    ) -> None:
        """EFS CSI driver (EKS managed add-on, IRSA) and a StorageClass that provisions an access point
        per PersistentVolumeClaim, for checkpoints shared across the pods of a multi-node job."""
        if storage.file_system_id is None or identity.efs_csi_role_arn is None:
            raise ValueError("the shared StorageClass needs Storage and Identity built with the file system")
        aws.eks.Addon(
            f"{name}-efs-csi",
            cluster_name=cluster.name,
            addon_name="aws-efs-csi-driver",
            service_account_role_arn=identity.efs_csi_role_arn,
            resolve_conflicts_on_update="OVERWRITE",
            opts=ResourceOptions(parent=self, depends_on=[cluster.system_node_group]),
        )
        k8s.storage.v1.StorageClass(
            f"{name}-shared",
            metadata={"name": SHARED_STORAGE_CLASS},
            provisioner="efs.csi.aws.com",
            parameters={
                "provisioningMode": "efs-ap",
                "fileSystemId": storage.file_system_id,
                "directoryPerms": "700",
                "uid": "65532",  # the trainer image's user
                "gid": "65532",
            },
            reclaim_policy="Retain",
            opts=ResourceOptions(parent=self, provider=provider),
        )
