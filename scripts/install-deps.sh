#!/usr/bin/env bash
# Installs what building, running and testing iperf3-proxy needs on Debian 12 (run as root).
# Does nothing (and needs no network) when everything is already there.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libevent-dev libspdlog-dev libcli11-dev nlohmann-json3-dev libgtest-dev
  # --metrics: the Prometheus client library (only its core library is linked).
  prometheus-cpp-dev
  iperf3 python3 python3-pytest iproute2 nftables clang-format
  # The version tests: building other iperf3 releases with authentication, and RSA test keys.
  libssl-dev openssl
  # The packaging tests: the compose and Kubernetes YAML, `systemd-analyze verify` of the units.
  python3-yaml systemd
)
if [[ "${1:-}" == "--bench" ]]; then
  # run_bench.sh's HAProxy path and tables; pool_bench.py's set-up times (strace).
  packages+=(haproxy jq strace)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages (${missing[*]}); run as root" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
