"""LoReFT (Wu et al., 2024) written natively in torch: Φ(h) = h + Rᵀ(W h + b − R h).

R (r×d) has orthonormal rows (torch.nn.utils.parametrizations.orthogonal), W (r×d) and b (r)
are a plain linear layer. Interventions edit the output hidden states of chosen decoder layers
at chosen prompt positions (fN: the first N prompt tokens, lN: the last N) through forward
hooks; the base model stays frozen and untouched. Trainable parameters per intervention:
2·r·d + r; with share_weights the first and last positions of a layer share one intervention.

    interventions = load_reft(model, "out/adapter")      # hooks attached, eval mode
    interventions.set_prompt_lengths([len(prompt_ids)])  # before the forward pass over the prompt
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

REFT_CONFIG_FILE = "reft_config.json"
REFT_WEIGHTS_FILE = "interventions.safetensors"


class LoReftIntervention(nn.Module):
    def __init__(self, hidden_size: int, rank: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.rotate_layer = orthogonal(nn.Linear(hidden_size, rank, bias=False))
        self.learned_source = nn.Linear(hidden_size, rank)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        rotation = cast(torch.Tensor, self.rotate_layer.weight)  # R: r×d, orthonormal rows
        original = hidden.float()
        edit = self.learned_source(original) - original @ rotation.T
        out: torch.Tensor = (original + self.dropout(edit) @ rotation).to(hidden.dtype)
        return out


@dataclass(frozen=True)
class ReftSpec:
    hidden_size: int
    num_layers: int
    rank: int
    layers: list[int]
    first: int
    last: int
    dropout: float = 0.0
    share_weights: bool = False

    @classmethod
    def parse_positions(cls, positions: str) -> tuple[int, int]:
        match = re.fullmatch(r"(?:f(\d+))?\+?(?:l(\d+))?", positions)
        if not match or not positions:
            raise ValueError(f"positions {positions!r}: expected fN, lN or fN+lN")
        return int(match.group(1) or 0), int(match.group(2) or 0)

    def kinds(self) -> list[str]:
        wanted = [k for k, n in (("first", self.first), ("last", self.last)) if n > 0]
        return ["shared"] if self.share_weights and len(wanted) == 2 else wanted

    def trainable_parameters(self) -> int:
        return len(self.layers) * len(self.kinds()) * (2 * self.rank * self.hidden_size + self.rank)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a causal LM (Llama/Mistral/Qwen `model.layers`, GPT-2 `transformer.h`)."""
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layers", "h", "blocks")
    ]
    if not candidates:
        raise ValueError("cannot find the decoder layers of this model")
    return min(candidates, key=lambda item: item[0].count("."))[1]


class ReftInterventions(nn.Module):
    """All interventions of a run, plus the hooks that apply them."""

    def __init__(self, spec: ReftSpec) -> None:
        super().__init__()
        self.spec = spec
        self.interventions = nn.ModuleDict(
            {
                f"{layer}_{kind}": LoReftIntervention(spec.hidden_size, spec.rank, spec.dropout)
                for layer in spec.layers
                for kind in spec.kinds()
            }
        )
        self.enabled = True
        self._first: torch.Tensor | None = None
        self._last: torch.Tensor | None = None
        self._handles: list[Any] = []

    # ---------------------------------------------------------------- positions

    def set_positions(self, first: torch.Tensor | None, last: torch.Tensor | None) -> None:
        """(batch, P) sequence indices to edit, -1 for none; None clears."""
        self._first, self._last = first, last

    def set_prompt_spans(
        self, spans: list[list[tuple[int, int]]], device: torch.device | None = None
    ) -> None:
        """Per row, (start, prompt_length) of each example; packed rows hold several."""
        first_rows, last_rows = [], []
        for row in spans:
            first: list[int] = []
            last: list[int] = []
            for start, length in row:
                n_first, n_last = min(self.spec.first, length), min(self.spec.last, length)
                first.extend(start + i for i in range(n_first))
                last.extend(start + length - n_last + i for i in range(n_last))
            first_rows.append(first)
            last_rows.append(last)
        self.set_positions(_padded(first_rows, device), _padded(last_rows, device))

    def set_prompt_lengths(self, lengths: list[int], device: torch.device | None = None) -> None:
        """For unpacked, left-aligned prompts: one example per row starting at 0."""
        self.set_prompt_spans([[(0, n)] for n in lengths], device)

    @contextmanager
    def disabled(self) -> Iterator[None]:
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    # ---------------------------------------------------------------- hooks

    def attach(self, model: nn.Module) -> ReftInterventions:
        self.detach()
        layers = decoder_layers(model)
        for layer in self.spec.layers:
            self._handles.append(layers[layer].register_forward_hook(self._hook(layer)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, layer: int) -> Any:
        def apply(_module: nn.Module, _args: Any, output: Any) -> Any:
            if not self.enabled or (self._first is None and self._last is None):
                return output
            hidden = output[0] if isinstance(output, tuple) else output
            for kind, positions in (("first", self._first), ("last", self._last)):
                if positions is None or positions.numel() == 0:
                    continue
                key = f"{layer}_shared" if f"{layer}_shared" in self.interventions else f"{layer}_{kind}"
                if key not in self.interventions:
                    continue
                valid = (positions >= 0) & (positions < hidden.shape[1])
                rows, slots = torch.nonzero(valid, as_tuple=True)
                if rows.numel() == 0:
                    continue
                columns = positions[rows, slots]
                edited = self.interventions[key](hidden[rows, columns])
                hidden = hidden.index_put((rows, columns), edited)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return apply

    # ---------------------------------------------------------------- persistence

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / REFT_CONFIG_FILE).write_text(json.dumps(asdict(self.spec), indent=2))
        state = {k: v.detach().cpu().contiguous() for k, v in self.interventions.state_dict().items()}
        save_file(state, str(directory / REFT_WEIGHTS_FILE))


def _padded(rows: list[list[int]], device: torch.device | None) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    tensor = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        tensor[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return tensor.to(device) if device is not None else tensor


def load_reft(model: nn.Module, path: str | Path) -> ReftInterventions:
    """Rebuild saved interventions, attach them to `model` (the same base model) and return them."""
    directory = Path(path)
    spec = ReftSpec(**json.loads((directory / REFT_CONFIG_FILE).read_text()))
    interventions = ReftInterventions(spec)
    interventions.interventions.load_state_dict(load_file(str(directory / REFT_WEIGHTS_FILE)))
    device = next(model.parameters()).device
    interventions.to(device).eval()
    return interventions.attach(model)
