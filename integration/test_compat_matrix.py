#!/usr/bin/python3
"""Compatibility matrix: every iperf3 mode run directly and through the proxy, results compared.

    IPERF3_PROXY_BIN=build/ci/src/iperf3-proxy \
        /usr/bin/python3 -m pytest integration/test_compat_matrix.py
    /usr/bin/python3 integration/render_matrix.py      # the outcome file -> README table

Users must not be able to tell from an iperf3 result that the proxy is there (except that --bidir
always works). Each row runs one mode twice with the real iperf3 client and server: directly, then
through the proxy (same kind of server), and compares the two results:

  * each run on its own: exit 0, no hang, JSON without "error", the expected number of streams,
    every stream moved data, a receiver never counted more than its sender; a UDP stream's
    receiving end got datagrams, each stream on its own (harness.udp_json_problems; with
    several client-to-server streams the row asks for the server's output to see it);
  * through the proxy, a TCP stream on which the client sends counts exactly the same bytes at
    both ends (the proxy holds TEST_END until the data has reached the server);
  * the same JSON shape (every key path, lists merged), the same test parameters as reported
    (start.test_start, buffer sizes, MSS, title, extra data, congestion control, the server's
    view of the test with --get-server-output), the same streams in the same order with the same
    `sender` flags, the same number of intervals (+-1) and omitted intervals;
  * TCP throughput through the proxy at least MIN_TCP_RATIO of direct (time-based tests; a noisy
    2-core machine); UDP loss at most LOSS_PP percentage points above direct and no reordering
    that direct did not have when the rate is <= 100 Mbit/s, else received rate >= MIN_UDP_RATIO
    (MIN_UDP_UNLIMITED_RATIO with -b 0);
  * row-specific facts (bytes of -n/-k/-F, --cport source ports, one-off server exit, ...);
  * the proxy logged one "test ended ... reason=completed" and no warning, and the client did
    not take more than MAX_EXTRA_SECONDS longer than directly.
A row that fails only on a rate, a loss or a run time (Noisy: other load on a 2-core machine can
cause those alone) runs once more and the second pair decides; the note says so.

Rows that must fail do so identically (wrong password) or at least both (a server that aborts
the test reports one of several errors, directly too); rows the environment cannot run are
recorded as n/a (an option this iperf3 lacks, SCTP without kernel support); SCTP through the
proxy is refused with a server error, which the row checks.

Every row's outcome goes to a JSON file (IPERF3_MATRIX_OUT, default: next to the proxy binary's
build directory, see render_matrix.default_json_path); integration/render_matrix.py turns it into
the README's table. A row that passes directly but not through the proxy is a proxy bug; while
it is open it stays in KNOWN_PROXY_BUGS (strict xfail, so a fix is noticed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import re
import subprocess
import time
from typing import Callable, Optional

import pytest

import harness
import render_matrix

MIN_TCP_RATIO = 0.20     # TCP throughput through the proxy, as a fraction of direct
MIN_UDP_RATIO = 0.20     # UDP received rate above 100 Mbit/s, as a fraction of direct
# -u -b 0: sender, proxy and receiver all want a whole core of the two; seen 0.24x..1.04x.
MIN_UDP_UNLIMITED_RATIO = 0.10
LOSS_PP = 5.0            # UDP loss through the proxy may exceed direct by this many points
UDP_LOSS_RATE_LIMIT = 100_000_000
CLIENT_TIMEOUT_S = 25.0
FILE_SIZE = 8 << 20      # -F: the file the client sends
AUTH_USER, AUTH_PASSWORD = "matrix", "s3cret-pass"


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------

# A per-run check: (result, via, ctx) -> problems. `via` is "direct" or "proxied".
RunCheck = Callable[[harness.ClientResult, str, "RowContext"], list[str]]


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    mode: str                           # label in the README
    args: tuple[str, ...]               # client args; {cport} {pubkey} {file} are filled in
    setup: str = "shared"               # shared | own | one-off | ipv6-backend
    server_args: tuple[str, ...] = ()   # for setup "own" / "one-off"
    host: str = "127.0.0.1"             # the client connects here (directly and to the proxy)
    json: bool = True                   # False: plain text output, no -J
    env: tuple[tuple[str, str], ...] = ()
    expect: str = "pass"                # pass | same-error | error | sctp
    needs_option: Optional[str] = None  # client option that this iperf3 may not have
    checks: tuple[RunCheck, ...] = ()
    note: str = ""                      # fixed text for the README's note column


def _total(doc: dict, side: str, client_sends: Optional[bool] = True) -> int:
    total = 0
    for s in (doc.get("end") or {}).get("streams", []):
        entry = s.get(side) or {}
        if client_sends is None or bool(entry.get("sender", True)) == client_sends:
            total += int(entry.get("bytes", 0))
    return total


def sent_bytes_are(expected: int) -> RunCheck:
    def check(r, via, ctx):
        got = _total(r.json or {}, "sender")
        return [] if got == expected else [f"client sent {got} bytes, expected exactly {expected}"]
    return check


def sent_blocks_are(blocks: int) -> RunCheck:
    def check(r, via, ctx):
        blksize = r.json["start"]["test_start"]["blksize"]
        got = _total(r.json, "sender")
        return ([] if got == blocks * blksize else
                [f"client sent {got} bytes, expected {blocks} blocks of {blksize}"])
    return check


def file_is_sent(r, via, ctx):
    problems = sent_bytes_are(FILE_SIZE)(r, via, ctx)
    received = _total(r.json, "receiver")
    if via == "proxied" and received != FILE_SIZE:
        problems.append(f"server received {received} of the {FILE_SIZE}-byte file")
    return problems


def cport_used(r, via, ctx):  # ctx.cport: the port this run was given
    ports = sorted(c.get("local_port") for c in r.json["start"].get("connected", []))
    want = list(range(ctx.cport, ctx.cport + len(ports)))
    return [] if ports and ports == want else [f"--cport {ctx.cport}: data streams used {ports}"]


def server_sees_cport(r, via, ctx):
    """With --get-server-output from a -J server: the server's view of the data connections."""
    conns = (r.json.get("server_output_json") or {}).get("start", {}).get("connected", [])
    ports = sorted(c.get("remote_port") for c in conns)
    want = list(range(ctx.cport, ctx.cport + len(ports)))
    return ([] if ports and ports == want else
            [f"--cport {ctx.cport}: the server saw the data connections come from ports {ports}"])


