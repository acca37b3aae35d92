#!/usr/bin/python3
"""First test bytes of short `--bidir` tests: how long after TEST_RUNNING, direct and proxied.

A benchmark, not a test (see bench/README.md, "First bytes of a --bidir test"). It runs
`iperf3 --bidir -P N` clients against one `iperf3 -s`, directly and through the proxy, in a
private network namespace, and captures every TCP segment on the namespace's loopback with
kernel timestamps (an AF_PACKET socket; only headers and the first payload bytes are kept).
For each run it finds, on the wire:

  srv_running   the server's TEST_RUNNING leaving the server (the common time origin)
  cli_running   the TEST_RUNNING reaching the client (through the proxy: forwarded by it)
  cli_up        the client's first test byte (after the cookie) on each sending connection
  srv_up        the first test byte reaching the server on each of its receiving connections
  srv_dn        the server's first test byte on each of its sending connections
  cli_dn        the first test byte reaching the client on each of its receiving connections

and prints, per path and N, percentiles over the runs (microseconds after srv_running) of the
first and the last stream's first byte in each direction, and where the proxy's time goes:
TEST_RUNNING forwarding, the client's own first send, and how long the proxy held each first
byte once its role was certain (hold_dn, hold_up); then how many runs had a receiving stream
that counted 0 B. `--per-run FILE` writes every run's figures as TSV.

Needs root (network namespace, packet socket) and Debian's iperf3. On a shared machine the
figures mostly measure waits for a CPU: see --nice and --proxy-rt.

    /usr/bin/python3 bench/first_bytes.py                  # -P 1 and -P 4, -n 20M, 100 runs
    /usr/bin/python3 bench/first_bytes.py -P 2 --args "-n 10M" --runs 150 \
        --proxy before=/tmp/old/iperf3-proxy --proxy after=build/ci/src/iperf3-proxy
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "integration"))
import harness  # noqa: E402
import race_testbed  # noqa: E402

COOKIE_SIZE = 37
TEST_RUNNING = 0x02
CREATE_STREAMS = 0x0A
SNAPLEN = 192  # Ethernet + IPv6 + TCP with options + the 37-byte cookie, with room to spare
PACKET_HOST = 0  # sll_pkttype of a segment as it arrives at the receiving stack on `lo`
SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SOL_PACKET = 263
PACKET_STATISTICS = 6
CLONE_NEWNET = 0x40000000

# --------------------------------------------------------------------------------------------
# Capture
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Segment:
    ts_ns: int
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    syn: bool
    payload_len: int
    payload: bytes  # the captured prefix of the payload


def parse_segment(frame: bytes, ts_ns: int) -> Optional[Segment]:
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    offset = 14
    if ethertype == 0x0800:
        ihl = (frame[offset] & 0x0F) * 4
        total, proto = struct.unpack_from("!H", frame, offset + 2)[0], frame[offset + 9]
        src = socket.inet_ntop(socket.AF_INET, frame[offset + 12:offset + 16])
        dst = socket.inet_ntop(socket.AF_INET, frame[offset + 16:offset + 20])
        ip_payload = total - ihl
        offset += ihl
    elif ethertype == 0x86DD:
        ip_payload, proto = struct.unpack_from("!HB", frame, offset + 4)
        src = socket.inet_ntop(socket.AF_INET6, frame[offset + 8:offset + 24])
        dst = socket.inet_ntop(socket.AF_INET6, frame[offset + 24:offset + 40])
        offset += 40
    else:
        return None
    if proto != 6:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", frame, offset)
    header = (frame[offset + 12] >> 4) * 4
    flags = frame[offset + 13]
    payload = frame[offset + header:]
    return Segment(ts_ns, (src, sport), (dst, dport), seq, bool(flags & 0x02),
                   ip_payload - header, payload)


class Sniffer(threading.Thread):
    """Every TCP segment on `lo` of the current network namespace, as it arrives."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        self.sock.bind(("lo", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # Each queued frame is charged its full size (a loopback segment is up to 64 KiB) even
        # though only SNAPLEN bytes are kept: the buffer must hold a whole burst. FORCE: root may
        # go past net.core.rmem_max.
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 512 << 20)
        # A one-instruction classic BPF program, "return SNAPLEN": the kernel trims every
        # frame before queueing it, so bulk test data costs the capture almost nothing.
        program = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, SNAPLEN))
        self._program = program  # must outlive the setsockopt call
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                             struct.pack("HxxxxxxQ", 1, ctypes.addressof(program)))
        self.sock.settimeout(0.05)
        self._lock = threading.Lock()
        self._segments: list[Segment] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                frame, ancillary, _, address = self.sock.recvmsg(SNAPLEN, 64)
            except socket.timeout:
                continue
            if address[2] != PACKET_HOST:
                continue  # loopback shows each segment twice: leaving and arriving
            ts_ns = next((struct.unpack("qq", data)[0] * 10**9 + struct.unpack("qq", data)[1]
                          for level, kind, data in ancillary if kind == SO_TIMESTAMPNS), 0)
            segment = parse_segment(frame, ts_ns)
            if segment is not None:
                with self._lock:
                    self._segments.append(segment)

    def take(self) -> list[Segment]:
        with self._lock:
            taken, self._segments = self._segments, []
        return taken

    def drops(self) -> int:
        """Frames the kernel dropped because the capture fell behind, since the last call."""
        packets, dropped = struct.unpack(
            "II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        return dropped

    def stop(self) -> None:
        self._stopping.set()
        self.join()


class InNamespace:
    """Moves this process into network namespace `name` and back out on exit.

    Threads started inside inherit the namespace; stop them before leaving. The testbed
    kills every process still in a namespace when it removes it, so leaving matters.
    """

    def __init__(self, name: str):
        self.name = name
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY)

    def _setns(self, fd: int) -> None:
        if self.libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns ({self.name})")

    def __enter__(self) -> "InNamespace":
        fd = os.open(f"/var/run/netns/{self.name}", os.O_RDONLY)
        try:
            self._setns(fd)
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc) -> None:
        self._setns(self.home)
        os.close(self.home)


