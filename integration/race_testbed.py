#!/usr/bin/python3
"""Race testbed: makes chosen TCP connections to one port complete their handshake late.

This reproduces the iperf3 --bidir role race (upstream esnet/iperf#2029, docs/PROTOCOL.md §7)
deterministically. The iperf3 client opens its data connections strictly one after another,
but the server assigns roles in *accept* order. If the handshake of an early connection is
completed at the listener only later, the connections opened after it are accepted first
and the roles are swapped.

How: in a private network namespace (loopback only), an nftables rule set in the input hook
  * counts the connections to the chosen port by their first SYN (index 0 = first connection,
    which for iperf3 is the control connection; data connections are 1..2N for --bidir -P N),
  * puts a conntrack mark on the connections whose index is in the chosen set,
  * drops the 2nd and 3rd packet the client sends on a marked connection: the final ACK of
    the handshake and the first data segment (iperf3's 37-byte cookie).
The client's connect() has already returned (it got the SYN-ACK), so it moves on at once and
opens the next connections, while the listener holds the marked connection in SYN-RECV until
the client retransmits the cookie (the minimum RTO, ~200 ms on loopback). Later connections
are therefore accepted first. Nothing else is touched: the first SYN, all later packets and
all packets in the other direction pass, and other ports are not matched at all.

Counting happens on packets in conntrack (`ct original packets`), which on loopback are
counted once, in the output path, before our input-hook rule sees them.

The table is of the `inet` family, so the same rules see IPv4 and IPv6 (the namespace's
loopback has 127.0.0.1 and ::1); a separate counter of the IPv6 SYNs lets a test prove which
family the connections it judged actually used. Only TCP is matched: in a UDP test
(`iperf3 -u`) the only TCP connection to the port is the control connection, index 0, and
UDP stream setup is lock-step (docs/PROTOCOL.md §4.3, §7.5), so it has no accept-order race.

Usage as a library (see test_race.py):

    with NetNamespace() as ns:
        port = harness.free_port(ns.name)
        with harness.IperfServer(port, netns=ns.name):
            rule = LateHandshakeRule(ns.name, port, {1})
            rule.install()
            result = harness.run_client(port, harness.bidir_args(1), 20, netns=ns.name)
            rule.assert_hit_exactly(result.json)

Usage from the shell (root; runs iperf3 directly, or through the proxy with --proxy;
-6 runs everything over ::1, -u runs a UDP --bidir test):

    /usr/bin/python3 integration/race_testbed.py -P 4 --late 1,3 --runs 5
    /usr/bin/python3 integration/race_testbed.py -P 1 --late 1 --proxy [BINARY]
    /usr/bin/python3 integration/race_testbed.py -6 -P 4 --late 1 --proxy [BINARY]
    /usr/bin/python3 integration/race_testbed.py -u -P 4 --late 0 --proxy [BINARY]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (sibling module; this file is also run as a script)

NFT_TABLE = "i3p_race"
# Arbitrary conntrack mark for "this connection must complete late"; the namespace is
# private, so nothing else uses marks there.
LATE_MARK = 0x5ACE
COOKIE_SIZE = 37  # iperf3 COOKIE_SIZE: 36 characters plus NUL (docs/PROTOCOL.md §1.2)
_NS_PREFIX = "i3p-race-"
_ns_seq = itertools.count()

# The namespace's loopback addresses by IP version.
LOOPBACK = {4: "127.0.0.1", 6: "::1"}


def loopback(family: int) -> str:
    """127.0.0.1 or ::1."""
    if family not in LOOPBACK:
        raise ValueError(f"IP version must be 4 or 6, not {family!r}")
    return LOOPBACK[family]


def server_args(family: int) -> list[str]:
    """Extra `iperf3 -s` arguments for a test over `family`.

    IPv6: `-B ::1`, so the server listens on IPv6 only and a proxy in front of it has to
    reach it over IPv6. IPv4: none; the server listens dual-stack, as it does by default,
    and the client's host 127.0.0.1 makes every connection IPv4.
    """
    loopback(family)
    return ["-B", LOOPBACK[6]] if family == 6 else []


def client_family_args(family: int) -> list[str]:
    """Extra `iperf3 -c` arguments for `family` (the host is loopback(family))."""
    loopback(family)
    return ["-6"] if family == 6 else []


def backend_address(family: int, port: int) -> str:
    """The proxy's --backend for a server started with server_args(family)."""
    host = loopback(family)
    return f"[{host}]:{port}" if family == 6 else f"{host}:{port}"


