#!/bin/bash
# The image's HEALTHCHECK: is the proxy serving?
#
# With --metrics (IPERF3_PROXY_METRICS, on by default in the image) it asks the proxy's own
# answer: GET /healthz on the metrics port, which never takes a test slot. It reads the port from
# the proxy's command line, so it follows whatever the entrypoint or `docker run ... ARGS` gave.
# Without --metrics it can only look from outside: is the proxy's TCP port listening? (It never
# connects to the iperf3 port: a connection without a cookie is a refused connection in the log.)
#
# Bash only (its /dev/tcp): the image has no curl or wget.
set -uo pipefail

unhealthy() {
  echo "unhealthy: $*"
  exit 1
}

# The proxy: PID 1 when exec'd by the entrypoint, a child of the init with `docker run --init`.
proxy_pid=""
for comm in /proc/[0-9]*/comm; do
  if [[ "$(cat "$comm" 2>/dev/null)" == "iperf3-proxy" ]]; then
    proxy_pid="${comm#/proc/}"
    proxy_pid="${proxy_pid%/comm}"
    break
  fi
done
[[ -n "$proxy_pid" ]] || unhealthy "no iperf3-proxy process"

# Its arguments, up to `--` (what follows is for the embedded iperf3 servers).
mapfile -d '' args <"/proc/$proxy_pid/cmdline"
metrics=""
port=5201
for ((i = 1; i < ${#args[@]}; ++i)); do
  case "${args[i]}" in
    --) break ;;
    --metrics) metrics="${args[i + 1]:-}" ;;
    --metrics=*) metrics="${args[i]#--metrics=}" ;;
    -p | --port) port="${args[i + 1]:-}" ;;
    --port=*) port="${args[i]#--port=}" ;;
  esac
done

if [[ -n "$metrics" ]]; then
  # [ADDR:]PORT; a wildcard address is asked on loopback.
  host=127.0.0.1
  metrics_port="${metrics##*:}"
  if [[ "$metrics" == *:* ]]; then
    host="${metrics%:*}"
    host="${host#[}"
    host="${host%]}"
    case "$host" in
      "" | 0.0.0.0) host=127.0.0.1 ;;
      ::) host=::1 ;;
    esac
  fi
  exec 3<>"/dev/tcp/$host/$metrics_port" 2>/dev/null ||
    unhealthy "nothing answers on the metrics port $host:$metrics_port"
  printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
  IFS= read -r -t 3 status <&3 || unhealthy "no answer from /healthz on $host:$metrics_port"
  status="${status%$'\r'}"
  [[ "$status" =~ ^HTTP/1\.[01]\ 200 ]] || unhealthy "/healthz answered: $status"
  echo "healthy: /healthz on $host:$metrics_port answered: $status"
  exit 0
fi

# No metrics port: a listener on the proxy's TCP port, in the proxy's own network namespace
# (/proc/net/tcp{,6}: local address column ends in the port in hex, state 0A is LISTEN).
hex_port="$(printf '%04X' "$port")"
for table in "/proc/$proxy_pid/net/tcp" "/proc/$proxy_pid/net/tcp6"; do
  while read -r _ local _ state _; do
    if [[ "$local" == *":$hex_port" && "$state" == "0A" ]]; then
      echo "healthy: listening on port $port (no --metrics: /healthz not asked)"
      exit 0
    fi
  done <"$table"
done
unhealthy "nothing listens on port $port"
