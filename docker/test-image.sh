#!/usr/bin/env bash
# Builds the image as a new user would and runs real iperf3 tests through its published port.
# Not part of scripts/test.sh (it takes minutes: a Debian base image, then a compile). Run as
# root on Debian 12 from anywhere in the clone, with dockerd running (`dockerd &`):
#
#   docker/test-image.sh            # builds the base image if missing, the image, then tests it
#   docker/test-image.sh --base     # only the base image
#
# The base: no image registry is needed. If BASE_IMAGE (default debian:bookworm-slim, the name
# the Dockerfile uses) is not in the local image store, it is made from Debian's archive with
# `debootstrap --variant=minbase bookworm` and `docker import`ed under that name. Builds use
# `docker build --network host` (the build reaches Debian's archive the way the host does).
#
# What it checks, through the port published for TCP and UDP (-p PORT:5201/tcp -p PORT:5201/udp),
# with the container run as a hardened deployment would (--cap-drop ALL, no-new-privileges,
# --read-only): a TCP test, a TCP --bidir test, a UDP test (bytes each way, no error); the
# image's HEALTHCHECK turning healthy; the proxy and its iperf3 servers not root and without
# capabilities; the environment mapping (options and IPERF3_PROXY_IPERF3_ARGS reach the proxy
# and its servers, an edge-policy option from the environment refuses a test); every option of
# the binary reachable from the environment; and the compose example that fronts an existing
# server (a second container running iperf3 -s, on a network of their own).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE_IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
IMAGE="${IMAGE:-iperf3-proxy:test}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PORT="${PORT:-25201}"
NAME="iperf3-proxy-image-test-$$"
IPERF3="${IPERF3:-iperf3}"

log() { echo "test-image: $*" >&2; }
fail() {
  log "FAIL: $*"
  exit 1
}

cleanup() {
  docker rm -f "$NAME" "$NAME-front" "$NAME-server" >/dev/null 2>&1 || true
  docker network rm "$NAME-net" >/dev/null 2>&1 || true
  [[ -z "${rootfs:-}" ]] || rm -rf "$rootfs"
}
trap cleanup EXIT

make_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE is there"
    return
  fi
  command -v debootstrap >/dev/null || fail "debootstrap is missing (apt-get install debootstrap)"
  rootfs="$(mktemp -d /var/tmp/iperf3-proxy-rootfs.XXXXXX)"
  log "making $BASE_IMAGE: debootstrap --variant=minbase bookworm from $MIRROR (minutes)"
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 ||
    { tail -20 "$rootfs.log" >&2; fail "debootstrap failed (log: $rootfs.log)"; }
  rm -f "$rootfs.log"
  # As Debian's own images: no package caches, the archive's security updates listed.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  rootfs=""
  log "imported $BASE_IMAGE"
}

# The JSON result of a real iperf3 client run against the published port.
client() {
  "$IPERF3" -c 127.0.0.1 -p "$PORT" -J --connect-timeout 5000 "$@" 2>&1 || true
}

# Prints "sent received error" of a client's JSON result (bytes of the sum each way).
summary() {
  /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
end = r.get("end", {})
sums = [end.get(k) for k in ("sum_sent", "sum_received", "sum")]
if "sum_sent_bidir_reverse" in end:
    sums += [end["sum_sent_bidir_reverse"], end["sum_received_bidir_reverse"]]
sent = sum((s or {}).get("bytes", 0) for s in sums[:1] + sums[3:4])
received = sum((s or {}).get("bytes", 0) for s in sums[1:2] + sums[4:5])
print(sent, received, json.dumps(r.get("error", "")))
'
}

expect_test_passes() {
  local what="$1"
  shift
  local out sent received error
  out="$(client "$@")"
  read -r sent received error <<<"$(summary <<<"$out" 2>/dev/null || echo "0 0 unparsable")"
  [[ "$error" == '""' && "$sent" -gt 0 && "$received" -gt 0 ]] ||
    { echo "$out" | tail -20 >&2; docker logs --tail 30 "$CONTAINER" >&2; fail "$what"; }
  log "ok: $what (sent $sent bytes, received $received)"
}

expect_test_refused() {
  local what="$1" message="$2"
  shift 2
  local out
  out="$(client "$@")"
  grep -q "$message" <<<"$out" || { echo "$out" | tail -5 >&2; fail "$what"; }
  log "ok: $what ($message)"
}

wait_healthy() {
  local container="$1" status=""
  for _ in $(seq 1 60); do
    status="$(docker inspect -f '{{.State.Health.Status}}' "$container")"
    [[ "$status" == healthy ]] && break
    sleep 1
  done
  [[ "$status" == healthy ]] ||
    { docker inspect -f '{{json .State.Health}}' "$container" >&2; fail "HEALTHCHECK: $status"; }
  log "ok: HEALTHCHECK healthy: $(docker inspect -f \
    '{{with index .State.Health.Log 0}}{{.Output}}{{end}}' "$container" | head -1)"
}

# Inside the container: "uid capabilities command" of every process (the image has no ps).
processes() {
  docker exec "$1" bash -c 'for s in /proc/[0-9]*/status; do
      d=${s%/status}; uid=$(awk "/^Uid:/{print \$2}" $s); cap=$(awk "/^CapEff:/{print \$2}" $s)
      echo "$uid $cap $(tr "\0" " " <$d/cmdline)"; done'
}

make_base_image
[[ "${1:-}" == "--base" ]] && exit 0

