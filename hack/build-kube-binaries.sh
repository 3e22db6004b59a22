#!/usr/bin/env bash
# Build the binaries of the local test/dev control plane (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, etcd, etcdctl, kwok, helm) from the
# Go module proxy: no Docker, no release tarballs, just `go build`.
#
# Pinned, cached and idempotent: binaries land in
#   ${KUBETUNE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubetune/bin}/<versionkey>/
# outside the repo; a second run only checks that every binary exists and reports its
# pinned version. The last line printed is always the bin dir.
#
# Usage: hack/build-kube-binaries.sh [--print-dir | --check]
#   --print-dir  print the bin dir and exit (builds nothing)
#   --check      exit 0 if every binary is present with its pinned version, 1 otherwise
set -euo pipefail

# ---- pinned versions ---------------------------------------------------------------------
KUBERNETES_VERSION="v1.36.3"   # newest v1.36 patch on proxy.golang.org
ETCD_VERSION="v3.6.16"         # newest v3.6 patch
KWOK_VERSION="v0.8.0"
HELM_VERSION="v3.22.0"         # newest helm v3

VERSION_KEY="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/kubetune"
BIN_DIR="${KUBETUNE_BIN_DIR:-$CACHE_ROOT/bin}/$VERSION_KEY"
# Wrapper modules live here (never in the repo): they only hold a go.mod/go.sum.
WORK_DIR="${KUBETUNE_BUILD_DIR:-$CACHE_ROOT/build}"

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
export CGO_ENABLED=0
# Never download another toolchain; -mod=mod lets `go build` fill the wrapper's go.sum.
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

log() { echo "[build-kube-binaries] $*" >&2; }

mode="build"
case "${1:-}" in
  --print-dir) echo "$BIN_DIR"; exit 0 ;;
  --check) mode="check" ;;
  "") ;;
  *) echo "usage: $0 [--print-dir | --check]" >&2; exit 2 ;;
esac

# version_ok BINARY EXPECTED ARGS...: BINARY exists and `BINARY ARGS` prints EXPECTED.
version_ok() {
  local binary="$BIN_DIR/$1" expected="$2"
  shift 2
  [[ -x "$binary" ]] || return 1
  # Capture first: `grep -q` in a pipeline would SIGPIPE the binary and, with pipefail,
  # fail the check at random.
  local output
  output="$("$binary" "$@" 2>&1)" || return 1
  [[ "$output" == *"$expected"* ]]
}

kube_ok() {
  version_ok kube-apiserver "Kubernetes $KUBERNETES_VERSION" --version &&
    version_ok kube-controller-manager "Kubernetes $KUBERNETES_VERSION" --version &&
    version_ok kube-scheduler "Kubernetes $KUBERNETES_VERSION" --version &&
    version_ok kubectl "$KUBERNETES_VERSION" version --client
}
etcd_ok() {
  version_ok etcd "etcd Version: ${ETCD_VERSION#v}" --version &&
    version_ok etcdctl "etcdctl version: ${ETCD_VERSION#v}" version
}
kwok_ok() { version_ok kwok "$KWOK_VERSION" --version; }
helm_ok() { version_ok helm "$HELM_VERSION" version --short; }

