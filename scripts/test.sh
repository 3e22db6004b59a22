#!/usr/bin/env bash
# The test command: sets up the Python environment, installs the Debian tools the tests run
# (prometheus, promtool, lua), builds the Kubernetes binaries from the Go module proxy (cached
# under ~/.cache/kubetune/bin; the first build takes about 11 minutes on 2 cores), runs the
# static checks and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export PATH="$PATH:/usr/local/go/bin"

echo "== set-up"
venv=$(bash scripts/setup.sh)
export PATH="$venv/bin:$PATH"
bash hack/install-system-deps.sh
bash hack/build-kube-binaries.sh >/dev/null

echo "== static checks"
ruff check .
mypy
lint-imports
python -m kubetune_api.crdgen --check crds
python deploy/generate.py --check

echo "== tests"
python -m pytest "$@"
