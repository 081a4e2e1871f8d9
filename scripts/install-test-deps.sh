#!/usr/bin/env bash
# Installs what `make test` needs beyond the Rust toolchain, when it is missing: Debian packages
# (Prometheus and its promtool for the alert rules and the live alert test, redis-server for the
# Redis queue tests and the chart's pods, redis-cli to create the tests' Redis Cluster, Chromium
# and its WebDriver for the console's browser test, kubectl for the `kubectl edit` of the
# Kubernetes test, g++ for the libFuzzer runtime the fuzz targets build, openssl as the
# independent HMAC of the `sign` test) and the chart checks' pinned Python packages (Helm's
# engine, Kubernetes schemas, pytest). Quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A package_of=(
    [make]=make [openssl]=openssl [prometheus]=prometheus [promtool]=prometheus [g++]=g++
    [redis-server]=redis-server [redis-cli]=redis-tools [chromium]=chromium [chromedriver]=chromium-driver
    [kubectl]=kubernetes-client
)
missing=()
for tool in "${!package_of[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
done
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)

if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update
    $sudo apt-get install -y --no-install-recommends "${missing[@]}"
    # The downloaded archives are not needed once installed; the build needs the disk.
    $sudo apt-get clean
fi

python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir -r tests/chart/requirements.txt
