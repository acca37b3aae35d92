#!/usr/bin/env bash
# bench/run_bench.sh - throughput benchmark: iperf3 direct vs. iperf3-proxy vs. HAProxy.
#
# One run starts iperf3 servers, iperf3-proxy in front of all of them (a pool) and HAProxy (TCP
# mode, kernel splicing, one frontend per server), each on free loopback ports, then runs every
# scenario over every path for several interleaved rounds and prints the per-path medians and
# their ratios, CPU seconds per GB, the proxy's RSS and how its threads shared the work.
# See bench/README.md.
#
# This is a benchmark, not a test: it exits 0 unless the setup itself fails.

set -u -o pipefail

# ---------------------------------------------------------------------------
# Scenarios: one line each, "name|iperf3 client arguments".  The name is what
# --scenarios filters on; the arguments are shown in the tables.  --bidir lines
# get a row per direction; -u/--udp lines run over direct and the proxy only
# (HAProxy relays no UDP), with -O 0, in a table of their own (receiver Gbit/s
# and loss).  "@N ARGS" runs N clients at once: directly each against a server of
# its own, through HAProxy each through the frontend of its server, through the
# proxy all to its one port (the pool spreads them over the servers).
# ---------------------------------------------------------------------------
SCENARIOS=(
    "P1|-P 1"
    "R|-R"
    "bidir|--bidir"
    "P4|-P 4"
    "udp|-u -b 1G -l 1400"
    "udp-R|-u -b 1G -l 1400 -R"
    "udp0|-u -b 0 -l 1400"
    "udp0-R|-u -b 0 -l 1400 -R"
    "conc8|@8 -P 1"
    "conc32|@32 -P 1"
)

# ---------------------------------------------------------------------------
# Settings (environment first, flags override).
# ---------------------------------------------------------------------------
DURATION=${BENCH_TIME:-5}            # iperf3 -t
OMIT=${BENCH_OMIT:-1}                # iperf3 -O (seconds of slow start left out)
ROUNDS=${BENCH_ROUNDS:-5}            # repetitions of every (scenario, path)
PAUSE=${BENCH_PAUSE:-0.5}            # seconds between two client runs
CPU=${BENCH_CPU:-1}                  # 1: CPU s/GB of the forwarders, proxy RSS and threads
PATHS_SEL=${BENCH_PATHS:-direct,proxy,haproxy}
SCEN_SEL=${BENCH_SCENARIOS:-}
KEEP=${BENCH_KEEP:-0}                # 1: keep the temp dir (logs, JSON, raw.tsv)
INSTALL_DEPS=0
PROXY_BIN=${IPERF3_PROXY_BIN:-}
PROXY_LOG_LEVEL=${PROXY_LOG_LEVEL:-info}
PROXY_EXTRA_ARGS=${PROXY_EXTRA_ARGS:-}
VARIANTS=()                          # --variant NAME=[BINARY::]ARGS
HAPROXY_BIN=${HAPROXY_BIN:-haproxy}
HAPROXY_SPLICE=${HAPROXY_SPLICE:-force}   # force | auto | off
HAPROXY_NBTHREAD=${HAPROXY_NBTHREAD:-}    # empty: HAProxy's default (one per CPU)
CLIENT_MARGIN=${BENCH_CLIENT_MARGIN:-20}  # seconds past -t+-O before a client counts as hung

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
[[ -n $PROXY_BIN ]] || PROXY_BIN=$REPO_DIR/build/ci/src/iperf3-proxy

usage() {
    cat <<USAGE
usage: bench/run_bench.sh [options]

  -t, --time SECS        iperf3 -t per run (env BENCH_TIME, default 5)
  -O, --omit SECS        iperf3 -O, slow start left out (env BENCH_OMIT, default 1;
                         UDP scenarios always run with -O 0)
  -r, --rounds N         rounds; each round runs every scenario over every path
                         (env BENCH_ROUNDS, default 5); the median is reported
      --no-cpu           leave out CPU s/GB, RSS and per-thread CPU (env BENCH_CPU=0)
      --paths LIST       comma list of direct,proxy,haproxy (env BENCH_PATHS)
      --scenarios LIST   comma list of scenario names (env BENCH_SCENARIOS);
                         known: $(for s in "${SCENARIOS[@]}"; do printf '%s ' "${s%%|*}"; done)
      --variant NAME=[BINARY::]ARGS
                         one more proxy path, proxy-NAME, in the same run: another
                         binary and/or more arguments, e.g. 'p256k=--pipe-size 262144'
                         or 'base=/tmp/old/iperf3-proxy::'; repeatable
      --keep             keep the temp dir with logs, client JSON and raw.tsv
      --install-deps     apt-get install haproxy/jq/iperf3 if missing
  -h, --help             this text

environment: IPERF3_PROXY_BIN (default build/ci/src/iperf3-proxy),
  PROXY_LOG_LEVEL (info), PROXY_EXTRA_ARGS (every proxy path), HAPROXY_BIN,
  HAPROXY_SPLICE (force = splice-auto + splice-request + splice-response; auto;
  off), HAPROXY_NBTHREAD, BENCH_PAUSE (0.5), BENCH_CLIENT_MARGIN (20)
USAGE
}

