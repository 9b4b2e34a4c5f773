#!/usr/bin/env bash
# Makes sure Debian's rabbitmq-server (and its Erlang) is installed, for the
# postgres-rabbitmq profile (components/postgres-rabbitmq/). Consort starts its own node on
# its own ports, with its data under the run folder; the system service is not used.
set -euo pipefail
server=/usr/lib/rabbitmq/bin/rabbitmq-server
if [[ -x $server ]]; then
  echo "[rabbitmq] $(dpkg-query -W -f='${Version}' rabbitmq-server) ready"
  exit 0
fi
echo "[rabbitmq] installing Debian's rabbitmq-server"
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends rabbitmq-server >/dev/null
# The package starts a system node where it can; Consort does not use it.
$sudo service rabbitmq-server stop >/dev/null 2>&1 || true
echo "[rabbitmq] $(dpkg-query -W -f='${Version}' rabbitmq-server) installed"