# --------------------------------------------------------------------------------------------
# Network namespace
# --------------------------------------------------------------------------------------------


def _cleanup_stale_namespaces() -> None:
    """Delete testbed namespaces left behind by test processes that no longer exist.

    Names carry the creating pid; a namespace only outlives its `with` block if the test
    process was SIGKILLed, and then it would hold its processes forever.
    """
    try:
        listing = harness.run_checked(["ip", "netns", "list"])
    except harness.HarnessError:
        return
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(re.escape(_NS_PREFIX) + r"(\d+)-.*", name)
        if match and not _process_alive(int(match.group(1))):
            _delete_namespace(name)


def _process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A killed test process can linger as a zombie until its parent reaps it.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _delete_namespace(name: str) -> None:
    # A namespace with live processes stays alive after `ip netns del` (only the name goes),
    # so first kill the processes in it. They are ours: the namespace is private to the test.
    try:
        pids = harness.run_checked(["ip", "netns", "pids", name]).split()
    except harness.HarnessError:
        pids = []
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    harness.wait_until(lambda: not _namespace_pids(name), timeout=5.0)
    harness.run_checked(["ip", "netns", "del", name])


def _namespace_pids(name: str) -> list[str]:
    try:
        return harness.run_checked(["ip", "netns", "pids", name]).split()
    except harness.HarnessError:
        return []


class NetNamespace:
    """A private network namespace with only loopback, removed again on exit."""

    def __init__(self, label: str = ""):
        tag = re.sub(r"[^A-Za-z0-9]", "", label)[:12]
        self.name = f"{_NS_PREFIX}{os.getpid()}-{next(_ns_seq)}-{tag or secrets.token_hex(2)}"
        self.created = False

    def __enter__(self) -> "NetNamespace":
        _cleanup_stale_namespaces()
        harness.run_checked(["ip", "netns", "add", self.name])
        self.created = True
        try:
            harness.run_checked(["ip", "-n", self.name, "link", "set", "lo", "up"])
        except Exception:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.created:
            self.created = False
            _delete_namespace(self.name)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close()
        except harness.HarnessError as cleanup_error:
            if exc_type is None:
                raise
            # Do not hide the test's own failure behind a cleanup failure; report both.
            print(f"warning: could not remove namespace {self.name}: {cleanup_error}",
                  file=sys.stderr)


# --------------------------------------------------------------------------------------------
# nftables rule set
# --------------------------------------------------------------------------------------------


def _ruleset(port: int, late: Iterable[int], extra_drops: int,
             late_sports: Iterable[int] = ()) -> str:
    """The rule set; connections are chosen by index (`late`) or by source port
    (`late_sports`, for several tests at once, whose indexes interleave)."""
    late = sorted(set(late))
    late_sports = sorted(set(late_sports))
    # Only the first SYN of a connection is counted (`ct original packets 1`), so a SYN
    # retransmission cannot shift the numbering. numgen is evaluated only when the matches
    # before it hold, i.e. once per new connection to `port`; its modulus is just "large".
    new_conn = f"tcp dport {port} tcp flags & (syn|ack|fin|rst) == syn ct original packets 1"
    first_syn = f"{new_conn} counter name \"syn_seen\""
    mark = (f"counter name \"syn_chosen\" ct mark set {LATE_MARK:#x} "
            f"add @late_sports {{ tcp sport }}")
    if late_sports:
        chosen = f"{first_syn} tcp sport {{ {', '.join(map(str, late_sports))} }} {mark}"
    elif late:
        chosen = f"{first_syn} numgen inc mod 1000000 {{ {', '.join(map(str, late))} }} {mark}"
    else:
        chosen = first_syn  # control runs: same counting, nothing chosen
    marked = f"tcp dport {port} ct direction original ct mark {LATE_MARK:#x}"
    data_packets = "3" if extra_drops == 0 else f"3-{3 + extra_drops}"
    return f"""
table inet {NFT_TABLE} {{
    counter syn_seen {{ }}
    counter syn_seen_ip6 {{ }}
    counter syn_chosen {{ }}
    counter ack_dropped {{ }}
    counter cookie_dropped {{ }}
    # Client source ports of the chosen connections, to check afterwards that exactly the
    # intended connections were chosen (the iperf3 JSON lists each stream's local port).
    set late_sports {{ type inet_service; flags dynamic; }}
    chain input {{
        type filter hook input priority filter; policy accept;
        # The same connections as syn_seen, restricted to IPv6 (an inet table sees both).
        meta nfproto ipv6 {new_conn} counter name "syn_seen_ip6"
        {chosen}
        # 2nd client packet: the handshake's final ACK. 3rd: the first data segment, which
        # also acknowledges the SYN-ACK. Losing both keeps the connection in SYN-RECV until
        # the client retransmits the segment; `extra_drops` drops that many retransmissions too.
        {marked} ct original packets 2 counter name "ack_dropped" drop
        {marked} ct original packets {data_packets} counter name "cookie_dropped" drop
    }}
}}
"""


