"""The committed CRDs are exactly what the models generate, and they are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune_api import crdgen

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("crd", crdgen.CRDS, ids=lambda c: c.kind)
def test_committed_crd_matches_generated(crd: crdgen.CrdSpec) -> None:
    committed = (REPO / "crds" / crdgen.crd_filename(crd)).read_text()
    assert committed == crdgen.render(crd), "run `python -m kubetune_api.crdgen crds`"


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        nodes += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        nodes += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += _walk(schema["additionalProperties"], f"{path}{{}}")
    return nodes


@pytest.mark.parametrize("crd", crdgen.CRDS, ids=lambda c: c.kind)
def test_schema_is_structural_and_documented(crd: crdgen.CrdSpec) -> None:
    doc = crdgen.build_crd(crd)
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
        assert node.get("type") or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        assert node.get("additionalProperties") is not False, path
    spec_fields = [p for p, n in _walk(schema["properties"]["spec"], ".spec") if p.count(".") >= 2]
    undocumented = [p for p, n in _walk(schema["properties"]["spec"], ".spec") if not n.get("description")]
    assert spec_fields and not [p for p in undocumented if not p.endswith("[]") and "{}" not in p]


def test_crd_metadata() -> None:
    ftj, cpt = (crdgen.build_crd(c) for c in crdgen.CRDS)
    assert ftj["spec"]["names"]["shortNames"] == ["ftj"]
    assert cpt["spec"]["names"]["shortNames"] == ["cpt"]
    for doc in (ftj, cpt):
        version = doc["spec"]["versions"][0]
        assert doc["spec"]["names"]["categories"] == ["kubetune"]
        assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in ftj["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert {"Phase", "Progress", "Loss", "Age"} <= set(columns)
    columns = [c["name"] for c in cpt["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert {"Generation", "Last-Run", "Next-Run", "Age"} <= set(columns)


def test_immutable_fields_carry_a_transition_rule() -> None:
    ftj = crdgen.build_crd(crdgen.CRDS[0])
    spec = ftj["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for name in ("baseModel", "method", "datasets", "hyperparameters", "output"):
        rules = [r["rule"] for r in spec[name].get("x-kubernetes-validations", [])]
        assert "self == oldSelf" in rules, name
    assert not any("oldSelf" in r["rule"] for r in spec["runPolicy"].get("x-kubernetes-validations", []))


def test_crds_are_valid_yaml_documents() -> None:
    for path in (REPO / "crds").glob("*.yaml"):
        docs = list(yaml.safe_load_all(path.read_text()))
        assert len(docs) == 1 and docs[0]["kind"] == "CustomResourceDefinition"
