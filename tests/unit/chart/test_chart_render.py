"""helm lint and helm template of charts/kubetune with default and non-default values."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml
from kubetune_operator.builders.job import trainer_job
from kubetune_operator.builders.rbac import OPERATOR_RULES, trainer_service_account
from kubetune_operator.config import OperatorConfig

from kubetune_api import constants, labels, observability, trainer_contract
from kubetune_api.finetunejob import FineTuneJob

from .conftest import CHART, RELEASE_NAMESPACE, REPO, Render, by_kind, helm_template, one

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


def rule_triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}


@pytest.mark.parametrize("values_file", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_helm_lint_strict(helm: str, values_file: Any) -> None:
    command = [helm, "lint", "--strict", str(CHART)]
    if values_file:
        command += ["--values", str(values_file)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("values", "present", "absent"),
    [
        pytest.param(
            {},
            {
                "Deployment",
                "ServiceAccount",
                "ClusterRole",
                "Service",
                "NetworkPolicy",
                "CustomResourceDefinition",
                "ConfigMap",
            },
            {"ServiceMonitor", "PodMonitor", "PrometheusRule"},
            id="defaults",
        ),
        pytest.param(
            {
                "metrics": {
                    "serviceMonitor": {"enabled": True},
                    "podMonitor": {"enabled": True},
                    "prometheusRule": {"enabled": True},
                }
            },
            {"ServiceMonitor", "PodMonitor", "PrometheusRule"},
            set(),
            id="monitoring-on",
        ),
        pytest.param(
            {
                "grafanaDashboard": {"enabled": False},
                "networkPolicy": {"enabled": False},
                "metrics": {"service": {"enabled": False}},
                "crds": {"install": False},
            },
            {"Deployment"},
            {"ConfigMap", "NetworkPolicy", "Service", "CustomResourceDefinition"},
            id="switches-off",
        ),
        pytest.param(
            {"serviceAccount": {"create": False, "name": "platform-sa"}, "rbac": {"create": False}},
            {"Deployment"},
            {"ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding"},
            id="bring-your-own-identity",
        ),
    ],
)
def test_switches(render: Render, values: dict[str, Any], present: set[str], absent: set[str]) -> None:
    kinds = {o["kind"] for o in render(values)}
    assert present <= kinds, f"missing {present - kinds}"
    assert not (absent & kinds), f"unexpected {absent & kinds}"


def test_cluster_mode_grants_exactly_the_operator_rules(render: Render) -> None:
    objects = render()
    granted = set()
    for kind in ("ClusterRole", "Role"):
        for role in by_kind(objects, kind):
            granted |= rule_triples(role["rules"])
    assert granted == rule_triples(list(OPERATOR_RULES))
    # Only the Lease is namespaced to the release; everything else is cluster-wide.
    (lease_role,) = by_kind(objects, "Role")
    assert lease_role["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert {(g, r) for g, r, _ in rule_triples(lease_role["rules"])} == {("coordination.k8s.io", "leases")}


def test_watch_namespaces_gives_roles_in_those_namespaces_only(render: Render) -> None:
    watched = ["team-a", "team-b"]
    objects = render({"watchNamespaces": watched})
    namespaced = {t for t in rule_triples(list(OPERATOR_RULES)) if (t[0], t[1]) not in CLUSTER_SCOPED}
    namespaced -= {t for t in namespaced if t[1] == "leases"}
    roles = {
        r["metadata"]["namespace"]: r
        for r in by_kind(objects, "Role")
        if "leader" not in r["metadata"]["name"]
    }
    assert sorted(roles) == watched
    for role in roles.values():
        assert rule_triples(role["rules"]) == namespaced
    bindings = {b["metadata"]["namespace"] for b in by_kind(objects, "RoleBinding")}
    assert set(watched) <= bindings
    # The one ClusterRole left is read-only discovery of CRDs and namespace names.
    (cluster_role,) = by_kind(objects, "ClusterRole")
    assert rule_triples(cluster_role["rules"]) == {
        t for t in rule_triples(list(OPERATOR_RULES)) if (t[0], t[1]) in CLUSTER_SCOPED
    }
    env = {
        e["name"]: e.get("value")
        for e in one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KUBETUNE_WATCH_NAMESPACES"] == "team-a,team-b"
    pod_monitor = one(
        render({"watchNamespaces": watched, "metrics": {"podMonitor": {"enabled": True}}}), "PodMonitor"
    )
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": watched}


def test_no_rule_allows_what_the_operator_must_never_do(render: Render) -> None:
    for values in ({}, {"watchNamespaces": ["a"]}):
        objects = render(values)
        granted = set().union(
            *(rule_triples(r["rules"]) for r in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"))
        )
        assert not {t for t in granted if t[1] == "secrets" and t[2] in {"list", "watch"}}
        assert not {t for t in granted if t[1] == "nodes"}
        assert not {t for t in granted if t[1] in {"clusterroles", "clusterrolebindings"}}
        assert not {t for t in granted if t[2] in {"deletecollection", "escalate", "bind", "impersonate"}}
        assert not {t for t in granted if "*" in t}
        # The only deletion: a ContinuousPretrain pruning its finished runs.
        assert {t for t in granted if t[2] == "delete"} == {("kubetune.io", "finetunejobs", "delete")}


def test_deployment_defaults_restricted_and_wired_to_the_api_constants(render: Render) -> None:
    deployment = one(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {v["name"]: v["mountPath"] for v in container["volumeMounts"]} == {"tmp": "/tmp"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "metrics": observability.OPERATOR_METRICS_PORT,
        "health": observability.OPERATOR_HEALTH_PORT,
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (
        env["KUBETUNE_TRAINER_IMAGE"]
        == yaml.safe_load((CHART / "values.yaml").read_text())["trainer"]["image"]
    )
    assert env["KUBETUNE_WATCH_NAMESPACES"] == ""
    assert env["KUBETUNE_LEADER_ELECTION"] == "true"
    assert env["KUBETUNE_LEASE_NAMESPACE"] == RELEASE_NAMESPACE
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


def test_replicas_two_roll_with_leader_election(render: Render) -> None:
    deployment = one(render({"replicaCount": 2}), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_image_digest_wins_over_tag(render: Render) -> None:
    digest = "sha256:" + "a" * 64
    deployment = one(render({"image": {"tag": "9.9.9", "digest": digest}}), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith("@" + digest)


def test_pod_monitor_scrapes_the_port_the_operator_gives_trainer_pods(render: Render) -> None:
    objects = render({"metrics": {"podMonitor": {"enabled": True}}})
    pod_monitor = one(objects, "PodMonitor")
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    assert endpoint["path"] == "/metrics"
    # Build a trainer Job the way the operator does, with the port the chart hands it.
    env = {
        e["name"]: e.get("value")
        for e in one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    port = int(env["KUBETUNE_TRAINER_METRICS_PORT"])
    assert port == trainer_contract.DEFAULT_METRICS_PORT
    manifest = yaml.safe_load((REPO / "examples" / "lora-instruction.yaml").read_text())
    manifest["metadata"]["uid"] = "0b0e4a43-6f7c-4e51-9d2a-6b1f7c0d9e11"  # set by the API server
    ftj = FineTuneJob.model_validate(manifest)
    job = trainer_job(ftj, image="trainer:test", trainer_metrics_port=port)
    pod = job["spec"]["template"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pod_monitor["spec"]["selector"] == {
        "matchLabels": {
            constants.LABEL_NAME: labels.finetunejob_labels(ftj.name, "trainer")[constants.LABEL_NAME]
        }
    }
    ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert ports[endpoint["port"]] == port


def _operator_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


IRSA_ROLE = "arn:aws:iam::123456789012:role/kubetune-trainer"


@pytest.mark.parametrize(
    ("values", "annotations"),
    [
        ({}, {}),
        (
            {"trainer": {"serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}}},
            {"eks.amazonaws.com/role-arn": IRSA_ROLE},
        ),
        (
            {
                "trainer": {
                    "serviceAccountAnnotations": {
                        "eks.amazonaws.com/role-arn": IRSA_ROLE,
                        "eks.amazonaws.com/sts-regional-endpoints": "true",
                    }
                }
            },
            {"eks.amazonaws.com/role-arn": IRSA_ROLE, "eks.amazonaws.com/sts-regional-endpoints": "true"},
        ),
    ],
)
def test_trainer_service_account_annotations_reach_the_operator(
    render: Render, values: dict[str, Any], annotations: dict[str, str]
) -> None:
    env = _operator_env(render(values))
    # The operator reads the variable the chart sets and puts exactly these on each job's ServiceAccount.
    config = OperatorConfig.from_env(env)
    assert config.trainer_service_account_annotations == annotations
    manifest = yaml.safe_load((REPO / "examples" / "lora-instruction.yaml").read_text())
    manifest["metadata"]["uid"] = "0b0e4a43-6f7c-4e51-9d2a-6b1f7c0d9e11"
    ftj = FineTuneJob.model_validate(manifest)
    account = trainer_service_account(ftj, config.trainer_service_account_annotations)
    assert account["metadata"]["name"].endswith("-trainer")
    assert account["metadata"].get("annotations", {}) == annotations


def test_service_monitor_scrapes_the_metrics_service(render: Render) -> None:
    objects = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}})
    service, monitor = one(objects, "Service"), one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"] == one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert [p["name"] for p in service["spec"]["ports"]] == [endpoint["port"]]
    assert endpoint["honorLabels"] is True


def test_crds_are_the_generated_ones_kept_on_uninstall(render: Render) -> None:
    generated = {}
    for path in sorted((REPO / "crds").glob("kubetune.io_*.yaml")):
        crd = yaml.safe_load(path.read_text())
        generated[crd["metadata"]["name"]] = crd
    rendered = {c["metadata"]["name"]: c for c in by_kind(render(), "CustomResourceDefinition")}
    assert sorted(rendered) == sorted(generated)
    for name, crd in rendered.items():
        assert crd["spec"] == generated[name]["spec"], name
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    unkept = by_kind(render({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert unkept and all("annotations" not in c["metadata"] for c in unkept)


def test_every_object_carries_the_common_labels(render: Render) -> None:
    objects = render(
        {
            "metrics": {
                "serviceMonitor": {"enabled": True},
                "podMonitor": {"enabled": True},
                "prometheusRule": {"enabled": True},
            },
            "watchNamespaces": ["a"],
        }
    )
    for obj in objects:
        object_labels = obj["metadata"].get("labels", {})
        assert object_labels.get(constants.LABEL_PART_OF) == "kubetune", obj["kind"]
        assert object_labels.get(constants.LABEL_MANAGED_BY) == "Helm", obj["kind"]
        assert object_labels.get(constants.LABEL_INSTANCE) == "kubetune", obj["kind"]


def test_network_policy_admits_only_scrapers_and_allows_api_server_and_dns(render: Render) -> None:
    policy = one(
        render({"networkPolicy": {"metricsFrom": [{"podSelector": {"matchLabels": {"app": "prom"}}}]}}),
        "NetworkPolicy",
    )
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    assert {p["port"] for p in ingress["ports"]} == {"metrics", "health"}
    assert ingress["from"] == [{"podSelector": {"matchLabels": {"app": "prom"}}}]
    api_server, dns = policy["spec"]["egress"]
    assert {p["port"] for p in api_server["ports"]} == {443, 6443}
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_dashboard_configmap_has_the_sidecar_label_and_the_dashboard(render: Render) -> None:
    configmap = one(render(), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"]["kubetune.json"] == (CHART / "dashboards" / "kubetune.json").read_text().rstrip(
        "\n"
    )


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"bogus": 1}, "bogus"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"replicaCount": 0}, "/replicaCount"),
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "/leaderElection/enabled"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
        ({"logLevel": "LOUD"}, "/logLevel"),
        ({"metrics": {"serviceMonitor": {"interval": "soon"}}}, "/metrics/serviceMonitor/interval"),
        (
            {"metrics": {"prometheusRule": {"lossDivergenceRatio": 1}}},
            "/metrics/prometheusRule/lossDivergenceRatio",
        ),
        ({"networkPolicy": {"apiServerCidrs": []}}, "/networkPolicy/apiServerCidrs"),
        ({"crds": {"keep": "yes"}}, "/crds/keep"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"trainer": {"serviceAccountAnnotations": {"a": 1}}}, "/trainer/serviceAccountAnnotations/a"),
        ({"trainer": {"serviceAccountAnnotations": ["a"]}}, "/trainer/serviceAccountAnnotations"),
    ],
)
def test_schema_rejects_bad_values_naming_them(helm: str, values: dict[str, Any], named: str) -> None:
    result = helm_template(helm, values=values)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr, result.stderr
