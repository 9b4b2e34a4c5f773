#!/usr/bin/env bash
# Starts the search service's release binary (built by `make setup`, runtime/search.sh)
# in place of this shell, with the environment the launcher gave it.
cache=${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}
binary="$cache/cargo-target/search/release/consort-search"
if [[ ! -x "$binary" ]]; then
  echo "{\"level\": \"error\", \"app_id\": \"${APP_ID:-search}\", \"msg\": \"$binary is missing: run make setup\"}" >&2
  exit 1
fi
exec "$binary" "$@"