def server_sees_ipv6_client(r, via, ctx):
    """With --get-server-output from a -J server: the client address the server reports."""
    start = (r.json.get("server_output_json") or {}).get("start", {})
    hosts = [start.get("accepted_connection", {}).get("host", "")]
    hosts += [c.get("remote_host", "") for c in start.get("connected", [])]
    return ([] if all(h == "::1" for h in hosts) else
            [f"client connected from ::1, the server reports it as {sorted(set(hosts))}"])


# Anchored at the end only: a server with --timestamps starts every line with the time.
_CONNECTED_LINE = re.compile(r"\[\s*\d+\] local (\S+) port (\d+) connected to (\S+) port (\d+)$")


def server_report_names_client(r, via, ctx):
    """With --get-server-output: every data connection in the server's report is one of the
    client's, seen from the other end (the server's remote is the client's local and the other
    way round), and the control connection came from the client's host. Directly this holds by
    construction; through the proxy only if the proxy translated the report."""
    client = sorted((c.get("local_host"), c.get("local_port"), c.get("remote_host"),
                     c.get("remote_port")) for c in r.json["start"].get("connected", []))
    report = r.json.get("server_output_json")
    if isinstance(report, dict):
        start = report.get("start", {})
        server = sorted((c.get("remote_host"), c.get("remote_port"), c.get("local_host"),
                         c.get("local_port")) for c in start.get("connected", []))
        accepted = [start.get("accepted_connection", {}).get("host")]
    else:
        text = r.json.get("server_output_text") or ""
        server = sorted((m[3], int(m[4]), m[1], int(m[2]))
                        for m in (_CONNECTED_LINE.search(line) for line in text.splitlines()) if m)
        accepted = re.findall(r"Accepted connection from (\S+), port \d+$", text, re.M)
    problems = []
    if not server or server != client:
        problems.append(f"the server's report names connections {server}, the client made {client}")
    client_hosts = {c[0] for c in client}
    if len(accepted) != 1 or accepted[0] not in client_hosts:
        problems.append(f"the server's report accepted the test from {accepted}, "
                        f"the client is {sorted(client_hosts)}")
    return problems


def value_is(path: tuple[str, ...], want) -> RunCheck:
    def check(r, via, ctx):
        got = _get(r.json, path)
        return [] if got == want else [f"{'.'.join(path)} is {got!r}, expected {want!r}"]
    return check


def some_interval_omitted(r, via, ctx):
    flags = [iv.get("sum", {}).get("omitted") for iv in r.json.get("intervals", [])]
    return [] if any(flags) else [f"-O 1: no interval marked omitted ({flags})"]


def server_output_json(r, via, ctx):
    """A server started with -J sends its results as JSON: server_output_json."""
    so = r.json.get("server_output_json")
    if not isinstance(so, dict) or not so.get("end", {}).get("streams"):
        return [f"server_output_json missing or without streams: {str(so)[:200]}"]
    return []


def server_output_text_in_json(r, via, ctx):
    """A server without -J sends its text output: server_output_text in the client's JSON."""
    so = r.json.get("server_output_text")
    if not isinstance(so, str) or "bits/sec" not in so:
        return [f"server_output_text missing or without results: {str(so)[:200]!r}"]
    return []


def server_output_text(r, via, ctx):
    return [] if "Server output:" in r.stdout else ["no 'Server output:' section in the text"]


def connected_over_ipv6(r, via, ctx):
    hosts = [c.get("local_host", "") for c in r.json["start"].get("connected", [])]
    return [] if hosts and all(":" in h for h in hosts) else [f"streams not over IPv6: {hosts}"]


def tcp_congestion_is(algo: str) -> RunCheck:
    return value_is(("end", "sender_tcp_congestion"), algo)


AUTH_ARGS = ("--username", AUTH_USER, "--rsa-public-key-path", "{pubkey}")

