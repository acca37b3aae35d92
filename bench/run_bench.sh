#!/usr/bin/env bash
# bench/run_bench.sh - throughput benchmark: iperf3 direct vs. iperf3-proxy vs. HAProxy.
#
# One run starts a single `iperf3 -s`, iperf3-proxy and HAProxy (TCP mode,
# kernel splicing) in front of it, each on its own free loopback port, then runs
# every scenario over every path for several interleaved rounds and prints the
# per-path medians and their ratios.  See bench/README.md.
#
# This is a benchmark, not a test: it exits 0 unless the setup itself fails.

set -u -o pipefail

# ---------------------------------------------------------------------------
# Scenarios: one line each, "name|iperf3 client arguments".  The name is what
# --scenarios filters on; the arguments are shown in the table.  Bidirectional
# scenarios are recognised from the --bidir argument, UDP ones from -u/--udp:
# those run over direct and proxy only (HAProxy cannot relay UDP), with -O 0,
# and are reported in a table of their own (receiver Gbit/s and loss %).
# ---------------------------------------------------------------------------
SCENARIOS=(
    "P1|-P 1"
    "bidir|--bidir"
    "udp|-u -b 1G -l 1400"
    "udp-R|-u -b 1G -l 1400 -R"
)

# ---------------------------------------------------------------------------
# Settings (environment first, flags override).
# ---------------------------------------------------------------------------
DURATION=${BENCH_TIME:-5}            # iperf3 -t
OMIT=${BENCH_OMIT:-1}                # iperf3 -O (seconds of slow start left out)
ROUNDS=${BENCH_ROUNDS:-3}            # repetitions of every (scenario, path)
PAUSE=${BENCH_PAUSE:-0.5}            # seconds between two client runs
CPU=${BENCH_CPU:-0}                  # 1: record proxy/haproxy CPU time
PATHS_SEL=${BENCH_PATHS:-direct,proxy,haproxy}
SCEN_SEL=${BENCH_SCENARIOS:-}
KEEP=${BENCH_KEEP:-0}                # 1: keep the temp dir (logs, JSON, raw.tsv)
INSTALL_DEPS=0
PROXY_BIN=${IPERF3_PROXY_BIN:-}
PROXY_LOG_LEVEL=${PROXY_LOG_LEVEL:-info}
PROXY_EXTRA_ARGS=${PROXY_EXTRA_ARGS:-}
HAPROXY_BIN=${HAPROXY_BIN:-haproxy}
HAPROXY_SPLICE=${HAPROXY_SPLICE:-force}   # force | auto | off
HAPROXY_NBTHREAD=${HAPROXY_NBTHREAD:-}    # empty: HAProxy's default (one per CPU)
CLIENT_MARGIN=${BENCH_CLIENT_MARGIN:-20}  # seconds past -t+-O before a client counts as hung

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
[[ -n $PROXY_BIN ]] || PROXY_BIN=$REPO_DIR/build/ci/src/iperf3-proxy

usage() {
    cat <<EOF
usage: bench/run_bench.sh [options]

  -t, --time SECS        iperf3 -t per run (env BENCH_TIME, default 5)
  -O, --omit SECS        iperf3 -O, slow start left out (env BENCH_OMIT, default 1;
                         UDP scenarios always run with -O 0)
  -r, --rounds N         rounds; each round runs every scenario over every path
                         (env BENCH_ROUNDS, default 3); the median is reported
      --cpu              record CPU seconds of iperf3-proxy and haproxy per GB
                         moved, from /proc/PID/stat (env BENCH_CPU=1)
      --paths LIST       comma list of direct,proxy,haproxy (env BENCH_PATHS)
      --scenarios LIST   comma list of scenario names (env BENCH_SCENARIOS);
                         known: $(for s in "${SCENARIOS[@]}"; do printf '%s ' "${s%%|*}"; done)
      --keep             keep the temp dir with logs, client JSON and raw.tsv
      --install-deps     apt-get install haproxy/jq/iperf3 if missing
  -h, --help             this text

environment: IPERF3_PROXY_BIN (default build/ci/src/iperf3-proxy),
  PROXY_LOG_LEVEL (info), PROXY_EXTRA_ARGS, HAPROXY_BIN, HAPROXY_SPLICE
  (force = splice-auto + splice-request + splice-response; auto; off),
  HAPROXY_NBTHREAD, BENCH_PAUSE (0.5), BENCH_CLIENT_MARGIN (20)
EOF
}