log "building $IMAGE from $ROOT (docker build --network host)"
docker build --network host --build-arg BASE_IMAGE="$BASE_IMAGE" -f "$ROOT/docker/Dockerfile" \
  -t "$IMAGE" "$ROOT" >&2

# Every option of the binary has a variable, or a reason not to (docker/entrypoint.sh).
entrypoint_lists="$(sed -n '/^readonly VALUE_OPTIONS=(/,/^readonly NOT_FROM_ENVIRONMENT/p' \
  "$ROOT/docker/entrypoint.sh")"
for option in $(docker run --rm "$IMAGE" --help | grep -oE -- '^ +(-[a-zA-Z],)?--[a-z][a-z0-9-]+' |
  grep -oE -- '--[a-z][a-z0-9-]+' | sort -u); do
  grep -qw -- "${option#--}" <<<"$entrypoint_lists" ||
    fail "option $option has no IPERF3_PROXY_ variable in docker/entrypoint.sh"
done
log "ok: every option of the binary is reachable from the environment"

# The image's default metrics port is only there if the binary has --metrics (issue 10, part 1);
# without it, HEALTHCHECK falls back to the listener check.
metrics_env=()
if ! docker run --rm "$IMAGE" --help | grep -q -- '--metrics'; then
  log "this build has no --metrics: HEALTHCHECK is tested on its listener fallback"
  metrics_env=(-e IPERF3_PROXY_METRICS=)
fi

# The embedded pool, hardened, options from the environment.
CONTAINER="$NAME"
docker run -d --name "$NAME" --cap-drop ALL --security-opt no-new-privileges --read-only \
  --tmpfs /tmp --health-interval 2s --health-start-period 30s \
  -p "127.0.0.1:$PORT:5201/tcp" -p "127.0.0.1:$PORT:5201/udp" \
  -e IPERF3_PROXY_SERVERS=2 -e IPERF3_PROXY_MAX_STREAMS=8 -e IPERF3_PROXY_IDLE_TIMEOUT=30s \
  -e IPERF3_PROXY_IPERF3_ARGS="--rcv-timeout 20000" "${metrics_env[@]}" "$IMAGE" >/dev/null
wait_healthy "$NAME"

expect_test_passes "TCP" -t 2
expect_test_passes "TCP --bidir -P 2" --bidir -P 2 -t 2
expect_test_passes "UDP -b 20M" -u -b 20M -t 2
expect_test_passes "UDP --bidir" -u -b 10M --bidir -t 2
expect_test_refused "--max-streams from IPERF3_PROXY_MAX_STREAMS" \
  "number of parallel streams too large" -P 9 -t 1

# The processes: the proxy (PID 1) and its two servers, none root, no capabilities.
procs="$(processes "$NAME")"
grep -E 'iperf3' <<<"$procs" >&2
[[ "$(grep -c 'iperf3 -s ' <<<"$procs")" -eq 2 ]] || fail "not two embedded iperf3 -s"
if awk '/iperf3/ && ($1 == 0 || $2 != "0000000000000000")' <<<"$procs" | grep -q .; then
  fail "a process runs as root or with capabilities"
fi
proxy_command="$(grep '^[0-9]* [0-9a-f]* iperf3-proxy ' <<<"$procs")"
for expected in '--servers 2 ' '--max-streams 8 ' '--idle-timeout 30s ' '-- --rcv-timeout 20000'; do
  grep -qF -- "$expected" <<<"$proxy_command" ||
    fail "the environment did not become options: no '$expected' in: $proxy_command"
done
[[ "$(grep -c 'iperf3 -s .*--rcv-timeout 20000' <<<"$procs")" -eq 2 ]] ||
  fail "IPERF3_PROXY_IPERF3_ARGS did not reach the embedded servers"
log "ok: not root (uid $(awk '/iperf3-proxy/{print $1; exit}' <<<"$procs")), no capabilities;" \
  "options and IPERF3_PROXY_IPERF3_ARGS from the environment"

# SIGTERM (docker stop) drains and exits 0.
docker stop -t 40 "$NAME" >/dev/null
[[ "$(docker inspect -f '{{.State.ExitCode}}' "$NAME")" == 0 ]] || fail "exit status after stop"
log "ok: docker stop: exit 0"
docker rm "$NAME" >/dev/null

# Fronting an existing server (as docker/compose.fronting.yaml does): iperf3 -s in a container of its
# own, the proxy with IPERF3_PROXY_BACKEND and no embedded server.
docker network create "$NAME-net" >/dev/null
docker run -d --name "$NAME-server" --network "$NAME-net" --network-alias iperf3-server \
  --cap-drop ALL --read-only --tmpfs /tmp --no-healthcheck --entrypoint iperf3 "$IMAGE" -s \
  >/dev/null
CONTAINER="$NAME-front"
docker run -d --name "$NAME-front" --network "$NAME-net" --cap-drop ALL --read-only \
  --health-interval 2s -p "127.0.0.1:$PORT:5201/tcp" -p "127.0.0.1:$PORT:5201/udp" \
  -e IPERF3_PROXY_BACKEND=iperf3-server:5201 "${metrics_env[@]}" "$IMAGE" >/dev/null
wait_healthy "$NAME-front"
expect_test_passes "fronting a server container: TCP --bidir" --bidir -t 2
expect_test_passes "fronting a server container: UDP" -u -b 10M -t 2
log "all passed"