class LateHandshakeRule:
    """The nftables rule set of the testbed, installed in `netns` for TCP port `port`."""

    def __init__(self, netns: str, port: int, late: Iterable[int], extra_drops: int = 0):
        """`late`: 0-based indexes of the connections to `port` to delay.

        `extra_drops`: also drop that many retransmissions of the first data segment. The
        delay at the listener is then about 0.2 s, 0.6 s, 1.4 s, ... (RTO 200 ms, doubling).
        """
        self.netns = netns
        self.port = port
        self.late = frozenset(late)
        self.extra_drops = extra_drops
        if any(i < 0 for i in self.late) or extra_drops < 0:
            raise ValueError(f"bad indexes {sorted(self.late)} or extra_drops {extra_drops}")
        self.ruleset = _ruleset(port, self.late, extra_drops)

    def install(self) -> "LateHandshakeRule":
        harness.run_checked(["nft", "-f", "-"], netns=self.netns, input_text=self.ruleset)
        return self

    def _table(self) -> list[dict]:
        out = harness.run_checked(["nft", "-j", "list", "table", "inet", NFT_TABLE],
                                  netns=self.netns)
        return json.loads(out)["nftables"]

    def counters(self) -> dict[str, tuple[int, int]]:
        """Named counters as {name: (packets, bytes)}."""
        return {o["counter"]["name"]: (o["counter"]["packets"], o["counter"]["bytes"])
                for o in self._table() if "counter" in o}

    def late_source_ports(self) -> set[int]:
        for obj in self._table():
            if "set" in obj and obj["set"]["name"] == "late_sports":
                return {int(e) for e in obj["set"].get("elem", [])}
        return set()

    def hit_problems(self, client_json: Optional[dict] = None, family: Optional[int] = None,
                     connections: Optional[int] = None) -> list[str]:
        """Differences between what the rule did and what it was meant to do ([] = exact).

        For every chosen connection that exists there must be exactly one chosen SYN, one
        dropped ACK and 1 + extra_drops dropped cookie segments, each exactly 37 bytes longer
        than the ACK (same headers, so this proves packet 2 carried no data and the others
        were the cookie). With the client's JSON, the chosen connections must
        be exactly the data connections at those indexes (start.connected is in creation
        order and does not include the control connection, index 0). In a UDP test the
        streams in start.connected are not TCP connections: the control connection is the
        only one the rule can see.

        `family` (4 or 6): every counted connection must have used that IP version.
        `connections`: the number of TCP connections to the port the test must have opened
        (1 + 2N for TCP --bidir -P N, 1 for any UDP test).
        """
        c = self.counters()
        problems = []
        seen = c["syn_seen"][0]
        if connections is not None and seen != connections:
            problems.append(f"{seen} connections were counted, expected {connections}")
        if family is not None:
            ip6 = c["syn_seen_ip6"][0]
            want_ip6 = seen if family == 6 else 0
            if ip6 != want_ip6:
                problems.append(f"{ip6} of {seen} counted connections used IPv6, expected "
                                f"{want_ip6} (IPv{family} test)")
        expected = len([i for i in self.late if i < seen])
        if seen <= max(self.late, default=-1):
            problems.append(f"only {seen} connections were counted; chosen {sorted(self.late)}")
        copies = 1 + self.extra_drops
        for name, per_conn in (("syn_chosen", 1), ("ack_dropped", 1), ("cookie_dropped", copies)):
            if c[name][0] != expected * per_conn:
                problems.append(f"counter {name}: {c[name][0]} packets, "
                                f"expected {expected * per_conn}")
        want_bytes = copies * (c["ack_dropped"][1] + COOKIE_SIZE * expected)
        if c["cookie_dropped"][1] != want_bytes:
            problems.append(f"dropped data segments: {c['cookie_dropped'][1]} bytes, expected "
                            f"{want_bytes} ({copies} x (ACK size + {COOKIE_SIZE}) per connection)")
        if client_json is not None:
            start = client_json.get("start", {})
            udp = start.get("test_start", {}).get("protocol") == "UDP"
            # UDP streams are not TCP connections; their ports may even equal a TCP port.
            connected = [] if udp else [e.get("local_port") for e in start.get("connected", [])]
            intended = {connected[i - 1] for i in self.late if 1 <= i <= len(connected)}
            marked = self.late_source_ports()
            data_marked = marked & set(connected)
            if data_marked != intended:
                problems.append(f"chosen source ports {sorted(data_marked)} != ports of data "
                                f"connections {sorted(self.late)}: {sorted(intended)} "
                                f"(connected in order: {connected})")
            # Anything else chosen can only be the control connection (index 0).
            others = len(marked - set(connected))
            if others != (1 if 0 in self.late else 0):
                problems.append(f"{others} chosen connections are not data connections")
        return problems

    @classmethod
    def by_source_port(cls, netns: str, port: int, sports: Iterable[int]) -> "LateHandshakeRule":
        """The same delay for the connections from these client source ports (e.g. chosen with
        iperf3 --cport), whatever their place among all connections to `port`."""
        rule = cls(netns, port, ())
        rule.late_sports = frozenset(sports)
        rule.ruleset = _ruleset(port, (), 0, rule.late_sports)
        return rule

    def assert_hit_exactly(self, client_json: Optional[dict] = None,
                           family: Optional[int] = None,
                           connections: Optional[int] = None) -> None:
        problems = self.hit_problems(client_json, family, connections)
        assert not problems, ("race testbed did not hit the intended packets:\n  "
                              + "\n  ".join(problems) + f"\ncounters: {self.counters()}")