while (($#)); do
    case $1 in
        -t|--time) DURATION=$2; shift 2 ;;
        -O|--omit) OMIT=$2; shift 2 ;;
        -r|--rounds) ROUNDS=$2; shift 2 ;;
        --cpu) CPU=1; shift ;;
        --paths) PATHS_SEL=$2; shift 2 ;;
        --scenarios) SCEN_SEL=$2; shift 2 ;;
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

# Selected paths and scenarios.
PATHS=()
IFS=, read -ra _sel <<<"$PATHS_SEL"
for p in "${_sel[@]}"; do
    case $p in direct|proxy|haproxy) PATHS+=("$p") ;; *) die "unknown path '$p'" ;; esac
done
((${#PATHS[@]})) || die "no path selected"
RUN_SCENARIOS=()
for s in "${SCENARIOS[@]}"; do
    if [[ -z $SCEN_SEL || ,$SCEN_SEL, == *,"${s%%|*}",* ]]; then RUN_SCENARIOS+=("$s"); fi
done
((${#RUN_SCENARIOS[@]})) || die "no scenario matches '$SCEN_SEL'"

# ---------------------------------------------------------------------------
# Process bookkeeping and cleanup (runs on normal exit, error and Ctrl-C).
# ---------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/iperf3-proxy-bench.XXXXXX")
SERVER_PID="" PROXY_PID="" HAPROXY_PID="" CLIENT_PID=""

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
    stop_pid "$CLIENT_PID"
    stop_pid "$HAPROXY_PID"
    stop_pid "$PROXY_PID"
    stop_pid "$SERVER_PID"
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
# The three daemons.
# ---------------------------------------------------------------------------
free_port SERVER_PORT
free_port PROXY_PORT
free_port HAPROXY_PORT

start_server() {
    iperf3 -s -B 127.0.0.1 -p "$SERVER_PORT" >>"$TMP/iperf3-server.log" 2>&1 &
    SERVER_PID=$!
    wait_listen "$SERVER_PORT" "$SERVER_PID" 10 || { tail -n 20 "$TMP/iperf3-server.log" >&2; die "iperf3 -s did not start"; }
}

restart_server() {  # after a failed/hung run the server may still be inside that test
    stop_pid "$SERVER_PID"
    SERVER_PID=""
    start_server
}

PROXY_STATE=ok      # ok | "not built" | "start failed"
start_proxy() {
    if [[ ! -x $PROXY_BIN ]]; then
        PROXY_STATE="not built"
        log "proxy: not built ($PROXY_BIN)"
        return
    fi
    # shellcheck disable=SC2086  # PROXY_EXTRA_ARGS is meant to split
    "$PROXY_BIN" -p "$PROXY_PORT" --backend "127.0.0.1:$SERVER_PORT" --log-level "$PROXY_LOG_LEVEL" \
        $PROXY_EXTRA_ARGS >"$TMP/proxy.log" 2>&1 &
    PROXY_PID=$!
    if ! wait_listen "$PROXY_PORT" "$PROXY_PID" 10; then
        PROXY_STATE="start failed"
        log "proxy: start failed; its last output:"
        tail -n 20 "$TMP/proxy.log" >&2
        stop_pid "$PROXY_PID"
        PROXY_PID=""
        return
    fi
    local i
    for ((i = 0; i < 40; i++)); do   # it announces "ready" once listening
        grep -q ready "$TMP/proxy.log" && return
        sleep 0.05
    done
    log "proxy: listening on $PROXY_PORT but no 'ready' line on stderr yet; going on"
}

HAPROXY_STATE=ok
start_haproxy() {
    local splice
    case $HAPROXY_SPLICE in
        force) splice=$'    option splice-auto\n    option splice-request\n    option splice-response' ;;
        auto) splice='    option splice-auto' ;;
        off) splice='    # splicing off' ;;
        *) die "HAPROXY_SPLICE must be force, auto or off" ;;
    esac
    # The control connection of iperf3 idles for the whole test: long timeouts.
    cat >"$TMP/haproxy.cfg" <<EOF
global
    maxconn 1000
${HAPROXY_NBTHREAD:+    nbthread $HAPROXY_NBTHREAD}

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
$splice

listen iperf3
    bind 127.0.0.1:$HAPROXY_PORT
    server iperf3 127.0.0.1:$SERVER_PORT
EOF
    if ! "$HAPROXY_BIN" -c -q -f "$TMP/haproxy.cfg" >"$TMP/haproxy-check.log" 2>&1; then
        HAPROXY_STATE="start failed"
        log "haproxy: config check failed:"
        cat "$TMP/haproxy-check.log" >&2
        return
    fi
    "$HAPROXY_BIN" -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    if ! wait_listen "$HAPROXY_PORT" "$HAPROXY_PID" 10; then
        HAPROXY_STATE="start failed"
        log "haproxy: start failed; its last output:"
        tail -n 20 "$TMP/haproxy.log" >&2
        stop_pid "$HAPROXY_PID"
        HAPROXY_PID=""
    fi
}

# ---------------------------------------------------------------------------
# One client run.
# ---------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

cpu_ticks() {  # utime+stime of all threads of PID, in clock ticks
    local stat rest f
    stat=$(<"/proc/$1/stat") 2>/dev/null || { echo 0; return; }
    rest=${stat##*) }            # fields from 3 (state) on; comm may hold spaces
    read -ra f <<<"$rest"
    echo $((f[11] + f[12]))      # fields 14 and 15
}

path_port() { case $1 in direct) echo "$SERVER_PORT" ;; proxy) echo "$PROXY_PORT" ;; haproxy) echo "$HAPROXY_PORT" ;; esac; }
path_pid() { case $1 in proxy) echo "$PROXY_PID" ;; haproxy) echo "$HAPROXY_PID" ;; *) echo "" ;; esac; }
path_state() { case $1 in proxy) echo "$PROXY_STATE" ;; haproxy) echo "$HAPROXY_STATE" ;; *) echo ok ;; esac; }

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
printf 'scenario\tpath\tround\tstatus\tfwd_bps\trev_bps\tmoved_bytes\tcpu_ticks\tnote\tfwd_lost_pct\trev_lost_pct\n' >"$RAW"