ROWS: list[Row] = [
    Row("tcp", "TCP", ("-t", "1")),
    Row("tcp-reverse", "TCP reverse", ("-R", "-t", "1")),
    Row("tcp-bidir", "TCP bidir", ("--bidir", "-t", "1")),
    Row("tcp-p4", "TCP 4 streams", ("-P", "4", "-t", "1")),
    Row("tcp-bidir-p2", "TCP bidir, 2 streams each way", ("--bidir", "-P", "2", "-t", "1")),
    Row("udp", "UDP", ("-u", "-t", "1")),
    Row("udp-reverse", "UDP reverse", ("-u", "-R", "-t", "1")),
    Row("udp-bidir", "UDP bidir", ("-u", "--bidir", "-t", "1")),
    # The server's output shows what it received on each stream (harness.UDP_RECEIPT_ARGS).
    Row("udp-p4", "UDP 4 streams", ("-u", "-P", "4", *harness.UDP_RECEIPT_ARGS, "-t", "1")),
    Row("udp-1g", "UDP 1 Gbit/s", ("-u", "-b", "1G", "-t", "1")),
    Row("udp-unlimited", "UDP unlimited rate", ("-u", "-b", "0", "-t", "1")),
    Row("udp-dont-fragment", "UDP don't fragment", ("-u", "--dont-fragment", "-t", "1")),
    Row("udp-64bit", "UDP 64-bit counters", ("-u", "--udp-counters-64bit", "-t", "1")),
    Row("udp-len16", "UDP 16-byte datagrams", ("-u", "-l", "16", "-t", "1")),
    Row("udp-len65000", "UDP 65000-byte datagrams", ("-u", "-l", "65000", "-t", "1")),
    Row("tcp-len64k", "TCP 64 KiB blocks", ("-l", "64K", "-t", "1")),
    Row("text", "plain-text output", ("-t", "1"), json=False),
    Row("server-output", "server output", ("--get-server-output", "-t", "1"),
        checks=(server_output_text_in_json, server_report_names_client)),
    Row("server-output-json", "server output, server -J", ("--get-server-output", "-t", "1"),
        setup="own", server_args=("-J",),
        checks=(server_output_json, server_report_names_client)),
    Row("server-output-bidir", "server output, bidir, 2 streams each way",
        ("--get-server-output", "--bidir", "-P", "2", "-t", "1"),
        checks=(server_output_text_in_json, server_report_names_client)),
    Row("server-output-timestamps", "server output, server --timestamps",
        ("--get-server-output", "-P", "2", "-t", "1"), setup="own", server_args=("--timestamps",),
        checks=(server_output_text_in_json, server_report_names_client)),
    Row("server-output-udp", "server output, UDP, server -J",
        ("-u", "--get-server-output", "-P", "2", "-t", "1"), setup="own", server_args=("-J",),
        checks=(server_output_json, server_report_names_client)),
    Row("server-output-text", "server output (text)", ("--get-server-output", "-t", "1"),
        json=False, checks=(server_output_text,)),
    Row("auth", "authentication", (*AUTH_ARGS, "-t", "1"), setup="own",
        server_args=("--rsa-private-key-path", "{privkey}", "--authorized-users-path", "{users}"),
        env=(("IPERF3_PASSWORD", AUTH_PASSWORD),)),
    Row("auth-denied", "authentication, wrong password", (*AUTH_ARGS, "-t", "1"), setup="own",
        server_args=("--rsa-private-key-path", "{privkey}", "--authorized-users-path", "{users}"),
        env=(("IPERF3_PASSWORD", "wrong"),), expect="same-error"),
    Row("omit", "omit first second", ("-O", "1", "-t", "1"), checks=(some_interval_omitted,)),
    Row("bytes", "byte count", ("-n", "20M"), checks=(sent_bytes_are(20 << 20),)),
    Row("blocks", "block count", ("-k", "100"), checks=(sent_blocks_are(100),)),
    Row("file", "send a file", ("-F", "{file}"), checks=(file_is_sent,),
        note=f"{FILE_SIZE >> 20} MiB file"),
    Row("zerocopy", "zero copy", ("-Z", "-t", "1")),
    Row("cntl-ka", "control keepalive", ("--cntl-ka", "-t", "1"), needs_option="--cntl-ka"),
    Row("nodelay", "no delay", ("-N", "-t", "1")),
    Row("mss", "MSS", ("-M", "1400", "-t", "1")),
    Row("window", "window", ("-w", "256K", "-t", "1")),
    Row("cport", "client port", ("--cport", "{cport}", "-t", "1"), checks=(cport_used,)),
    Row("cport-p2", "client port, 2 streams", ("--cport", "{cport}", "-P", "2", "-t", "1"),
        checks=(cport_used,)),
    Row("cport-bidir", "client port, bidir", ("--cport", "{cport}", "--bidir", "-t", "1"),
        checks=(cport_used,)),
    Row("cport-server-output", "client port, server output",
        ("--cport", "{cport}", "-P", "2", "--get-server-output", "-t", "1"), setup="own",
        server_args=("-J",),
        checks=(cport_used, server_output_json, server_sees_cport, server_report_names_client)),
    Row("congestion", "congestion control", ("-C", "reno", "-t", "1"),
        checks=(tcp_congestion_is("reno"),)),
    Row("tos", "TOS", ("-S", "0x10", "-t", "1"),
        checks=(value_is(("start", "test_start", "tos"), 16),)),
    Row("extra-data", "extra data", ("--extra-data", "x", "-t", "1"),
        checks=(value_is(("extra_data",), "x"),)),
    Row("title", "title", ("-T", "matrix", "-t", "1"), checks=(value_is(("title",), "matrix"),)),
    Row("repeating-payload", "repeating payload", ("--repeating-payload", "-t", "1")),
    Row("connect-timeout", "connect timeout", ("--connect-timeout", "1000", "-t", "1")),
    Row("snd-timeout", "send timeout", ("--snd-timeout", "5000", "-t", "1")),
    Row("interval", "half-second intervals", ("-i", "0.5", "-t", "1")),
    Row("client-rcv-timeout", "client receive timeout", ("--rcv-timeout", "5000", "-R", "-t", "1")),
    Row("server-idle-timeout", "server idle timeout", ("-t", "1"), setup="own",
        server_args=("--idle-timeout", "30")),
    Row("server-rcv-timeout", "server receive timeout", ("-t", "1"), setup="own",
        server_args=("--rcv-timeout", "5000")),
    Row("server-bitrate-limit", "server bit-rate limit exceeded", ("-t", "3"), setup="own",
        server_args=("--server-bitrate-limit", "100M/1"), expect="error",
        note="the server aborts the test after 1 s; the client's error varies from run to "
             "run, directly too"),
    Row("one-off", "one-off server", ("-t", "1"), setup="one-off", server_args=("-1",),
        note="server exits after the test"),
    Row("ipv6", "IPv6 client", ("-6", "-t", "1"), host="::1", checks=(connected_over_ipv6,),
        note="proxy dual-stack, backend IPv4"),
    Row("ipv6-udp", "IPv6 client, UDP", ("-6", "-u", "-t", "1"), host="::1",
        checks=(connected_over_ipv6,), note="proxy dual-stack, backend IPv4"),
    Row("ipv6-server-output", "IPv6 client, server output",
        ("-6", "--get-server-output", "-t", "1"), host="::1", setup="own", server_args=("-J",),
        checks=(connected_over_ipv6, server_output_json, server_sees_ipv6_client,
                server_report_names_client),
        note="proxy dual-stack, backend IPv4"),
    Row("ipv6-backend", "IPv6 backend", ("-t", "1"), setup="ipv6-backend",
        server_args=("-B", "::1"), note="client to proxy over IPv4, proxy to server over IPv6"),
    Row("ipv6-backend-udp", "IPv6 backend, UDP", ("-u", "-t", "1"), setup="ipv6-backend",
        server_args=("-B", "::1"), note="client to proxy over IPv4, proxy to server over IPv6"),
    Row("sctp", "SCTP", ("--sctp", "-t", "1"), expect="sctp"),
]

