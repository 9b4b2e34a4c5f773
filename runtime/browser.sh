#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed: the console's browser tests drive it headless
# through Playwright (the Python package, pointed at /usr/bin/chromium; Playwright's own
# browser download cannot work offline).
set -euo pipefail
if command -v chromium >/dev/null; then
  echo "[browser] $(chromium --version 2>/dev/null | head -1) ready"
  exit 0
fi
echo "[browser] installing Debian's chromium"
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# Another install may hold dpkg's lock (a parallel `make setup`): wait for it.
$sudo apt-get -o DPkg::Lock::Timeout=300 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
  chromium fonts-dejavu-core >/dev/null
echo "[browser] $(chromium --version 2>/dev/null | head -1) installed"
