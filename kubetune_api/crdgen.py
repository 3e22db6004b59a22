"""Generate the CustomResourceDefinitions from the pydantic models (our controller-gen).

pydantic emits JSON Schema 2020-12 with $refs; the API server wants a structural
OpenAPI v3 schema: everything inlined, no nulls, no additionalProperties: false,
boolean exclusive bounds. `python -m kubetune_api.crdgen [--check] [DIR]` writes (or
checks) crds/*.yaml.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema, to_jsonable_python

from . import constants
from .continuouspretrain import ContinuousPretrainSpec, ContinuousPretrainStatus
from .finetunejob import FineTuneJobSpec, FineTuneJobStatus

# Keys that carry meaning for the API server; pydantic's other keys (title, ...) are dropped.
_KEPT_KEYS = {
    "type",
    "description",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "format",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-int-or-string",
}


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a $ref, keeping keys set next to it (description, validations)."""
    if "$ref" not in schema:
        return schema
    target = defs[schema["$ref"].split("/")[-1]]
    siblings = {k: v for k, v in schema.items() if k != "$ref"}
    merged = dict(_resolve(target, defs))
    rules = merged.get("x-kubernetes-validations", []) + siblings.pop("x-kubernetes-validations", [])
    merged.update(siblings)
    if rules:
        merged["x-kubernetes-validations"] = rules
    return merged


def _strip_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`X | None` becomes X: optional means absent in Kubernetes, not null."""
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if options is None:
            continue
        non_null = [o for o in options if o.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"unions other than `X | None` are not structural: {options}")
        rest = {k: v for k, v in schema.items() if k != key}
        merged = dict(non_null[0])
        rules = merged.get("x-kubernetes-validations", []) + rest.pop("x-kubernetes-validations", [])
        merged.update(rest)
        if rules:
            merged["x-kubernetes-validations"] = rules
        if merged.get("default", 0) is None:
            del merged["default"]
        return merged
    return schema


def to_structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    # Twice: `Model | None` is an anyOf whose surviving option is itself a $ref.
    for _ in range(2):
        schema = _strip_null(_resolve(schema, defs))
    out: dict[str, Any] = {}
    if "const" in schema:
        out["enum"] = [schema["const"]]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in schema:
            out[flag] = schema[bound]
            out[bound] = True
    for key, value in schema.items():
        if key not in _KEPT_KEYS:
            continue
        if key == "properties":
            out[key] = {name: to_structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = to_structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = to_structural(value, defs)
        else:
            out[key] = value
    if out.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" in out:
        del out["additionalProperties"]
    if "type" not in out and "properties" in out:
        out["type"] = "object"
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


class _KubernetesJsonSchema(GenerateJsonSchema):
    """Emits defaults that come from default factories, which pydantic leaves out."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        factory = schema.get("default_factory")
        if factory is None:
            return super().default_schema(schema)
        json_schema = self.generate_inner(schema["schema"])
        value = factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            # Spelled out in full: the API server checks a default against the CEL rules as it
            # stands, before nested defaults would fill an empty object.
            json_schema["default"] = value.model_dump(mode="json", by_alias=True, exclude_none=True)
        elif value not in ([], {}):
            json_schema["default"] = to_jsonable_python(value)
        return json_schema


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_KubernetesJsonSchema)
    return to_structural(raw, raw.get("$defs", {}))


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        column: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            column["priority"] = self.priority
        return column


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation")


@dataclass(frozen=True)
class CrdSpec:
    kind: str
    plural: str
    singular: str
    short_names: list[str]
    description: str
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    columns: list[PrinterColumn] = field(default_factory=list)


CRDS = [
    CrdSpec(
        kind=constants.FINETUNEJOB_KIND,
        plural=constants.FINETUNEJOB_PLURAL,
        singular="finetunejob",
        short_names=["ftj"],
        description="A pre-training, fine-tuning (Full, LoRA, QLoRA, ReFT) or continued pre-training run.",
        spec_model=FineTuneJobSpec,
        status_model=FineTuneJobStatus,
        columns=[
            PrinterColumn("Phase", "string", ".status.phase", "Lifecycle phase"),
            PrinterColumn("Progress", "number", ".status.progress.percent", "Percent of steps done"),
            PrinterColumn("Loss", "number", ".status.metrics.trainLoss", "Latest training loss"),
            PrinterColumn("Val-Loss", "number", ".status.metrics.validationLoss", "Validation loss", 1),
            PrinterColumn("ETA", "integer", ".status.progress.etaSeconds", "Seconds to the end", 1),
            PrinterColumn("Method", "string", ".spec.method.type", "Adaptation method", 1),
            AGE,
        ],
    ),
    CrdSpec(
        kind=constants.CONTINUOUSPRETRAIN_KIND,
        plural=constants.CONTINUOUSPRETRAIN_PLURAL,
        singular="continuouspretrain",
        short_names=["cpt"],
        description="Keeps a model current on new data with replay and a promotion gate.",
        spec_model=ContinuousPretrainSpec,
        status_model=ContinuousPretrainStatus,
        columns=[
            PrinterColumn("Generation", "integer", ".status.currentModel.generation", "Promoted generation"),
            PrinterColumn("Last-Run", "date", ".status.lastRunTime", "When the last run started"),
            PrinterColumn("Next-Run", "date", ".status.nextRunTime", "When the schedule fires next"),
            PrinterColumn("Active", "string", ".status.activeRun", "Run in progress", 1),
            PrinterColumn("Cutoff", "date", ".status.currentModel.dataCutoff", "Training-data cutoff", 1),
            AGE,
        ],
    ),
]


def build_crd(crd: CrdSpec) -> dict[str, Any]:
    spec_schema = model_schema(crd.spec_model)
    spec_schema.pop("default", None)
    status_schema = model_schema(crd.status_model)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{crd.plural}.{constants.GROUP}",
            "labels": {constants.LABEL_PART_OF: "kubetune"},
        },
        "spec": {
            "group": constants.GROUP,
            "names": {
                "kind": crd.kind,
                "listKind": f"{crd.kind}List",
                "plural": crd.plural,
                "singular": crd.singular,
                "shortNames": crd.short_names,
                "categories": ["kubetune"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": constants.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.to_dict() for c in crd.columns],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": crd.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "API version."},
                                "kind": {"type": "string", "description": "Kind."},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    """Writes repeated sub-schemas out in full: CRDs must not contain YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


HEADER = "# Generated by `python -m kubetune_api.crdgen` from kubetune_api; do not edit.\n"


def render(crd: CrdSpec) -> str:
    return HEADER + yaml.dump(build_crd(crd), Dumper=_NoAliasDumper, sort_keys=False, width=120)


def crd_filename(crd: CrdSpec) -> str:
    return f"{constants.GROUP}_{crd.plural}.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", nargs="?", default="crds", type=Path)
    parser.add_argument("--check", action="store_true", help="fail if the files differ")
    args = parser.parse_args(argv)
    stale = []
    for crd in CRDS:
        path = args.directory / crd_filename(crd)
        text = render(crd)
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale.append(path)
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale CRDs: {', '.join(map(str, stale))}; run python -m kubetune_api.crdgen", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
