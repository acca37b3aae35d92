#!/bin/sh
# Maps environment variables to flags, then execs the proxy so signals reach it directly.
#   IPERF3_PROXY_PORT     listen port (default 5201)
#   IPERF3_PROXY_BACKEND  HOST:PORT of an existing iperf3 server (default: embedded iperf3 -s)
#   IPERF3_PROXY_LOG      log level (default info)
set -eu
set -- -p "${IPERF3_PROXY_PORT:-5201}" --log-level "${IPERF3_PROXY_LOG:-info}" "$@"
if [ -n "${IPERF3_PROXY_BACKEND:-}" ]; then
  set -- --backend "$IPERF3_PROXY_BACKEND" "$@"
fi
exec /usr/local/bin/iperf3-proxy "$@"
