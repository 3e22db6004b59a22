"""The rendered trainer pod really runs: its command, env and ConfigMap, executed here on the CPU.

The operator renders the Job; this test takes the pod template as the API server stored it,
maps each volume mount to a temp dir, runs the container's command as a subprocess with a
tiny model, and lets the trainer report progress to the real API server with a token of the
per-job ServiceAccount. The real TrainerResult is then handed to the kwok pod as its
termination message, and flows into the FineTuneJob's status like in a cluster.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_api import REPO, Api, Manifest

from kubetune_api.constants import TERMINATION_MESSAGE_PATH
from kubetune_dev.controlplane import ControlPlane
from kubetune_dev.operator_process import eventually

pytestmark = [pytest.mark.integration, pytest.mark.training, pytest.mark.slow]


def _ca_file(control_plane: ControlPlane, directory: Path) -> Path:
    kubeconfig = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    ca = base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"])
    path = directory / "ca.crt"
    path.write_bytes(ca)
    return path


def _token(control_plane: ControlPlane, namespace: str, account: str) -> str:
    status, body = control_plane.api(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )
    assert status == 201, body
    return str(body["status"]["token"])


def _local_process(pod: Manifest, config_map: Manifest, root: Path) -> tuple[list[str], dict[str, str]]:
    """The container's command and environment with every mount path mapped under root."""
    spec = pod["spec"]
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        local = root / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = local
        source = volumes[mount["name"]].get("configMap")
        if source is not None:
            assert source["name"] == config_map["metadata"]["name"]
            for file_name, text in config_map["data"].items():
                (local / file_name).write_text(text)

    def local_path(value: str) -> str:
        for mount_path, local in sorted(mounts.items(), key=lambda item: -len(item[0])):
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(local) + value[len(mount_path) :]
        return value

    field_values = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
    }
    env = {"PATH": os.environ["PATH"]}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = local_path(item["value"])
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = field_values[item["valueFrom"]["fieldRef"]["fieldPath"]]
    command = [local_path(arg) for arg in container["command"] + container.get("args", [])]
    assert command[0] == "python"
    return [sys.executable, *command[1:]], env


def test_rendered_pod_trains_and_its_progress_reaches_the_finetunejob(
    control_plane: ControlPlane, api: Api, namespace: str, make_ftj: Any, tmp_path: Path
) -> None:
    from kubetune_trainer.tiny import write_tiny_base_model, write_tiny_task

    model = write_tiny_base_model(tmp_path / "models" / "tiny", hidden_size=32, num_layers=1, num_heads=2)
    data = write_tiny_task(tmp_path / "data" / "qa.jsonl", countries=12)
    output = tmp_path / "out"
    make_ftj(
        "real",
        {"kwok.kubetune.io/outcome": "Running"},
        baseModel={"uri": f"file://{model}"},
        datasets=[{"name": "qa", "uri": f"file://{data}", "format": "prompt-completion"}],
        hyperparameters={"maxSteps": 4, "batchSize": 4, "maxSeqLength": 64},
        evaluation={"metrics": ["loss"]},
        resources={"gpusPerNode": 0, "cpu": "1", "memory": "1Gi", "sharedMemory": "64Mi"},
        output={"uri": f"file://{output}/"},
    )
    eventually(
        lambda: (f := api.ftj(namespace, "real")) and f.get("status", {}).get("phase") == "Running", 60
    )
    (pod,) = api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    config_map = api.get(f"/api/v1/namespaces/{namespace}/configmaps/real-config")
    command, env = _local_process(pod, config_map, tmp_path / "pod")

    account = pod["spec"]["serviceAccountName"]
    token_file = tmp_path / "token"
    token_file.write_text(_token(control_plane, namespace, account))
    termination_log = tmp_path / "termination-log"
    env.update(
        KUBETUNE_KUBE_API=control_plane.server,
        KUBETUNE_KUBE_TOKEN_FILE=str(token_file),
        KUBETUNE_KUBE_CA_FILE=str(_ca_file(control_plane, tmp_path)),
        KUBETUNE_TERMINATION_MESSAGE_PATH=str(termination_log),
        PYTHONPATH=os.pathsep.join(str(REPO / p) for p in (".", "trainer_image")),
        OMP_NUM_THREADS="1",
    )
    assert pod["spec"]["containers"][0]["terminationMessagePath"] == TERMINATION_MESSAGE_PATH
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    # Progress went straight from the trainer to the API server with the job's own token.
    status = api.ftj(namespace, "real")["status"]
    assert status["progress"]["step"] == status["progress"]["totalSteps"] == 4
    assert status["metrics"]["trainLoss"] > 0
    table = control_plane.kubectl("get", "ftj", "real", "-n", namespace)
    assert "Running" in table and "100" in table

    # The real result becomes the kwok pod's termination message; the operator takes it from there.
    message = termination_log.read_text()
    patch = {"metadata": {"annotations": {"kwok.kubetune.io/outcome": "Succeeded",
                                          "kwok.kubetune.io/message": message}}}  # fmt: skip
    control_plane.kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace, "-p", json.dumps(patch))
    done = eventually(
        lambda: (f := api.ftj(namespace, "real")) and f["status"].get("phase") == "Succeeded" and f, 60
    )["status"]
    result = json.loads(message)
    assert done["artifacts"] == result["artifacts"] and done["artifacts"]["adapter"].startswith(
        f"file://{output}"
    )
    assert Path(done["artifacts"]["adapter"].removeprefix("file://"), "adapter_config.json").exists()
    assert done["metrics"]["testLoss"] == result["metrics"]["testLoss"]
    assert done["progress"]["step"] == 4  # the operator's writes left the trainer's progress alone
