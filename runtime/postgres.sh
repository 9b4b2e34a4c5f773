#!/usr/bin/env bash
# Makes sure Debian's PostgreSQL 15 server is installed, for the postgres-rabbitmq profile
# (components/postgres-rabbitmq/). Consort starts its own cluster on its own port, with its
# data under the run folder, as the unprivileged `postgres` user; the system service is
# not used.
set -euo pipefail
bin=/usr/lib/postgresql/15/bin
if [[ -x $bin/postgres && -x $bin/initdb ]]; then
  echo "[postgres] $($bin/postgres --version | cut -d' ' -f3) ready"
  exit 0
fi
echo "[postgres] installing Debian's postgresql-15"
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends postgresql-15 >/dev/null
# The package starts a system cluster where it can; Consort does not use it.
$sudo service postgresql stop >/dev/null 2>&1 || true
echo "[postgres] $($bin/postgres --version | cut -d' ' -f3) installed"