# --------------------------------------------------------------------------------------------
# One run's events
# --------------------------------------------------------------------------------------------


class Connection:
    """One TCP connection's segments, by the side that opened it."""

    def __init__(self, opener: tuple[str, int], listener: tuple[str, int]):
        self.opener, self.listener = opener, listener
        self.syn_ns: Optional[int] = None
        self.isn: dict[str, int] = {}  # first sequence number after the SYN, per side
        self.segments: list[tuple[str, Segment]] = []  # ("out" = opener -> listener, "in")

    def add(self, direction: str, seg: Segment) -> None:
        if seg.syn:
            self.isn[direction] = (seg.seq + 1) & 0xFFFFFFFF
            if direction == "out" and self.syn_ns is None:
                self.syn_ns = seg.ts_ns
        self.segments.append((direction, seg))

    def offsets(self, direction: str):
        """(stream offset, segment) of every segment with payload in `direction`."""
        start = self.isn.get(direction)
        for d, seg in self.segments:
            if d == direction and seg.payload_len > 0 and start is not None:
                yield (seg.seq - start) & 0xFFFFFFFF, seg

    def first_payload(self, direction: str) -> bytes:
        for offset, seg in self.offsets(direction):
            if offset == 0:
                return seg.payload
        return b""

    def first_beyond(self, direction: str, skip: int) -> Optional[int]:
        """Arrival time of the first byte at stream offset >= skip in `direction`."""
        return min((seg.ts_ns for offset, seg in self.offsets(direction)
                    if offset + seg.payload_len > skip), default=None)

    def state_byte_after(self, direction: str, first: int, then: int) -> Optional[int]:
        """Arrival of the control byte `then` after `first` was seen (single-byte states)."""
        seen_first = False
        for offset, seg in sorted(self.offsets(direction), key=lambda item: item[0]):
            for byte in seg.payload[:seg.payload_len]:
                if seen_first and byte == then:
                    return seg.ts_ns
                seen_first = seen_first or byte == first
        return None


