"""Tokenization, completion-only labels and document-boundary-aware sequence packing.

Packing concatenates examples into rows of exactly maxSeqLength tokens. Attention never
crosses examples: position_ids restart at 0 for every example and no 2-D attention mask is
passed, so transformers builds a block-diagonal causal mask from the position resets
(masking_utils.find_packed_sequence_indices; flash-attention uses the same resets for its
varlen kernels). In addition the first token of every example gets label -100, so no loss
term asks the model to predict an example from the one before it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch

from kubetune_api.finetunejob import Objective

from .data import Example, completion_prefix

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    prompt_length: int
    """Tokens of the prompt (the whole example for text data): where ReFT intervenes."""
    task: str


@dataclass
class Row:
    """One training sequence: several packed examples, or one padded example."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    prompt_spans: list[tuple[int, int]] = field(default_factory=list)
    """(start, prompt_length) of each example in the row."""


def tokenize(
    examples: list[Example], tokenizer: Any, objective: Objective, max_seq_length: int
) -> tuple[list[TokenizedExample], dict[str, Any]]:
    """Prompt and completion are tokenized separately so the prompt boundary is exact."""
    eos = tokenizer.eos_token_id
    result = []
    truncated = 0
    for example in examples:
        prompt_ids = (
            tokenizer(example.prompt, add_special_tokens=False)["input_ids"] if example.prompt else []
        )
        completion_text = completion_prefix(example.prompt) + example.completion
        completion_ids = tokenizer(completion_text, add_special_tokens=False)["input_ids"] + [eos]
        ids = prompt_ids + completion_ids
        if objective == Objective.INSTRUCTION and prompt_ids:
            labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
        else:
            labels = list(ids)
        if len(ids) > max_seq_length:
            truncated += 1
            ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        prompt_length = min(len(prompt_ids) or len(ids), len(ids))
        result.append(TokenizedExample(ids, labels, prompt_length, example.task))
    lengths = [len(t.input_ids) for t in result]
    stats = {
        "examples": len(result),
        "tokens": sum(lengths),
        "lossTokens": sum(sum(1 for x in t.labels if x != IGNORE_INDEX) for t in result),
        "meanTokens": round(sum(lengths) / len(lengths), 2) if lengths else 0,
        "maxTokens": max(lengths, default=0),
        "truncated": truncated,
    }
    return result, stats


def pack(examples: list[TokenizedExample], max_seq_length: int) -> list[Row]:
    """Greedy packing in the given order; an example that does not fit starts a new row."""
    rows: list[Row] = []
    current = Row()
    for example in examples:
        if current.input_ids and len(current.input_ids) + len(example.input_ids) > max_seq_length:
            rows.append(current)
            current = Row()
        start = len(current.input_ids)
        current.input_ids.extend(example.input_ids)
        current.labels.extend([IGNORE_INDEX, *example.labels[1:]])
        current.position_ids.extend(range(len(example.input_ids)))
        current.prompt_spans.append((start, example.prompt_length))
    if current.input_ids:
        rows.append(current)
    return rows


def unpacked(examples: list[TokenizedExample]) -> list[Row]:
    return [
        Row(list(e.input_ids), list(e.labels), list(range(len(e.input_ids))), [(0, e.prompt_length)])
        for e in examples
    ]


def build_rows(examples: list[TokenizedExample], max_seq_length: int, packing: bool, seed: int) -> list[Row]:
    """Shuffle examples once (deterministically) so packed rows mix datasets, then pack."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    return pack(order, max_seq_length) if packing else unpacked(order)


def collate(rows: list[Row], pad_id: int, packed: bool, length: int | None = None) -> dict[str, torch.Tensor]:
    """Tensors for a batch. Packed batches carry no attention_mask (see the module docstring);
    padding then forms its own segment whose labels are ignored."""
    width = length or max(len(r.input_ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        position_ids[i, :n] = torch.tensor(row.position_ids)
        position_ids[i, n:] = torch.arange(width - n)
        attention_mask[i, :n] = 1
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
    if not packed:
        batch["attention_mask"] = attention_mask
    return batch


def steps_per_epoch(num_rows: int, batch_size: int, accumulation: int, world_size: int) -> int:
    return max(1, math.ceil(batches_per_rank(num_rows, batch_size, world_size) / accumulation))


def batches_per_rank(num_rows: int, batch_size: int, world_size: int) -> int:
    return max(1, math.ceil(num_rows / batch_size) // world_size)


def epoch_batches(
    num_rows: int, batch_size: int, seed: int, epoch: int, rank: int, world_size: int
) -> list[list[int]]:
    """This rank's row indices for each micro-batch of an epoch: a fresh permutation per epoch,
    dealt round-robin so every rank gets the same number of batches."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(num_rows, generator=generator).tolist()
    batches = [order[i : i + batch_size] for i in range(0, num_rows, batch_size)]
    per_rank = batches_per_rank(num_rows, batch_size, world_size)
    batches = (batches * world_size)[: per_rank * world_size] if len(batches) < world_size else batches
    return [batches[rank + world_size * i] for i in range(per_rank)]
