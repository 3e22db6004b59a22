"""Operator at scale: 200 FineTuneJobs applied at once against the real local control plane.

    .venv/bin/python benchmarks/operator_scale.py [--jobs 200] [--json out.json]

Starts the control plane (kubetune_dev.controlplane) and the operator as a subprocess
(`python -m kubetune_operator`, as its least-privilege ServiceAccount), creates N FineTuneJobs
from a thread pool, and reports:

- apply→Job created: from the FineTuneJob's POST returning to the operator's Job POST returning
  (the operator's log line); apply→trainer pod Running (kwok) and apply→FineTuneJob status
  Running as seen by watches in this process (these include the watch delivery lag, reported
  for the Job too as apply_to_job_seen_by_watch_s): p50/p99;
- operator CPU seconds and peak RSS (VmHWM) from /proc;
- API requests per job made by the operator alone: a FlowSchema matches the operator's
  ServiceAccount, so apiserver_flowcontrol_dispatched_requests_total{flow_schema=...} counts
  exactly its requests (scraped before and after). All clients' apiserver_request_total is
  reported too, for scale.

Goals: p99 apply→Job <= 1 s, peak RSS <= 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

import kubernetes  # noqa: E402
from kubetune_operator.builders.rbac import operator_cluster_role  # noqa: E402

from kubetune_dev.controlplane import ControlPlane  # noqa: E402
from kubetune_dev.operator_process import (  # noqa: E402
    OPERATOR_NAMESPACE,
    OperatorProcess,
    cluster_role_kubeconfig,
    simulated_finetunejob,
)

NAMESPACE = "bench"
OPERATOR_ACCOUNT = "kubetune-operator"
FLOW_SCHEMA = "kubetune-operator-bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def finetunejob(name: str) -> dict[str, Any]:
    return simulated_finetunejob(
        name,
        NAMESPACE,
        # 200 pods do not fit on 16 GPUs: CPU pods, allowed onto every fake node.
        resources={
            "gpusPerNode": 0,
            "cpu": "50m",
            "memory": "64Mi",
            "sharedMemory": "16Mi",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        },
        podMetadata={"annotations": {"kwok.kubetune.io/outcome": "Running"}},
    )


def setup_cluster(cp: ControlPlane) -> Path:
    cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    flow_schema = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": FLOW_SCHEMA},
        "spec": {
            "priorityLevelConfiguration": {"name": "workload-high"},
            "matchingPrecedence": 500,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [
                        {
                            "kind": "ServiceAccount",
                            "serviceAccount": {"name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE},
                        }
                    ],
                    "resourceRules": [
                        {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": True,
                         "namespaces": ["*"]}
                    ],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }
            ],
        },
    }  # fmt: skip
    kubeconfig = cluster_role_kubeconfig(cp, operator_cluster_role(OPERATOR_ACCOUNT), OPERATOR_ACCOUNT)
    for manifest in ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}, flow_schema):
        cp.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    return kubeconfig


def apiserver_counts(cp: ControlPlane) -> tuple[float, float]:
    """(operator's dispatched requests, all requests) from the API server's /metrics."""
    _, body = cp.api("GET", "/metrics")
    text = body.get("raw", "")
    dispatched = (
        rf'^apiserver_flowcontrol_dispatched_requests_total{{[^}}]*flow_schema="{FLOW_SCHEMA}"[^}}]*}} (\S+)'
    )
    operator = sum(float(m.group(1)) for m in re.finditer(dispatched, text, re.MULTILINE))
    total = sum(
        float(m.group(1)) for m in re.finditer(r"^apiserver_request_total{[^}]*} (\S+)", text, re.MULTILINE)
    )
    return operator, total


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Observer:
    """Watches Jobs, pods and FineTuneJobs in the namespace; records when each job first reached a stage."""

    def __init__(self, kubeconfig: Path) -> None:
        self.client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self.job_created: dict[str, float] = {}
        self.pod_running: dict[str, float] = {}
        self.status_running: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch_jobs, daemon=True),
            threading.Thread(target=self._watch_pods, daemon=True),
            threading.Thread(target=self._watch_ftjs, daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _stream(self, list_fn: Any, *args: Any, **kwargs: Any) -> Any:
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            try:
                yield from watch.stream(list_fn, *args, timeout_seconds=60, **kwargs)
            except Exception:
                time.sleep(0.2)

    def _watch_jobs(self) -> None:
        api = kubernetes.client.BatchV1Api(self.client)
        for event in self._stream(api.list_namespaced_job, NAMESPACE):
            owner = (event["object"].metadata.owner_references or [None])[0]
            if owner is not None:
                self.job_created.setdefault(owner.name, time.monotonic())

    def _watch_pods(self) -> None:
        api = kubernetes.client.CoreV1Api(self.client)
        for event in self._stream(api.list_namespaced_pod, NAMESPACE):
            pod = event["object"]
            job = (pod.metadata.labels or {}).get("batch.kubernetes.io/job-name")
            if job and pod.status and pod.status.phase == "Running":
                self.pod_running.setdefault(job, time.monotonic())

    def _watch_ftjs(self) -> None:
        api = kubernetes.client.CustomObjectsApi(self.client)
        stream = self._stream(
            api.list_namespaced_custom_object, "kubetune.io", "v1alpha1", NAMESPACE, "finetunejobs"
        )
        for event in stream:
            obj = event["object"]
            if (obj.get("status") or {}).get("phase") == "Running":
                self.status_running.setdefault(obj["metadata"]["name"], time.monotonic())


def operator_job_latencies(log: Path, applied_wall: dict[str, float]) -> list[float]:
    """From the FineTuneJob's POST returning to the operator's Job POST returning (its log line, ms
    resolution). A watch client in this process sees the Job later: it shares two cores with the
    control plane and the operator, so its delivery lag is reported separately."""
    created: dict[str, float] = {}
    pattern = re.compile(rf"^(\S+ \S+),(\d+) INFO \S+: created Job {NAMESPACE}/(\S+)$", re.MULTILINE)
    for match in pattern.finditer(log.read_text(errors="replace")):
        stamp = (
            datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(match.group(2)) / 1000
        )
        created.setdefault(match.group(3), stamp)
    return [created[name] - applied_wall[name] for name in applied_wall if name in created]


def percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"count": 0}
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]
    return {
        "count": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p99": round(p99, 3),
        "max": round(ordered[-1], 3),
    }


def run(jobs: int, timeout: float) -> dict[str, Any]:
    with ControlPlane() as cp:
        operator_kubeconfig = setup_cluster(cp)
        log = Path(tempfile.mkdtemp(prefix="kubetune-bench-")) / "operator.log"
        operator = OperatorProcess(operator_kubeconfig, log, {"KUBETUNE_LEASE_NAMESPACE": OPERATOR_NAMESPACE})
        try:
            operator.start()
            operator.wait_for_log("leading as", timeout=60)
            time.sleep(2)  # let kopf finish its initial listing
            observer = Observer(cp.kubeconfig)
            observer.start()
            time.sleep(1)
            cpu_before = proc_cpu_seconds(operator.pid)
            operator_before, total_before = apiserver_counts(cp)

            applied: dict[str, float] = {}
            applied_wall: dict[str, float] = {}

            def create(index: int) -> None:
                name = f"bench-{index:04d}"
                status, body = cp.api(
                    "POST",
                    f"/apis/kubetune.io/v1alpha1/namespaces/{NAMESPACE}/finetunejobs",
                    finetunejob(name),
                )
                if status != 201:
                    raise RuntimeError(f"create {name}: {status} {body}")
                applied[name] = time.monotonic()
                applied_wall[name] = time.time()

            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(create, range(jobs)))
            apply_seconds = time.monotonic() - started
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and len(observer.status_running) < jobs:
                time.sleep(0.5)
            time.sleep(3)  # trailing status writes and events still count against the operator
            cpu_seconds = proc_cpu_seconds(operator.pid) - cpu_before
            operator_after, total_after = apiserver_counts(cp)
            peak_rss = proc_peak_rss_mb(operator.pid)

            def latencies(seen: dict[str, float]) -> list[float]:
                return [seen[name] - applied[name] for name in applied if name in seen]

            job_created = percentiles(operator_job_latencies(log, applied_wall))
            return {
                "jobs": jobs,
                "apply_seconds": round(apply_seconds, 2),
                "apply_to_job_created_s": job_created,
                "apply_to_job_seen_by_watch_s": percentiles(latencies(observer.job_created)),
                "apply_to_pod_running_s": percentiles(latencies(observer.pod_running)),
                "apply_to_status_running_s": percentiles(latencies(observer.status_running)),
                "operator_cpu_seconds": round(cpu_seconds, 2),
                "operator_peak_rss_mb": round(peak_rss, 1),
                "operator_requests_per_job": round((operator_after - operator_before) / jobs, 1),
                "all_clients_requests_per_job": round((total_after - total_before) / jobs, 1),
                "goals": {
                    "p99_apply_to_job_le_1s": job_created.get("p99", float("inf")) <= 1.0,
                    "peak_rss_le_200mb": peak_rss <= 200,
                },
                "operator_log": str(log),
            }
        finally:
            operator.stop(timeout=20)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for every job to run")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = run(args.jobs, args.timeout)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if all(report["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
