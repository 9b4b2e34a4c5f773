#!/usr/bin/env bash
# Creates or refreshes the project's virtualenv (.venv) from the lock file (uv.lock) with uv,
# itself installed once into the cache. Warm, this takes well under a second.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
UV_VERSION=0.13.8
cache=${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}
uv="$cache/uv-$UV_VERSION/bin/uv"
python=${CONSORT_PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if [[ ! -x "$uv" ]]; then
  echo "[python] installing uv $UV_VERSION"
  "$python" -m venv "$cache/uv-$UV_VERSION"
  "$cache/uv-$UV_VERSION/bin/pip" install -q "uv==$UV_VERSION"
fi
export UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT="$repo/.venv"
cd "$repo"
"$uv" sync --frozen --python "$python" --quiet
echo "[python] .venv in step with uv.lock ($("$repo/.venv/bin/python" --version))"
