#!/usr/bin/env bash
# One command from a fresh Debian 12 machine: install what is missing, build, and run the proxy
# on port 5201 in front of an iperf3 server it starts itself. Extra arguments go to the proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target iperf3-proxy
exec build/release/src/iperf3-proxy -p 5201 "$@"