is_udp() { [[ " $1 " == *" -u "* || " $1 " == *" --udp "* ]]; }  # is_udp "ARGS"

run_one() {  # run_one ROUND SCENARIO_LINE PATH
    local round=$1 name=${2%%|*} args=${2#*|} path=$3
    local port pid json rc t0=0 t1=0 attempt parsed err fwd fwd_b rev rev_b moved status note bidir=0
    local udp=0 omit=$OMIT lost_f=-1 lost_r=-1 sent=0
    [[ " $args " == *" --bidir "* ]] && bidir=1
    # UDP has no slow start to leave out, and iperf3 3.12 miscounts UDP loss with
    # --omit (lost_percent can exceed 100 %: esnet/iperf#1489), so UDP runs use -O 0.
    is_udp "$args" && udp=1 omit=0
    port=$(path_port "$path")
    pid=$(path_pid "$path")
    json=$TMP/$name.$path.r$round.json
    for attempt in 1 2; do
        [[ $CPU == 1 && -n $pid ]] && t0=$(cpu_ticks "$pid")
        # shellcheck disable=SC2086  # args is a word list
        timeout -k 2 $((DURATION + omit + CLIENT_MARGIN)) \
            iperf3 -c 127.0.0.1 -p "$port" -t "$DURATION" -O "$omit" -J $args >"$json" 2>"$json.err" &
        CLIENT_PID=$!
        wait "$CLIENT_PID"
        rc=$?
        CLIENT_PID=""
        [[ $CPU == 1 && -n $pid ]] && t1=$(cpu_ticks "$pid")
        parsed=$(parse_json "$json")
        err="" fwd=0 fwd_b=0 rev=-1 rev_b=-1 moved=0 lost_f=-1 lost_r=-1 sent=0
        [[ -n $parsed ]] && IFS=$'\t' read -r err fwd fwd_b rev rev_b moved lost_f lost_r sent <<<"$parsed"
        [[ $err == - ]] && err=""
        # A busy server (left over from a previous run) is not the path's fault: retry once.
        if [[ $rc != 0 && $err == *busy* && $attempt == 1 ]]; then
            log "server busy; restarting it and retrying"
            restart_server
            sleep "$PAUSE"
            continue
        fi
        break
    done
    # UDP: a forwarder handles the datagrams lost after it at the receiver too (where
    # most loopback loss happens), so "moved" is what the sender(s) sent.
    ((udp)) && moved=$sent
    status=ok note=-
    if [[ $rc == 124 || $rc == 137 ]]; then
        status=fail note="client hung, killed after $((DURATION + omit + CLIENT_MARGIN))s"
    elif [[ $rc != 0 || -z $parsed || -n $err ]]; then
        status=fail note="client rc=$rc${err:+: $err}"
    elif ((bidir)) && [[ $fwd_b == 0 || $rev_b == 0 ]]; then
        status=zero note="zero-byte direction (c->s $fwd_b B, s->c $rev_b B)"
    elif [[ $fwd_b == 0 ]]; then
        status=zero note="zero bytes"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$path" "$round" "$status" \
        "$fwd" "$rev" "$moved" $((t1 - t0)) "$note" "$lost_f" "$lost_r" >>"$RAW"
    if [[ $status == ok ]]; then
        if ((udp && bidir)); then
            log "$(awk -v a="$fwd" -v b="$rev" -v la="$lost_f" -v lb="$lost_r" -v s="$name" -v p="$path" -v r="$round" \
                'BEGIN { printf "round %s %-6s %-8s c->s %.2f Gbit/s, loss %.1f %%; s->c %.2f Gbit/s, loss %.1f %%", r, s, p, a/1e9, la, b/1e9, lb }')"
        elif ((udp)); then
            log "$(awk -v a="$fwd" -v la="$lost_f" -v s="$name" -v p="$path" -v r="$round" \
                'BEGIN { printf "round %s %-6s %-8s %7.2f Gbit/s received, loss %.1f %%", r, s, p, a/1e9, la }')"
        elif ((bidir)); then
            log "$(awk -v a="$fwd" -v b="$rev" -v s="$name" -v p="$path" -v r="$round" \
                'BEGIN { printf "round %s %-6s %-8s %7.2f Gbit/s (c->s %.2f, s->c %.2f)", r, s, p, (a+b)/1e9, a/1e9, b/1e9 }')"
        else
            log "$(awk -v a="$fwd" -v s="$name" -v p="$path" -v r="$round" \
                'BEGIN { printf "round %s %-6s %-8s %7.2f Gbit/s", r, s, p, a/1e9 }')"
        fi
    else
        log "round $round $name $path: $( ((bidir && !udp)) && echo DEADLOCK || echo FAILED ) ($note)"
        # The server may still sit in the broken test; give the next run a clean one.
        restart_server
    fi
    sleep "$PAUSE"
}

# ---------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------
start_server
[[ " ${PATHS[*]} " == *" proxy "* ]] && start_proxy
[[ " ${PATHS[*]} " == *" haproxy "* ]] && start_haproxy

log "ports: iperf3 -s $SERVER_PORT, iperf3-proxy $PROXY_PORT, haproxy $HAPROXY_PORT; tmp $TMP"
log "$ROUNDS round(s) x ${#RUN_SCENARIOS[@]} scenario(s) x ${#PATHS[@]} path(s), -t $DURATION -O $OMIT"

for ((round = 1; round <= ROUNDS; round++)); do
    for scen in "${RUN_SCENARIOS[@]}"; do
        # Rotate the path order every round so slow drift spreads over all paths.
        n=${#PATHS[@]}
        for ((k = 0; k < n; k++)); do
            path=${PATHS[(k + round - 1) % n]}
            [[ $(path_state "$path") == ok ]] || continue
            [[ $path == haproxy ]] && is_udp "${scen#*|}" && continue   # HAProxy relays no UDP
            if [[ $path != direct ]] && ! kill -0 "$(path_pid "$path")" 2>/dev/null; then
                log "$path died; its last output:"
                tail -n 20 "$TMP/$path.log" >&2
                if [[ $path == proxy ]]; then PROXY_STATE="died"; else HAPROXY_STATE="died"; fi
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

echo
echo "iperf3-proxy benchmark: $(iperf3 --version 2>/dev/null | head -n 1)"
[[ $HAPROXY_STATE != ok || " ${PATHS[*]} " != *" haproxy "* ]] ||
    echo "haproxy: $("$HAPROXY_BIN" -v 2>/dev/null | head -n 1 | cut -d' ' -f1-3), splice=$HAPROXY_SPLICE, nbthread=${HAPROXY_NBTHREAD:-default}"
[[ " ${PATHS[*]} " != *" proxy "* ]] || echo "proxy: $PROXY_BIN ($PROXY_STATE)"
UDP_NOTE=""
for s in "${RUN_SCENARIOS[@]}"; do is_udp "${s#*|}" && UDP_NOTE=" (UDP: -O 0)"; done
echo "host: $(uname -sr), $(nproc) CPU(s); -t $DURATION -O $OMIT$UDP_NOTE, $ROUNDS round(s), median per path"

"$PY" - "$RAW" "$CLK_TCK" "$CPU" "${PATHS[*]}" "$SCEN_ARG" \
    "direct=ok" "proxy=$PROXY_STATE" "haproxy=$HAPROXY_STATE" <<'PYEOF'
import csv, statistics, sys

raw, clk_tck, cpu_on, paths, scen_arg = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4].split(), sys.argv[5]
states = dict(a.split("=", 1) for a in sys.argv[6:])
all_scenarios = [l.split("|", 1) for l in scen_arg.splitlines() if l]
is_udp = lambda args: bool({"-u", "--udp"} & set(args.split()))
scenarios = [s for s in all_scenarios if not is_udp(s[1])]        # TCP
udp_scenarios = [s for s in all_scenarios if is_udp(s[1])]
cols = ["direct", "proxy", "haproxy"]

runs = list(csv.DictReader(open(raw), delimiter="\t"))

def cell_runs(name, path):
    return [r for r in runs if r["scenario"] == name and r["path"] == path]

def fmt_cell(path, values, bad, total, bidir):
    if path not in paths:
        return "-", None
    if states.get(path, "ok") != "ok" and total == 0:
        return states[path], None
    if total == 0:
        return "no runs", None
    if not values:
        return ("deadlock" if bidir else "failed"), None
    med = statistics.median(values)
    text = f"{med:.2f}"
    if bad:
        text += f" ({bad}/{total} {'dl' if bidir else 'fail'})"
    return text, med

def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"

rows = []
for name, args in scenarios:
    bidir = " --bidir " in f" {args} "
    parts = [("sum", lambda r: float(r["fwd_bps"]) + float(r["rev_bps"])),
             ("c->s", lambda r: float(r["fwd_bps"])),
             ("s->c", lambda r: float(r["rev_bps"]))] if bidir else [("", lambda r: float(r["fwd_bps"]))]
    for label, get in parts:
        cells, meds = [], {}
        for p in cols:
            rs = cell_runs(name, p)
            ok = [get(r) / 1e9 for r in rs if r["status"] == "ok"]
            text, med = fmt_cell(p, ok, len(rs) - len(ok), len(rs), bidir)
            cells.append(text)
            meds[p] = med
        rows.append([f"{args} {label}".strip()] + cells +
                    [ratio(meds["proxy"], meds["direct"]), ratio(meds["proxy"], meds["haproxy"]),
                     ratio(meds["haproxy"], meds["direct"])])

def print_table(head, rows):
    w = [max(len(str(x[i])) for x in rows + [head]) for i in range(len(head))]
    print("  ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(head)))
    for r in rows:
        print("  ".join(str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i]) for i, c in enumerate(r)))

