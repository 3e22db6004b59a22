"""Tiny models and synthetic data that a CPU learns in seconds; nothing comes from a hub.

The data describes a fictional world (countries with capitals, exports and animals) built
deterministically from a seed, so a tiny model can learn it measurably: the pre-training
corpus states the facts in prose, the tasks ask about them.

    write_tiny_corpus(dir / "corpus.txt")                        # text, one document per line
    write_tiny_task(dir / "capitals.jsonl")                      # prompt-completion JSONL
    write_tiny_chat(dir / "chat.jsonl")                          # chat JSONL
    write_tiny_base_model(dir / "base", corpus=dir / "corpus.txt")  # config + tokenizer (+ weights)
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "kr", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "n", "r", "s", "l", "m"]
_COLORS = ["red", "blue", "green", "golden", "silver", "black", "white", "purple"]
_ANIMALS = ["fox", "owl", "horse", "whale", "tiger", "crane", "wolf", "bear"]
_GOODS = ["salt", "tea", "copper", "wool", "glass", "honey", "silk", "iron", "amber", "rice"]

CAPITAL_PROMPTS = (
    "what is the capital of {country}?",
    "name the capital of {country}.",
    "which city is the capital of {country}?",
    "tell me the capital of {country}.",
)
EXPORT_PROMPTS = (
    "what does {country} export?",
    "name the main export of {country}.",
    "which good does {country} sell abroad?",
)


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    export: str
    color: str
    animal: str


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))


def tiny_world(countries: int = 24, seed: int = 0) -> list[Country]:
    """A deterministic fictional world with unique country and capital names."""
    rng = random.Random(seed)
    used: set[str] = set()
    world: list[Country] = []
    while len(world) < countries:
        name, capital = _word(rng, 2) + "ia", _word(rng, 2)
        if name in used or capital in used:
            continue
        used.update((name, capital))
        world.append(Country(name, capital, rng.choice(_GOODS), rng.choice(_COLORS), rng.choice(_ANIMALS)))
    return world


def _fact_sentences(country: Country) -> list[str]:
    c = country
    return [
        f"the capital of {c.name} is {c.capital}.",
        f"{c.capital} is the capital city of {c.name}.",
        f"{c.name} exports {c.export}.",
        f"people in {c.name} love the {c.color} {c.animal}.",
        f"the city of {c.capital} lies in {c.name}.",
        f"traders from {c.capital} sell {c.export}.",
    ]


def tiny_corpus(documents: int = 600, seed: int = 0, world_seed: int = 0, countries: int = 24) -> list[str]:
    """Documents of 2-4 true sentences about the world, one per line."""
    world = tiny_world(countries, world_seed)
    rng = random.Random(seed)
    docs = []
    for _ in range(documents):
        sentences = [rng.choice(_fact_sentences(rng.choice(world))) for _ in range(rng.randint(2, 4))]
        docs.append(" ".join(sentences))
    return docs


def write_tiny_corpus(
    path: str | Path, documents: int = 600, seed: int = 0, world_seed: int = 0, countries: int = 24
) -> Path:
    """Plain text corpus, one document per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(tiny_corpus(documents, seed, world_seed, countries)) + "\n", encoding="utf-8")
    return path


def tiny_task_rows(task: str = "capitals", world_seed: int = 0, countries: int = 24) -> list[dict[str, str]]:
    """Prompt-completion rows: every phrasing for every country (capitals or exports)."""
    world = tiny_world(countries, world_seed)
    prompts = CAPITAL_PROMPTS if task == "capitals" else EXPORT_PROMPTS
    answer: Callable[[Country], str] = (
        (lambda c: c.capital) if task == "capitals" else (lambda c: c.export)
    )
    return [{"prompt": p.format(country=c.name), "completion": answer(c)} for c in world for p in prompts]


def write_tiny_task(
    path: str | Path, task: str = "capitals", world_seed: int = 0, countries: int = 24
) -> Path:
    """Prompt-completion JSONL ({"prompt", "completion"}); task is "capitals" or "exports"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = tiny_task_rows(task, world_seed, countries)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_tiny_chat(path: str | Path, world_seed: int = 0, countries: int = 24) -> Path:
    """Chat JSONL ({"messages": [{role, content}, ...]}) asking for capitals."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in tiny_task_rows("capitals", world_seed, countries):
        messages = [
            {"role": "system", "content": "answer with one word."},
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["completion"]},
        ]
        lines.append(json.dumps({"messages": messages}) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained locally on `texts`, loadable with AutoTokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # transformers leaves __init__ unannotated
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )


def write_tiny_base_model(
    path: str | Path,
    *,
    corpus: str | Path | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 512,
    max_position_embeddings: int = 256,
    with_weights: bool = True,
    seed: int = 0,
) -> Path:
    """A tiny Llama-style model directory: config.json + tokenizer (+ random weights when with_weights).

    Without weights it is a pre-training starting point (baseModel.fromScratch); with weights
    AutoModelForCausalLM.from_pretrained loads it like any hub model.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if corpus is not None:
        texts = Path(corpus).read_text(encoding="utf-8").splitlines()
    else:
        texts = tiny_corpus(seed=seed)
        texts += [
            f"{r['prompt']} {r['completion']}"
            for task in ("capitals", "exports")
            for r in tiny_task_rows(task)
        ]
    tokenizer = train_tokenizer(texts, vocab_size)
    tokenizer.save_pretrained(path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    if with_weights:
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(path)
    else:
        config.save_pretrained(path)
    return path
