"""Parse manifests into API objects with errors that name the field, like the API server does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .constants import API_VERSION
from .continuouspretrain import ContinuousPretrain
from .finetunejob import FineTuneJob

KubetuneObject = FineTuneJob | ContinuousPretrain
_KINDS: dict[str, type[FineTuneJob] | type[ContinuousPretrain]] = {
    "FineTuneJob": FineTuneJob,
    "ContinuousPretrain": ContinuousPretrain,
}


class ManifestError(ValueError):
    """A manifest that is not a valid kubetune object; the message names each bad field."""


def field_path(loc: tuple[int | str, ...]) -> str:
    """('spec', 'datasets', 0, 'uri') -> 'spec.datasets[0].uri'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not (part.startswith("function-") or "[" in part):
            path += f".{part}" if path else part
    return path


def describe_validation_error(error: ValidationError, source: str = "") -> str:
    lines = []
    for item in error.errors():
        where = field_path(item["loc"]) or "(root)"
        lines.append(f"{where}: {item['msg']}")
    prefix = f"{source}: " if source else ""
    return prefix + "; ".join(lines)


def parse_object(document: dict[str, Any], source: str = "") -> KubetuneObject:
    if not isinstance(document, dict):
        raise ManifestError(f"{source}: expected a mapping, got {type(document).__name__}")
    kind = document.get("kind")
    if document.get("apiVersion") != API_VERSION:
        raise ManifestError(f"{source}: apiVersion must be {API_VERSION}, got {document.get('apiVersion')!r}")
    model = _KINDS.get(str(kind))
    if model is None:
        raise ManifestError(f"{source}: kind must be one of {', '.join(_KINDS)}, got {kind!r}")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise ManifestError(describe_validation_error(error, source)) from None


def load_manifests(path: str | Path) -> list[KubetuneObject]:
    """Every kubetune object in a (multi-document) YAML file."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise ManifestError(f"{path}: not valid YAML: {error}") from None
    if not documents:
        raise ManifestError(f"{path}: no documents")
    return [parse_object(d, f"{path} (document {i + 1})") for i, d in enumerate(documents)]


def load_manifest(path: str | Path) -> KubetuneObject:
    objects = load_manifests(path)
    if len(objects) != 1:
        raise ManifestError(f"{path}: expected one object, found {len(objects)}")
    return objects[0]