# --------------------------------------------------------------------------------------------
# One test case in a fresh namespace, and checks of its result
# --------------------------------------------------------------------------------------------


def client_args(parallel: int, seconds: int = 3, rcv_timeout_ms: Optional[int] = 2000,
                family: int = 4, udp: bool = False, bitrate: Optional[str] = None,
                ending: Optional[Iterable[str]] = None) -> list[str]:
    """`iperf3 -c` arguments (after -c HOST -p PORT -J) of a --bidir test case; `ending`
    (e.g. ["-n", "1M"]) ends it instead of `-t seconds`."""
    args = client_family_args(family) + harness.bidir_args(
        parallel, seconds, rcv_timeout_ms, list(ending) if ending else None)
    if udp:
        # The server's report: the only per-stream view of what the server received.
        args += ["-u", *harness.UDP_RECEIPT_ARGS]
    if bitrate:
        args += ["-b", bitrate]
    return args


@dataclasses.dataclass
class CaseRun:
    """What one run_case() produced; the logs are read after every process has stopped."""
    result: harness.ClientResult
    misses: list[str]            # LateHandshakeRule.hit_problems: [] = exactly the intended packets
    counters: dict[str, tuple[int, int]]
    server_log: str
    proxy_log: Optional[str]     # None for a direct run
    proxy_alive: Optional[bool]  # proxy still running right after the client finished
    proxy_exit: Optional[int]

    def summary(self) -> str:
        return describe(self.result)

    def context(self) -> str:
        """Everything worth showing when a check on this run fails."""
        text = f"{self.summary()}\ntestbed counters: {self.counters}"
        if self.misses:
            text += "\ntestbed MISSED: " + "; ".join(self.misses)
        if self.proxy_log is not None:
            tail = "\n".join(self.proxy_log.splitlines()[-80:])
            text += (f"\nproxy exit={self.proxy_exit} alive after client={self.proxy_alive}"
                     f"\nproxy log tail:\n{tail}")
        return text + f"\nserver log tail:\n{self.server_log[-2000:]}"


