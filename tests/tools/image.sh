#!/usr/bin/env bash
# Builds the one ocm-jobs image (all four functions) with Knative's func CLI and its host
# builder — no Docker — as an OCI image layout, and links it at .func/image:
#
#   FUNC_ENABLE_HOST_BUILDER=true func build --builder=host
#
# Two things func v0.44.0 cannot do on its own here, and what this script does about them:
#
# - Its Go scaffolding is a module `s` with `replace function => ./f` (f links to the function
#   root), which only resolves a function whose module is named `function`. Ours is
#   github.com/ocm-jobs/ocm-jobs and the root package imports its other packages, so the
#   scaffolding's `go build` gets GOFLAGS=-modfile=<a go.mod written here>: the scaffolding's
#   requirements plus ours, with our module replaced by the build context.
# - The host builder copies the whole function directory into the image (only .git and .func
#   are left out; .funcignore is not implemented), so it builds from a context holding exactly
#   the files git tracks or would track (`.run/`, editor files and the like stay out).
#
# The build rewrites func.yaml fields it lacks; the committed func.yaml already has them, and
# this script fails if the build changed it, so the tree stays clean.
#
# Usage: image.sh            build; the layout is at .func/image (index.json, 3 platforms)
#        image.sh modfile F  only write the scaffolding go.mod to F (its go.sum next to it)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TOOLS=${OCM_JOBS_TOOLS:-$HOME/.cache/ocm-jobs}
FUNC=${FUNC:-$TOOLS/bin/func}
# The func-go version func v0.44.0's embedded Go scaffolding requires (its go.mod).
FUNC_GO_VERSION=${FUNC_GO_VERSION:-v0.21.3}
MODULE=$(cd "$ROOT" && go list -m)

log() { echo "image: $*" >&2; }

# write_modfile FILE CONTEXT: the go.mod the scaffolding is built with.
write_modfile() {
  local file=$1 context=$2 none=v0.0.0-00010101000000-000000000000
  mkdir -p "$(dirname "$file")"
  sed "s|^module .*|module s|" "$ROOT/go.mod" >"$file"
  cp "$ROOT/go.sum" "${file%.mod}.sum"
  go mod edit -modfile="$file" \
    -require="function@$none" -replace=function=./f \
    -require="$MODULE@$none" -replace="$MODULE=$context" \
    -require="knative.dev/func-go@$FUNC_GO_VERSION"
}

if [ "${1:-}" = modfile ]; then
  write_modfile "$2" "$ROOT"
  exit 0
fi

[ -x "$FUNC" ] || { log "$FUNC is missing: run \`bash tests/tools/install.sh func\` (or \`make image\`)"; exit 1; }

t0=$(date +%s)
context=$ROOT/.func/context
# A fresh context each time: no stale files, and func's previous builds do not pile up.
rm -rf "$context"; mkdir -p "$context"
# Files deleted in the work tree but still in the index are listed by git; the context simply
# lacks them (--ignore-failed-read).
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$context"

modfile=$ROOT/.func/scaffold/go.mod
write_modfile "$modfile" "$context"

args=(build --builder=host --path "$context")
[ -n "${FUNC_REGISTRY:-}" ] && args+=(--registry "$FUNC_REGISTRY")
FUNC_ENABLE_HOST_BUILDER=true GOFLAGS="-buildvcs=false -modfile=$modfile -mod=mod" "$FUNC" "${args[@]}"

if ! cmp -s "$ROOT/func.yaml" "$context/func.yaml"; then
  log "the build rewrote func.yaml; commit these fields so builds leave the tree clean:"
  diff -u "$ROOT/func.yaml" "$context/func.yaml" >&2 || true
  exit 1
fi
layout=$(readlink -f "$context/.func/builds/last")/oci
[ -f "$layout/index.json" ] || { log "no OCI layout at $layout"; exit 1; }
ln -sfn "$layout" "$ROOT/.func/image"
log "built $(grep -c '"digest"' "$layout/index.json") platform images in $(( $(date +%s) - t0 ))s: $ROOT/.func/image"
