"""Loss, perplexity and exact-match accuracy; the forgetting guard's comparison."""

from __future__ import annotations

import math
import re
import string
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from .data import Example, completion_prefix
from .models import ModelBundle
from .packing import IGNORE_INDEX, Row, collate

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


@torch.no_grad()
def mean_loss(
    bundle: ModelBundle,
    rows: list[Row],
    batch_size: int,
    device: torch.device,
    packed: bool,
    autocast: Any = None,
) -> float | None:
    """Token-weighted mean next-token loss over rows (None without any loss tokens)."""
    if not rows:
        return None
    model = bundle.model
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    pad_id = bundle.tokenizer.pad_token_id
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id, packed).items()}
            labels = batch.pop("labels")
            if bundle.reft is not None:
                bundle.reft.set_prompt_spans([r.prompt_spans for r in chunk], device)
            with autocast or nullcontext():
                logits = model(**batch, use_cache=False).logits.float()
            shifted = labels[:, 1:]
            losses = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                shifted.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            total += float(losses)
            count += int((shifted != IGNORE_INDEX).sum())
    finally:
        if bundle.reft is not None:
            bundle.reft.set_positions(None, None)
        model.train(was_training)
    return total / count if count else None


def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(min(loss, 50.0))


def normalize_answer(text: str) -> str:
    """Lower-case, no punctuation, single spaces: 'Quell.' == ' quell'."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


@torch.no_grad()
def greedy_generate(
    bundle: ModelBundle, prompt_ids: list[int], max_new_tokens: int, device: torch.device
) -> list[int]:
    """Greedy decoding with a KV cache. ReFT edits the prompt pass only (its positions are prompt tokens)."""
    model = bundle.model
    eos = bundle.tokenizer.eos_token_id
    input_ids = torch.tensor([prompt_ids], device=device)
    if bundle.reft is not None:
        bundle.reft.set_prompt_lengths([len(prompt_ids)], device)
    try:
        output = model(input_ids=input_ids, use_cache=True)
    finally:
        if bundle.reft is not None:
            bundle.reft.set_positions(None, None)
    generated: list[int] = []
    cache = output.past_key_values
    next_token = int(output.logits[0, -1].argmax())
    while len(generated) < max_new_tokens and next_token != eos:
        generated.append(next_token)
        output = model(
            input_ids=torch.tensor([[next_token]], device=device), past_key_values=cache, use_cache=True
        )
        cache = output.past_key_values
        next_token = int(output.logits[0, -1].argmax())
    return generated


def exact_match(
    bundle: ModelBundle, examples: list[Example], max_new_tokens: int, device: torch.device
) -> tuple[float | None, list[dict[str, str]]]:
    """Share of examples whose greedy completion equals the reference after normalisation."""
    candidates = [e for e in examples if e.prompt]
    if not candidates:
        return None, []
    tokenizer = bundle.tokenizer
    model = bundle.model
    was_training = model.training
    model.eval()
    hits = 0
    samples: list[dict[str, str]] = []
    try:
        for example in candidates:
            prompt_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
            reference_ids = tokenizer(
                completion_prefix(example.prompt) + example.completion, add_special_tokens=False
            )
            # A longer answer can only match if it ends right after the reference: a few tokens of
            # slack suffice.
            budget = min(max_new_tokens, len(reference_ids["input_ids"]) + 8)
            answer = tokenizer.decode(
                greedy_generate(bundle, prompt_ids, budget, device), skip_special_tokens=True
            )
            hit = normalize_answer(answer) == normalize_answer(example.completion)
            hits += hit
            if len(samples) < 5:
                samples.append(
                    {"prompt": example.prompt, "reference": example.completion, "generated": answer}
                )
    finally:
        model.train(was_training)
    return hits / len(candidates), samples


def forgetting_ratio(base_loss: float, candidate_loss: float) -> float:
    """(candidate − base) / base: the relative increase of the general loss."""
    return (candidate_loss - base_loss) / base_loss if base_loss > 0 else 0.0
