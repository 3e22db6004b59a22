"""Files derived from others are up to date (`python deploy/generate.py` rewrites them)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from .conftest import CHART, REPO


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kubetune_deploy_generate", REPO / "deploy" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = load_generator()
HINT = "out of date: run `python deploy/generate.py`"


def test_chart_crds_are_byte_identical_to_the_generated_ones() -> None:
    copies = sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml"))
    assert copies == sorted(p.name for p in (REPO / "crds").glob("kubetune.io_*.yaml"))
    for name in copies:
        assert (CHART / "files" / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), HINT


def test_every_value_is_documented() -> None:
    assert generate.undocumented_values((CHART / "values.yaml").read_text()) == []


def test_chart_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    assert readme == generate.chart_readme(), HINT
    for path in generate.documented_values((CHART / "values.yaml").read_text()):
        assert f"| `{path}` |" in readme


def test_argocd_health_config_holds_the_lua_files() -> None:
    assert (
        REPO / "deploy" / "argocd" / "argocd-cm-health.yaml"
    ).read_text() == generate.argocd_health_config(), HINT


def test_plain_manifests_are_the_rendered_chart(helm: str) -> None:
    assert (REPO / "deploy" / "kubetune.yaml").read_text() == generate.plain_manifests(helm), HINT


@pytest.mark.parametrize(
    ("values_text", "missing"),
    [
        ("# -- documented\na: 1\nb: 2\n", ["b"]),
        ("parent:\n  # -- child\n  child: 1\n  other: {}\n", ["parent.other"]),
        ("# -- the whole map\nresources:\n  limits:\n    cpu: 1\n", []),
    ],
)
def test_undocumented_values_are_found(values_text: str, missing: list[str]) -> None:
    assert generate.undocumented_values(values_text) == missing
