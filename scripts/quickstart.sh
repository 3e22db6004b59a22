#!/usr/bin/env bash
# Sets everything up and runs the main job: `kubetune run` on the built-in quickstart
# (pre-train a tiny base model, LoRA-tune it on a task, print before/after test metrics).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=$(bash "$repo/scripts/setup.sh")
exec "$venv/bin/kubetune" quickstart "$@"
