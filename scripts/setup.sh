#!/usr/bin/env bash
# Creates (or reuses) kubetune's Python environment and installs this checkout into it.
# The environment lives outside the repository, keyed by pyproject.toml, so a fresh clone on a
# warm machine reinstalls nothing but the project itself. Prints the environment's path.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${KUBETUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubetune}
python=${PYTHON:-python3}
# Keyed by what decides the installed packages (build system and [project]), not tool settings.
key=$(sed -n '1,/^\[tool\./p' "$repo/pyproject.toml" | sha256sum | cut -c1-12)
venv=${KUBETUNE_VENV:-$cache/venv-$key}
export UV_CACHE_DIR=${UV_CACHE_DIR:-$cache/uv}
mkdir -p "$cache"

# uv resolves and installs in seconds where pip takes minutes; it comes from PyPI.
uv_home=$cache/uv-bin
if [ ! -x "$uv_home/bin/uv" ]; then
  echo "setup: installing uv into $uv_home" >&2
  "$python" -m venv "$uv_home"
  "$uv_home/bin/pip" install -q "uv>=0.4"
fi
uv=$uv_home/bin/uv

if [ ! -f "$venv/.kubetune-complete" ]; then
  start=$SECONDS
  echo "setup: creating $venv (first run downloads torch, a few GB)" >&2
  rm -rf "$venv"
  "$uv" venv -q --python "$python" "$venv"
  "$uv" pip install -q --python "$venv/bin/python" -e "$repo[all]"
  touch "$venv/.kubetune-complete"
  echo "setup: environment ready in $((SECONDS - start)) s" >&2
else
  # Point the editable install at this checkout (CI clones into another folder).
  "$uv" pip install -q --python "$venv/bin/python" --no-deps -e "$repo"
fi
ln -sfn "$venv" "$repo/.venv"
echo "$venv"
