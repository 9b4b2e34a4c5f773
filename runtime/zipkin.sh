#!/usr/bin/env bash
# Fetches Zipkin's server (io.zipkin:zipkin-server, the exec jar) from Maven Central with
# Maven, once, into the cache. `consort run` starts it with in-memory storage.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}
dir="$cache/zipkin-$ZIPKIN_VERSION"
jar="$dir/zipkin-server-$ZIPKIN_VERSION-exec.jar"
if [[ -s "$jar" ]]; then
  echo "[zipkin] $ZIPKIN_VERSION ready"
  exit 0
fi
command -v java >/dev/null || { echo "[zipkin] Java 17+ is needed to run Zipkin" >&2; exit 1; }
command -v mvn >/dev/null || { echo "[zipkin] Maven is needed to fetch Zipkin" >&2; exit 1; }
echo "[zipkin] fetching io.zipkin:zipkin-server:$ZIPKIN_VERSION (exec jar, ~130 MB) from Maven Central"
started=$(date +%s)
mkdir -p "$dir"
mvn -q -B dependency:copy \
  -Dartifact="io.zipkin:zipkin-server:$ZIPKIN_VERSION:jar:exec" \
  -DoutputDirectory="$dir" -Dmdep.overWriteIfNewer=true
[[ -s "$jar" ]] || { echo "[zipkin] $jar is missing after the download" >&2; exit 1; }
echo "[zipkin] $ZIPKIN_VERSION ready ($(( $(date +%s) - started ))s)"