# Rows that pass directly but not through the proxy: proxy bugs, reported to the lead.
KNOWN_PROXY_BUGS: dict[str, str] = {}


def _params():
    for row in ROWS:
        marks = ()
        if row.id in KNOWN_PROXY_BUGS:
            marks = (pytest.mark.xfail(reason="proxy bug: " + KNOWN_PROXY_BUGS[row.id],
                                       strict=True),)
        yield pytest.param(row, id=row.id, marks=marks)


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RowContext:
    files: dict[str, str]
    cport: int = 0


def _get(doc, path: tuple[str, ...]):
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _iperf3_help() -> str:
    proc = subprocess.run([harness.iperf3_binary(), "--help"], capture_output=True, text=True,
                          timeout=10, check=False)
    return proc.stdout + proc.stderr


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        return f"unknown ({exc})"
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr) \
        else "unknown"


def _debian_package_version(binary: str) -> Optional[str]:
    """Version of the Debian package that owns `binary`, or None (not from a package)."""
    try:
        owner = subprocess.run(["dpkg-query", "-S", os.path.realpath(binary)], capture_output=True,
                               text=True, timeout=10, check=False)
        if owner.returncode != 0:
            return None
        package = owner.stdout.split(":", 1)[0].strip()
        version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                                 capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return f"{package} {version.stdout.strip()}" if version.returncode == 0 else None


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """An RSA key pair, an authorized-users file and a file for -F."""
    d = tmp_path_factory.mktemp("matrix")
    data = d / "data.bin"
    data.write_bytes(os.urandom(FILE_SIZE))
    return {**harness.make_auth_files(d, AUTH_USER, AUTH_PASSWORD), "file": str(data)}


@dataclasses.dataclass
class Shared:
    server: harness.IperfServer
    proxy: harness.Proxy


@pytest.fixture(scope="module")
def shared(proxy_bin):
    """One `iperf3 -s` and one proxy in front of it, for every row without special servers."""
    with harness.start_iperf_server() as server:
        with harness.Proxy(harness.free_port(), backend=server.port, binary=proxy_bin) as proxy:
            yield Shared(server, proxy)


RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def matrix(proxy_bin):
    """Collects every row's outcome and writes the matrix file when the module is done."""
    started = time.monotonic()
    yield RESULTS
    out = render_matrix.default_json_path()
    doc = {
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "iperf3": _first_line([harness.iperf3_binary(), "--version"]),
        "iperf3_binary": harness.iperf3_binary(),
        "iperf3_package": _debian_package_version(harness.iperf3_binary()),
        "proxy": _first_line([str(proxy_bin), "--version"]),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "runtime_s": round(time.monotonic() - started, 1),
        "rows_defined": len(ROWS),
        "rows": [RESULTS[row.id] for row in ROWS if row.id in RESULTS],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out)
    print(f"\ncompatibility matrix: {len(doc['rows'])}/{len(ROWS)} rows written to {out}")


# --------------------------------------------------------------------------------------------
# Running one side of a row
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    result: harness.ClientResult
    cport: int = 0               # the --cport this run was given (a fresh free port per run)
    proxy_log: str = ""          # the proxy's log lines written during this run
    server_exit: Optional[int] = None  # one-off rows: the server's exit code after the test


def _fill(args, ctx: RowContext) -> list[str]:
    return [a.format(cport=ctx.cport, **ctx.files) for a in args]


def _client(row: Row, port: int, ctx: RowContext,
            before_attempt: Optional[Callable[[], None]] = None) -> "Run":
    for _ in range(3):
        if before_attempt:
            before_attempt()
        ctx.cport = harness.free_port()
        result = harness.run_client(port, _fill(row.args, ctx), timeout=CLIENT_TIMEOUT_S,
                                    host=row.host, env=dict(row.env) or None,
                                    json_output=row.json)
        taken = "Address already in use" in (result.error or "") + result.stdout + result.stderr
        if not ("{cport}" in row.args and taken):
            break
    return Run(result, cport=ctx.cport)


@contextlib.contextmanager
def _server(row: Row, ctx: RowContext):
    with harness.start_iperf_server(extra_args=_fill(row.server_args, ctx)) as server:
        yield server


def _backend(row: Row, server: harness.IperfServer) -> str:
    return f"[::1]:{server.port}" if row.setup == "ipv6-backend" else f"127.0.0.1:{server.port}"


