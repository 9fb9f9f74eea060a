#!/usr/bin/env bash
# Installs the Debian 12 packages backfilld needs to build, test and demo,
# only those missing. Runs as root (apt-get); says what it installs.
set -euo pipefail

pkgs=(
    gcc make cmake pkg-config            # toolchain
    libuv1-dev libcurl4-openssl-dev      # the event loop and HTTP
    libpq-dev libcjson-dev zlib1g-dev    # Postgres client, JSON, gzip (simulator)
    libcmocka-dev                        # unit tests
    clang libclang-rt-14-dev             # fuzz targets (libFuzzer is in libclang-rt-14-dev)
    clang-format                         # make test checks the formatting (.clang-format)
    postgresql postgresql-client         # the real database for tests and the demo
    pgbouncer                            # transaction-pooler test
    prometheus                           # promtool, to check the /metrics exposition
    curl python3 procps                  # test harness (HTTP probes, JSON checks, ps)
    tmux                                 # the terminal views' tests read their screens
    systemd man-db                       # systemd-analyze (unit checks; it asks man for Documentation=)
    dpkg-dev lintian                     # make package: dpkg-shlibdeps for Depends:, lintian
    python3-yaml                         # dashboards test: reads the Prometheus rules file
    openssl socat                        # TLS test: a private CA, and a TLS front for the simulator
)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The postgresql package starts a cluster of its own; backfilld never uses it.