def run_case(parallel: int, late: Iterable[int], *, family: int = 4, udp: bool = False,
             proxy: Optional[os.PathLike] = None, direct: bool = True, seconds: int = 3,
             rcv_timeout_ms: Optional[int] = 2000, bitrate: Optional[str] = None,
             client_timeout: float = 15.0, extra_drops: int = 0,
             log_dir: Optional[os.PathLike] = None, label: str = "",
             ending: Optional[Iterable[str]] = None, late_hop: str = "client") -> CaseRun:
    """Run one `iperf3 --bidir` client against a fresh server in a fresh namespace.

    direct=True: client -> iperf3 -s, rule on the server's port. direct=False: client ->
    proxy (binary `proxy`, or the default one) -> iperf3 -s, with the rule on one hop only:
    late_hop="client", the proxy's port (the client's connections reach the proxy late), or
    late_hop="server", the server's port (the proxy's own connections to the server complete
    late; indexes then count the proxy's connections: 0 its control connection, 1..2N the data
    connections it dials).
    The server gets server_args(family), the proxy listens on all addresses (dual stack,
    its default) with the server at backend_address(family), and the client connects to
    loopback(family).
    The rule's hit check is done here, against the number of TCP connections the test
    opens (control + 2N data connections for TCP, the control connection alone for UDP).
    `ending`: client arguments that end the test instead of `-t seconds` (e.g. ["-k", "1"]).
    """
    if late_hop not in ("client", "server"):
        raise ValueError(f"late_hop must be 'client' or 'server', not {late_hop!r}")
    late = frozenset(late)
    host = loopback(family)
    args = client_args(parallel, seconds, rcv_timeout_ms, family, udp, bitrate, ending)
    connections = 1 if udp else 1 + 2 * parallel
    with NetNamespace(label or ("direct" if direct else "proxied")) as ns:
        server_port = harness.free_port(ns.name)
        with harness.IperfServer(server_port, server_args(family), netns=ns.name,
                                 log_dir=log_dir) as server:
            if direct:
                rule = LateHandshakeRule(ns.name, server_port, late, extra_drops).install()
                result = harness.run_client(server_port, args, client_timeout, netns=ns.name,
                                            host=host)
                misses = rule.hit_problems(result.json, family, connections)
                counters = rule.counters()
                proxy_proc = None
            else:
                proxy_port = harness.free_port(ns.name)
                with harness.Proxy(proxy_port, backend=backend_address(family, server_port),
                                   netns=ns.name, binary=proxy, log_dir=log_dir) as proxy_proc:
                    # The rule sits on one hop only. On the proxy's port the proxy sees the
                    # client's connections out of order and must not pass that order on to the
                    # server. On the server's port the proxy's own connections complete late:
                    # it must open each one only after the server has queued the one before.
                    rule_port = proxy_port if late_hop == "client" else server_port
                    rule = LateHandshakeRule(ns.name, rule_port, late, extra_drops).install()
                    result = harness.run_client(proxy_port, args, client_timeout,
                                                netns=ns.name, host=host)
                    proxy_alive = proxy_proc.running()
                    # On the server's hop the connections are the proxy's, which the client's
                    # JSON does not list.
                    misses = rule.hit_problems(result.json if late_hop == "client" else None,
                                               family, connections)
                    counters = rule.counters()
                    # The proxy logs a test's summary once both control legs have closed,
                    # which is just after the client exits.
                    harness.wait_until(
                        lambda: harness.session_ends(proxy_proc.log_text()) or
                        not proxy_proc.running(), 5.0)
    return CaseRun(result=result, misses=misses, counters=counters,
                   server_log=server.log_text(),
                   proxy_log=None if proxy_proc is None else proxy_proc.log_text(),
                   proxy_alive=None if proxy_proc is None else proxy_alive,
                   proxy_exit=None if proxy_proc is None else proxy_proc.exit_code)


def describe(result: harness.ClientResult) -> str:
    """result.summary(): per stream, TCP's sender/receiver bytes or UDP's datagrams at both
    ends."""
    return result.summary()


def upload_mismatches(result: harness.ClientResult) -> list[str]:
    """TCP: client-to-server streams whose receiver (the server) did not count exactly what
    the client sent. Through the proxy this must hold per stream: it holds the client's
    TEST_END until the data sent before it reached the server, and it lines stream ids up.
    """
    return [f"stream#{s.index} port={s.local_port} (client sends): receiver "
            f"{s.receiver_bytes} != sender {s.sender_bytes}"
            for s in result.streams() if s.client_sends and s.receiver_bytes != s.sender_bytes]


