#!/usr/bin/env bash
# Builds or installs the real servers ocm-jobs tests and `make run` start, into a cache outside
# the work tree keyed by version, so a second run takes seconds:
#
#   $OCM_JOBS_TOOLS/bin/{kube-apiserver,kubectl,etcd,redis-server,redis-cli,work,placement,versitygw}
#   $OCM_JOBS_TOOLS/knative-eventing-$KNATIVE_VERSION/{bin/*,config/}   (step knative)
#
# kube-apiserver/kubectl come from the k8s.io/kubernetes module, the work agent from
# open-cluster-management.io/ocm, versitygw from its module; etcd, redis and chromium (the web
# UI's browser test) from Debian.
# Usage: install.sh [all|apt|kube|agent|placement|s3|func|knative]...
set -euo pipefail

TOOLS=${OCM_JOBS_TOOLS:-$HOME/.cache/ocm-jobs}
K8S_VERSION=${K8S_VERSION:-1.34.4}
OCM_VERSION=${OCM_VERSION:-v1.2.0}
VERSITYGW_VERSION=${VERSITYGW_VERSION:-v1.8.0}
FUNC_VERSION=${FUNC_VERSION:-v0.44.0}
KNATIVE_VERSION=${KNATIVE_VERSION:-v0.46.0}
BIN=$TOOLS/bin
export GOFLAGS=-buildvcs=false
mkdir -p "$BIN"

now() { date +%s; }
log() { echo "tools: $*" >&2; }

# modfield MODULE@VERSION FIELD: a field of `go mod download -json` (Dir, Sum, GoModSum).
modfield() {
  go mod download -json "$1" | sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\{0,1\}\$/\1/p"
}

# link NAME TARGET: expose a versioned binary under $BIN.
link() { ln -sfn "$2" "$BIN/$1"; }

install_apt() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  # The web UI's browser test (tests/webui) drives Debian's headless Chromium.
  command -v chromium >/dev/null || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # The Debian package starts a system redis on :6379 and etcd on :2379; ours run on their own
  # ports, so those services are stopped if they came up (harmless when there is no init).
  (service redis-server stop || true; service etcd stop || true) >/dev/null 2>&1
  link etcd "$(command -v etcd)"
  link redis-server "$(command -v redis-server)"
  link redis-cli "$(command -v redis-cli)"
}