def _proxied(proxy: harness.Proxy, row: Row, ctx: RowContext) -> Run:
    # The log from the last attempt on: a --cport row retries with another port when the one it
    # was given is taken, and the attempt that failed is a test of its own to the proxy.
    attempts: list[int] = []
    run = _client(row, proxy.port, ctx, lambda: attempts.append(len(proxy.log_text())))
    before = attempts[-1]
    # The summary line follows the client's exit closely; give it a moment for the excerpt.
    harness.wait_until(lambda: "test ended" in proxy.log_text()[before:], 2)
    run.proxy_log = proxy.log_text()[before:]
    return run


def run_both(row: Row, shared: Shared, proxy_bin, ctx: RowContext) -> tuple[Run, Run]:
    if row.setup == "shared":
        direct = _client(row, shared.server.port, ctx)
        return direct, _proxied(shared.proxy, row, ctx)
    if row.setup == "one-off":
        runs = []
        for via in ("direct", "proxied"):
            with _server(row, ctx) as server:
                if via == "direct":
                    run = _client(row, server.port, ctx)
                else:
                    with harness.Proxy(harness.free_port(), backend=_backend(row, server),
                                       binary=proxy_bin) as proxy:
                        run = _proxied(proxy, row, ctx)
                harness.wait_until(lambda: not server.running(), 5)
                run.server_exit = server.returncode
            runs.append(run)
        return runs[0], runs[1]
    with _server(row, ctx) as server:
        direct_host = "::1" if row.setup == "ipv6-backend" else row.host
        direct = _client(dataclasses.replace(row, host=direct_host), server.port, ctx)
        with harness.Proxy(harness.free_port(), backend=_backend(row, server),
                           binary=proxy_bin) as proxy:
            return direct, _proxied(proxy, row, ctx)


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def expected_streams(args) -> int:
    args = list(args)
    parallel = int(args[args.index("-P") + 1]) if "-P" in args else 1
    return 2 * parallel if "--bidir" in args else parallel


def is_udp(row: Row) -> bool:
    return "-u" in row.args


def time_based(row: Row) -> bool:
    return not any(a in row.args for a in ("-n", "-k", "-F"))


class Noisy(str):
    """A problem that load from other processes on a small machine can cause by itself (a rate,
    a loss, a run time). A row whose only problems are Noisy runs once more; the second pair of
    runs decides. A proxy that is really slow or lossy fails both times."""


def run_problems(row: Row, run: Run, via: str, ctx: RowContext) -> list[str]:
    """What is wrong with one run on its own."""
    r = run.result
    problems = []
    if r.hung:
        problems.append(f"client hung (killed after {CLIENT_TIMEOUT_S:.0f}s)")
    if r.returncode != 0:
        problems.append(f"client exit code {r.returncode}")
    if run.server_exit not in (None, 0):
        problems.append(f"one-off server exit code {run.server_exit}")
    if row.setup == "one-off" and run.server_exit is None:
        problems.append("one-off server still running after the test")
    if not row.json:
        if "iperf Done." not in r.stdout:
            problems.append("no 'iperf Done.' in the text output")
        if re.search(r"\berror\b", r.stdout + r.stderr, re.IGNORECASE):
            problems.append("error in the output: " + _error_line(r.stdout + r.stderr))
        problems += _text_stream_problems(row, r)
    elif r.json is None:
        problems.append("no JSON output")
    elif r.error:
        problems.append(f"iperf3 error: {r.error}")
    else:
        problems += _json_stream_problems(row, r.json, via)
    if not problems:
        run_ctx = dataclasses.replace(ctx, cport=run.cport)
        for check in row.checks:
            problems += check(r, via, run_ctx)
    return problems


MAX_EXTRA_SECONDS = 1.0  # the proxied client may take this much longer than the direct one


def proxy_problems(run: Run, direct: Run) -> list[str]:
    """What the proxy itself says about a test that should have been an ordinary one, and
    whether the client noticed the extra hop in its run time."""
    problems = []
    ends = harness.session_ends(run.proxy_log)
    if len(ends) != 1:
        problems.append(f"proxy logged {len(ends)} 'test ended' lines for one test")
    elif ends[0].reason != "completed":
        problems.append(f"proxy ended the test with reason={ends[0].reason} {ends[0].detail}")
    bad = [ln for ln in run.proxy_log.splitlines()
           if len(ln.split()) > 1 and ln.split()[1] in ("warning", "error", "critical")]
    if bad:
        problems.append(f"proxy logged {len(bad)} warning/error lines, first: {bad[0]}")
    extra = run.result.duration - direct.result.duration
    if extra > MAX_EXTRA_SECONDS:
        problems.append(Noisy(f"client took {run.result.duration:.2f}s through the proxy, "
                        f"{direct.result.duration:.2f}s direct"))
    return problems


def _error_line(text: str) -> str:
    for line in text.splitlines():
        if re.search(r"\berror\b", line, re.IGNORECASE):
            return line.strip()
    return ""


def _text_stream_problems(row: Row, r: harness.ClientResult) -> list[str]:
    n = expected_streams(row.args)
    senders = [ln for ln in r.stdout.splitlines() if ln.rstrip().endswith("sender")]
    # Without --get-server-output: one sender line per stream (plus [SUM] with -P > 1).
    if not any("[SUM]" in ln for ln in senders) and len(senders) < n:
        return [f"{len(senders)} sender summary lines for {n} streams"]
    return []


