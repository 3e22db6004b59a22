"""The one module that talks to the API server (the official `kubernetes` client, raw JSON dicts).

Everything else in the operator works on plain dicts and API models; unit tests replace this
module with a fake that has the same functions. Kopf's own watch/patch traffic goes through
kopf; this module does the rest.

RBAC the operator needs (ClusterRole; the same rules are `builders.rbac.OPERATOR_RULES`, and
operator/RBAC.md explains each line):

- kubetune.io finetunejobs, continuouspretrains: get, list, watch, patch (kopf watches; handler
  state in annotations)
- kubetune.io finetunejobs: create, delete (ContinuousPretrain runs)
- kubetune.io finetunejobs/status, continuouspretrains/status: get, patch (phase, conditions, ...)
- kubetune.io finetunejobs/finalizers, continuouspretrains/finalizers: update (blockOwnerDeletion)
- batch jobs: get, list, watch, create, patch (the trainer Job; suspend/resume)
- "" pods: get, list, watch (phase, scheduling failures, termination messages)
- "" configmaps, services, serviceaccounts: get, create (config, rendezvous, trainer identity)
- "" secrets, persistentvolumeclaims: get (validation: referenced Secrets, keys and claims exist)
- "" events, events.k8s.io events: create, patch (an Event per phase transition; kopf's too)
- rbac.authorization.k8s.io roles, rolebindings: get, create (per-job Role for the trainer pod)
- coordination.k8s.io leases: get, create, update (leader election)
- apiextensions.k8s.io customresourcedefinitions: list, watch (kopf's resource discovery)
- "" namespaces: list, watch (kopf; needed only when KUBETUNE_WATCH_NAMESPACES holds globs)

To create the per-job Role the operator must itself hold what the Role grants (get on
finetunejobs, get/patch on finetunejobs/status), which the lines above already include.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubetune_api.constants import API_VERSION, FINETUNEJOB_PLURAL

logger = logging.getLogger(__name__)

USER_AGENT = "kubetune-operator/0.1"
MERGE_PATCH = "application/merge-patch+json"

_client: kubernetes.client.ApiClient | None = None
_client_lock = threading.Lock()

# Collection path of each kind the operator creates: (apiVersion, kind) -> path template.
_COLLECTIONS = {
    ("v1", "ConfigMap"): "/api/v1/namespaces/{namespace}/configmaps",
    ("v1", "Service"): "/api/v1/namespaces/{namespace}/services",
    ("v1", "ServiceAccount"): "/api/v1/namespaces/{namespace}/serviceaccounts",
    ("v1", "Secret"): "/api/v1/namespaces/{namespace}/secrets",
    ("v1", "PersistentVolumeClaim"): "/api/v1/namespaces/{namespace}/persistentvolumeclaims",
    ("v1", "Pod"): "/api/v1/namespaces/{namespace}/pods",
    ("v1", "Event"): "/api/v1/namespaces/{namespace}/events",
    ("batch/v1", "Job"): "/apis/batch/v1/namespaces/{namespace}/jobs",
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
    ): "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
    ),
    ("coordination.k8s.io/v1", "Lease"): "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
    (API_VERSION, "FineTuneJob"): f"/apis/{API_VERSION}/namespaces/{{namespace}}/{FINETUNEJOB_PLURAL}",
}


class Conflict(Exception):
    """The object changed since it was read (optimistic concurrency lost)."""


def configure(kubeconfig: str | None = None, max_connections: int = 16) -> None:
    """Load credentials: in-cluster service account, else KUBECONFIG / ~/.kube/config."""
    global _client
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    configuration.connection_pool_maxsize = max_connections
    client = kubernetes.client.ApiClient(configuration)
    client.user_agent = USER_AGENT
    with _client_lock:
        _client = client


def _api() -> kubernetes.client.ApiClient:
    if _client is None:
        configure()
    assert _client is not None
    return _client


def _request(
    method: str, path: str, *, body: Any = None, query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:  # fmt: skip
    client = _api()
    method, url, headers, payload, post = client.param_serialize(
        method, path, query_params=query or [],
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body, auth_settings=["BearerToken"],
    )  # fmt: skip
    response = client.call_api(
        method, url, header_params=headers, body=payload, post_params=post, _request_timeout=30
    )
    raw: bytes = response.read()  # type: ignore[no-untyped-call]
    if not 200 <= response.status < 300:
        raise ApiException(status=response.status, reason=response.reason, body=raw.decode(errors="replace"))
    return json.loads(raw) if raw else {}


def _get_or_none(path: str) -> dict[str, Any] | None:
    try:
        return _request("GET", path)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    return _COLLECTIONS[(api_version, kind)].format(namespace=namespace)


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{collection_path(api_version, kind, namespace)}/{name}"


# --------------------------------------------------------------------------- generic


def get_object(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return _get_or_none(object_path(api_version, kind, namespace, name))


def create_if_absent(manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create the object; if it exists already (deterministic name), return the existing one.

    Returns (object, created).
    """
    metadata = manifest["metadata"]
    path = collection_path(manifest["apiVersion"], manifest["kind"], metadata["namespace"])
    try:
        return _request("POST", path, body=manifest), True
    except ApiException as error:
        if error.status != 409:
            raise
    existing = get_object(manifest["apiVersion"], manifest["kind"], metadata["namespace"], metadata["name"])
    if existing is None:  # deleted between our POST and GET: try once more
        return _request("POST", path, body=manifest), True
    return existing, False


