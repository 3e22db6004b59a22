#!/usr/bin/env bash
# Install the Debian packages the chart and observability tests run for real:
#   prometheus  the server (a real scrape of the operator) and promtool (rule tests, metrics lint)
#   lua5.1      the Lua dialect of Argo CD's gopher-lua, to run the health checks in deploy/argocd/
#   lua5.4      the current Lua, so the health checks stay portable to either
# Idempotent: when every command is already there it only checks and exits.
set -euo pipefail

log() { echo "[install-system-deps] $*" >&2; }

# command -> package that provides it
declare -A package_for=(
  [prometheus]=prometheus
  [promtool]=prometheus
  [lua5.1]=lua5.1
  [lua5.4]=lua5.4
)

missing=()
for command in "${!package_for[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${package_for[$command]}")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  log "all present: ${!package_for[*]}"
  exit 0
fi
# De-duplicate (prometheus provides two commands).
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { log "need root or sudo to install: ${packages[*]}"; exit 1; }
  sudo="sudo"
fi

log "installing: ${packages[*]}"
# The package's maintainer script would start a system-wide Prometheus on :9090; the tests
# start their own on a free port, so keep services from starting during the install
# (policy-rc.d exit 101 = "action forbidden"), and put back whatever policy was there.
policy=/usr/sbin/policy-rc.d
saved_policy=""
if [[ -e $policy ]]; then
  saved_policy=$(mktemp)
  $sudo cp -p "$policy" "$saved_policy"
fi
restore_policy() {
  if [[ -n $saved_policy ]]; then $sudo mv -f "$saved_policy" "$policy"; else $sudo rm -f "$policy"; fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
$sudo chmod 755 "$policy"

export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

for command in "${!package_for[@]}"; do
  command -v "$command" >/dev/null 2>&1 || { log "still missing after install: $command"; exit 1; }
done
log "installed: ${packages[*]}"