if scenarios:
    head = ["scenario", "direct Gbit/s", "proxy Gbit/s", "haproxy Gbit/s", "proxy/direct", "proxy/haproxy", "haproxy/direct"]
    print()
    print_table(head, rows)
    print()
    print("NOTE: absolute Gbit/s on this machine are noise (shared loopback, client, server and")
    print("proxy on the same few CPUs); the claim is the ratios. Throughput is receiver-side;")
    print("'(k/n dl)' = k of n runs deadlocked (zero-byte direction or hung/failed client);")
    print("medians are over the runs that completed.")

if cpu_on and scenarios:
    print()
    print("CPU time of the forwarding process per GB moved (utime+stime from /proc/PID/stat,")
    print("all directions and -O intervals counted; lower is better):")
    chead = ["scenario", "proxy CPU s/GB", "haproxy CPU s/GB", "proxy/haproxy"]
    crows = []
    for name, args in scenarios:
        vals = {}
        for p in ("proxy", "haproxy"):
            rs = [r for r in cell_runs(name, p) if r["status"] == "ok"]
            gb = sum(float(r["moved_bytes"]) for r in rs) / 1e9
            secs = sum(int(r["cpu_ticks"]) for r in rs) / clk_tck
            vals[p] = secs / gb if gb > 0 else None
        crows.append([args] + [f"{vals[p]:.3f}" if vals[p] is not None else "-" for p in ("proxy", "haproxy")]
                     + [ratio(vals["proxy"], vals["haproxy"])])
    print_table(chead, crows)
    print(f"(clock tick = 1/{clk_tck} s; short runs give coarse numbers: use -t 10 or more)")

