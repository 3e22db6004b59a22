"""Generate the files derived from other files, or check that they are up to date.

    python deploy/generate.py           # write them
    python deploy/generate.py --check   # exit 1 and name the stale ones

- charts/kubetune/files/crds/*.yaml      byte-identical copies of crds/*.yaml
- charts/kubetune/README.md              README.in.md + a table of every value in values.yaml
- deploy/argocd/argocd-cm-health.yaml    argocd-cm keys holding deploy/argocd/*-health.lua
- deploy/kubetune.yaml                   the chart rendered with its defaults (needs helm)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "kubetune"
DEPLOY = REPO / "deploy"
ARGOCD = DEPLOY / "argocd"
GENERATED_CRDS = REPO / "crds"
RELEASE_NAME = "kubetune"
RELEASE_NAMESPACE = "kubetune"
# Helm built without release ldflags assumes Kubernetes v1.20; the chart needs >= 1.30.
KUBE_VERSION = "1.36.0"
# Argo CD health check key per Lua file: resource.customizations.health.<group>_<Kind>.
HEALTH_CHECKS = {
    "finetunejob-health.lua": "resource.customizations.health.kubetune.io_FineTuneJob",
    "continuouspretrain-health.lua": "resource.customizations.health.kubetune.io_ContinuousPretrain",
}

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?P<rest>.*)$")
_DOC = re.compile(r"^ *# -- ?(?P<text>.*)$")
_DOC_CONTINUED = re.compile(r"^ *#(?! --) ?(?P<text>.*)$")


def helm_binary() -> str:
    """helm from the pinned build (hack/build-kube-binaries.sh)."""
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "build-kube-binaries.sh"), "--print-dir"],
        check=True,
        capture_output=True,
        text=True,
    )
    return str(Path(result.stdout.strip().splitlines()[-1]) / "helm")


# ------------------------------------------------------------------ values documentation


def documented_values(values_text: str) -> dict[str, str]:
    """Map dotted value path -> description from the `# --` comment right above each key.

    A documented key's children are part of its default and are not listed separately.
    """
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing keys
    pending: list[str] | None = None
    for line in values_text.splitlines():
        if match := _DOC.match(line):
            pending = [match["text"].strip()]
            continue
        if pending is not None and (match := _DOC_CONTINUED.match(line)):
            pending.append(match["text"].strip())
            continue
        key = _KEY.match(line)
        if key is None:
            if not line.strip().startswith("#"):
                pending = None
            continue
        indent = len(key["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key["key"]])
        stack.append((indent, key["key"]))
        if pending is not None:
            docs[path] = " ".join(pending)
        pending = None
    return docs


def value_leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every value that is not a non-empty map."""
    leaves = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            leaves.extend(value_leaves(value, f"{path}."))
        else:
            leaves.append(path)
    return leaves


def undocumented_values(values_text: str) -> list[str]:
    """Leaves with neither their own `# --` comment nor a documented ancestor."""
    docs = documented_values(values_text)
    values = yaml.safe_load(values_text)

    def covered(path: str) -> bool:
        parts = path.split(".")
        return any(".".join(parts[:i]) in docs for i in range(1, len(parts) + 1))

    return [leaf for leaf in value_leaves(values) if not covered(leaf)]


def _lookup(values: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        values = values[part]
    return values


def _type_name(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def values_table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for path, description in documented_values(values_text).items():
        default = json.dumps(_lookup(values, path), separators=(", ", ": "))
        cell = description.replace("|", "\\|")
        rows.append(f"| `{path}` | {_type_name(_lookup(values, path))} | `{default}` | {cell} |")
    return "\n".join(rows)


def chart_readme() -> str:
    template = (CHART / "README.in.md").read_text()
    return template.replace("@@VALUES_TABLE@@", values_table((CHART / "values.yaml").read_text()))


# ------------------------------------------------------------------ generated files


def crd_copies() -> dict[Path, str]:
    return {
        CHART / "files" / "crds" / source.name: source.read_text()
        for source in sorted(GENERATED_CRDS.glob("kubetune.io_*.yaml"))
    }


class _LiteralDumper(yaml.SafeDumper):
    """Writes multi-line strings as `|` blocks, so the Lua reads as Lua in argocd-cm."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_LiteralDumper.add_representer(str, _represent_str)


def argocd_health_config() -> str:
    data = {key: (ARGOCD / lua).read_text() for lua, key in HEALTH_CHECKS.items()}
    header = (
        "# Generated by `python deploy/generate.py` from deploy/argocd/*-health.lua; do not edit.\n"
        "# Merge into Argo CD's argocd-cm, e.g.\n"
        "#   kubectl -n argocd patch configmap argocd-cm --patch-file deploy/argocd/argocd-cm-health.yaml\n"
    )
    return header + yaml.dump({"data": data}, Dumper=_LiteralDumper, sort_keys=False, width=1000)


def render_chart(
    helm: str, *extra: str, release: str = RELEASE_NAME, namespace: str = RELEASE_NAMESPACE
) -> str:
    """`helm template` of the chart (the CRDs are templates, so they are included)."""
    result = subprocess.run(
        [
            helm,
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            KUBE_VERSION,
            *extra,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout


def plain_manifests(helm: str | None = None) -> str:
    """Everything `kubectl apply -f` needs: the namespace (restricted Pod Security) and the chart."""
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": RELEASE_NAMESPACE,
            "labels": {
                "app.kubernetes.io/part-of": "kubetune",
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        },
    }
    header = (
        "# Generated by `python deploy/generate.py`: charts/kubetune rendered with its default values\n"
        f"# into namespace {RELEASE_NAMESPACE}. Without Helm: kubectl apply -f deploy/kubetune.yaml\n"
    )
    rendered = render_chart(helm or helm_binary())
    return header + "---\n" + yaml.safe_dump(namespace, sort_keys=False) + rendered


def generated_files() -> dict[Path, Callable[[], str]]:
    files: dict[Path, Callable[[], str]] = {
        path: (lambda text=text: text) for path, text in crd_copies().items()
    }
    files[CHART / "README.md"] = chart_readme
    files[ARGOCD / "argocd-cm-health.yaml"] = argocd_health_config
    files[DEPLOY / "kubetune.yaml"] = plain_manifests
    return files


def stale_files() -> list[Path]:
    stale = [
        path for path, build in generated_files().items() if not path.exists() or path.read_text() != build()
    ]
    expected_copies = set(crd_copies())
    stale += sorted(p for p in (CHART / "files" / "crds").glob("*.yaml") if p not in expected_copies)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"out of date: {path.relative_to(REPO)} (run python deploy/generate.py)", file=sys.stderr)
        return 1 if stale else 0
    undocumented = undocumented_values((CHART / "values.yaml").read_text())
    if undocumented:
        print(f"values without a '# --' comment: {', '.join(undocumented)}", file=sys.stderr)
        return 1
    for path, build in generated_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(build())
    for path in (CHART / "files" / "crds").glob("*.yaml"):
        if path not in crd_copies():
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
