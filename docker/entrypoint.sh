#!/bin/bash
# The container's entrypoint: turns IPERF3_PROXY_* environment variables into iperf3-proxy
# options, then execs the proxy (PID 1, so that signals reach it directly).
#
# Every option has a variable: IPERF3_PROXY_ and the option's long name in capitals, '-' as
# '_': IPERF3_PROXY_MAX_STREAMS=4 is --max-streams 4, IPERF3_PROXY_IDLE_TIMEOUT=30s is
# --idle-timeout 30s. Repeatable options (BACKEND, ALLOW, DENY) take a list separated by
# spaces or commas. IPERF3_PROXY_IPERF3_ARGS goes after `--`, to every embedded iperf3 -s
# (words split at spaces). An empty variable is no option. Arguments after the image name come
# after the ones from the environment, so they win where an option is given twice.
#
# Older names, still read: IPERF3_PROXY_LOG (= LOG_LEVEL).
set -euo pipefail

# The options (long names, as in `iperf3-proxy --help`) and how each is given. The packaging
# test checks that this list covers every option of the binary.
readonly VALUE_OPTIONS=(
  port bind servers backends-file iperf3 threads pipe-size udp-poll-us log-level
  cookie-timeout backend-timeout stream-timeout role-timeout idle-timeout queue-timeout
  drain-timeout
  max-tests queue-length max-pending max-duration max-params-json max-results-json
  max-streams max-bitrate max-tests-per-client
  metrics log-format logfile
)
readonly LIST_OPTIONS=(backend allow deny)
# Options with no variable, and why: a container's process stays in the foreground, and help
# and version print and exit.
readonly NOT_FROM_ENVIRONMENT=(daemon pidfile help version)

variable_of() {
  local name="${1//-/_}"
  echo "IPERF3_PROXY_${name^^}"
}

fail() {
  echo "entrypoint: $*" >&2
  exit 2
}

args=()
if [[ -z "${IPERF3_PROXY_LOG_LEVEL:-}" && -n "${IPERF3_PROXY_LOG:-}" ]]; then
  IPERF3_PROXY_LOG_LEVEL="$IPERF3_PROXY_LOG"
fi
# Kubernetes adds IPERF3_PROXY_PORT=tcp://ADDR:PORT for a Service named iperf3-proxy unless the
# pod sets enableServiceLinks: false.
if [[ "${IPERF3_PROXY_PORT:-}" == *://* ]]; then
  fail "IPERF3_PROXY_PORT=$IPERF3_PROXY_PORT looks like a Kubernetes service link, not a port" \
       "(set enableServiceLinks: false in the pod spec)"
fi
for option in "${VALUE_OPTIONS[@]}"; do
  variable="$(variable_of "$option")"
  if [[ -n "${!variable:-}" ]]; then
    args+=("--$option" "${!variable}")
  fi
done
for option in "${LIST_OPTIONS[@]}"; do
  variable="$(variable_of "$option")"
  value="${!variable:-}"
  read -r -a items <<<"${value//,/ }"
  for item in "${items[@]}"; do
    args+=("--$option" "$item")
  done
done

# Arguments given to the container: after the environment's. Its `--`, if any, starts the
# options for the embedded servers, to which IPERF3_PROXY_IPERF3_ARGS is added.
args+=("$@")
if [[ -n "${IPERF3_PROXY_IPERF3_ARGS:-}" ]]; then
  read -r -a server_args <<<"$IPERF3_PROXY_IPERF3_ARGS"
  has_double_dash=0
  for arg in "$@"; do
    [[ "$arg" == "--" ]] && has_double_dash=1
  done
  ((has_double_dash)) || args+=("--")
  args+=("${server_args[@]}")
fi

exec iperf3-proxy "${args[@]}"
