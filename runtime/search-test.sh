#!/usr/bin/env bash
# The search service's own unit tests (Rust), with cargo's runner: the model's tests use
# the real model that `make setup` put in the cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
manifest="$(dirname "$here")/apps/search/Cargo.toml"
cache=${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}
export CARGO_TARGET_DIR="$cache/cargo-target/search"
cargo test --quiet --release --locked --manifest-path "$manifest"