if udp_scenarios:
    # One row per direction: receiver Gbit/s and iperf3's lost_percent, each the
    # median over the runs that completed (the two medians may come from different
    # rounds).  HAProxy cannot relay UDP, so its column holds no numbers.
    def udp_cells(path, rs, bps_key, lost_key):  # -> gbit text, loss text, gbit median, loss median
        if path not in paths:
            return "-", "-", None, None
        if states.get(path, "ok") != "ok" and not rs:
            return states[path], "-", None, None
        if not rs:
            return "no runs", "-", None, None
        ok = [r for r in rs if r["status"] == "ok"]
        if not ok:
            return "failed", "-", None, None
        gbit = statistics.median(float(r[bps_key]) / 1e9 for r in ok)
        loss = statistics.median(float(r[lost_key]) for r in ok)
        bad = len(rs) - len(ok)
        return f"{gbit:.2f}" + (f" ({bad}/{len(rs)} fail)" if bad else ""), f"{loss:.2f}", gbit, loss

    def proxy_cpu(name):
        # CPU of the proxy per GB the sender(s) sent (moved_bytes of UDP runs): the
        # proxy relays them all unless its own socket overflows.
        ok = [r for r in cell_runs(name, "proxy") if r["status"] == "ok"]
        gb = sum(float(r["moved_bytes"]) for r in ok) / 1e9
        secs = sum(int(r["cpu_ticks"]) for r in ok) / clk_tck
        return f"{secs / gb:.3f}" if gb > 0 else "-"

    uhead = ["scenario", "direct Gbit/s", "direct loss %", "proxy Gbit/s", "proxy loss %", "haproxy",
             "proxy/direct", "loss proxy-direct (pp)"] + (["proxy CPU s/GB"] if cpu_on else [])
    urows = []
    for name, args in udp_scenarios:
        bidir = " --bidir " in f" {args} "
        parts = [("c->s", "fwd_bps", "fwd_lost_pct"), ("s->c", "rev_bps", "rev_lost_pct")] if bidir \
            else [("", "fwd_bps", "fwd_lost_pct")]
        for i, (label, bps_key, lost_key) in enumerate(parts):
            dt, dl, dg, dlv = udp_cells("direct", cell_runs(name, "direct"), bps_key, lost_key)
            pt, pl, pg, plv = udp_cells("proxy", cell_runs(name, "proxy"), bps_key, lost_key)
            diff = f"{plv - dlv:+.2f}" if None not in (plv, dlv) else "-"
            row = [f"{args} {label}".strip(), dt, dl, pt, pl, "n/a (no UDP)", ratio(pg, dg), diff]
            if cpu_on:  # a --bidir scenario's CPU covers both directions: shown on its first row
                row.append(proxy_cpu(name) if i == 0 else "")
            urows.append(row)
    print()
    print("UDP (HAProxy relays no UDP); receiver-side Gbit/s and iperf3's lost_percent,")
    print("median per path over the runs that completed; UDP runs use -O 0:")
    print_table(uhead, urows)
    print()
    print("NOTE: -b is only the sender's target. Client, server and proxy share the same few CPUs,")
    print("so loss through the proxy reflects that contention as much as the proxy itself.")
    if cpu_on:
        print("UDP CPU s/GB counts the GB the sender sent, lost ones included (--bidir: both directions).")

fails = [r for r in runs if r["status"] != "ok"]
if fails:
    print()
    print("failed runs:")
    for r in fails:
        print(f"  {r['scenario']} via {r['path']}, round {r['round']}: {r['note']}")
PYEOF
