#!/usr/bin/env bash
# Builds the pinned Dapr runtime (daprd, placement, scheduler, sentry) from the Go module proxy.
#
# Idempotent and cached by version outside the clone:
#   ${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}/dapr-<version>/.dapr/bin/
# (the layout `dapr run` expects under a runtime path). When daprd there already reports
# the pinned version, nothing is built.
#
# Why not the stock build tags: `-tags stablecomponents` (and allcomponents) link Dapr's
# Pulsar pub/sub, whose client fork (github.com/twmb/pulsar-client-go) and Avro library the
# module proxy reachable here refuses, and the SQLite name resolver Consort uses is only in
# allcomponents. So daprd is built with allcomponents from the module as published, less its
# one Pulsar registration file. See README ("The Dapr runtime").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}
root="$cache/dapr-$DAPR_RUNTIME_VERSION"
bin="$root/.dapr/bin"
work="$root/build"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

start=$(date +%s)
stage() { printf '[dapr %s] %-34s (%3ds elapsed)\n' "$DAPR_RUNTIME_VERSION" "$1" $(( $(date +%s) - start )); }

built_version() { "$bin/$1" --version 2>/dev/null | head -n1 | tr -d '[:space:]' || true; }

# runtime/patches/dapr/*.patch are applied to Dapr's source, and
# runtime/patches/components-contrib/*.patch to the components module it links (each says
# why). A binary is rebuilt when the patches it is built from change: daprd from both, the
# control plane from Dapr's alone.
patches_id() { cat "$@" | sha256sum | cut -c1-16; }
dapr_patches=("$here"/patches/dapr/*.patch)
contrib_patches=("$here"/patches/components-contrib/*.patch)
control_plane_id=$(patches_id "${dapr_patches[@]}")
daprd_id=$(patches_id "${dapr_patches[@]}" "${contrib_patches[@]}")
control_plane=(placement scheduler sentry)

# What is missing: everything when daprd is not the pinned version, else the binaries that
# are not there yet (a cache from before sentry was added builds only sentry) or were built
# from other patches.
binaries=(daprd "${control_plane[@]}")
if [[ "$(built_version daprd)" == "$DAPR_RUNTIME_VERSION" ]]; then
  missing=()
  for name in "${binaries[@]}"; do
    if [[ $name == daprd ]]; then want=$daprd_id; stamp="$bin/.patches-daprd"; else want=$control_plane_id; stamp="$bin/.patches"; fi
    if [[ ! -x "$bin/$name" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then missing+=("$name"); fi
  done
else
  missing=("${binaries[@]}")
fi
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "[dapr $DAPR_RUNTIME_VERSION] runtime ready (cached in $bin)"
  exit 0
fi

command -v go >/dev/null || { echo "Go is needed to build the Dapr runtime (go.dev/doc/install)" >&2; exit 1; }

# Runs a go build in the background, printing how many packages it has compiled every 20 s,
# so a cold build (many minutes on two cores) shows progress rather than silence.
build() {
  local name=$1 pkg=$2; shift 2
  local log="$work/$name.log"
  stage "building $name"
  (cd "$work" && go build -v -trimpath "$@" -o "$bin/$name.partial" "$pkg") >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && stage "  $name: $(grep -vc '^go: downloading' "$log" || true) packages compiled"
  done
  if ! wait "$pid"; then
    echo "building $name failed; the last lines of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  mv "$bin/$name.partial" "$bin/$name"
}

mkdir -p "$bin" "$work"
stage "fetching github.com/dapr/dapr"
cp "$here/go.mod" "$work/"
src=$(cd "$work" && go mod download -json "github.com/dapr/dapr@v$DAPR_RUNTIME_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
rm -rf "$work/dapr"
cp -r "$src" "$work/dapr"
chmod -R u+w "$work/dapr"
# Dapr's own go.sum vouches for its dependencies (the checksum database does not know
# every one of them); ours adds nothing but the same lines.
sort -u "$here/go.sum" "$work/dapr/go.sum" >"$work/go.sum"
rm -f "$work"/dapr/cmd/daprd/components/pubsub_pulsar*.go
for p in "${dapr_patches[@]}"; do
  patch --quiet -d "$work/dapr" -p1 <"$p" || { echo "patch $p does not apply" >&2; exit 1; }
done
# The components module at the version Dapr's go.mod requires, patched likewise.
contrib=github.com/dapr/components-contrib
contrib_version=$(sed -n "s#^\s*$contrib \(v[^ ]*\).*#\1#p" "$work/dapr/go.mod" | head -n1)
[[ -n "$contrib_version" ]] || { echo "no $contrib version in Dapr's go.mod" >&2; exit 1; }
contrib_src=$(cd "$work" && go mod download -json "$contrib@$contrib_version" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
rm -rf "$work/components-contrib"
cp -r "$contrib_src" "$work/components-contrib"
chmod -R u+w "$work/components-contrib"
for p in "${contrib_patches[@]}"; do
  patch --quiet -d "$work/components-contrib" -p1 <"$p" || { echo "patch $p does not apply" >&2; exit 1; }
done
(cd "$work" && go mod edit -replace "github.com/dapr/dapr=./dapr" -replace "$contrib=./components-contrib")

ldflags="-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$DAPR_RUNTIME_VERSION"
for name in "${missing[@]}"; do
  if [[ $name == daprd ]]; then
    build daprd github.com/dapr/dapr/cmd/daprd -tags allcomponents -ldflags "$ldflags"
  else
    # sentry: the certificate authority that gives every sidecar its mTLS identity.
    build "$name" "github.com/dapr/dapr/cmd/$name" -ldflags "$ldflags"
  fi
done

[[ "$(built_version daprd)" == "$DAPR_RUNTIME_VERSION" ]] || { echo "daprd --version does not say $DAPR_RUNTIME_VERSION" >&2; exit 1; }
for name in "${missing[@]}"; do
  if [[ $name == daprd ]]; then echo "$daprd_id" >"$bin/.patches-daprd"; fi
done
echo "$control_plane_id" >"$bin/.patches"
rm -rf "$work/dapr" "$work/components-contrib"
stage "runtime ready in $bin"
