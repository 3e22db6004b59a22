"""Real training of a tiny model on the CPU: methods, parameter counts, packing, resume,
artifacts, forgetting guard, observability and distributed training."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch
from kubetune_trainer import packing
from kubetune_trainer.errors import GateFailed, Preempted
from kubetune_trainer.reft import load_reft
from kubetune_trainer.run import run

from kubetune_api import observability as names

pytestmark = pytest.mark.training


def _out(config) -> Path:
    return Path(config.output.uri[len("file://") :])


def test_lora_trains_reports_formula_parameter_counts_and_loads_with_peft(make_config):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = make_config(
        evaluation={"metrics": ["loss", "perplexity", "exactMatch"], "everySteps": 4},
        hyperparameters={"maxSteps": 12, "learningRate": 0.03, "batchSize": 4, "maxSeqLength": 64},
        output={"uri": make_config().output.uri, "mergeAdapter": True},
    )
    result = run(config)
    report = json.loads((_out(config) / "eval_report.json").read_text())
    # LoRA on all-linear of 2 Llama layers (hidden 64, mlp 128):
    # q,k,v,o (64→64) + gate,up (64→128) + down (128→64).
    per_layer = 4 * 4 * (64 + 64) + 2 * 4 * (64 + 128) + 4 * (128 + 64)
    assert report["trainableParameters"] == 2 * per_layer
    first, last = report["training"]["validationHistory"][0][1], result.metrics.validation_loss
    assert first - last > 0.2, report["training"]["validationHistory"]
    assert "capitals/exactMatch" in result.metrics.task_scores

    base_dir = config.base_model.uri[len("file://") :]
    tokenizer = AutoTokenizer.from_pretrained(_out(config) / "adapter")
    inputs = tokenizer("question: what is the capital of x?\nanswer:", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    adapted = PeftModel.from_pretrained(base, _out(config) / "adapter").eval()
    assert adapted.get_nb_trainable_parameters()[1] and report["trainableParameters"] == sum(
        p.numel() for n, p in adapted.named_parameters() if "lora_" in n
    )
    merged = AutoModelForCausalLM.from_pretrained(_out(config) / "model").eval()
    with torch.no_grad():
        torch.testing.assert_close(adapted(**inputs).logits, merged(**inputs).logits, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(
            AutoModelForCausalLM.from_pretrained(base_dir)(**inputs).logits, merged(**inputs).logits
        )
    card = (_out(config) / "MODEL_CARD.md").read_text()
    assert result.lineage.datasets[0].sha256 in card and "LoRA" in card


def test_full_pretraining_from_config_learns_and_saves_a_loadable_model(make_config, world):
    from transformers import AutoModelForCausalLM

    config = make_config(
        method={"type": "Full"},
        objective="CausalLM",
        baseModel={
            "uri": f"file://{world}/base-config",
            "fromScratch": True,
            "configOverrides": {"num_hidden_layers": 1},
        },
        datasets=[{"name": "corpus", "uri": f"file://{world}/corpus.txt"}],
        hyperparameters={"maxSteps": 25, "learningRate": 0.005, "batchSize": 8, "maxSeqLength": 128},
    )
    result = run(config)
    report = json.loads((_out(config) / "eval_report.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(_out(config) / "model")
    assert model.config.num_hidden_layers == 1
    assert report["trainableParameters"] == sum(p.numel() for p in model.parameters())
    assert result.metrics.test_loss < 4.0  # random init starts at ln(vocab) ≈ 6.2
    data_report = json.loads((_out(config) / "data_report.json").read_text())
    assert data_report["leakage"] == {"exactOverlaps": 0, "nearOverlaps": 0}
    assert data_report["tokens"]["paddingFraction"] < 0.1


@pytest.mark.parametrize(
    ("positions", "share", "kinds"), [("f1+l1", False, 2), ("f1+l1", True, 1), ("l2", False, 1)]
)
def test_reft_parameter_count_formula(make_config, positions, share, kinds):
    from kubetune_trainer import models
    from kubetune_trainer.storage import Storage

    config = make_config(
        method={
            "type": "ReFT",
            "reft": {"rank": 3, "layers": [0, 1], "positions": positions, "shareWeights": share},
        }
    )
    bundle = models.build(
        config.base_model, config.method, Storage(), Path("/tmp"), 0, torch.device("cpu"), torch.float32
    )
    d, r = 64, 3
    assert bundle.trainable_parameters == 2 * kinds * (2 * r * d + r)
    assert all(not p.requires_grad for p in bundle.model.parameters())


def test_reft_trains_and_reloads_with_load_reft(make_config, world):
    from transformers import AutoModelForCausalLM

    config = make_config(method={"type": "ReFT", "reft": {"rank": 4, "layers": [1], "positions": "f1+l1"}})
    run(config)
    model = AutoModelForCausalLM.from_pretrained(f"{world}/base").eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        interventions = load_reft(model, _out(config) / "adapter")
        interventions.set_prompt_lengths([5])
        edited = model(input_ids=ids).logits
    rotation = interventions.interventions["1_first"].rotate_layer.weight
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(4), atol=1e-5, rtol=0)
    assert not torch.allclose(plain, edited)
    interventions.set_positions(None, None)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, plain)


def test_packing_keeps_examples_apart(world):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(f"{world}/base").eval()
    a = packing.TokenizedExample([5, 6, 7, 8], [5, 6, 7, 8], 4, "t")
    b = packing.TokenizedExample([9, 10, 11], [-100, 10, 11], 1, "t")
    (row,) = packing.pack([a, b], 16)
    assert row.position_ids == [0, 1, 2, 3, 0, 1, 2] and row.labels[4] == -100
    batch = packing.collate([row], 0, packed=True, length=10)
    with torch.no_grad():
        packed_logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
        alone = model(input_ids=torch.tensor([[9, 10, 11]])).logits
    torch.testing.assert_close(packed_logits[0, 4:7], alone[0], atol=1e-5, rtol=1e-4)


def test_resume_after_stop_equals_an_uninterrupted_run(make_config, tmp_path):
    method = {"type": "LoRA", "lora": {"rank": 4, "dropout": 0.1}}  # dropout: the RNG state must resume too
    hyper = {
        "maxSteps": 12,
        "learningRate": 0.005,
        "batchSize": 4,
        "maxSeqLength": 64,
        "gradientAccumulationSteps": 2,
    }
    straight = make_config(method, hyperparameters=hyper, output={"uri": f"file://{tmp_path}/straight"})
    resumed = make_config(method, hyperparameters=hyper, output={"uri": f"file://{tmp_path}/resumed"})
    expected = run(straight)
    with pytest.raises(Preempted):
        run(resumed, stop_after_step=7)
    checkpoints = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert checkpoints == ["step-00000005", "step-00000007"]  # keep=2, no temporary leftovers
    assert not (tmp_path / "resumed" / "adapter").exists()
    result = run(resumed)
    assert result.steps == expected.steps == 12
    assert result.metrics.train_loss == pytest.approx(expected.metrics.train_loss, rel=1e-5)
    assert result.metrics.test_loss == pytest.approx(expected.metrics.test_loss, rel=1e-5)


@pytest.mark.parametrize(
    ("action", "limit", "fails"), [("Fail", 0.0, True), ("Warn", 0.0, False), ("Fail", 10.0, False)]
)
def test_forgetting_guard(make_config, world, action, limit, fails):
    guard = {
        "dataset": {"uri": f"file://{world}/general.txt"},
        "maxLossIncreaseRatio": limit,
        "action": action,
    }
    config = make_config(
        method={"type": "Full"},
        hyperparameters={"maxSteps": 6, "learningRate": 0.01, "batchSize": 4, "maxSeqLength": 64},
        evaluation={"forgettingGuard": guard},
    )
    if fails:
        with pytest.raises(GateFailed) as error:
            run(config)
        metrics = error.value.details["metrics"]
        assert (_out(config) / "model" / "config.json").exists()
        assert json.loads((_out(config) / "eval_report.json").read_text())["flaggedByForgettingGuard"] is True
    else:
        metrics = run(config).metrics
    assert metrics.general_loss > metrics.general_loss_base  # full tuning on Q&A hurts general text
    assert metrics.forgetting_gate_passed is (not fails if action == "Fail" else limit >= 10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_progress_reports_and_metrics_endpoint(make_config, monkeypatch, tmp_path):
    patches: list[tuple[str, dict, str]] = []

    class StatusApi(BaseHTTPRequestHandler):
        def do_PATCH(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            patches.append(
                (self.path, body, self.headers["Content-Type"] + "|" + self.headers.get("Authorization", ""))
            )
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), StatusApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "token").write_text("secret-token\n")
    monkeypatch.setenv("KUBETUNE_KUBE_API", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("KUBETUNE_KUBE_TOKEN_FILE", str(tmp_path / "token"))
    port = _free_port()
    scraped: list[str] = []

    def scrape(update: dict) -> None:
        if update["step"] == 3:
            scraped.append(
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            )

    config = make_config(progressTarget="KubernetesStatus", progressIntervalSeconds=0, metricsPort=port)
    run(config, callback=scrape)
    server.shutdown()
    assert len(patches) >= 12
    path, body, headers = patches[-1]
    assert path == "/apis/kubetune.io/v1alpha1/namespaces/team/finetunejobs/test-job/status"
    assert headers == "application/merge-patch+json|Bearer secret-token"
    assert body["status"]["progress"]["step"] == 12 and body["status"]["progress"]["percent"] == 100
    assert body["status"]["metrics"]["testLoss"] > 0
    for name in names.TRAINER_METRICS:
        assert f"\n{name} " in scraped[0]
    assert f"\n{names.TRAINER_STEP} 3.0" in scraped[0]


def test_unreachable_api_server_never_fails_the_run(make_config, monkeypatch):
    monkeypatch.setenv("KUBETUNE_KUBE_API", f"http://127.0.0.1:{_free_port()}")
    config = make_config(progressTarget="KubernetesStatus", progressIntervalSeconds=0)
    assert run(config).steps == 12