while (($#)); do
    case $1 in
        -t|--time) DURATION=$2; shift 2 ;;
        -O|--omit) OMIT=$2; shift 2 ;;
        -r|--rounds) ROUNDS=$2; shift 2 ;;
        --cpu) CPU=1; shift ;;
        --no-cpu) CPU=0; shift ;;
        --paths) PATHS_SEL=$2; shift 2 ;;
        --scenarios) SCEN_SEL=$2; shift 2 ;;
        --variant) VARIANTS+=("$2"); shift 2 ;;
        --keep) KEEP=1; shift ;;
        --install-deps) INSTALL_DEPS=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_bench: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

for v in DURATION OMIT ROUNDS CLIENT_MARGIN; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "run_bench: $v must be a whole number, got '${!v}'" >&2; exit 2; }
done
((ROUNDS >= 1 && DURATION >= 1)) || { echo "run_bench: rounds and time must be >= 1" >&2; exit 2; }

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Dependencies.
# ---------------------------------------------------------------------------
PY=/usr/bin/python3      # Debian's python; the one on PATH may be another
need_pkgs=()
command -v iperf3 >/dev/null || need_pkgs+=(iperf3)
command -v jq >/dev/null || need_pkgs+=(jq)
[[ -x $PY ]] || need_pkgs+=(python3)
if [[ ,$PATHS_SEL, == *,haproxy,* ]] && ! command -v "$HAPROXY_BIN" >/dev/null; then
    need_pkgs+=(haproxy)
fi
if ((${#need_pkgs[@]})); then
    if ((INSTALL_DEPS)); then
        log "installing: ${need_pkgs[*]}"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >&2; }; then
            die "apt-get install failed"
        fi
    else
        die "missing: ${need_pkgs[*]} (apt-get install -y ${need_pkgs[*]}, or rerun with --install-deps)"
    fi
fi

# ---------------------------------------------------------------------------
# Paths (direct, proxy, haproxy, proxy-NAME per variant) and scenarios.
# ---------------------------------------------------------------------------
declare -A P_BIN P_ARGS P_PORT P_PID P_STATE
PATHS=()
IFS=, read -ra _sel <<<"$PATHS_SEL"
for p in "${_sel[@]}"; do
    case $p in direct|proxy|haproxy) PATHS+=("$p") ;; *) die "unknown path '$p'" ;; esac
