"""Tokens/s of the kubetune trainer (packing) vs a plain HF Trainer + PEFT baseline (padding to
max length), same tiny model, data and machine; plus peak memory of LoRA, ReFT and Full.

    python benchmarks/trainer_throughput.py [--steps 30] [--seq 256]

Not a test: prints a table. Runs on a GPU unchanged (CUDA max_memory_allocated; RSS on CPU).
Throughput counts real (non-padding) tokens of training examples per second.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "trainer_image")]


def kubetune(world: Path, method: dict, steps: int, seq: int, batch: int) -> dict:
    from kubetune_trainer.run import run

    from kubetune_api.trainer_contract import TrainerConfig

    out = world / f"out-{method['type']}"
    config = TrainerConfig.model_validate(
        {
            "job": {"name": "bench"},
            "baseModel": {"uri": f"file://{world}/base"},
            "method": method,
            "objective": "Instruction",
            "datasets": [
                {
                    "name": "capitals",
                    "uri": f"file://{world}/task.jsonl",
                    "format": "prompt-completion",
                    "template": "question: {prompt}\nanswer:",
                }
            ],
            "split": {"train": 0.98, "validation": 0.01, "test": 0.01},
            "dataPreparation": {"deduplication": "None"},
            "hyperparameters": {
                "maxSteps": steps,
                "batchSize": batch,
                "maxSeqLength": seq,
                "learningRate": 1e-3,
            },
            "checkpoint": {"everySteps": 10_000},
            "output": {"uri": f"file://{out}"},
            "metricsPort": 0,
        }
    )
    run(config)
    report = json.loads((out / "eval_report.json").read_text())["training"]
    return {"tokensPerSecond": report["tokensPerSecond"], "peakMemoryBytes": report["peakMemoryBytes"]}


def hf_baseline(world: Path, steps: int, seq: int, batch: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(world / "base")
    rows = [json.loads(line) for line in (world / "task.jsonl").read_text().splitlines()]
    texts = [f"question: {r['prompt']}\nanswer: {r['completion']}{tokenizer.eos_token}" for r in rows]
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=seq, return_tensors="pt")
    real_tokens = int(encoded["attention_mask"].sum()) / len(texts)

    class Padded(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(texts)

        def __getitem__(self, i: int) -> dict:
            labels = encoded["input_ids"][i].clone()
            labels[encoded["attention_mask"][i] == 0] = -100
            return {
                "input_ids": encoded["input_ids"][i],
                "attention_mask": encoded["attention_mask"][i],
                "labels": labels,
            }

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(world / "base"),
        LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=batch,
            learning_rate=1e-3,
            report_to=[],
            save_strategy="no",
            logging_steps=10_000,
            disable_tqdm=True,
        )
        start = time.perf_counter()
        Trainer(model=model, args=args, train_dataset=Padded()).train()
        elapsed = time.perf_counter() - start
    return {"tokensPerSecond": round(steps * batch * real_tokens / elapsed, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    world = (
        Path(args.only.split(":", 1)[1]) if args.only else Path(tempfile.mkdtemp(prefix="kubetune-bench-"))
    )
    if args.only:  # one measurement per process, so peak memory is not shared between runs
        kind = args.only.split(":", 1)[0]
        methods = {
            "LoRA": {"type": "LoRA", "lora": {"rank": 16, "alpha": 32}},
            "ReFT": {"type": "ReFT"},
            "Full": {"type": "Full"},
        }
        result = (
            hf_baseline(world, args.steps, args.seq, args.batch)
            if kind == "hf"
            else kubetune(world, methods[kind], args.steps, args.seq, args.batch)
        )
        print(json.dumps(result))
        return
    from kubetune_trainer import tiny

    tiny.write_tiny_task(world / "task.jsonl", countries=200)
    tiny.write_tiny_base_model(
        world / "base", hidden_size=256, num_layers=4, num_heads=8, max_position_embeddings=args.seq
    )
    results = {}
    for kind in ("hf", "LoRA", "ReFT", "Full"):
        output = subprocess.run(
            [
                sys.executable,
                __file__,
                "--steps",
                str(args.steps),
                "--seq",
                str(args.seq),
                "--batch",
                str(args.batch),
                "--only",
                f"{kind}:{world}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results[kind] = json.loads(output.strip().splitlines()[-1])
    ratio = results["LoRA"]["tokensPerSecond"] / results["hf"]["tokensPerSecond"]
    print(f"{'run':<28}{'tokens/s':>12}{'peak memory':>16}")
    print(f"{'HF Trainer + PEFT (padded)':<28}{results['hf']['tokensPerSecond']:>12.0f}{'-':>16}")
    for kind in ("LoRA", "ReFT", "Full"):
        r = results[kind]
        print(
            f"{'kubetune ' + kind + ' (packed)':<28}{r['tokensPerSecond']:>12.0f}"
            f"{r['peakMemoryBytes'] / 2**20:>13.0f} MiB"
        )
    print(f"LoRA throughput ratio kubetune / HF baseline: {ratio:.2f}x (goal >= 1.5x)")


if __name__ == "__main__":
    main()
