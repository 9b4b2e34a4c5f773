#!/usr/bin/env bash
# Makes sure Debian's redis-server is installed (Consort starts its own instance on its own
# port, with its data under the run folder; the system service is not used).
set -euo pipefail
if command -v redis-server >/dev/null; then
  echo "[redis] $(redis-server --version | cut -d' ' -f3) ready"
  exit 0
fi
echo "[redis] installing Debian's redis-server"
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package starts a system instance where it can; Consort does not use it.
$sudo service redis-server stop >/dev/null 2>&1 || true
echo "[redis] $(redis-server --version | cut -d' ' -f3) installed"