def merge_patch(
    api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
) -> dict[str, Any]:
    return _request(
        "PATCH", object_path(api_version, kind, namespace, name), body=patch, content_type=MERGE_PATCH
    )


# --------------------------------------------------------------------------- FineTuneJob


def get_secret(namespace: str, name: str) -> dict[str, Any] | None:
    return get_object("v1", "Secret", namespace, name)


def get_pvc(namespace: str, name: str) -> dict[str, Any] | None:
    return get_object("v1", "PersistentVolumeClaim", namespace, name)


def get_finetunejob(namespace: str, name: str) -> dict[str, Any] | None:
    return get_object(API_VERSION, "FineTuneJob", namespace, name)


def patch_finetunejob_status(namespace: str, name: str, status_patch: dict[str, Any]) -> dict[str, Any]:
    """Merge patch of .status: only the fields named in the patch change (trainer's progress stays)."""
    path = object_path(API_VERSION, "FineTuneJob", namespace, name) + "/status"
    return _request("PATCH", path, body={"status": status_patch}, content_type=MERGE_PATCH)


def get_job(namespace: str, name: str) -> dict[str, Any] | None:
    return get_object("batch/v1", "Job", namespace, name)


def patch_job(namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    return merge_patch("batch/v1", "Job", namespace, name, patch)


def list_job_pods(namespace: str, job_uid: str) -> list[dict[str, Any]]:
    """Pods of one Job, selected by the controller-uid label the Job controller sets."""
    response = _request(
        "GET",
        collection_path("v1", "Pod", namespace),
        query=[("labelSelector", f"batch.kubernetes.io/controller-uid={job_uid}")],
    )
    return list(response.get("items") or [])


def create_event(
    involved: dict[str, Any], *, type_: str, reason: str, message: str, component: str, instance: str
) -> None:
    """A core/v1 Event on `involved` (what `kubectl describe` and `kubectl get events` show)."""
    metadata = involved["metadata"]
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance,
    }
    _request("POST", collection_path("v1", "Event", metadata["namespace"]), body=event)


# --------------------------------------------------------------------------- leader election


def get_lease(namespace: str, name: str) -> dict[str, Any] | None:
    return get_object("coordination.k8s.io/v1", "Lease", namespace, name)


def create_lease(lease: dict[str, Any]) -> dict[str, Any]:
    """Create a Lease; raises Conflict when another replica created it first."""
    try:
        path = collection_path("coordination.k8s.io/v1", "Lease", lease["metadata"]["namespace"])
        return _request("POST", path, body=lease)
    except ApiException as error:
        if error.status == 409:
            raise Conflict(str(error.reason)) from None
        raise


def replace_lease(lease: dict[str, Any]) -> dict[str, Any]:
    """PUT with the read resourceVersion; raises Conflict when another replica wrote in between."""
    metadata = lease["metadata"]
    try:
        return _request(
            "PUT",
            object_path("coordination.k8s.io/v1", "Lease", metadata["namespace"], metadata["name"]),
            body=lease,
        )
    except ApiException as error:
        if error.status == 409:
            raise Conflict(str(error.reason)) from None
        raise


# --------------------------------------------------------------------------- ContinuousPretrain
# The ContinuousPretrain controller appends its functions below this line.

_CPT_COLLECTION = f"/apis/{API_VERSION}/namespaces/{{namespace}}/continuouspretrains"


def list_continuouspretrain_runs(namespace: str, cpt_name: str) -> list[dict[str, Any]]:
    """Child FineTuneJobs of one ContinuousPretrain, selected by its label."""
    # Imported here so this section stays an append-only block of the shared module.
    from kubetune_api.constants import LABEL_CONTINUOUSPRETRAIN
    from kubetune_api.labels import child_name

    response = _request(
        "GET",
        collection_path(API_VERSION, "FineTuneJob", namespace),
        query=[("labelSelector", f"{LABEL_CONTINUOUSPRETRAIN}={child_name(cpt_name)}")],
    )
    return list(response.get("items") or [])


def create_finetunejob(namespace: str, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create a run's FineTuneJob; an existing one with the same (deterministic) name is returned."""
    return create_if_absent({**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}})


def delete_finetunejob(namespace: str, name: str) -> None:
    """Delete a FineTuneJob and (in the background) its children; already gone is fine."""
    try:
        _request(
            "DELETE",
            object_path(API_VERSION, "FineTuneJob", namespace, name),
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )
    except ApiException as error:
        if error.status != 404:
            raise


def patch_continuouspretrain_status(
    namespace: str, name: str, status_patch: dict[str, Any]
) -> dict[str, Any]:
    """Merge patch of a ContinuousPretrain's .status (explicit nulls clear fields)."""
    path = _CPT_COLLECTION.format(namespace=namespace) + f"/{name}/status"
    return _request("PATCH", path, body={"status": status_patch}, content_type=MERGE_PATCH)


def get_continuouspretrain(namespace: str, name: str) -> dict[str, Any] | None:
    """A fresh read, so each reconcile starts from the status the previous one wrote."""
    return _get_or_none(_CPT_COLLECTION.format(namespace=namespace) + f"/{name}")