def udp_bidir_problems(result: harness.ClientResult, parallel: int,
                       max_loss_percent: float = 5.0) -> list[str]:
    """Everything wrong with the result of a `-u --bidir -P parallel` test ([] if it is good).

    Every stream on its own (harness.udp_stream_problems: its sender sent datagrams, its
    receiving end got some, little loss at these rates on loopback, no reordering, which a
    relay that reorders, merges or duplicates datagrams would show), `parallel` of them in
    each direction.
    """
    problems = harness.udp_stream_problems(result, 2 * parallel, max_loss_percent,
                                           reordering=False)
    streams = harness.udp_streams(result.json)
    for sends in (True, False) if streams else ():
        group = [s for s in streams if s.client_sends == sends]
        if len(group) != parallel:
            problems.append(f"{'client->server' if sends else 'server->client'}: expected "
                            f"{parallel} streams, got {len(group)}")
    return problems


def proxy_summary_problems(run: CaseRun) -> list[str]:
    """The proxy must have logged exactly one "test ended" line, with reason=completed."""
    if run.proxy_log is None:
        return []
    ends = harness.session_ends(run.proxy_log)
    if len(ends) != 1:
        return [f"proxy logged {len(ends)} 'test ended' lines, expected 1: "
                f"{[e.line for e in ends]}"]
    if ends[0].reason != "completed":
        return [f"proxy ended the test with reason={ends[0].reason}: {ends[0].line}"]
    return []


def result_problems(run: CaseRun, parallel: int, udp: bool) -> list[str]:
    """The checks a clean run must pass (TCP: bidir_problems, plus exact uploads and the
    proxy's summary line when proxied; UDP: udp_bidir_problems, plus the summary line)."""
    if udp:
        problems = udp_bidir_problems(run.result, parallel)
    else:
        problems = harness.bidir_problems(run.result, parallel)
        if run.proxy_log is not None:
            problems += upload_mismatches(run.result)
    if run.proxy_log is not None:
        problems += proxy_summary_problems(run)
        if not run.proxy_alive:
            problems.append("proxy exited during the test")
    return problems


# --------------------------------------------------------------------------------------------
# Command line: manual experiments and determinism checks
# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-P", "--parallel", type=int, default=1)
    parser.add_argument("-t", "--time", type=int, default=3)
    parser.add_argument("--late", default="1",
                        help="comma-separated 0-based connection indexes (0 = control)")
    parser.add_argument("--extra-drops", type=int, default=0,
                        help="also drop this many cookie retransmissions (longer delay)")
    parser.add_argument("--rcv-timeout", type=int, default=2000, help="client ms; 0 = omit")
    parser.add_argument("--timeout", type=float, default=20.0, help="hard client timeout (s)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--proxy", nargs="?", const="", default=None,
                        help="run through the proxy (optional binary path)")
    parser.add_argument("-6", dest="family", action="store_const", const=6, default=4,
                        help="IPv6: server on ::1, client -6 -c ::1, proxy backend [::1]")
    parser.add_argument("-u", "--udp", action="store_true", help="UDP --bidir test")
    parser.add_argument("-b", "--bitrate", default=None,
                        help="client -b (default: 10M for UDP, none for TCP)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    late = {int(x) for x in args.late.split(",") if x.strip()}
    bitrate = args.bitrate or ("10M" if args.udp else None)
    failures = misses_total = 0
    for run_no in range(1, args.runs + 1):
        started = time.monotonic()
        run = run_case(args.parallel, late, family=args.family, udp=args.udp,
                       proxy=args.proxy or None, direct=args.proxy is None, seconds=args.time,
                       rcv_timeout_ms=args.rcv_timeout or None, bitrate=bitrate,
                       client_timeout=args.timeout, extra_drops=args.extra_drops, label="cli")
        elapsed = time.monotonic() - started
        problems = result_problems(run, args.parallel, args.udp)
        verdict = "CLEAN" if not problems else "RACE/FAIL"
        failures += bool(problems)
        misses_total += bool(run.misses)
        print(f"run {run_no}: {verdict} ({elapsed:.2f}s total)\n{run.summary()}")
        for p in problems:
            print(f"  problem: {p}")
        print("  testbed: " + ("hit exactly the intended packets" if not run.misses
                               else "MISSED: " + "; ".join(run.misses)))
        if args.verbose and run.proxy_log is not None:
            print("\n".join(run.proxy_log.splitlines()[-60:]), file=sys.stderr)
    print(f"{failures}/{args.runs} runs showed problems")
    # A race (or a clean run) is an observation, not an error; a testbed that missed its
    # packets is, because then the observation means nothing.
    return 1 if misses_total else 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("race_testbed.py needs root (network namespaces, nftables)")
    sys.exit(main())