def connections(segments: list[Segment]) -> list[Connection]:
    by_key: dict[tuple, Connection] = {}
    for seg in segments:
        key = (seg.src, seg.dst)
        if key in by_key:
            by_key[key].add("out", seg)
        elif (seg.dst, seg.src) in by_key:
            by_key[(seg.dst, seg.src)].add("in", seg)
        elif seg.syn:
            conn = by_key[key] = Connection(seg.src, seg.dst)
            conn.add("out", seg)
    return [c for c in by_key.values() if c.syn_ns is not None]


@dataclasses.dataclass
class RunFigures:
    """Arrival times (ns) of one run; None where a byte never came."""
    srv_running: int
    cli_running: int
    cli_up: list[Optional[int]]  # per client sending connection
    srv_up: list[Optional[int]]  # per server receiving connection
    srv_dn: list[Optional[int]]  # per server sending connection
    cli_dn: list[Optional[int]]  # per client receiving connection


def run_figures(segments: list[Segment], cookie: bytes, client_json: dict, target_port: int,
                server_port: int, parallel: int) -> RunFigures:
    conns = [c for c in connections(segments) if c.first_payload("out")[:COOKIE_SIZE] == cookie]
    client_legs = sorted((c for c in conns if c.listener[1] == target_port),
                         key=lambda c: c.syn_ns)
    server_legs = sorted((c for c in conns if c.listener[1] == server_port),
                         key=lambda c: c.syn_ns)
    sends = {s.local_port: s.client_sends for s in harness.stream_bytes(client_json)}
    client_control = client_legs[0]
    server_control = server_legs[0]
    client_up = [c for c in client_legs[1:] if sends.get(c.opener[1]) is True]
    client_dn = [c for c in client_legs[1:] if sends.get(c.opener[1]) is False]
    # The server gives its first N accepted data connections the receiving role (docs/PROTOCOL.md
    # §3.5); a direct client's connections are the server's too, in whatever order it
    # accepted them, so there the client's own roles are used.
    if target_port == server_port:
        server_up, server_dn = client_up, client_dn
    else:
        server_up, server_dn = server_legs[1:1 + parallel], server_legs[1 + parallel:]

    def running(conn: Connection) -> int:
        at = conn.state_byte_after("in", CREATE_STREAMS, TEST_RUNNING)
        if at is None:
            raise ValueError("no TEST_RUNNING on the control connection")
        return at

    return RunFigures(
        srv_running=running(server_control), cli_running=running(client_control),
        cli_up=[c.first_beyond("out", COOKIE_SIZE) for c in client_up],
        srv_up=[c.first_beyond("out", COOKIE_SIZE) for c in server_up],
        srv_dn=[c.first_beyond("in", 0) for c in server_dn],
        cli_dn=[c.first_beyond("in", 0) for c in client_dn])


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------

MEASURES = [
    # name, description, function of RunFigures -> µs or None
    ("dn_first", "first server->client byte at the client",
     lambda f: _rel(f, min(_present(f.cli_dn), default=None))),
    ("dn_last", "last stream's first server->client byte at the client",
     lambda f: _rel(f, _latest(f.cli_dn))),
    ("up_first", "first client->server byte at the server",
     lambda f: _rel(f, min(_present(f.srv_up), default=None))),
    ("up_last", "last stream's first client->server byte at the server",
     lambda f: _rel(f, _latest(f.srv_up))),
    ("ctl_fwd", "TEST_RUNNING at the client",
     lambda f: _rel(f, f.cli_running)),
    ("cli_send", "client's first test byte (leaves the client)",
     lambda f: _rel(f, min(_present(f.cli_up), default=None))),
    ("srv_send", "server's first test byte (leaves the server)",
     lambda f: _rel(f, min(_present(f.srv_dn), default=None))),
    ("hold_dn", "longest a server->client first byte waited in the proxy once it had arrived "
                "and its connection's role was certain (all the client's senders had sent)",
     lambda f: _hold(f.srv_dn, f.cli_dn, _latest(f.cli_up))),
    ("hold_up", "longest a client->server first byte waited in the proxy (its own arrival makes "
                "its role certain)",
     lambda f: _hold(f.cli_up, f.srv_up, None)),
]