def _json_stream_problems(row: Row, doc: dict, via: str) -> list[str]:
    n = expected_streams(row.args)
    if is_udp(row):
        # Each stream on its own: its receiving end got datagrams (loss is compared with the
        # direct run's, in _compare_udp).
        return harness.udp_json_problems(doc, n)
    problems = []
    streams = doc.get("end", {}).get("streams", [])
    if len(streams) != n:
        problems.append(f"{len(streams)} streams in end.streams, expected {n}")
    for i, s in enumerate(streams):
        snd, rcv = s.get("sender", {}), s.get("receiver", {})
        sb, rb = int(snd.get("bytes", 0)), int(rcv.get("bytes", 0))
        label = "client->server" if snd.get("sender", True) else "server->client"
        if sb <= 0 or rb <= 0:
            problems.append(f"stream#{i} {label}: sender {sb} / receiver {rb} bytes")
        elif "-O" in row.args:
            continue  # the two ends omit different byte counts: their totals do not compare
        elif rb > sb:
            problems.append(f"stream#{i} {label}: receiver {rb} > sender {sb} bytes")
        elif via == "proxied" and snd.get("sender", True) and rb != sb:
            problems.append(f"stream#{i} client->server: receiver {rb} != sender {sb} bytes "
                            f"(the proxy must deliver everything before TEST_END)")
    return problems


def shape(obj, path: str = "") -> set[str]:
    """Every key path in a JSON document; list elements are merged ("a[].b")."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = f"{path}.{k}" if path else k
            out.add(p)
            out |= shape(v, p)
    elif isinstance(obj, list):
        for v in obj:
            out |= shape(v, path + "[]")
    return out


# Values the client reports that must not change because of the proxy.
SAME_VALUES = [
    ("start", "version"), ("start", "test_start"), ("start", "target_bitrate"),
    ("start", "tcp_mss_default"), ("start", "tcp_mss"), ("start", "sock_bufsize"),
    ("start", "sndbuf_actual"), ("start", "rcvbuf_actual"), ("title",), ("extra_data",),
    ("end", "sender_tcp_congestion"), ("end", "receiver_tcp_congestion"),
    ("server_output_json", "start", "version"), ("server_output_json", "start", "test_start"),
    ("server_output_json", "extra_data"), ("server_output_json", "title"),
]


def compare(row: Row, d: dict, p: dict) -> tuple[list[str], list[str]]:
    """(problems, notes) of the proxied JSON result against the direct one."""
    problems, notes = [], []
    ds, ps = shape(d), shape(p)
    if ds != ps:
        problems.append(f"JSON shape differs: only direct {sorted(ds - ps)[:8]}, "
                        f"only proxied {sorted(ps - ds)[:8]}")
    for path in SAME_VALUES:
        dv, pv = _get(d, path), _get(p, path)
        if dv != pv:
            problems.append(f"{'.'.join(path)}: direct {dv!r}, proxied {pv!r}")
    dstreams, pstreams = d["end"].get("streams", []), p["end"].get("streams", [])
    dflags = [_stream_sender_flag(s) for s in dstreams]
    pflags = [_stream_sender_flag(s) for s in pstreams]
    if dflags != pflags:
        problems.append(f"streams' sender flags: direct {dflags}, proxied {pflags}")
    dconn, pconn = len(d["start"].get("connected", [])), len(p["start"].get("connected", []))
    if dconn != pconn:
        problems.append(f"start.connected: direct {dconn} entries, proxied {pconn}")
    div, piv = d.get("intervals", []), p.get("intervals", [])
    if abs(len(div) - len(piv)) > 1:
        problems.append(f"intervals: direct {len(div)}, proxied {len(piv)}")
    domit = sum(bool(iv.get("sum", {}).get("omitted")) for iv in div)
    pomit = sum(bool(iv.get("sum", {}).get("omitted")) for iv in piv)
    if domit != pomit:
        problems.append(f"omitted intervals: direct {domit}, proxied {pomit}")
    dst, pst = d.get("server_output_text"), p.get("server_output_text")
    if isinstance(dst, str) and isinstance(pst, str):
        for word in ("sender", "receiver"):
            dn = sum(ln.rstrip().endswith(word) for ln in dst.splitlines())
            pn = sum(ln.rstrip().endswith(word) for ln in pst.splitlines())
            if dn != pn:
                problems.append(f"server_output_text '{word}' lines: direct {dn}, proxied {pn}")
    dso, pso = d.get("server_output_json"), p.get("server_output_json")
    if isinstance(dso, dict) and isinstance(pso, dict):
        dn = len(dso.get("end", {}).get("streams", []))
        pn = len(pso.get("end", {}).get("streams", []))
        if dn != pn:
            problems.append(f"server_output_json streams: direct {dn}, proxied {pn}")
    if is_udp(row):
        problems_udp, notes_udp = _compare_udp(row, d, p)
        problems += problems_udp
        notes += notes_udp
    elif "--sctp" not in row.args:
        problems_tcp, notes_tcp = _compare_tcp(row, d, p)
        problems += problems_tcp
        notes += notes_tcp
    return problems, notes


def _stream_sender_flag(s: dict):
    for key in ("udp", "sender", "receiver"):
        if key in s and "sender" in s[key]:
            return bool(s[key]["sender"])
    return None


_DIRECTIONS = ("sum_received", "sum_received_bidir_reverse")


def _direction_label(row: Row, key: str) -> str:
    if key.endswith("_bidir_reverse"):
        return "down"
    return "down" if "-R" in row.args else "up"


def _compare_tcp(row: Row, d: dict, p: dict):
    """Throughput through the proxy against direct, per direction.

    In --bidir the two directions compete for two cores and split them differently from run to
    run (0.25x one way and 1.7x the other happens), so there the sum of both directions must
    reach MIN_TCP_RATIO and each direction half of it."""
    problems, ratios, rates = [], [], []
    for key in _DIRECTIONS:
        dv, pv = _get(d, ("end", key, "bits_per_second")), _get(p, ("end", key, "bits_per_second"))
        if not dv or pv is None:
            continue
        rates.append((_direction_label(row, key), dv, pv))
        ratios.append(f"{rates[-1][0]} {pv / dv:.2f}x")
    bound = MIN_TCP_RATIO / 2 if len(rates) > 1 else MIN_TCP_RATIO
    if len(rates) > 1:
        rates.append(("total", sum(r[1] for r in rates), sum(r[2] for r in rates)))
    for label, dv, pv in rates:
        minimum = MIN_TCP_RATIO if label == "total" else bound
        # Byte- and block-count tests last a few milliseconds: their rate is noise.
        if time_based(row) and pv / dv < minimum:
            problems.append(Noisy(f"{label} throughput {pv / 1e6:.0f} Mbit/s through the proxy "
                                  f"is {pv / dv:.0%} of direct {dv / 1e6:.0f} Mbit/s "
                                  f"(minimum {minimum:.0%})"))
    if ratios and not time_based(row):
        ratios[-1] += " (a short test: not checked)"
    return problems, (["throughput " + ", ".join(ratios)] if ratios else [])


def _compare_udp(row: Row, d: dict, p: dict):
    problems, notes = [], []
    rate = _get(d, ("start", "test_start", "target_bitrate")) or 0
    limited = 0 < rate <= UDP_LOSS_RATE_LIMIT  # -b 0: unlimited
    for key, label_key in (("sum", "sum_received"),
                           ("sum_bidir_reverse", "sum_received_bidir_reverse")):
        if key not in d["end"]:
            continue
        label = _direction_label(row, label_key)
        dl, pl = d["end"][key].get("lost_percent", 0.0), p["end"].get(key, {}).get(
            "lost_percent", 0.0)
        if limited:
            notes.append(f"{label} loss {pl:.1f}% (direct {dl:.1f}%)")
            if pl > dl + LOSS_PP:
                problems.append(Noisy(f"{label} loss {pl:.1f}% through the proxy, {dl:.1f}% "
                                      f"direct (allowed +{LOSS_PP:.0f} points)"))
        else:
            dv = _get(d, ("end", label_key, "bits_per_second")) or 0
            pv = _get(p, ("end", label_key, "bits_per_second")) or 0
            ratio = pv / dv if dv else 0
            minimum = MIN_UDP_RATIO if rate else MIN_UDP_UNLIMITED_RATIO
            notes.append(f"{label} received {ratio:.2f}x of direct, loss {pl:.0f}% "
                         f"(direct {dl:.0f}%)")
            if ratio < minimum:
                problems.append(Noisy(f"{label} received {pv / 1e6:.0f} Mbit/s through the "
                                      f"proxy, {ratio:.0%} of direct {dv / 1e6:.0f} Mbit/s "
                                      f"(minimum {minimum:.0%})"))
    if limited:
        dooo = sum(s["udp"].get("out_of_order", 0) for s in d["end"]["streams"])
        pooo = sum(s["udp"].get("out_of_order", 0) for s in p["end"]["streams"])
        if pooo > dooo:
            problems.append(f"{pooo} datagrams out of order through the proxy, {dooo} direct")
    return problems, notes


def _text_rate(text: str) -> Optional[float]:
    """Bit rate of the last receiver summary line of iperf3's text output."""
    scale = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}
    rates = re.findall(r"([\d.]+) ([KMG]?)bits/sec.*receiver", text)
    return float(rates[-1][0]) * scale[rates[-1][1]] if rates else None


