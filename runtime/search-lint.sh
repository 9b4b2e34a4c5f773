#!/usr/bin/env bash
# `make lint` for the search service (Rust): rustfmt's check and clippy with warnings as
# errors, in the cache's target folder (a warm run takes seconds).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
manifest="$(dirname "$here")/apps/search/Cargo.toml"
cache=${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}
export CARGO_TARGET_DIR="$cache/cargo-target/search"
cargo fmt --manifest-path "$manifest" --check
cargo clippy --quiet --release --locked --all-targets --manifest-path "$manifest" -- -D warnings
