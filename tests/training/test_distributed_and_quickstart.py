"""Two-process DDP on gloo, and the quickstart's promise: the LoRA model beats the base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.training
REPO = Path(__file__).resolve().parents[2]


def test_two_cpu_processes_agree_on_weights_and_loss(make_config, tmp_path):
    import torch

    config = make_config(
        method={"type": "Full"},
        hyperparameters={"maxSteps": 4, "learningRate": 0.005, "batchSize": 2, "maxSeqLength": 64},
    )
    (tmp_path / "config.json").write_text(config.model_dump_json(by_alias=True))
    script = (
        "import json, os, sys, torch; from kubetune_api.trainer_contract import TrainerConfig; "
        "from kubetune_trainer.run import run; import kubetune_trainer.run as r\n"
        "config = TrainerConfig.model_validate_json(open(sys.argv[1]).read())\n"
        "orig_train = r.train\n"
        "def train(ctx, *a):\n"
        "    state = orig_train(ctx, *a)\n"
        "    weights = torch.cat([p.detach().flatten() for p in ctx.bundle.model.parameters()])\n"
        "    json.dump({'loss': state.last_train_loss, 'checksum': float(weights.double().sum()),"
        " 'norm': float(weights.norm())},"
        " open(f\"{sys.argv[2]}/rank{os.environ['RANK']}.json\", 'w'))\n"
        "    return state\n"
        "r.train = train\nrun(config)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'trainer_image'}", "OMP_NUM_THREADS": "1"}
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        "--no-python",
        sys.executable,
        "-c",
        script,
        str(tmp_path / "config.json"),
        str(tmp_path),
    ]
    process = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert ranks[0] == ranks[1]
    assert torch.isfinite(torch.tensor(ranks[0]["loss"]))


def test_quickstart_lora_beats_the_base_model_and_passes_the_forgetting_guard(tmp_path, capsys):
    import time

    from kubetune_cli.quickstart import quickstart

    started = time.monotonic()
    assert quickstart(tmp_path / "qs", progress=False) == 0
    elapsed = time.monotonic() - started
    output = capsys.readouterr().out
    table = [line for line in output.splitlines() if line.startswith("| ")]
    values = {line.split("|")[1].strip(): [float(x) for x in line.split("|")[2:4]] for line in table[1:]}
    print("\n" + "\n".join(table) + f"\nquickstart: {elapsed:.1f} s")
    base_loss, tuned_loss = values["capitals loss"]
    base_em, tuned_em = values["capitals exact match"]
    general_base, general_tuned = values["general loss (guard)"]
    assert tuned_loss < base_loss / 2
    assert tuned_em >= base_em + 0.3
    # The forgetting guard (action Fail, limit 10%) passed: general replay kept general text intact.
    assert general_tuned <= general_base * 1.10
    assert "passed (general loss" in output and "FAILED" not in output
    report = json.loads((tmp_path / "qs" / "finetuned" / "eval_report.json").read_text())
    assert report["test"]["tasks"]["capitals"]["examples"] >= 10
    assert report["forgettingGuard"]["passed"] is True and report["forgettingGuard"]["action"] == "Fail"
    assert report["flaggedByForgettingGuard"] is False
    # The "base" column is the trainer's own compareWithBase score on the same test rows.
    assert report["test"]["tasks"]["capitals"]["lossBase"] == pytest.approx(base_loss, abs=1e-3)
