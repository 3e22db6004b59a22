#!/usr/bin/env bash
# The test command: sets up the environment, builds the Kubernetes binaries (cached), runs the
# static checks and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv=$(bash scripts/setup.sh)
export PATH="$venv/bin:$PATH"
KUBETUNE_BIN_DIR=$(bash hack/build-kube-binaries.sh --print-dir)
export KUBETUNE_BIN_DIR

echo "== static checks"
ruff check .
mypy
lint-imports
python -m kubetune_api.crdgen --check crds

echo "== tests"
python -m pytest "$@"