done
[[ " ${PATHS[*]} " == *" proxy "* ]] && { P_BIN[proxy]=$PROXY_BIN; P_ARGS[proxy]=""; }
for v in "${VARIANTS[@]}"; do
    [[ $v == *=* ]] || die "--variant wants NAME=[BINARY::]ARGS, got '$v'"
    name=${v%%=*} spec=${v#*=} bin=$PROXY_BIN
    [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || die "variant name '$name': letters, digits, _ . - only"
    if [[ $spec == *::* ]]; then bin=${spec%%::*} spec=${spec#*::}; fi
    PATHS+=("proxy-$name")
    P_BIN[proxy-$name]=$bin
    P_ARGS[proxy-$name]=$spec
done
((${#PATHS[@]})) || die "no path selected"
is_proxy_path() { [[ $1 == proxy || $1 == proxy-* ]]; }

RUN_SCENARIOS=()
for s in "${SCENARIOS[@]}"; do
    if [[ -z $SCEN_SEL || ,$SCEN_SEL, == *,"${s%%|*}",* ]]; then RUN_SCENARIOS+=("$s"); fi
done
((${#RUN_SCENARIOS[@]})) || die "no scenario matches '$SCEN_SEL'"

scen_clients() {  # scen_clients ARGS: N of "@N ARGS", else 1
    if [[ $1 =~ ^@([0-9]+)\  ]]; then echo "${BASH_REMATCH[1]}"; else echo 1; fi
}
scen_args() { if [[ $1 =~ ^@[0-9]+\ (.*)$ ]]; then echo "${BASH_REMATCH[1]}"; else echo "$1"; fi; }
is_udp() { [[ " $1 " == *" -u "* || " $1 " == *" --udp "* ]]; }  # is_udp "ARGS"

NSERVERS=1
for s in "${RUN_SCENARIOS[@]}"; do
    n=$(scen_clients "${s#*|}")
    ((n > NSERVERS)) && NSERVERS=$n
done

# ---------------------------------------------------------------------------
# Process bookkeeping and cleanup (runs on normal exit, error and Ctrl-C).
# ---------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/iperf3-proxy-bench.XXXXXX")
SERVER_PIDS=() SERVER_PORTS=() HAPROXY_PORTS=() CLIENT_PIDS=() SAMPLER_PID=""

stop_pid() {  # stop_pid PID: TERM, wait up to 2 s, then KILL
    local pid=$1 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    trap - EXIT INT TERM HUP
    local pid p
    for pid in "${CLIENT_PIDS[@]}" "$SAMPLER_PID"; do stop_pid "$pid"; done
    for p in "${!P_PID[@]}"; do stop_pid "${P_PID[$p]}"; done
    for pid in "${SERVER_PIDS[@]}"; do stop_pid "$pid"; done
    if ((KEEP)); then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---------------------------------------------------------------------------
# Ports: pick free ones by looking at /proc/net/{tcp,udp}{,6} (nothing connects;
# the proxy and, during UDP tests, iperf3 -s use the same port number for UDP).
# ---------------------------------------------------------------------------
USED_PORTS=" "
port_in_use() {  # any TCP or UDP socket, any state, with this local port
    local hex
    hex=$(printf '%04X' "$1")
    awk -v h="$hex" 'FNR > 1 { split($2, a, ":"); if (a[2] == h) { found = 1; exit } }
                     END { exit !found }' /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6 2>/dev/null
}
free_port() {  # free_port VAR: sets VAR (no subshell, so USED_PORTS sticks)
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 30000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        port_in_use "$p" && continue
        USED_PORTS+="$p "
        printf -v "$1" '%s' "$p"
        return 0
    done
    die "no free port found"
}

is_listening() {  # a LISTEN (state 0A) socket on this local port
    local hex
    hex=$(printf '%04X' "$1")
    awk -v h="$hex" 'FNR > 1 && $4 == "0A" { split($2, a, ":"); if (a[2] == h) { found = 1; exit } }
                     END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

wait_listen() {  # wait_listen PORT PID TIMEOUT_S: 0 once listening, 1 if PID died or timeout
    local port=$1 pid=$2 i
    for ((i = 0; i < $3 * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        is_listening "$port" && return 0
        sleep 0.05
    done
    return 1
}

# ---------------------------------------------------------------------------
# The daemons: NSERVERS iperf3 servers, each proxy path in front of all of them,
# HAProxy with one frontend per server.
# ---------------------------------------------------------------------------
for ((i = 0; i < NSERVERS; i++)); do
    free_port "SERVER_PORTS[$i]"
    free_port "HAPROXY_PORTS[$i]"
done
for p in "${PATHS[@]}"; do
    is_proxy_path "$p" && free_port "P_PORT[$p]"
done

start_server() {  # start_server INDEX
    local i=$1
    iperf3 -s -B 127.0.0.1 -p "${SERVER_PORTS[$i]}" >>"$TMP/iperf3-server$i.log" 2>&1 &
    SERVER_PIDS[i]=$!
    wait_listen "${SERVER_PORTS[$i]}" "${SERVER_PIDS[$i]}" 10 ||
        { tail -n 20 "$TMP/iperf3-server$i.log" >&2; die "iperf3 -s on ${SERVER_PORTS[$i]} did not start"; }
}

restart_server() {  # after a failed/hung run the server may still be inside that test
    stop_pid "${SERVER_PIDS[$1]}"
    start_server "$1"
}

start_proxy() {  # start_proxy PATH
    local p=$1 bin=${P_BIN[$1]} backends=() i
    if [[ ! -x $bin ]]; then
        P_STATE[$p]="not built"
        log "$p: not built ($bin)"
        return
    fi
    for ((i = 0; i < NSERVERS; i++)); do backends+=(--backend "127.0.0.1:${SERVER_PORTS[$i]}"); done
    # The queue covers a server that is still between two tests when the next one starts.
    # shellcheck disable=SC2086  # the extra arguments are meant to split
    "$bin" -p "${P_PORT[$p]}" "${backends[@]}" --queue-timeout 20000 --log-level "$PROXY_LOG_LEVEL" \
        $PROXY_EXTRA_ARGS ${P_ARGS[$p]} >"$TMP/$p.log" 2>&1 &
    P_PID[$p]=$!
    P_STATE[$p]=ok
    if ! wait_listen "${P_PORT[$p]}" "${P_PID[$p]}" 10; then
        P_STATE[$p]="start failed"
        log "$p: start failed; its last output:"
        tail -n 20 "$TMP/$p.log" >&2
        stop_pid "${P_PID[$p]}"
        P_PID[$p]=""
        return
    fi
    for ((i = 0; i < 40; i++)); do   # it announces "ready" once listening
        grep -q ready "$TMP/$p.log" && return
        sleep 0.05
    done
    log "$p: listening on ${P_PORT[$p]} but no 'ready' line on stderr yet; going on"
}

start_haproxy() {
    local splice i
    case $HAPROXY_SPLICE in
        force) splice=$'    option splice-auto\n    option splice-request\n    option splice-response' ;;
        auto) splice='    option splice-auto' ;;
        off) splice='    # splicing off' ;;
        *) die "HAPROXY_SPLICE must be force, auto or off" ;;
    esac
    # The control connection of iperf3 idles for the whole test: long timeouts.
    {
        printf 'global\n    maxconn 4000\n%s\n' "${HAPROXY_NBTHREAD:+    nbthread $HAPROXY_NBTHREAD}"
        printf 'defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n%s\n' "$splice"
        for ((i = 0; i < NSERVERS; i++)); do
            printf 'listen iperf3_%d\n    bind 127.0.0.1:%s\n    server iperf3 127.0.0.1:%s\n' \
                "$i" "${HAPROXY_PORTS[$i]}" "${SERVER_PORTS[$i]}"
        done
    } >"$TMP/haproxy.cfg"
    P_STATE[haproxy]=ok
    if ! "$HAPROXY_BIN" -c -q -f "$TMP/haproxy.cfg" >"$TMP/haproxy-check.log" 2>&1; then
        P_STATE[haproxy]="start failed"
        log "haproxy: config check failed:"
        cat "$TMP/haproxy-check.log" >&2
        return
    fi
    "$HAPROXY_BIN" -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
    P_PID[haproxy]=$!
    if ! wait_listen "${HAPROXY_PORTS[0]}" "${P_PID[haproxy]}" 10; then
        P_STATE[haproxy]="start failed"
        log "haproxy: start failed; its last output:"
        tail -n 20 "$TMP/haproxy.log" >&2
        stop_pid "${P_PID[haproxy]}"
        P_PID[haproxy]=""
    fi
}

# ---------------------------------------------------------------------------
# Measuring a forwarder: CPU (all threads, and the busiest one), RSS.
# ---------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

thread_ticks() {  # thread_ticks PID: "TID TICKS" per thread (utime+stime)
    local t stat rest f
    for t in /proc/"$1"/task/*; do
        stat=$(<"$t/stat") 2>/dev/null || continue
        rest=${stat##*) }            # fields from 3 (state) on; comm may hold spaces
        read -ra f <<<"$rest"
        echo "${t##*/} $((f[11] + f[12]))"
    done
}

rss_sampler() {  # rss_sampler PID FILE: the highest VmRSS (KiB) seen, until FILE.stop exists
    local max=0 r
    while [[ ! -e $2.stop ]] && kill -0 "$1" 2>/dev/null; do
        r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null)
        [[ -n $r ]] && ((r > max)) && max=$r
        echo "$max" >"$2"
        sleep 0.2
    done
}

client_port() {  # client_port PATH INDEX
    case $1 in
        direct) echo "${SERVER_PORTS[$2]}" ;;
        haproxy) echo "${HAPROXY_PORTS[$2]}" ;;
        *) echo "${P_PORT[$1]}" ;;
    esac
}

# Parse a client's JSON into:
#   error fwd_bps fwd_bytes rev_bps rev_bytes moved_bytes fwd_lost_pct rev_lost_pct sent_bytes
# (receiver-side numbers; rev_* are -1 for one-way runs; moved_bytes counts every
# interval including the -O ones, which is what a proxy forwarded meanwhile).
# For UDP, iperf3 3.12 puts the receiver's numbers in end.sum_received (bytes,
# bits_per_second) whichever side receives, so -R needs nothing special (end.sum
# holds the sender's rate); the loss (lost_packets/packets/lost_percent) is in
# end.sum and end.sum_received alike, and for --bidir the s->c one is in
# end.sum_received_bidir_reverse.  The lost fields are -1 for TCP.  sent_bytes is
# what the sender(s) sent (end.sum_sent, plus its _bidir_reverse twin).
parse_json() {
    jq -r '
        def n: if . == null then 0 else . end;
        [ ((.error // "") | tostring | gsub("[\t\n]"; " ") | if . == "" then "-" else . end),
          (.end.sum_received.bits_per_second | n),
          (.end.sum_received.bytes | n),
          (if .end.sum_received_bidir_reverse then .end.sum_received_bidir_reverse.bits_per_second | n else -1 end),
          (if .end.sum_received_bidir_reverse then .end.sum_received_bidir_reverse.bytes | n else -1 end),
          ([.intervals[]? | ((.sum.bytes | n) + (.sum_bidir_reverse.bytes | n))] | add // 0),
          (.end.sum.lost_percent // -1),
          (.end.sum_received_bidir_reverse.lost_percent // -1),
          ((.end.sum_sent.bytes | n) + (.end.sum_sent_bidir_reverse.bytes | n))
        ] | @tsv' "$1" 2>/dev/null
}

RAW=$TMP/raw.tsv
printf 'scenario\tpath\tround\tstatus\tfwd_bps\trev_bps\tmoved_bytes\tcpu_ticks\tnote\tfwd_lost_pct\trev_lost_pct\twall_s\tmax_thread_ticks\trss_kib\tclients\tclients_ok\n' >"$RAW"

run_one() {  # run_one ROUND SCENARIO_LINE PATH
    local round=$1 name=${2%%|*} spec=${2#*|} path=$3
    local args clients pid rc parsed err fwd fwd_b rev rev_b moved lost_f lost_r sent
    local status note bidir=0 udp=0 omit=$OMIT i ok=0 failed=() hung=0
    local sum_fwd=0 sum_rev=0 sum_moved=0 t0=0 t1=0 w0 w1 wall maxthread=0 rss=0
    local rcs=()
    clients=$(scen_clients "$spec")
    args=$(scen_args "$spec")
    [[ " $args " == *" --bidir "* ]] && bidir=1
    # UDP has no slow start to leave out, and iperf3 3.12 miscounts UDP loss with
    # --omit (lost_percent can exceed 100 %: esnet/iperf#1489), so UDP runs use -O 0.
    is_udp "$args" && udp=1 omit=0
    pid=${P_PID[$path]:-}
    if [[ $CPU == 1 && -n $pid ]]; then
        t0=$(thread_ticks "$pid" | tee "$TMP/threads.before" | awk '{ s += $2 } END { print s + 0 }')
        rm -f "$TMP/rss" "$TMP/rss.stop"
        is_proxy_path "$path" && { rss_sampler "$pid" "$TMP/rss" & SAMPLER_PID=$!; }
    fi
    w0=$(date +%s%N)
    CLIENT_PIDS=()
    for ((i = 0; i < clients; i++)); do
        # shellcheck disable=SC2086  # args is a word list
        timeout -k 2 $((DURATION + omit + CLIENT_MARGIN)) \
            iperf3 -c 127.0.0.1 -p "$(client_port "$path" "$i")" -t "$DURATION" -O "$omit" -J $args \
            >"$TMP/$name.$path.r$round.c$i.json" 2>"$TMP/$name.$path.r$round.c$i.err" &
        CLIENT_PIDS+=($!)
    done
    for ((i = 0; i < clients; i++)); do
        wait "${CLIENT_PIDS[$i]}"
        rcs[i]=$?
    done
    CLIENT_PIDS=()
    w1=$(date +%s%N)
    wall=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    if [[ $CPU == 1 && -n $pid ]]; then
        thread_ticks "$pid" >"$TMP/threads.after"
        t1=$(awk '{ s += $2 } END { print s + 0 }' "$TMP/threads.after")
        maxthread=$(awk 'NR == FNR { before[$1] = $2; next }
                         { d = $2 - before[$1]; if (d > m) m = d } END { print m + 0 }' \
                    "$TMP/threads.before" "$TMP/threads.after")
        if [[ -n $SAMPLER_PID ]]; then
            touch "$TMP/rss.stop"
            wait "$SAMPLER_PID" 2>/dev/null
            SAMPLER_PID=""
            rss=$(cat "$TMP/rss" 2>/dev/null || echo 0)
        fi
    fi
    lost_f=-1 lost_r=-1 rev=-1
    for ((i = 0; i < clients; i++)); do
        rc=${rcs[$i]}
        parsed=$(parse_json "$TMP/$name.$path.r$round.c$i.json")
        err="" fwd=0 fwd_b=0 rev=-1 rev_b=-1 moved=0 lost_f=-1 lost_r=-1 sent=0
        [[ -n $parsed ]] && IFS=$'\t' read -r err fwd fwd_b rev rev_b moved lost_f lost_r sent <<<"$parsed"
        [[ $err == - ]] && err=""
        # UDP: a forwarder handles the datagrams lost after it at the receiver too (where
        # most loopback loss happens), so "moved" is what the sender(s) sent.
        ((udp)) && moved=$sent
        if [[ $rc == 124 || $rc == 137 ]]; then
            failed+=("client $i hung, killed after $((DURATION + omit + CLIENT_MARGIN))s"); hung=1
        elif [[ $rc != 0 || -z $parsed || -n $err ]]; then
            failed+=("client $i rc=$rc${err:+: $err}")
        elif ((bidir)) && [[ $fwd_b == 0 || $rev_b == 0 ]]; then
            failed+=("client $i zero-byte direction (c->s $fwd_b B, s->c $rev_b B)")
        elif [[ $fwd_b == 0 ]]; then
            failed+=("client $i zero bytes")
        else
            ok=$((ok + 1))
            sum_fwd=$(awk -v a="$sum_fwd" -v b="$fwd" 'BEGIN { printf "%.0f", a + b }')
            sum_rev=$(awk -v a="$sum_rev" -v b="$rev" 'BEGIN { printf "%.0f", a + (b < 0 ? 0 : b) }')
            sum_moved=$(awk -v a="$sum_moved" -v b="$moved" 'BEGIN { printf "%.0f", a + b }')
        fi
    done
    ((bidir)) || sum_rev=-1
    status=ok note=-
    if ((${#failed[@]})); then
        status=fail note="${#failed[@]}/$clients failed: ${failed[0]}"
        ((clients == 1)) && [[ ${failed[0]} == *zero* ]] && status=zero
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$path" "$round" \
        "$status" "$sum_fwd" "$sum_rev" "$sum_moved" $((t1 - t0)) "$note" "$lost_f" "$lost_r" \
        "$wall" "$maxthread" "$rss" "$clients" "$ok" >>"$RAW"
    if [[ $status == ok ]]; then
        if ((udp)); then
            log "$(awk -v a="$sum_fwd" -v la="$lost_f" -v s="$name" -v p="$path" -v r="$round" \
                'BEGIN { printf "round %s %-7s %-14s %7.2f Gbit/s received, loss %.1f %%", r, s, p, a/1e9, la }')"
        elif ((bidir)); then
            log "$(awk -v a="$sum_fwd" -v b="$sum_rev" -v s="$name" -v p="$path" -v r="$round" \
                'BEGIN { printf "round %s %-7s %-14s %7.2f Gbit/s (c->s %.2f, s->c %.2f)", r, s, p, (a+b)/1e9, a/1e9, b/1e9 }')"
        else
            log "$(awk -v a="$sum_fwd" -v s="$name" -v p="$path" -v r="$round" \
                'BEGIN { printf "round %s %-7s %-14s %7.2f Gbit/s", r, s, p, a/1e9 }')$( ((clients > 1)) && echo " ($clients tests)")"
        fi
    else
        log "round $round $name $path: FAILED ($note)"
        # A server may still sit in the broken test; give the next run a clean one (the
        # proxy's pool skips a hung server by itself).
        if [[ $path == direct || $path == haproxy ]]; then
            for ((i = 0; i < clients; i++)); do restart_server "$i"; done
        fi
    fi
    sleep "$PAUSE"
}

# ---------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------
for ((i = 0; i < NSERVERS; i++)); do start_server "$i"; done
for p in "${PATHS[@]}"; do
    if is_proxy_path "$p"; then start_proxy "$p"; elif [[ $p == haproxy ]]; then start_haproxy; fi
done

log "iperf3 -s x$NSERVERS (first on ${SERVER_PORTS[0]}); $(for p in "${PATHS[@]}"; do
    [[ $p == direct ]] || printf '%s on %s; ' "$p" "$(client_port "$p" 0)"; done)tmp $TMP"
log "$ROUNDS round(s) x ${#RUN_SCENARIOS[@]} scenario(s) x ${#PATHS[@]} path(s), -t $DURATION -O $OMIT"

for ((round = 1; round <= ROUNDS; round++)); do
    for scen in "${RUN_SCENARIOS[@]}"; do
        # Rotate the path order every round so slow drift spreads over all paths.
        n=${#PATHS[@]}
        for ((k = 0; k < n; k++)); do
            path=${PATHS[(k + round - 1) % n]}
            [[ ${P_STATE[$path]:-ok} == ok ]] || continue
            [[ $path == haproxy ]] && is_udp "${scen#*|}" && continue   # HAProxy relays no UDP
            if [[ $path != direct ]] && ! kill -0 "${P_PID[$path]}" 2>/dev/null; then
                log "$path died; its last output:"
                tail -n 20 "$TMP/$path.log" >&2
                P_STATE[$path]="died"
                continue
            fi
            run_one "$round" "$scen" "$path"
        done
    done
done

# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------
SCEN_ARG=""
for s in "${RUN_SCENARIOS[@]}"; do SCEN_ARG+="$s"$'\n'; done
STATES=()
for p in "${PATHS[@]}"; do STATES+=("$p=${P_STATE[$p]:-ok}"); done

echo
echo "iperf3-proxy benchmark, $(date -u +%Y-%m-%d): $(iperf3 --version 2>/dev/null | head -n 1)"
[[ " ${PATHS[*]} " != *" haproxy "* ]] ||
    echo "haproxy: $("$HAPROXY_BIN" -v 2>/dev/null | head -n 1 | cut -d' ' -f1-3), splice=$HAPROXY_SPLICE, nbthread=${HAPROXY_NBTHREAD:-default}"
for p in "${PATHS[@]}"; do
    is_proxy_path "$p" && echo "$p: ${P_BIN[$p]} ${PROXY_EXTRA_ARGS} ${P_ARGS[$p]} (${P_STATE[$p]:-ok})"
done
echo "host: $(uname -sr), $(nproc) CPU(s), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end;" \
    "-t $DURATION -O $OMIT (UDP: -O 0), $ROUNDS round(s), median per path"

"$PY" - "$RAW" "$CLK_TCK" "$CPU" "${PATHS[*]}" "$SCEN_ARG" "$(nproc)" "${STATES[@]}" <<'PYEOF'
import csv, statistics, sys

raw, clk_tck, cpu_on, paths, scen_arg, ncpu = (sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1",
                                               sys.argv[4].split(), sys.argv[5], int(sys.argv[6]))
states = dict(a.split("=", 1) for a in sys.argv[7:])
all_scenarios = [l.split("|", 1) for l in scen_arg.splitlines() if l]
is_udp = lambda args: bool({"-u", "--udp"} & set(args.split()))
is_conc = lambda args: args.startswith("@")
tcp_scenarios = [s for s in all_scenarios if not is_udp(s[1]) and not is_conc(s[1])]
udp_scenarios = [s for s in all_scenarios if is_udp(s[1])]
conc_scenarios = [s for s in all_scenarios if is_conc(s[1])]
proxies = [p for p in paths if p == "proxy" or p.startswith("proxy-")]
forwarders = proxies + (["haproxy"] if "haproxy" in paths else [])
cols = [p for p in ["direct"] + proxies + ["haproxy"] if p in paths]

runs = list(csv.DictReader(open(raw), delimiter="\t"))

def cell_runs(name, path):
    return [r for r in runs if r["scenario"] == name and r["path"] == path]

def ok_runs(name, path):
    return [r for r in cell_runs(name, path) if r["status"] == "ok"]

def fmt_cell(path, values, total):
    if states.get(path, "ok") != "ok" and total == 0:
        return states[path], None
    if total == 0:
        return "no runs", None
    if not values:
        return "failed", None
    med = statistics.median(values)
    bad = total - len(values)
    return f"{med:.2f}" + (f" ({bad}/{total} fail)" if bad else ""), med

def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"

def print_table(head, rows):
    w = [max(len(str(x[i])) for x in rows + [head]) for i in range(len(head))]
    print("  ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(head)))
    for r in rows:
        print("  ".join(str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i]) for i, c in enumerate(r)))

def cpu_per_gb(name, path):
    rs = ok_runs(name, path)
    gb = sum(float(r["moved_bytes"]) for r in rs) / 1e9
    secs = sum(int(r["cpu_ticks"]) for r in rs) / clk_tck
    return secs / gb if gb > 0 else None

def fmt(v, digits=3):
    return f"{v:.{digits}f}" if v is not None else "-"

def throughput_rows(scenarios):
    rows = []
    for name, args in scenarios:
        bidir = " --bidir " in f" {args} "
        parts = [("sum", lambda r: float(r["fwd_bps"]) + float(r["rev_bps"])),
                 ("c->s", lambda r: float(r["fwd_bps"])),
                 ("s->c", lambda r: float(r["rev_bps"]))] if bidir else [("", lambda r: float(r["fwd_bps"]))]
        for label, get in parts:
            cells, meds = [], {}
            for p in cols:
                text, meds[p] = fmt_cell(p, [get(r) / 1e9 for r in ok_runs(name, p)], len(cell_runs(name, p)))
                cells.append(text)
            extra = []
            for p in proxies:
                extra.append(ratio(meds.get(p), meds.get("direct")))
                if "haproxy" in paths:
                    extra.append(ratio(meds.get(p), meds.get("haproxy")))
            if "haproxy" in paths:
                extra.append(ratio(meds.get("haproxy"), meds.get("direct")))
            rows.append([f"{args} {label}".strip()] + cells + extra)
    head = ["scenario"] + [f"{p} Gbit/s" for p in cols]
    for p in proxies:
        head.append(f"{p}/direct")
        if "haproxy" in paths:
            head.append(f"{p}/haproxy")
    if "haproxy" in paths:
        head.append("haproxy/direct")
    return head, rows

if tcp_scenarios:
    print()
    print("TCP, one test at a time: receiver-side Gbit/s, median per path")
    print_table(*throughput_rows(tcp_scenarios))

if cpu_on and (tcp_scenarios or conc_scenarios):
    print()
    print("CPU seconds of the forwarding process per GB moved (utime+stime of all threads,")
    print("all directions and -O intervals counted; lower is better):")
    head = ["scenario"] + [f"{p} s/GB" for p in forwarders] + \
        ([f"{p}/haproxy" for p in proxies] if "haproxy" in paths else [])
    rows = []
    for name, args in tcp_scenarios + conc_scenarios:
        vals = {p: cpu_per_gb(name, p) for p in forwarders}
        rows.append([args] + [fmt(vals[p]) for p in forwarders] +
                    ([ratio(vals[p], vals["haproxy"]) for p in proxies] if "haproxy" in paths else []))
    print_table(head, rows)
    print(f"(clock tick = 1/{clk_tck} s; short runs give coarse numbers)")

if conc_scenarios:
    print()
    print("Many tests at once: the sum of the receivers' Gbit/s, median per path")
    print_table(*throughput_rows(conc_scenarios))
    if cpu_on:
        print()
        print(f"The proxy's threads during those runs ({ncpu} CPUs): peak RSS, CPU of all its")
        print("threads and of the busiest one, as a share of one core over the run's wall time")
        print("(median over the rounds):")
        head = ["scenario", "path", "peak RSS MiB", "all threads % of a core", "busiest thread % of a core"]
        rows = []
        for name, args in conc_scenarios:
            for p in proxies:
                rs = ok_runs(name, p) or cell_runs(name, p)
                if not rs:
                    continue
                walls = [max(float(r["wall_s"]), 1e-9) for r in rs]
                rss = max(int(r["rss_kib"]) for r in rs) / 1024
                total = statistics.median(int(r["cpu_ticks"]) / clk_tck / w * 100 for r, w in zip(rs, walls))
                busiest = statistics.median(int(r["max_thread_ticks"]) / clk_tck / w * 100 for r, w in zip(rs, walls))
                rows.append([args, p, f"{rss:.1f}", f"{total:.0f}", f"{busiest:.0f}"])
        print_table(head, rows)

if udp_scenarios:
    # One row per direction: receiver Gbit/s and iperf3's lost_percent, each the
    # median over the runs that completed (the two medians may come from different
    # rounds).  HAProxy cannot relay UDP.
    def udp_cells(path, rs, bps_key, lost_key):  # -> gbit text, loss text, loss median
        if states.get(path, "ok") != "ok" and not rs:
            return states[path], "-", None
        if not rs:
            return "no runs", "-", None
        ok = [r for r in rs if r["status"] == "ok"]
        if not ok:
            return "failed", "-", None
        gbit = statistics.median(float(r[bps_key]) / 1e9 for r in ok)
        loss = statistics.median(float(r[lost_key]) for r in ok)
        bad = len(rs) - len(ok)
        return f"{gbit:.2f}" + (f" ({bad}/{len(rs)} fail)" if bad else ""), f"{loss:.2f}", loss

    udp_cols = [p for p in ["direct"] + proxies if p in paths]
    head = ["scenario"]
    for p in udp_cols:
        head += [f"{p} Gbit/s", f"{p} loss %"]
    for p in proxies:
        head.append(f"{p}-direct loss (pp)")
        if cpu_on:
            head.append(f"{p} CPU s/GB")
    rows = []
    for name, args in udp_scenarios:
        bidir = " --bidir " in f" {args} "
        parts = [("c->s", "fwd_bps", "fwd_lost_pct"), ("s->c", "rev_bps", "rev_lost_pct")] if bidir \
            else [("", "fwd_bps", "fwd_lost_pct")]
        for i, (label, bps_key, lost_key) in enumerate(parts):
            row, losses = [f"{args} {label}".strip()], {}
            for p in udp_cols:
                g, l, losses[p] = udp_cells(p, cell_runs(name, p), bps_key, lost_key)
                row += [g, l]
            for p in proxies:
                d, q = losses.get("direct"), losses.get(p)
                row.append(f"{q - d:+.2f}" if None not in (d, q) else "-")
                if cpu_on:
                    row.append(fmt(cpu_per_gb(name, p)) if i == 0 else "")
            rows.append(row)
    print()
    print("UDP (HAProxy relays no UDP): receiver-side Gbit/s and iperf3's lost_percent,")
    print("median per path; -O 0; CPU s/GB per GB the sender(s) sent, lost ones included:")
    print_table(head, rows)

print()
print("NOTE: absolute Gbit/s on a shared machine are noise (client, server and forwarder share")
print("the same few CPUs and the loopback); the claims are the ratios within one run.")

fails = [r for r in runs if r["status"] != "ok"]
if fails:
    print()
    print("failed runs:")
    for r in fails:
        print(f"  {r['scenario']} via {r['path']}, round {r['round']}: {r['note']}")
PYEOF