def compare_text(row: Row, d: str, p: str) -> tuple[list[str], list[str]]:
    problems, notes = [], []

    def lines(text, word):
        return sum(1 for ln in text.splitlines() if ln.rstrip().endswith(word))

    for word in ("sender", "receiver"):
        if lines(d, word) != lines(p, word):
            problems.append(f"'{word}' summary lines: direct {lines(d, word)}, "
                            f"proxied {lines(p, word)}")
    for marker in ("Server output:", "Connecting to host", "iperf Done."):
        if (marker in d) != (marker in p):
            problems.append(f"'{marker}' {'only direct' if marker in d else 'only proxied'}")
    dv, pv = _text_rate(d), _text_rate(p)
    if dv and pv:
        notes.append(f"throughput {pv / dv:.2f}x")
        if pv / dv < MIN_TCP_RATIO:
            problems.append(Noisy(f"throughput {pv / 1e6:.0f} Mbit/s through the proxy is "
                                  f"{pv / dv:.0%} of direct {dv / 1e6:.0f} Mbit/s "
                                  f"(minimum {MIN_TCP_RATIO:.0%})"))
    else:
        problems.append(f"no receiver bit rate in the text (direct {dv}, proxied {pv})")
    return problems, notes


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


def _cell(status: str, detail: str = "") -> dict:
    return {"status": status, "detail": detail}


def _record(matrix, row: Row, direct: dict, proxied: dict, notes: list[str]) -> None:
    matrix[row.id] = {
        "id": row.id,
        "mode": row.mode,
        "client_args": " ".join(row.args).replace("{cport}", "N").replace(
            "{pubkey}", "pub.pem").replace("{file}", "FILE"),
        "server_args": " ".join(row.server_args).replace("{privkey}", "priv.pem").replace(
            "{users}", "users.csv"),
        "setup": row.setup,
        "direct": direct,
        "proxied": proxied,
        "note": "; ".join(n for n in [*notes, row.note] if n),
    }