install_kube() {
  local dir=$TOOLS/k8s-$K8S_VERSION
  if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/kubectl" ] && [ -x "$dir/kube-controller-manager" ]; then
    link kube-apiserver "$dir/kube-apiserver"; link kubectl "$dir/kubectl"
    link kube-controller-manager "$dir/kube-controller-manager"; return
  fi
  local t0; t0=$(now)
  local work=$TOOLS/build/k8s-$K8S_VERSION
  mkdir -p "$work" "$dir"
  go mod download "k8s.io/kubernetes@v$K8S_VERSION"
  local modfile staging minor flags
  modfile=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$K8S_VERSION.mod
  staging=v0.${K8S_VERSION#1.}
  # k8s.io/kubernetes requires its staging modules at v0.0.0 with replaces to ./staging, which
  # only apply inside its own repo; as a dependency each must point at its published tag.
  {
    printf 'module ocmjobs.local/k8sbuild\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S_VERSION"
    awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print "\t" $1 " => " $1 " '"$staging"'" }' "$modfile" | sort -u
    printf ')\n'
  } >"$work/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager"\n\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n' >"$work/tools.go"
  (cd "$work" && rm -f go.sum && go mod tidy >/dev/null 2>&1)
  minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  flags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags="$flags -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  # kube-controller-manager gives the spokes a garbage collector (Foreground deletion of the
  # objects a ManifestWork applied) and the workload controllers (real replica counts).
  local cmd
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    [ -x "$dir/$cmd" ] && continue
    (cd "$work" && go build -trimpath -ldflags "$flags" -o "$dir/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
    mv "$dir/$cmd.tmp" "$dir/$cmd"
  done
  link kube-apiserver "$dir/kube-apiserver"; link kubectl "$dir/kubectl"
  link kube-controller-manager "$dir/kube-controller-manager"
  log "kube-apiserver, kube-controller-manager, kubectl v$K8S_VERSION built in $(( $(now) - t0 ))s"
}

# build_with_own_sum MODULE VERSION PKG OUT: builds a command of a module whose go.mod has
# replaces or pseudo-versions the checksum database lacks: a scratch module reuses the
# module's own go.mod and go.sum, plus the module's own hash lines.
build_with_own_sum() {
  local mod=$1 ver=$2 pkg=$3 out=$4 work src
  work=$TOOLS/build/$(basename "$mod")-$ver
  mkdir -p "$work"
  src=$(modfield "$mod@$ver" Dir)
  sed "s|^module $mod\$|module ocmjobs.local/build|" "$src/go.mod" >"$work/go.mod"
  cp "$src/go.sum" "$work/go.sum"; chmod u+w "$work/go.mod" "$work/go.sum"
  printf '%s %s %s\n%s %s/go.mod %s\n' "$mod" "$ver" "$(modfield "$mod@$ver" Sum)" \
    "$mod" "$ver" "$(modfield "$mod@$ver" GoModSum)" >>"$work/go.sum"
  (cd "$work" && go mod edit -require="$mod@$ver" && go build -trimpath -ldflags '-s -w' -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
}

install_agent() {
  local dir=$TOOLS/ocm-$OCM_VERSION
  if [ ! -x "$dir/work" ]; then
    local t0; t0=$(now); mkdir -p "$dir"
    build_with_own_sum open-cluster-management.io/ocm "$OCM_VERSION" open-cluster-management.io/ocm/cmd/work "$dir/work"
    log "OCM work agent $OCM_VERSION built in $(( $(now) - t0 ))s"
  fi
  link work "$dir/work"
}

# install_placement builds OCM's placement controller from the same module and version as the
# work agent (cmd/placement), so a Placement's predicates and numberOfClusters are decided by
# OCM itself; tests/servers runs it against the hub (Need.Placement).
install_placement() {
  local dir=$TOOLS/ocm-$OCM_VERSION
  if [ ! -x "$dir/placement" ]; then
    local t0; t0=$(now); mkdir -p "$dir"
    build_with_own_sum open-cluster-management.io/ocm "$OCM_VERSION" open-cluster-management.io/ocm/cmd/placement "$dir/placement"
    log "OCM placement controller $OCM_VERSION built in $(( $(now) - t0 ))s"
  fi
  link placement "$dir/placement"
}

install_s3() {
  local dir=$TOOLS/versitygw-$VERSITYGW_VERSION
  if [ ! -x "$dir/versitygw" ]; then
    local t0; t0=$(now); mkdir -p "$dir"
    GOBIN=$dir go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" 2>/dev/null \
      || build_with_own_sum github.com/versity/versitygw "$VERSITYGW_VERSION" github.com/versity/versitygw/cmd/versitygw "$dir/versitygw"
    log "versitygw $VERSITYGW_VERSION built in $(( $(now) - t0 ))s"
  fi
  link versitygw "$dir/versitygw"
}

install_func() {
  local dir=$TOOLS/func-$FUNC_VERSION
  if [ ! -x "$dir/func" ]; then
    local t0; t0=$(now); mkdir -p "$dir"
    build_with_own_sum knative.dev/func "$FUNC_VERSION" knative.dev/func/cmd/func "$dir/func"
    log "func CLI $FUNC_VERSION built in $(( $(now) - t0 ))s"
  fi
  link func "$dir/func"
}

# Knative Eventing's components, run as processes against the hub by tests/servers (knative.go):
# the controller, the multi-tenant channel-based broker's controller, ingress and filter, the
# in-memory channel's controller and dispatcher, the PingSource adapter (mtping), the
# ApiServerSource receive adapter and event_display (the local dead-letter sink); plus the
# module's config/ (CRDs, config maps, roles) that the harness applies to the hub. No webhook:
# the hub's API server could not call it, and the harness's objects carry its defaults.
KNATIVE_CMDS="controller mtchannel_broker broker/ingress broker/filter in_memory/channel_controller
  in_memory/channel_dispatcher mtping apiserver_receive_adapter event_display"
install_knative() {
  local dir=$TOOLS/knative-eventing-$KNATIVE_VERSION missing=() cmd
  for cmd in $KNATIVE_CMDS; do [ -x "$dir/bin/$(basename "$cmd")" ] || missing+=("$cmd"); done
  if [ ${#missing[@]} -gt 0 ] || [ ! -d "$dir/config" ]; then
    local t0 t work=$TOOLS/build/eventing-$KNATIVE_VERSION src
    t0=$(now); mkdir -p "$dir/bin" "$work"
    src=$(modfield "knative.dev/eventing@$KNATIVE_VERSION" Dir)
    # The module's own go.mod and go.sum pin what its commands were released with.
    sed "s|^module knative.dev/eventing\$|module ocmjobs.local/eventingbuild|" "$src/go.mod" >"$work/go.mod"
    cp "$src/go.sum" "$work/go.sum"; chmod u+w "$work/go.mod" "$work/go.sum"
    printf 'knative.dev/eventing %s %s\nknative.dev/eventing %s/go.mod %s\n' "$KNATIVE_VERSION" \
      "$(modfield "knative.dev/eventing@$KNATIVE_VERSION" Sum)" "$KNATIVE_VERSION" \
      "$(modfield "knative.dev/eventing@$KNATIVE_VERSION" GoModSum)" >>"$work/go.sum"
    (cd "$work" && go mod edit -require="knative.dev/eventing@$KNATIVE_VERSION")
    for cmd in "${missing[@]}"; do
      t=$(now)
      (cd "$work" && go build -trimpath -ldflags '-s -w' -o "$dir/bin/$(basename "$cmd").tmp" "knative.dev/eventing/cmd/$cmd")
      mv "$dir/bin/$(basename "$cmd").tmp" "$dir/bin/$(basename "$cmd")"
      log "knative $cmd built in $(( $(now) - t ))s"
    done
    rm -rf "$dir/config.tmp"; mkdir -p "$dir/config.tmp"
    cp -r "$src/config/core" "$src/config/brokers" "$src/config/channels" "$dir/config.tmp/"
    chmod -R u+w "$dir/config.tmp"; rm -rf "$dir/config"; mv "$dir/config.tmp" "$dir/config"
    log "Knative Eventing $KNATIVE_VERSION built in $(( $(now) - t0 ))s"
  fi
  link knative-eventing "$dir"
}

[ $# -gt 0 ] || set -- all
t_all=$(now)
for step in "$@"; do
  case $step in
    apt) install_apt ;;
    kube) install_kube ;;
    agent) install_agent ;;
    placement) install_placement ;;
    s3) install_s3 ;;
    func) install_func ;;
    knative) install_knative ;;
    all) install_apt; install_kube; install_agent; install_placement; install_s3 ;;
    *) echo "install.sh: unknown step $step" >&2; exit 2 ;;
  esac
done
log "ready in $BIN ($(( $(now) - t_all ))s)"