# write_wrapper NAME MODULE VERSION LOCAL_REPLACE_VERSION
# Creates $WORK_DIR/NAME/go.mod requiring MODULE@VERSION. `go install` refuses modules
# with replace directives, and a dependency's replaces are ignored, so the wrapper copies
# them: a local-path replace (k8s staging `./staging/src/...`, etcd `../api`) becomes the
# published module at LOCAL_REPLACE_VERSION (skipped if never published, e.g.
# k8s.io/sample-cli-plugin); a remote replace is copied verbatim.
write_wrapper() {
  local name="$1" module="$2" version="$3" local_version="$4"
  local dir="$WORK_DIR/$name" stamp="$WORK_DIR/$name/.wrapper-for"
  mkdir -p "$dir"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$module@$version" ]]; then
    echo "$dir"; return
  fi
  local gomod
  gomod="$(cd "$dir" && GOFLAGS= "$GO" mod download -json "$module@$version" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "$gomod" ]] || { log "cannot download $module@$version"; exit 1; }
  local go_directive
  go_directive="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod" | head -1)"
  {
    echo "module kubetune.local/build/$name"
    echo
    echo "go ${go_directive:-1.26}"
    echo
    echo "require $module $version"
    echo
    echo "replace ("
    # Both `replace x => y` one-liners and lines inside a `replace ( ... )` block.
    sed -n -e 's/^replace[[:space:]]\{1,\}\([^ (].* => .*\)$/\1/p' \
      -e '/^replace[[:space:]]*($/,/^)/{/=>/p}' "$gomod" |
      while read -r from _arrow to to_version; do
        from="${from%% *}"
        if [[ "$to" == ./* || "$to" == ../* ]]; then
          if (cd "$dir" && GOFLAGS= "$GO" list -m "$from@$local_version" >/dev/null 2>&1); then
            echo "	$from => $from $local_version"
          else
            log "$name: $from@$local_version is not published; not replacing it"
          fi
        else
          echo "	$from => $to ${to_version:-}"
        fi
      done
    echo ")"
  } >"$dir/go.mod.new"
  mv "$dir/go.mod.new" "$dir/go.mod"
  rm -f "$dir/go.sum"
  echo "$module@$version" >"$stamp"
  echo "$dir"
}

# release_date MODULE VERSION: the tag time from the proxy, used as a reproducible buildDate.
release_date() {
  (cd "$WORK_DIR" && GOFLAGS= "$GO" list -m -json "$1@$2" |
    sed -n 's/^[[:space:]]*"Time": "\(.*\)",\{0,1\}$/\1/p' | head -1)
}

timings=()
timed() {  # timed LABEL COMMAND...: run and record the wall time
  local label="$1" start=$SECONDS
  shift
  log "building $label ..."
  "$@"
  local took=$((SECONDS - start))
  timings+=("$label: ${took}s")
  log "built $label in ${took}s"
}

build_kube() {
  local dir minor patch date ldflags="-s -w" pkg
  dir="$(write_wrapper kubernetes k8s.io/kubernetes "$KUBERNETES_VERSION" \
    "v0.${KUBERNETES_VERSION#v1.}")"
  minor="$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"
  date="$(release_date k8s.io/kubernetes "$KUBERNETES_VERSION")"
  # component-base feeds the servers' --version and /version; client-go's copy feeds
  # `kubectl version --client`. The proxy does not expose the commit, so gitCommit is empty.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1"
    ldflags+=" -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    ldflags+=" -X $pkg.gitCommit="
  done
  # One invocation so the four binaries share compiled packages.
  (cd "$dir" && "$GO" build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl)
}

build_etcd() {
  local dir
  dir="$(write_wrapper etcd-server go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION")"
  # Both mains are named v3 by their import path, so each needs its own -o.
  (cd "$dir" && "$GO" build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3)
  dir="$(write_wrapper etcdctl go.etcd.io/etcd/etcdctl/v3 "$ETCD_VERSION" "$ETCD_VERSION")"
  (cd "$dir" && "$GO" build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcdctl" go.etcd.io/etcd/etcdctl/v3)
}

build_kwok() {
  local dir
  dir="$(write_wrapper kwok sigs.k8s.io/kwok "$KWOK_VERSION" "$KWOK_VERSION")"
  (cd "$dir" && "$GO" build -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    -o "$BIN_DIR/kwok" sigs.k8s.io/kwok/cmd/kwok)
}

build_helm() {
  local dir
  dir="$(write_wrapper helm helm.sh/helm/v3 "$HELM_VERSION" "$HELM_VERSION")"
  (cd "$dir" && "$GO" build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    -o "$BIN_DIR/helm" helm.sh/helm/v3/cmd/helm)
}

if [[ "$mode" == "check" ]]; then
  if etcd_ok && kwok_ok && kube_ok && helm_ok; then echo "$BIN_DIR"; exit 0; fi
  echo "$BIN_DIR"; exit 1
fi

mkdir -p "$BIN_DIR" "$WORK_DIR"
total_start=$SECONDS
# Sequential on purpose: each go build already uses every core.
# etcd and kwok first: small, and enough to start developing against.
etcd_ok || timed "etcd+etcdctl $ETCD_VERSION" build_etcd
kwok_ok || timed "kwok $KWOK_VERSION" build_kwok
kube_ok || timed "kubernetes $KUBERNETES_VERSION (apiserver, controller-manager, scheduler, kubectl)" build_kube
helm_ok || timed "helm $HELM_VERSION" build_helm

if ((${#timings[@]} > 0)); then
  for component in etcd kwok kube helm; do
    "${component}_ok" || { log "$component does not report its pinned version after building"; exit 1; }
  done
fi
if ((${#timings[@]} == 0)); then
  log "all binaries up to date (${SECONDS}s)"
else
  for line in "${timings[@]}"; do log "  $line"; done
  log "total build time: $((SECONDS - total_start))s"
fi
echo "$BIN_DIR"