def _explain(row: Row, via: str, run: Run, problems: list[str]) -> str:
    text = [f"{via} run of {row.id} ({' '.join(run.result.argv)}):", *("  " + p for p in problems),
            run.result.summary()]
    if run.proxy_log:
        text += ["proxy log during the run:", *run.proxy_log.splitlines()[-25:]]
    return "\n".join(text)


@pytest.mark.parametrize("row", _params())
def test_matrix_row(row: Row, shared, proxy_bin, files, matrix):
    ctx = RowContext(files=files)

    if row.needs_option and row.needs_option not in _iperf3_help():
        reason = f"not in {_first_line([harness.iperf3_binary(), '--version']).split(' (')[0]}"
        _record(matrix, row, _cell("n/a", reason), _cell("n/a", reason), [])
        pytest.skip(f"{row.needs_option}: {reason}")

    direct, proxied = run_both(row, shared, proxy_bin, ctx)

    if row.expect == "sctp":
        _sctp_row(row, matrix, direct, proxied)
        return
    if row.expect in ("same-error", "error"):
        _error_row(row, matrix, direct, proxied, same=row.expect == "same-error")
        return

    dprob, pprob, notes = evaluate(row, direct, proxied, ctx)
    if not dprob and pprob and all(isinstance(x, Noisy) for x in pprob):
        first = "; ".join(pprob)
        direct, proxied = run_both(row, shared, proxy_bin, ctx)
        dprob, pprob, notes = evaluate(row, direct, proxied, ctx)
        notes.append(f"ran twice, first: {first}")
    _record(matrix, row, _cell("fail", "; ".join(dprob)) if dprob else _cell("pass"),
            _cell("fail", "; ".join(pprob)) if pprob else _cell("pass"), notes)
    assert not dprob, ("the direct run failed (environment problem, no comparison possible)\n"
                       + _explain(row, "direct", direct, dprob))
    assert not pprob, ("passes directly, differs through the proxy\n"
                       + _explain(row, "proxied", proxied, pprob)
                       + "\n--- direct run for reference:\n" + direct.result.summary())


def evaluate(row: Row, direct: Run, proxied: Run, ctx: RowContext):
    """(direct problems, proxied problems, notes) of one pair of runs of a row that should pass."""
    dprob = run_problems(row, direct, "direct", ctx)
    pprob = run_problems(row, proxied, "proxied", ctx)
    notes: list[str] = []
    if not dprob and not pprob:
        d, p = direct.result, proxied.result
        cprob, notes = (compare(row, d.json, p.json) if row.json else
                        compare_text(row, d.stdout, p.stdout))
        pprob += cprob + proxy_problems(proxied, direct)
    return dprob, pprob, notes


def _error_row(row: Row, matrix, direct: Run, proxied: Run, same: bool) -> None:
    """Both runs must end with an iperf3 error, without hanging. same=True: a refusal (e.g. a
    wrong password), which must come with the same error, exit code and no data moved."""
    d, p = direct.result, proxied.result
    dprob, pprob = [], []
    for r, prob in ((d, dprob), (p, pprob)):
        if r.hung:
            prob.append("client hung")
        elif not r.error:
            prob.append("no error although the test must fail")
        elif same and _total(r.json, "sender", None):
            prob.append("data moved although the test was refused")
    if not dprob and not pprob:
        if same and p.error != d.error:
            pprob.append(f"error differs: direct {d.error!r}, proxied {p.error!r}")
        if p.returncode != d.returncode:
            pprob.append(f"exit code differs: direct {d.returncode}, proxied {p.returncode}")
        if p.duration > d.duration + MAX_EXTRA_SECONDS:
            pprob.append(f"client took {p.duration:.2f}s through the proxy to fail, "
                         f"{d.duration:.2f}s direct")
    verb = "refused" if same else "aborted"
    _record(matrix, row,
            _cell("fail", "; ".join(dprob)) if dprob else _cell("pass", f"{verb}: {d.error}"),
            _cell("fail", "; ".join(pprob)) if pprob else
            _cell("pass", "refused identically" if same else f"aborted: {p.error}"),
            [f"exit code {d.returncode} both"] if not dprob and not pprob else [])
    assert not dprob, _explain(row, "direct", direct, dprob)
    assert not pprob, _explain(row, "proxied", proxied, pprob)


# Errors that mean this host (kernel or iperf3 build) cannot run SCTP at all.
_NO_SCTP = re.compile(r"protocol not supported|not supported|no sctp|unknown option", re.I)


def _sctp_row(row: Row, matrix, direct: Run, proxied: Run) -> None:
    """The proxy cannot carry SCTP: it must refuse the test with a server error, not hang."""
    d, p = direct.result, proxied.result
    dtext = d.error or (d.stderr.strip().splitlines() or [""])[-1]
    if not d.hung and d.returncode == 0 and not d.error:
        dcell = _cell("pass")
    elif _NO_SCTP.search(dtext):
        dcell = _cell("n/a", f"no SCTP on this host: {dtext}")
    else:
        dcell = _cell("fail", f"rc={d.returncode} hung={d.hung}: {dtext}")
    pprob = []
    if p.hung:
        pprob.append("client hung instead of being refused")
    elif not p.error:
        pprob.append(f"no error through the proxy (rc={p.returncode}); SCTP must be refused")
    if "reason=unsupported-test" not in proxied.proxy_log:
        pprob.append("proxy did not log reason=unsupported-test")
    pcell = (_cell("fail", "; ".join(pprob)) if pprob else
             _cell("n/a", f"refused by the proxy with a server error: \"{p.error}\""))
    _record(matrix, row, dcell, pcell, ["SCTP cannot be carried by a TCP/UDP proxy"])
    assert not pprob, _explain(row, "proxied", proxied, pprob)