def _hold(arrived: list[Optional[int]], delivered: list[Optional[int]],
          certain: Optional[int]) -> Optional[float]:
    """Longest delivered[i] - max(arrived[i], certain), streams matched by rank (the proxy pairs
    rank with rank). None if a stream's byte is missing."""
    if not arrived or len(arrived) != len(delivered) or None in arrived or None in delivered:
        return None
    return max(d - max(a, certain or a) for a, d in zip(arrived, delivered)) / 1000.0


def _present(values):
    return [v for v in values if v is not None]


def _latest(values) -> Optional[int]:
    return None if not values or None in values else max(values)


def _rel(f: RunFigures, at: Optional[int]) -> Optional[float]:
    return None if at is None else (at - f.srv_running) / 1000.0


def _diff(a: Optional[int], b: Optional[int]) -> Optional[float]:
    return None if a is None or b is None else (a - b) / 1000.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def summarise(label: str, figures: list[RunFigures]) -> list[str]:
    lines = []
    for name, description, measure in MEASURES:
        values = [measure(f) for f in figures]
        got = [v for v in values if v is not None]
        missing = len(values) - len(got)
        if not got:
            lines.append(f"{label:<16} {name:<18} {'no data':>9}  {description}")
            continue
        cells = " ".join(f"{percentile(got, p):>9.0f}" for p in (50, 90, 99))
        lines.append(f"{label:<16} {name:<18} {cells} {max(got):>9.0f} "
                     f"{missing:>5}  {description}")
    return lines


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-P", "--parallel", type=int, action="append",
                        help="streams per direction (repeatable; default 1 and 4)")
    parser.add_argument("--runs", type=int, default=100, help="runs per path and case")
    parser.add_argument("--args", default="-n 20M",
                        help="client arguments that end the test (default: -n 20M)")
    parser.add_argument("--proxy", action="append", metavar="[NAME=]BINARY",
                        help="a proxy to measure (repeatable, e.g. before=/tmp/old/iperf3-proxy); "
                             f"default: proxy={harness.proxy_binary()}")
    parser.add_argument("--no-direct", action="store_true", help="leave out the direct path")
    parser.add_argument("--per-run", type=Path, help="write every run's figures here (TSV)")
    parser.add_argument("--proxy-rt", action="store_true",
                        help="run each proxy under SCHED_FIFO (priority 1): it then never waits "
                             "for a CPU, so its figures show its own latency, as on a host where "
                             "it has a core to itself")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of everything the bench runs (server, proxy, clients, "
                             "capture); e.g. -10 on a machine shared with other work")
    options = parser.parse_args()
    parallels = options.parallel or [1, 4]
    if options.nice:
        # Inherited by every child: the server, the proxy and each client.
        os.setpriority(os.PRIO_PROCESS, 0, options.nice)
    proxies = dict(spec.split("=", 1) if "=" in spec else ("proxy", spec)
                   for spec in options.proxy or [str(harness.proxy_binary())])
    paths = ([] if options.no_direct else ["direct"]) + list(proxies)
    tsv = options.per_run.open("w") if options.per_run else None
    if tsv:
        tsv.write("path\tP\trun\tsrv_running_ns\t" + "\t".join(m[0] for m in MEASURES) + "\n")
    results: dict[tuple[str, int], list[RunFigures]] = {}
    load_before = f"{os.getloadavg()[0]:.2f}"
    failures: list[str] = []
    # Per (path, N): runs, and runs in which a stream the client receives on counted 0 B.
    counted: dict[tuple[str, int], list[int]] = {}
    with race_testbed.NetNamespace("firstbytes") as ns, InNamespace(ns.name):
        sniffer = Sniffer()
        sniffer.start()
        server_port = harness.free_port()
        with contextlib.ExitStack() as running:
            running.enter_context(harness.IperfServer(server_port))
            targets = {"direct": server_port}
            for name, binary in proxies.items():
                proxy = running.enter_context(
                    harness.Proxy(harness.free_port(), backend=server_port, binary=binary))
                targets[name] = proxy.port
                if options.proxy_rt:
                    os.sched_setscheduler(proxy.pid, os.SCHED_FIFO, os.sched_param(1))
            for run in range(options.runs):
                for parallel in parallels:
                    # Alternate the paths so that drift in machine load hits both alike.
                    for path in paths if run % 2 == 0 else list(reversed(paths)):
                        args = ["--bidir", "-P", str(parallel), *options.args.split()]
                        sniffer.take()
                        sniffer.drops()
                        result = harness.run_client(targets[path], args, 20)
                        tally = counted.setdefault((path, parallel), [0, 0])
                        tally[0] += 1
                        tally[1] += any(not s.client_sends and s.receiver_bytes == 0
                                        for s in result.streams())
                        time.sleep(0.05)  # the last segments of the run reach the capture
                        segments = sniffer.take()
                        if sniffer.drops():
                            failures.append(f"{path} -P {parallel} run {run}: the capture "
                                            f"dropped segments")
                            continue
                        if harness.client_failures(result):
                            failures.append(f"{path} -P {parallel} run {run}: "
                                            f"{harness.client_failures(result)}")
                            continue
                        try:
                            figures = run_figures(
                                segments, result.json["start"]["cookie"].encode() + b"\0",
                                result.json, targets[path], server_port, parallel)
                        except (ValueError, IndexError) as error:
                            failures.append(f"{path} -P {parallel} run {run}: {error}")
                            continue
                        results.setdefault((path, parallel), []).append(figures)
                        if tsv:
                            cells = [measure(figures) for _, _, measure in MEASURES]
                            tsv.write(f"{path}\t{parallel}\t{run}\t{figures.srv_running}\t" +
                                      "\t".join("" if c is None else f"{c:.1f}" for c in cells)
                                      + "\n")
        sniffer.stop()
    print(f"iperf3 {' '.join(['--bidir', '-P N', options.args])}, {options.runs} runs per "
          f"path and N; microseconds after the server's TEST_RUNNING left the server"
          f"{'; proxies under SCHED_FIFO' if options.proxy_rt else ''}"
          f"{f'; nice {options.nice}' if options.nice else ''}; load average before "
          f"{load_before}, after {os.getloadavg()[0]:.2f}")
    print(f"{'path':<16} {'measure':<18} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9} "
          f"{'none':>5}")
    for (path, parallel), figures in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print("\n".join(summarise(f"{path} -P {parallel}", figures)))
    print("\nRuns in which a stream the client receives on counted 0 B:")
    for (path, parallel), (runs, lost) in sorted(counted.items(), key=lambda kv: kv[0][::-1]):
        print(f"  {path} -P {parallel}: {lost} of {runs}")
    print("\nThrough each proxy minus direct (p50, p99 of each path's own runs), microseconds:")
    for parallel in parallels:
        direct = results.get(("direct", parallel))
        for path in paths[1:] if direct else []:
            proxied = results.get((path, parallel))
            cells = []
            for name in ("dn_first", "dn_last", "up_first", "up_last"):
                measure = next(m for n, _, m in MEASURES if n == name)
                d = [v for v in map(measure, direct) if v is not None]
                p = [v for v in map(measure, proxied or []) if v is not None]
                if d and p:
                    cells.append(f"{name} {percentile(p, 50) - percentile(d, 50):+.0f} / "
                                 f"{percentile(p, 99) - percentile(d, 99):+.0f}")
            print(f"  {path} -P {parallel}: " + ", ".join(cells))
    if failures:
        print(f"{len(failures)} runs left out:\n  " + "\n  ".join(failures[:20]))
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("first_bytes.py needs root (network namespace, packet socket)")
    sys.exit(main())
