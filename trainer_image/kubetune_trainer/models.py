"""Load the base model and tokenizer, and apply the method: Full, LoRA, QLoRA or ReFT."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kubetune_api.finetunejob import BaseModelSource, MethodSpec, MethodType

from .errors import ConfigError
from .reft import ReftInterventions, ReftSpec
from .storage import Storage, StorageError


def qlora_available() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "method QLoRA needs a CUDA GPU, and none is visible (use LoRA on CPU)"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False, "method QLoRA needs the bitsandbytes package, which is not installed in this image"
    return True, ""


def resolve_model_dir(source: BaseModelSource, storage: Storage, cache_root: Path) -> tuple[str, str]:
    """(what from_pretrained gets, the revision for the lineage)."""
    if source.uri.startswith("hf://"):
        return source.uri[len("hf://") :], source.revision or "main"
    try:
        directory = storage.materialize_dir(source.uri, cache_root)
    except StorageError as error:
        raise ConfigError(f"baseModel.uri: {error}") from error
    if not (directory / "config.json").is_file():
        raise ConfigError(f"baseModel.uri: {source.uri} has no config.json")
    return str(directory), "sha256:" + directory_digest(directory)


def directory_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(file.relative_to(directory).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_tokenizer(model_dir: str, source: BaseModelSource) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_dir, revision=source.revision, token=os.environ.get("HF_TOKEN")
        )
    except Exception as error:
        raise ConfigError(f"baseModel.uri: cannot load the tokenizer from {source.uri}: {error}") from error
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"baseModel.uri: the tokenizer of {source.uri} has no eos token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    model_dir: str, source: BaseModelSource, seed: int, dtype: torch.dtype, quantization: Any = None
) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    token = os.environ.get("HF_TOKEN")
    try:
        config = AutoConfig.from_pretrained(model_dir, revision=source.revision, token=token)
    except Exception as error:
        raise ConfigError(
            f"baseModel.uri: cannot read the model config from {source.uri}: {error}"
        ) from error
    for key, value in source.config_overrides.items():
        if not hasattr(config, key):
            raise ConfigError(f"baseModel.configOverrides.{key}: not a field of {type(config).__name__}")
        setattr(config, key, value)
    if source.from_scratch:
        torch.manual_seed(seed)
        model: nn.Module = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
        return model
    try:
        return AutoModelForCausalLM.from_pretrained(
            model_dir,
            config=config,
            revision=source.revision,
            token=token,
            dtype=dtype,
            quantization_config=quantization,
        )
    except Exception as error:
        raise ConfigError(f"baseModel.uri: cannot load the weights from {source.uri}: {error}") from error


def lora_expected_parameters(model: nn.Module, target_modules: list[str], rank: int) -> int:
    """Σ r·(in + out) over the linear layers LoRA adapts (for the trainable-parameter report)."""
    from peft.tuners.lora import LoraLayer

    total = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            base: Any = module.get_base_layer()  # Linear-like: in_features/out_features are ints
            total += rank * (base.in_features + base.out_features)
    return total


@dataclass
class ModelBundle:
    model: nn.Module
    """The HF model (a PeftModel for LoRA/QLoRA)."""
    tokenizer: Any
    method: MethodType
    reft: ReftInterventions | None
    base_revision: str
    trainable_parameters: int
    total_parameters: int

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        if self.reft is not None:
            return [(f"reft.{n}", p) for n, p in self.reft.named_parameters() if p.requires_grad]
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    @contextmanager
    def base_behaviour(self) -> Iterator[None]:
        """The base model's predictions: adapter or interventions switched off (Full: no-op)."""
        if self.reft is not None:
            with self.reft.disabled():
                yield
        elif self.method in (MethodType.LORA, MethodType.QLORA):
            with self.model.disable_adapter():  # type: ignore[operator]
                yield
        else:
            with nullcontext():
                yield


class TrainableModule(nn.Module):
    """What the optimizer and DDP see: the model plus ReFT interventions (when present)."""

    def __init__(self, bundle: ModelBundle) -> None:
        super().__init__()
        self.model = bundle.model
        self.reft = bundle.reft

    def forward(self, batch: dict[str, torch.Tensor], prompt_spans: list[list[tuple[int, int]]]) -> Any:
        if self.reft is not None:
            self.reft.set_prompt_spans(prompt_spans, batch["input_ids"].device)
        try:
            return self.model(**batch, use_cache=False)
        finally:
            if self.reft is not None:
                self.reft.set_positions(None, None)


def build(
    source: BaseModelSource,
    method: MethodSpec,
    storage: Storage,
    cache_root: Path,
    seed: int,
    device: torch.device,
    frozen_dtype: torch.dtype,
) -> ModelBundle:
    model_dir, revision = resolve_model_dir(source, storage, cache_root)
    tokenizer = load_tokenizer(model_dir, source)
    quantization = None
    if method.type == MethodType.QLORA:
        from transformers import BitsAndBytesConfig

        qlora_settings = method.qlora_settings()
        quantization = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=qlora_settings.bits == 4,
            load_in_8bit=qlora_settings.bits == 8,
            bnb_4bit_quant_type=qlora_settings.quant_type,
            bnb_4bit_use_double_quant=qlora_settings.double_quant,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    # Frozen base weights may live in half precision; trained weights stay fp32 (autocast does the rest).
    dtype = torch.float32 if method.type == MethodType.FULL else frozen_dtype
    model = load_base_model(model_dir, source, seed, dtype, quantization)
    if quantization is None:
        model.to(device)
    torch.manual_seed(seed)
    reft = None
    if method.type in (MethodType.LORA, MethodType.QLORA):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if quantization is not None:
            model = prepare_model_for_kbit_training(model)  # type: ignore[no-untyped-call]
        lora_settings = method.lora_settings()
        targets: Any = (
            "all-linear" if lora_settings.target_modules == ["all-linear"] else lora_settings.target_modules
        )
        config = LoraConfig(
            r=lora_settings.rank,
            lora_alpha=lora_settings.alpha,  # type: ignore[arg-type]  # peft says int, uses alpha / r
            lora_dropout=lora_settings.dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        )
        try:
            model = get_peft_model(model, config)
        except ValueError as error:
            raise ConfigError(f"method.lora.targetModules: {error}") from error
        trainable, total = model.get_nb_trainable_parameters()
    elif method.type == MethodType.REFT:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        settings_reft = method.reft_settings()
        hf_config: Any = model.config  # the HF PretrainedConfig (Module attributes type as Tensor | Module)
        num_layers = int(hf_config.num_hidden_layers)
        layers = sorted(set(settings_reft.layers)) or list(range(num_layers))
        if layers[-1] >= num_layers:
            raise ConfigError(
                f"method.reft.layers: layer {layers[-1]} does not exist (the model has {num_layers})"
            )
        first, last = ReftSpec.parse_positions(settings_reft.positions)
        spec = ReftSpec(
            hidden_size=int(hf_config.hidden_size),
            num_layers=num_layers,
            rank=settings_reft.rank,
            layers=layers,
            first=first,
            last=last,
            dropout=settings_reft.dropout,
            share_weights=settings_reft.share_weights,
        )
        if spec.rank > spec.hidden_size:
            raise ConfigError(f"method.reft.rank: {spec.rank} exceeds the hidden size {spec.hidden_size}")
        reft = ReftInterventions(spec).to(device)
        reft.attach(model)
        trainable = sum(p.numel() for p in reft.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters()) + trainable
    else:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
    return ModelBundle(model, tokenizer, method.type, reft, revision, int(trainable), int(total))
