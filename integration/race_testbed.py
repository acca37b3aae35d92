#!/usr/bin/python3
"""Race testbed: makes chosen TCP connections to one port complete their handshake late.

This reproduces the iperf3 --bidir role race (upstream esnet/iperf#2029, protocol doc §7)
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

Usage as a library (see test_race.py):

    with NetNamespace() as ns:
        port = harness.free_port(ns.name)
        with harness.IperfServer(port, netns=ns.name):
            rule = LateHandshakeRule(ns.name, port, {1})
            rule.install()
            result = harness.run_client(port, harness.bidir_args(1), 20, netns=ns.name)
            rule.assert_hit_exactly(result.json)

Usage from the shell (root; runs iperf3 directly, or through the proxy with --proxy):

    /usr/bin/python3 integration/race_testbed.py -P 4 --late 1,3 --runs 5
    /usr/bin/python3 integration/race_testbed.py -P 1 --late 1 --proxy [BINARY]
"""

from __future__ import annotations

import argparse
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
COOKIE_SIZE = 37  # iperf3 COOKIE_SIZE: 36 characters plus NUL (protocol doc §1.2)
_NS_PREFIX = "i3p-race-"
_ns_seq = itertools.count()


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


def _ruleset(port: int, late: Iterable[int], extra_drops: int) -> str:
    late = sorted(set(late))
    # Only the first SYN of a connection is counted (`ct original packets 1`), so a SYN
    # retransmission cannot shift the numbering. numgen is evaluated only when the matches
    # before it hold, i.e. once per new connection to `port`; its modulus is just "large".
    first_syn = (f"tcp dport {port} tcp flags & (syn|ack|fin|rst) == syn "
                 f"ct original packets 1 counter name \"syn_seen\"")
    if late:
        chosen = (f"{first_syn} numgen inc mod 1000000 {{ {', '.join(map(str, late))} }} "
                  f"counter name \"syn_chosen\" ct mark set {LATE_MARK:#x} "
                  f"add @late_sports {{ tcp sport }}")
    else:
        chosen = first_syn  # control runs: same counting, nothing chosen
    marked = f"tcp dport {port} ct direction original ct mark {LATE_MARK:#x}"
    data_packets = "3" if extra_drops == 0 else f"3-{3 + extra_drops}"
    return f"""
table inet {NFT_TABLE} {{
    counter syn_seen {{ }}
    counter syn_chosen {{ }}
    counter ack_dropped {{ }}
    counter cookie_dropped {{ }}
    # Client source ports of the chosen connections, to check afterwards that exactly the
    # intended connections were chosen (the iperf3 JSON lists each stream's local port).
    set late_sports {{ type inet_service; flags dynamic; }}
    chain input {{
        type filter hook input priority filter; policy accept;
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

    def hit_problems(self, client_json: Optional[dict] = None) -> list[str]:
        """Differences between what the rule did and what it was meant to do ([] = exact).

        For every chosen connection that exists there must be exactly one chosen SYN, one
        dropped ACK and 1 + extra_drops dropped cookie segments, each exactly 37 bytes longer
        than the ACK (same headers, so this proves packet 2 carried no data and the others
        were the cookie). With the client's JSON, the chosen connections must
        be exactly the data connections at those indexes (start.connected is in creation
        order and does not include the control connection, index 0).
        """
        c = self.counters()
        problems = []
        seen = c["syn_seen"][0]
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
            connected = [e.get("local_port") for e in client_json.get("start", {})
                         .get("connected", [])]
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

    def assert_hit_exactly(self, client_json: Optional[dict] = None) -> None:
        problems = self.hit_problems(client_json)
        assert not problems, ("race testbed did not hit the intended packets:\n  "
                              + "\n  ".join(problems) + f"\ncounters: {self.counters()}")


# --------------------------------------------------------------------------------------------
# Command line: manual experiments and determinism checks
# --------------------------------------------------------------------------------------------


def _one_run(args: argparse.Namespace, late: set[int]) -> tuple[harness.ClientResult, list[str],
                                                                   list[str]]:
    with NetNamespace("cli") as ns:
        server_port = harness.free_port(ns.name)
        with harness.IperfServer(server_port, netns=ns.name):
            if args.proxy is None:
                rule = LateHandshakeRule(ns.name, server_port, late, args.extra_drops).install()
                result = harness.run_client(server_port, client_args(args), args.timeout,
                                            netns=ns.name)
                return (result, harness.bidir_problems(result, args.parallel),
                        rule.hit_problems(result.json))
            proxy_port = harness.free_port(ns.name)
            with harness.Proxy(proxy_port, backend=server_port, netns=ns.name,
                               binary=args.proxy or None) as proxy:
                rule = LateHandshakeRule(ns.name, proxy_port, late, args.extra_drops).install()
                result = harness.run_client(proxy_port, client_args(args), args.timeout,
                                            netns=ns.name)
                if args.verbose:
                    print(proxy.log_tail(), file=sys.stderr)
                return (result, harness.bidir_problems(result, args.parallel),
                        rule.hit_problems(result.json))


def client_args(args: argparse.Namespace) -> list[str]:
    return harness.bidir_args(args.parallel, args.time, args.rcv_timeout or None)


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
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    late = {int(x) for x in args.late.split(",") if x.strip()}
    failures = misses_total = 0
    for run in range(1, args.runs + 1):
        started = time.monotonic()
        result, problems, misses = _one_run(args, late)
        elapsed = time.monotonic() - started
        verdict = "CLEAN" if not problems else "RACE/FAIL"
        failures += bool(problems)
        misses_total += bool(misses)
        print(f"run {run}: {verdict} ({elapsed:.2f}s total)\n{result.summary()}")
        for p in problems:
            print(f"  problem: {p}")
        print("  testbed: " + ("hit exactly the intended packets" if not misses
                               else "MISSED: " + "; ".join(misses)))
    print(f"{failures}/{args.runs} runs showed problems")
    # A race (or a clean run) is an observation, not an error; a testbed that missed its
    # packets is, because then the observation means nothing.
    return 1 if misses_total else 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("race_testbed.py needs root (network namespaces, nftables)")
    sys.exit(main())
