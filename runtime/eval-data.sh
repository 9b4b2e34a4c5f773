#!/usr/bin/env bash
# Fetches the human-rated sets of Hutto and Gilbert (ICWSM 2014) that `make eval` scores:
# tweets, movie review, Amazon product review and NYT editorial snippets, each a
# tab-separated file of id, mean human rating (-4..+4) and text. They ship inside the
# vaderSentiment 3.3.2 source distribution (additional_resources/hutto_ICWSM_2014.tar.gz),
# so pip downloads that sdist from PyPI once, checks it against the hash uv.lock pins, and
# the four files are kept in the cache. When they are already there, this does nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
VADER_VERSION=3.3.2
FILES=(
  tweets_GroundTruth.txt
  movieReviewSnippets_GroundTruth.txt
  amazonReviewSnippets_GroundTruth.txt
  nytEditorialSnippets_GroundTruth.txt
)
cache=${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}
dir="$cache/eval/vader-$VADER_VERSION"

ready=1
for f in "${FILES[@]}"; do [[ -s "$dir/$f" ]] || ready=0; done
if (( ready )); then
  echo "[eval-data] VADER $VADER_VERSION human-rated sets ready in $dir"
  exit 0
fi

sdist="vaderSentiment-$VADER_VERSION.tar.gz"
# The sdist's hash as uv.lock records it, so the data comes from the release the service runs.
expected=$(grep -o "$sdist\", hash = \"sha256:[0-9a-f]*" "$repo/uv.lock" | sed 's/.*sha256://' || true)
[[ -n "$expected" ]] || { echo "[eval-data] uv.lock pins no $sdist" >&2; exit 1; }

# The venv is made by uv and has no pip of its own; the system Python's pip does the same job.
if [[ -x "$repo/.venv/bin/pip" ]]; then pip=("$repo/.venv/bin/pip"); else pip=(python3 -m pip); fi
"${pip[@]}" --version >/dev/null 2>&1 || { echo "[eval-data] pip is needed: python3 -m pip" >&2; exit 1; }

started=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "[eval-data] downloading the vadersentiment==$VADER_VERSION source distribution with pip"
"${pip[@]}" download -q --no-binary :all: --no-deps "vadersentiment==$VADER_VERSION" -d "$tmp"
actual=$(sha256sum "$tmp/$sdist" | cut -d' ' -f1)
if [[ "$actual" != "$expected" ]]; then
  echo "[eval-data] $sdist has sha256 $actual, uv.lock says $expected" >&2
  exit 1
fi
inner="vaderSentiment-$VADER_VERSION/additional_resources/hutto_ICWSM_2014.tar.gz"
tar -xzf "$tmp/$sdist" -C "$tmp" "$inner"
tar -xzf "$tmp/$inner" -C "$tmp" "${FILES[@]/#/hutto_ICWSM_2014/}" hutto_ICWSM_2014/_README_.txt
# Filled beside the target and renamed, so an interrupted run never leaves half a set.
mkdir -p "$(dirname "$dir")"
rm -rf "$dir.partial"
mkdir "$dir.partial"
for f in "${FILES[@]}" _README_.txt; do
  mv "$tmp/hutto_ICWSM_2014/$f" "$dir.partial/$f"
  chmod 644 "$dir.partial/$f"  # the archive has them world-writable
  echo "[eval-data]   $f ($(grep -c '[^[:space:]]' "$dir.partial/$f") lines)"
done
rm -rf "$dir"
mv "$dir.partial" "$dir"
echo "[eval-data] VADER $VADER_VERSION human-rated sets in $dir ($(( $(date +%s) - started ))s)"
