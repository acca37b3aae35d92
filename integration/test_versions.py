#!/usr/bin/python3
"""Every iperf3 version against every other, directly and through the proxy.

    scripts/iperf3-versions.sh      # builds 3.9, 3.16, 3.18, 3.20 once, cached outside the clone
    IPERF3_PROXY_BIN=build/ci/src/iperf3-proxy \
        /usr/bin/python3 -m pytest integration/test_versions.py      # about 6 minutes
    /usr/bin/python3 integration/render_matrix.py --table versions  # the outcome -> README

Fleets mix iperf3 releases, so the proxy has to work for every client/server pair, not only for
Debian's 3.12 on both ends. Versions: 3.9, 3.12 (Debian), 3.16, 3.18, 3.20 (iperf3_versions.py,
which also lists the version facts used here; the fixture conftest.iperf3_peers builds the
missing ones, and skips, or under CI=true fails, when the source archives are not there).

Everything runs in one private network namespace per server version (the race testbed's
NetNamespace), holding that version's `iperf3 -s` and one proxy in front of it, plus, for
authentication, a server with RSA keys (generated for the run) and its own proxy per padding.
For each client x server pair (server-major order, so each namespace is set up once):

  bidir-race   `--bidir -P 2 -t 1` through the proxy while race_testbed.LateHandshakeRule makes
               the client's first sending stream complete its handshake late at the proxy, so a
               plain server would give the roles the wrong way round (that the same test run
               directly deadlocks is shown once per server version,
               test_direct_bidir_race_deadlocks). Must be clean: P streams each way that all
               moved data, byte counts and JSON sums consistent, one completed test in the
               proxy's log with roles_repaired > 0.
  udp, udp-bidir, reverse-p3, server-output
               `-u`, `-u --bidir`, `-R -P 3`, `--get-server-output` (all `-t 1`), each run
               directly and then through the proxy and compared: same JSON keys, same test
               parameters, the same streams with the same roles, no error through the proxy
               that is absent directly, UDP loss not worse by more than LOSS_PP points, one
               completed test and no warning in the proxy's log. Every UDP stream's receiving
               end must have got datagrams, each stream on its own (the UDP modes ask for the
               server's output, where a 3.9 client's result shows the server's side of a
               stream at all: harness.udp_json_problems). For UDP an nftables counter
               in the namespace proves which connect and reply datagrams crossed each leg (3.9
               sends the legacy connect message and replies with the legacy value, 3.12+ use
               "9876"/"6789") and that the proxy forwarded them unchanged. With
               --get-server-output the server's report must name the client's connections.
  auth         Versions differ directly, so each pair is compared with its own direct run, in
               each of its variants (auth_variants): both sides' defaults, and where their RSA
               paddings differ (3.17+ OAEP, older PKCS#1) and one side can switch, that switch.
               A variant that passes directly must pass through the proxy; one that is refused
               directly must be refused identically (same error, same exit code, no data).

Byte counts (byte_count_problems) take each version's own accounting into account; through
the proxy the uploads must still add up exactly where both ends count exactly.

A row that fails only on a loss figure (Noisy) runs once more and the second pair decides.
A pair that passes directly but not through the proxy is a proxy bug: it stays here, failing,
until it is fixed (KNOWN_PROXY_BUGS makes it a strict xfail while it is open).

Every outcome goes to a JSON file (IPERF3_VERSION_MATRIX_OUT, default next to the proxy's build
directory, see render_matrix.default_json_path); render_matrix.py --table versions writes the
README's table from it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

import harness
import race_testbed
import render_matrix
from iperf3_versions import VERSIONS, Peer

pytestmark = pytest.mark.usefixtures("race_env")

CLIENT_TIMEOUT_S = 15.0
RCV_TIMEOUT_MS = 2000      # client --rcv-timeout where the client has it (3.10+)
LOSS_PP = 5.0              # UDP loss through the proxy may exceed direct by this many points
AUTH_USER, AUTH_PASSWORD = "versions", "s3cret-pass"
RACE_PARALLEL = 2
# Connection 0 is the control connection, 1..P the client's sending streams, P+1..2P its
# receiving ones: delaying 1 puts a receiver ahead of a sender at the proxy's listener.
RACE_LATE = frozenset({1})

# (client, server, mode) -> why it fails through the proxy only. Strict xfail: a fix is noticed.
KNOWN_PROXY_BUGS: dict[tuple[str, str, str], str] = {}


# --------------------------------------------------------------------------------------------
# Modes compared with their direct run
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mode:
    id: str
    label: str                  # column heading in the README
    args: tuple[str, ...]
    streams: int                # entries in end.streams
    udp_flows: int = 0          # UDP streams, whose connect/reply datagrams are counted
    server_report: bool = False


MODES = (
    # UDP asks for the server's output: a 3.9 client's JSON shows nowhere else what the server
    # received on a stream (harness.UDP_RECEIPT_ARGS).
    Mode("udp", "UDP", ("-u", *harness.UDP_RECEIPT_ARGS, "-t", "1"), streams=1, udp_flows=1),
    Mode("udp-bidir", "UDP `--bidir`", ("-u", "--bidir", *harness.UDP_RECEIPT_ARGS, "-t", "1"),
         streams=2, udp_flows=2),
    Mode("reverse-p3", "`-R -P 3`", ("-R", "-P", "3", "-t", "1"), streams=3),
    Mode("server-output", "`--get-server-output`", ("--get-server-output", "-t", "1"),
         streams=1, server_report=True),
)
AUTH_LABEL = "authentication"
RACE_LABEL = "`--bidir -P 2`, late sender"
COLUMNS = [("bidir-race", RACE_LABEL), *((m.id, m.label) for m in MODES), ("auth", AUTH_LABEL)]

# Printed under the README's table: what differs between the versions directly.
VERSION_NOTES = [
    "UDP: 3.9 sends the legacy connect message 123456789 and, as a server, replies 987654321; "
    "3.12 and later send \"9876\" and reply \"6789\". The cells name what was counted on the "
    "wire, on both legs through the proxy.",
    "Authentication: 3.17 and later encrypt the token with OAEP, older versions with PKCS#1 "
    "v1.5; `--use-pkcs1-padding` switches a 3.17+ server, and a 3.17-3.19 client (3.20 accepts "
    "it only as a server). 3.16 and 3.18 clients fail to encrypt their token with Debian 12's "
    "OpenSSL (\"output buffer too small\", esnet/iperf#1951, fixed in 3.20), so every server "
    "refuses them, directly and through the proxy alike.",
    "`--bidir` JSON: 3.9 reports both directions' sums under the same keys (`sum_sent` and "
    "`sum_received` twice); 3.11 and later name the second pair `*_bidir_reverse`.",
    "Byte counts: 3.16 and later run one thread per stream; a sender may not count its last "
    "write, and a server's receiving threads stop counting when it reads TEST_END. Through the "
    "proxy, client-to-server bytes add up exactly when both ends are older than 3.16.",
]


# --------------------------------------------------------------------------------------------
# UDP connect / reply datagrams on the wire
# --------------------------------------------------------------------------------------------

# The first 4 bytes of the 4-byte datagrams, as nftables compares them (wire order).
UDP_MAGIC = {
    "connect": 0x39383736,         # "9876", 3.12+
    "connect_legacy": 0x15CD5B07,  # 123456789 little-endian, 3.7-3.11 on x86
    "reply": 0x36373839,           # "6789", 3.12+
    "reply_legacy": 0xB168DE3A,    # 987654321 little-endian
}
UDP_TABLE = "i3p_versions_udp"


class UdpHandshakeCounter:
    """Counts the 4-byte UDP connect and reply datagrams per kind and leg in a namespace.

    Connect datagrams are counted by destination port (the proxy's, the server's), replies by
    source port; every loopback datagram passes the input hook once. Counter names are
    KIND_LEG, e.g. connect_legacy_proxy.
    """

    def __init__(self, netns: str, ports: dict[str, int]):
        self.netns = netns
        names, rules = [], []
        for leg, port in ports.items():
            for kind, value in UDP_MAGIC.items():
                direction = "dport" if kind.startswith("connect") else "sport"
                names.append(f"{kind}_{leg}")
                rules.append(f"udp {direction} {port} udp length 12 @th,64,32 {value:#010x} "
                             f"counter name \"{names[-1]}\"")
        counters = "\n".join(f"    counter {name} {{ }}" for name in names)
        chain = "\n        ".join(rules)
        ruleset = (f"table inet {UDP_TABLE} {{\n{counters}\n"
                   f"    chain input {{\n        type filter hook input priority filter; "
                   f"policy accept;\n        {chain}\n    }}\n}}\n")
        harness.run_checked(["nft", "-f", "-"], netns=netns, input_text=ruleset)

    def snapshot(self) -> dict[str, int]:
        out = harness.run_checked(["nft", "-j", "list", "table", "inet", UDP_TABLE],
                                  netns=self.netns)
        return {o["counter"]["name"]: o["counter"]["packets"]
                for o in json.loads(out)["nftables"] if "counter" in o}


def udp_handshake_problems(seen: dict[str, int], client: Peer, server: Peer, flows: int,
                           via: str) -> list[str]:
    """Exactly `flows` connect datagrams of the client's kind and replies of the server's kind,
    on the client's leg and, through the proxy, unchanged on the server's leg too."""
    connect = "connect_legacy" if client.legacy_udp_connect else "connect"
    reply = "reply_legacy" if server.legacy_udp_connect else "reply"
    legs = ("server",) if via == "direct" else ("proxy", "server")
    want = {name: 0 for name in seen}
    for leg in legs:
        want[f"{connect}_{leg}"] = flows
        want[f"{reply}_{leg}"] = flows
    wrong = {name: n for name, n in seen.items() if n != want[name]}
    if not wrong:
        return []
    return [f"UDP connect/reply datagrams: counted {wrong}, expected "
            f"{ {k: v for k, v in want.items() if k in wrong} } ({connect} from the {client} "
            f"client, {reply} from the {server} server)"]


# --------------------------------------------------------------------------------------------
# One namespace per server version
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Backend:
    """An `iperf3 -s` and the proxy in front of it."""
    server: harness.IperfServer
    proxy: harness.Proxy


@dataclasses.dataclass
class Run:
    result: harness.ClientResult
    proxy_log: Optional[str] = None   # the proxy's log lines written during the run
    udp: Optional[dict[str, int]] = None
    server_log: str = ""

    def context(self) -> str:
        text = race_testbed.describe(self.result)
        if self.proxy_log is not None:
            text += "\nproxy log during the run:\n" + "\n".join(
                self.proxy_log.splitlines()[-30:])
        return text + "\nserver log during the run (tail):\n" + self.server_log[-1500:]


class Site:
    """A namespace with one server version, its proxies and the UDP counters."""

    def __init__(self, server: Peer, proxy_bin, keys: dict[str, str], log_dir):
        self.peer = server
        self.proxy_bin = proxy_bin
        self.keys = keys
        self.log_dir = log_dir
        self.ns = race_testbed.NetNamespace(f"v{server.version}")
        self.ns.__enter__()
        self.backends: dict[str, Backend] = {}
        try:
            self.plain = self._backend("plain", [])
            self.udp = UdpHandshakeCounter(self.ns.name, {"proxy": self.plain.proxy.port,
                                                          "server": self.plain.server.port})
        except BaseException:
            self.close()
            raise

    def _backend(self, name: str, server_args: list[str]) -> Backend:
        server = harness.IperfServer(harness.free_port(self.ns.name), server_args,
                                     netns=self.ns.name, binary=self.peer.binary,
                                     log_dir=self.log_dir).start()
        try:
            proxy = harness.Proxy(harness.free_port(self.ns.name),
                                  backend=f"127.0.0.1:{server.port}", netns=self.ns.name,
                                  binary=self.proxy_bin, log_dir=self.log_dir).start()
        except BaseException:
            server.stop()
            raise
        self.backends[name] = Backend(server, proxy)
        return self.backends[name]

    def auth_backend(self, pkcs1: bool) -> Backend:
        """A server that requires authentication (with --use-pkcs1-padding if asked)."""
        name = "auth-pkcs1" if pkcs1 else "auth"
        if name not in self.backends:
            args = ["--rsa-private-key-path", self.keys["privkey"],
                    "--authorized-users-path", self.keys["users"]]
            self._backend(name, args + (["--use-pkcs1-padding"] if pkcs1 else []))
        return self.backends[name]

    def run(self, client: Peer, args, via: str, backend: Optional[Backend] = None,
            env: Optional[dict] = None) -> Run:
        """One client run against `backend` (default: the plain one), direct or proxied."""
        backend = backend or self.plain
        proxy = backend.proxy
        udp_before = self.udp.snapshot()
        proxy_before, server_before = len(proxy.log_text()), len(backend.server.log_text())
        port = backend.server.port if via == "direct" else proxy.port
        result = harness.run_client(port, list(args), CLIENT_TIMEOUT_S, netns=self.ns.name,
                                    binary=client.binary, env=env)
        run = Run(result)
        if via == "proxied":
            # The proxy logs a test's summary once both control legs have closed, just after
            # the client exits.
            harness.wait_until(lambda: "test ended" in proxy.log_text()[proxy_before:], 5.0)
            run.proxy_log = proxy.log_text()[proxy_before:]
        udp_after = self.udp.snapshot()
        run.udp = {k: udp_after[k] - udp_before.get(k, 0) for k in udp_after}
        run.server_log = backend.server.log_text()[server_before:]
        return run

    def alive_problems(self) -> list[str]:
        return [f"{name} {kind} exited (rc={proc.returncode})"
                for name, b in self.backends.items()
                for kind, proc in (("server", b.server), ("proxy", b.proxy))
                if not proc.running()]

    def close(self) -> None:
        for backend in self.backends.values():
            backend.proxy.stop()
            backend.server.stop()
        self.backends.clear()
        self.ns.close()


class Sites:
    """Keeps the site of one server version at a time (tests are ordered by server version)."""

    def __init__(self, peers, proxy_bin, keys, log_dir):
        self.peers, self.proxy_bin, self.keys, self.log_dir = peers, proxy_bin, keys, log_dir
        self.current: Optional[Site] = None

    def get(self, version: str) -> Site:
        if self.current is not None and self.current.peer.version != version:
            self.current.close()
            self.current = None
        if self.current is None:
            self.current = Site(self.peers[version], self.proxy_bin, self.keys, self.log_dir)
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, str]:
    """An RSA key pair and an authorized-users file, made for this run."""
    return harness.make_auth_files(tmp_path_factory.mktemp("versions-keys"), AUTH_USER, AUTH_PASSWORD)


@pytest.fixture(scope="module")
def sites(iperf3_peers, proxy_bin, keys, tmp_path_factory):
    manager = Sites(iperf3_peers, proxy_bin, keys, tmp_path_factory.mktemp("versions-logs"))
    yield manager
    manager.close()


# --------------------------------------------------------------------------------------------
# The outcome file behind the README's version table
# --------------------------------------------------------------------------------------------

OUTCOMES: dict[str, dict] = {}
DIRECT_RACE: dict[str, dict] = {}


def _cell(status: str, detail: str = "") -> dict:
    return {"status": status, "detail": detail}


def _record(client: Peer, server: Peer, column: str, cell: dict) -> None:
    key = f"{client.version}>{server.version}"
    OUTCOMES.setdefault(key, {"client": client.version, "server": server.version, "cells": {}})
    OUTCOMES[key]["cells"][column] = cell


def _first_line(argv) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    return ((proc.stdout or proc.stderr).strip().splitlines() or ["unknown"])[0]


def _source(peer: Peer) -> str:
    """Where a binary comes from: the Debian package, or the upstream archive it was built from
    (scripts/iperf3-versions.sh leaves the archive's checksum next to the build)."""
    checksum = Path(peer.binary).resolve().parent.parent / "archive.sha256"
    if checksum.is_file():
        digest, archive = checksum.read_text().split()[:2]
        return f"built from {Path(archive).name}, sha256 {digest[:16]}…"
    proc = subprocess.run(["dpkg-query", "-S", os.path.realpath(peer.binary)],
                          capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        return f"`{peer.binary}`"
    package = proc.stdout.split(":", 1)[0].strip()
    version = _first_line(["dpkg-query", "-W", "-f", "${Version}", package])
    return f"`{peer.binary}`, Debian package {package} {version}"


@pytest.fixture(scope="module")
def outcomes(iperf3_peers, proxy_bin):
    started = time.monotonic()
    yield
    out = render_matrix.default_json_path(render_matrix.TABLES["versions"])
    pairs = [f"{c}>{s}" for s in VERSIONS for c in VERSIONS]
    doc = {
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": [{"version": p.version, "binary": p.binary, "source": _source(p),
                      "reports": _first_line([p.binary, "--version"])}
                     for p in iperf3_peers.values()],
        "proxy": _first_line([str(proxy_bin), "--version"]),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "runtime_s": round(time.monotonic() - started, 1),
        "columns": [{"id": c, "label": label} for c, label in COLUMNS],
        "rows_defined": len(pairs) * len(COLUMNS) + len(VERSIONS),
        "rows_run": sum(len(OUTCOMES[k]["cells"]) for k in OUTCOMES) + len(DIRECT_RACE),
        "pairs": [OUTCOMES[k] for k in pairs if k in OUTCOMES],
        "direct_race": [DIRECT_RACE[v] for v in VERSIONS if v in DIRECT_RACE],
        "notes": VERSION_NOTES,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out)
    print(f"\nversion matrix: {doc['rows_run']}/{doc['rows_defined']} results written to {out}")


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


class Noisy(str):
    """A problem that load alone can cause (a loss figure): the row runs once more."""


def _get(doc, *path):
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


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


def _sender_flags(doc: dict) -> list:
    flags = []
    for s in doc.get("end", {}).get("streams", []):
        entry = s.get("udp") or s.get("sender") or s.get("receiver") or {}
        flags.append(entry.get("sender"))
    return flags


def byte_count_problems(run: Run, client: Peer, server: Peer) -> list[str]:
    """TCP: each direction's receiving end against its sending end and, through the proxy,
    the client's uploads against what the proxy relayed ([] for UDP or no result).

    A receiver may count less than its sender (what was in flight at the end, directly
    megabytes), never more, except that a 3.16+ sender may leave its last write uncounted:
    up to one block per stream. Through the proxy (its "test ended" line gives up_bytes):
    it relayed exactly what the client counted as sent (3.16+: up to one block per stream
    more), the server counted no more than was relayed, and a pre-3.16 server counted all of
    it, because the proxy holds TEST_END until the uploads have reached the server (a 3.16+
    server's receiving threads stop counting when its main thread reads TEST_END, whatever
    they have not read yet is not counted, directly too)."""
    doc = run.result.json or {}
    if _get(doc, "start", "test_start", "protocol") != "TCP":
        return []
    block = int(_get(doc, "start", "test_start", "blksize") or 0)
    problems = []
    streams = run.result.streams()
    uploads = [s for s in streams if s.client_sends]
    for group, sender, label in ((uploads, client, "client->server"),
                                 ([s for s in streams if not s.client_sends], server,
                                  "server->client")):
        if not group:
            continue
        sent = sum(s.sender_bytes for s in group)
        received = sum(s.receiver_bytes for s in group)
        slack = block * len(group) if sender.threaded else 0
        if received > sent + slack:
            problems.append(f"{label}: receiver counted {received} > sender {sent}"
                            + (f" + {slack} (one block per stream)" if slack else ""))
    if run.proxy_log is None or not uploads:
        return problems
    ends = harness.session_ends(run.proxy_log)
    if len(ends) != 1:
        return problems  # proxy_log_problems reports it
    relayed = ends[0].up_bytes
    sent = sum(s.sender_bytes for s in uploads)
    received = sum(s.receiver_bytes for s in uploads)
    slack = block * len(uploads) if client.threaded else 0
    if not sent <= relayed <= sent + slack:
        problems.append(f"the proxy relayed {relayed} bytes up, the {client} client counted "
                        f"{sent} sent" + (f" (+ up to {slack})" if slack else ""))
    if received > relayed:
        problems.append(f"the server counted {received} bytes received, the proxy relayed "
                        f"only {relayed}")
    elif received != relayed and not server.threaded:
        problems.append(f"the {server} server counted {received} of the {relayed} bytes the "
                        f"proxy relayed up (the proxy must hold TEST_END until they arrived)")
    return problems


def run_problems(run: Run, streams: int, client: Peer, server: Peer) -> list[str]:
    """What is wrong with one run on its own (it should have been an ordinary, good test)."""
    r = run.result
    problems = harness.client_failures(r)
    if problems:
        return problems
    if _get(r.json, "start", "test_start", "protocol") == "UDP":
        # Each stream on its own: its receiving end got datagrams.
        return harness.udp_json_problems(r.json, streams)
    entries = r.json.get("end", {}).get("streams", [])
    if len(entries) != streams:
        problems.append(f"{len(entries)} streams, expected {streams}")
    for i, s in enumerate(entries):
        sb = int(s.get("sender", {}).get("bytes", 0))
        rb = int(s.get("receiver", {}).get("bytes", 0))
        if sb <= 0 or rb <= 0:
            problems.append(f"stream#{i}: sender {sb} / receiver {rb} bytes")
    return problems + byte_count_problems(run, client, server)


# Anchored at the end only (a server with --timestamps starts its lines with the time).
_CONNECTED_LINE = re.compile(r"\[\s*\d+\] local (\S+) port (\d+) connected to (\S+) port (\d+)$")


def server_report_problems(doc: dict) -> list[str]:
    """--get-server-output (text): the server's report names the client's own connections,
    seen from the other end. Directly by construction; through the proxy only if the proxy
    translated the report of this server version."""
    text = doc.get("server_output_text")
    if not isinstance(text, str) or "bits/sec" not in text:
        return [f"server_output_text missing or without results: {str(text)[:200]!r}"]
    client = sorted((c.get("local_host"), c.get("local_port"), c.get("remote_host"),
                     c.get("remote_port")) for c in doc["start"].get("connected", []))
    server = sorted((m[3], int(m[4]), m[1], int(m[2]))
                    for m in (_CONNECTED_LINE.search(ln) for ln in text.splitlines()) if m)
    problems = []
    if not server or server != client:
        problems.append(f"the server's report names connections {server}, "
                        f"the client made {client}")
    accepted = re.findall(r"Accepted connection from (\S+), port \d+$", text, re.M)
    if accepted != ["127.0.0.1"]:
        problems.append(f"the server's report accepted the test from {accepted}")
    return problems


SAME_VALUES = [("start", "version"), ("start", "test_start"), ("start", "tcp_mss_default"),
               ("end", "sender_tcp_congestion"), ("end", "receiver_tcp_congestion")]


def compare(direct: dict, proxied: dict) -> list[str]:
    """What differs in the proxied JSON result from the direct one of the same pair."""
    problems = []
    ds, ps = shape(direct), shape(proxied)
    if ds != ps:
        problems.append(f"JSON keys differ: only direct {sorted(ds - ps)[:8]}, "
                        f"only proxied {sorted(ps - ds)[:8]}")
    for path in SAME_VALUES:
        if _get(direct, *path) != _get(proxied, *path):
            problems.append(f"{'.'.join(path)}: direct {_get(direct, *path)!r}, "
                            f"proxied {_get(proxied, *path)!r}")
    if _sender_flags(direct) != _sender_flags(proxied):
        problems.append(f"streams' sender flags: direct {_sender_flags(direct)}, "
                        f"proxied {_sender_flags(proxied)}")
    dconn = len(_get(direct, "start", "connected") or [])
    pconn = len(_get(proxied, "start", "connected") or [])
    if dconn != pconn:
        problems.append(f"start.connected: direct {dconn} entries, proxied {pconn}")
    for word in ("sender", "receiver"):
        dn, pn = (sum(ln.rstrip().endswith(word) for ln in (doc.get("server_output_text") or "")
                      .splitlines()) for doc in (direct, proxied))
        if dn != pn:
            problems.append(f"server_output_text '{word}' lines: direct {dn}, proxied {pn}")
    for key in ("sum", "sum_bidir_reverse"):
        dl, pl = _get(direct, "end", key, "lost_percent"), _get(proxied, "end", key, "lost_percent")
        if dl is not None and pl is not None and pl > dl + LOSS_PP:
            problems.append(Noisy(f"end.{key}: {pl:.1f}% lost through the proxy, {dl:.1f}% "
                                  f"directly"))
    return problems


def proxy_log_problems(log: str, reason: Optional[str] = "completed") -> list[str]:
    """One "test ended" line (with `reason`, if given) and, for a completed test, no warning."""
    ends = harness.session_ends(log)
    if len(ends) != 1:
        return [f"proxy logged {len(ends)} 'test ended' lines for one test"]
    problems = []
    if reason is not None and ends[0].reason != reason:
        problems.append(f"proxy ended the test with reason={ends[0].reason} {ends[0].detail}")
    bad = [ln for ln in log.splitlines()
           if len(ln.split()) > 1 and ln.split()[1] in ("warning", "error", "critical")]
    if reason == "completed" and bad:
        problems.append(f"proxy logged {len(bad)} warning/error lines, first: {bad[0]}")
    return problems


def evaluate(direct: Run, proxied: Run, streams: int, client: Peer, server: Peer,
             udp_flows: int = 0, server_report: bool = False) -> tuple[list[str], list[str]]:
    """(direct problems, proxied problems) of a pair of runs that should both pass."""
    dprob = run_problems(direct, streams, client, server)
    pprob = run_problems(proxied, streams, client, server)
    if udp_flows:
        dprob += udp_handshake_problems(direct.udp, client, server, udp_flows, "direct")
        pprob += udp_handshake_problems(proxied.udp, client, server, udp_flows, "proxied")
    if server_report:
        if not dprob:
            dprob += server_report_problems(direct.result.json)
        if not pprob:
            pprob += server_report_problems(proxied.result.json)
    pprob += proxy_log_problems(proxied.proxy_log or "")
    if not dprob and not pprob:
        pprob += compare(direct.result.json, proxied.result.json)
    return dprob, pprob


def failure_text(result: harness.ClientResult) -> str:
    """iperf3's error: the JSON "error", else the last line of stderr (3.9 prints some errors,
    e.g. a refused authentication, only there, without JSON)."""
    if result.error:
        return result.error
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    return re.sub(r"^iperf3: (error - )?", "", lines[-1]) if lines else ""


def openssl_errors(result: harness.ClientResult) -> list[str]:
    """OpenSSL's error lines on the client's stderr (e.g. a token it could not encrypt)."""
    return re.findall(r"error:[0-9A-F]{8}:.*", result.stderr)


def refusal_problems(direct: Run, proxied: Run) -> list[str]:
    """A test refused directly must be refused identically through the proxy: the same
    error and exit code, no hang, no data, one "test ended" line in the proxy's log."""
    d, p = direct.result, proxied.result
    problems = []
    if p.hung:
        problems.append("the client hung through the proxy")
    elif ((failure_text(p), p.returncode, openssl_errors(p))
          != (failure_text(d), d.returncode, openssl_errors(d))):
        problems.append(f"refused directly with {failure_text(d)!r} (exit {d.returncode}, "
                        f"OpenSSL {openssl_errors(d)}), through the proxy with "
                        f"{failure_text(p)!r} (exit {p.returncode}, OpenSSL {openssl_errors(p)})")
    if any(s.sender_bytes for s in p.streams()):
        problems.append("data moved through the proxy although the test was refused")
    return problems + proxy_log_problems(proxied.proxy_log or "", reason=None)


def legacy_bidir_sum_problems(result: harness.ClientResult) -> list[str]:
    """The sums of a `--bidir` result from a client before 3.11, which reports each direction
    under the same keys: the JSON object holds "sum_sent" and "sum_received" twice, first
    for the client's sending streams, then for its receiving ones (3.11+ name the second pair
    *_bidir_reverse). json.loads keeps only the second, so the text is parsed again here."""
    if not result.stdout.strip():
        return []
    sums: dict[str, list[int]] = {}

    def keep_duplicates(pairs):
        if any(k == "sum_sent" for k, _ in pairs):
            for key, value in pairs:
                if key in ("sum_sent", "sum_received"):
                    sums.setdefault(key, []).append(int(value["bytes"]))
        return dict(pairs)

    json.loads(result.stdout, object_pairs_hook=keep_duplicates)
    problems = []
    for client_sends, index in ((True, 0), (False, 1)):
        streams = [s for s in result.streams() if s.client_sends == client_sends]
        label = "client->server" if client_sends else "server->client"
        for key, total in (("sum_sent", sum(s.sender_bytes for s in streams)),
                           ("sum_received", sum(s.receiver_bytes for s in streams))):
            reported = sums.get(key, [])
            if len(reported) != 2 or reported[index] != total:
                problems.append(f"{label}: the {'first' if index == 0 else 'second'} "
                                f"end.{key} should be the stream sum {total}: {key} {reported}")
    return problems


def bidir_race_problems(run: Run, client: Peer, server: Peer) -> list[str]:
    """A clean `--bidir -P RACE_PARALLEL` test through the proxy: no race symptom, P streams
    each way that all moved data, byte counts as byte_count_problems wants them, JSON sums
    that match the streams, one completed test in the proxy's log."""
    r = run.result
    problems = harness.race_symptoms(r)
    streams = r.streams()
    for sends in (True, False):
        group = [s for s in streams if s.client_sends == sends]
        if len(group) != RACE_PARALLEL:
            problems.append(f"{len(group)} streams on which the "
                            f"{'client' if sends else 'server'} sends, expected {RACE_PARALLEL}")
        problems += [f"stream#{s.index}: its sender moved 0 bytes" for s in group
                     if s.sender_bytes <= 0]
    problems += byte_count_problems(run, client, server)
    end = (r.json or {}).get("end", {})
    if r.json is not None and "sum_sent_bidir_reverse" not in end:
        problems += legacy_bidir_sum_problems(r)
    elif r.json is not None:
        for sends, keys in ((True, ("sum_sent", "sum_received")),
                            (False, ("sum_sent_bidir_reverse", "sum_received_bidir_reverse"))):
            group = [s for s in streams if s.client_sends == sends]
            for key, total in zip(keys, (sum(s.sender_bytes for s in group),
                                         sum(s.receiver_bytes for s in group))):
                if int(end.get(key, {}).get("bytes", -1)) != total:
                    problems.append(f"end.{key}.bytes={end.get(key, {}).get('bytes')} != "
                                    f"stream sum {total}")
    return problems + proxy_log_problems(run.proxy_log or "")


def _explain(label: str, run: Run, problems: list[str]) -> str:
    return "\n".join([f"{label} ({' '.join(run.result.argv)}):", *("  " + p for p in problems),
                      run.context()])


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def _pair_params(columns):
    """Server-major order, so each server version's site is set up once."""
    for server in VERSIONS:
        for client in VERSIONS:
            for column in columns:
                marks = ()
                bug = KNOWN_PROXY_BUGS.get((client, server, column))
                if bug:
                    marks = (pytest.mark.xfail(reason="proxy bug: " + bug, strict=True),)
                yield pytest.param(client, server, column, marks=marks,
                                   id=f"{client}-to-{server}-{column}")


@pytest.mark.parametrize("server", VERSIONS)
def test_direct_bidir_race_deadlocks(server, iperf3_peers, sites, outcomes, tmp_path):
    """The late sending stream deadlocks a direct `--bidir` test with every server version
    (same-version client): what the proxied race rows repair is real for each of them. Runs
    against a server of its own, as a wedged server must not disturb the other rows."""
    peer = iperf3_peers[server]
    site = sites.get(server)
    args = race_testbed.client_args(RACE_PARALLEL, 1,
                                    RCV_TIMEOUT_MS if peer.has_rcv_timeout else None)
    port = harness.free_port(site.ns.name)
    with harness.IperfServer(port, netns=site.ns.name, binary=peer.binary, log_dir=tmp_path):
        rule = race_testbed.LateHandshakeRule(site.ns.name, port, RACE_LATE).install()
        try:
            result = harness.run_client(port, args, CLIENT_TIMEOUT_S, netns=site.ns.name,
                                        binary=peer.binary)
            misses = rule.hit_problems(result.json, 4, 1 + 2 * RACE_PARALLEL)
        finally:
            _remove_race_rule(site)
    evidence = [f"client error: {result.error}"] if result.error else []
    if result.hung:
        evidence.append("client hung")
    zero = [s.index for s in result.streams() if s.receiver_bytes == 0]
    if zero:
        evidence.append(f"the receiving side of streams {zero} counted 0 bytes")
    DIRECT_RACE[server] = {"version": server, "deadlocked": bool(evidence),
                           "evidence": "; ".join(evidence)}
    assert not misses, "race testbed missed: " + "; ".join(misses)
    assert evidence, ("expected the #2029 deadlock directly, the test looks clean:\n"
                      + race_testbed.describe(result))


def _remove_race_rule(site: "Site") -> None:
    harness.run_checked(["nft", "delete", "table", "inet", race_testbed.NFT_TABLE],
                        netns=site.ns.name)


@pytest.mark.parametrize("client,server,column", list(_pair_params([c for c, _ in COLUMNS])))
def test_pair(client, server, column, iperf3_peers, sites, keys, outcomes):
    """One column of the version table for one client x server pair."""
    cpeer, speer = iperf3_peers[client], iperf3_peers[server]
    site = sites.get(server)
    if column == "bidir-race":
        _bidir_race(site, cpeer, speer)
    elif column == "auth":
        _auth(site, cpeer, speer, keys)
    else:
        _mode(site, cpeer, speer, next(m for m in MODES if m.id == column))


def _bidir_race(site: Site, cpeer: Peer, speer: Peer) -> None:
    args = race_testbed.client_args(RACE_PARALLEL, 1,
                                    RCV_TIMEOUT_MS if cpeer.has_rcv_timeout else None)
    rule = race_testbed.LateHandshakeRule(site.ns.name, site.plain.proxy.port, RACE_LATE)
    rule.install()
    try:
        run = site.run(cpeer, args, "proxied")
        misses = rule.hit_problems(run.result.json, 4, 1 + 2 * RACE_PARALLEL)
    finally:
        _remove_race_rule(site)
    problems = bidir_race_problems(run, cpeer, speer)
    ends = harness.session_ends(run.proxy_log or "")
    repaired = int(re.search(r" roles_repaired=(\d+) ", ends[0].line).group(1)) if ends else 0
    if not repaired:
        problems.append("the proxy logged roles_repaired=0: it did not see the late sender")
    problems += site.alive_problems()
    _record(cpeer, speer, "bidir-race", _cell("fail", "; ".join(problems)) if problems else
            _cell("pass", f"roles repaired: {repaired}"))
    assert not misses, "race testbed missed: " + "; ".join(misses) + "\n" + run.context()
    assert not problems, _explain("proxied --bidir race", run, problems)


def _mode(site: Site, cpeer: Peer, speer: Peer, mode: Mode) -> None:
    def both():
        direct = site.run(cpeer, mode.args, "direct")
        proxied = site.run(cpeer, mode.args, "proxied")
        return (direct, proxied, *evaluate(direct, proxied, mode.streams, cpeer, speer,
                                           mode.udp_flows, mode.server_report))

    direct, proxied, dprob, pprob = both()
    note = ""
    if not dprob and pprob and all(isinstance(p, Noisy) for p in pprob):
        note = "ran twice, first: " + "; ".join(pprob)
        direct, proxied, dprob, pprob = both()
    pprob += site.alive_problems()
    detail = []
    if mode.udp_flows:
        detail.append("legacy connect" if cpeer.legacy_udp_connect else "connect \"9876\"")
        detail.append("legacy reply" if speer.legacy_udp_connect else "reply \"6789\"")
    if note:
        detail.append(note)
    _record(cpeer, speer, mode.id,
            _cell("fail", "; ".join(dprob + pprob)) if dprob or pprob else
            _cell("pass", ", ".join(detail)))
    assert not dprob, ("the direct run failed: no comparison possible\n"
                       + _explain("direct", direct, dprob))
    assert not pprob, ("passes directly, differs through the proxy\n"
                       + _explain("proxied", proxied, pprob)
                       + "\n--- direct run for reference:\n" + race_testbed.describe(direct.result))


@dataclasses.dataclass(frozen=True)
class AuthVariant:
    """Which side, if any, is given --use-pkcs1-padding."""
    client_pkcs1: bool = False
    server_pkcs1: bool = False

    def label(self, client: Peer, server: Peer) -> str:
        """"PKCS#1", "PKCS#1 to OAEP" (client's and server's defaults differ) or the switch."""
        if self.client_pkcs1 or self.server_pkcs1:
            return f"{'client' if self.client_pkcs1 else 'server'} --use-pkcs1-padding"
        pad = {True: "OAEP", False: "PKCS#1"}
        c, s = pad[client.oaep_by_default], pad[server.oaep_by_default]
        return c if c == s else f"{c} to {s}"

    def expected_direct(self, client: Peer, server: Peer) -> Optional[bool]:
        """Whether the pair authenticates directly; None where it depends on the OpenSSL the
        client was built with (iperf3_versions: auth_token_may_fail)."""
        if client.auth_token_may_fail:
            return None
        client_oaep = client.oaep_by_default and not self.client_pkcs1
        server_oaep = server.oaep_by_default and not self.server_pkcs1
        return client_oaep == server_oaep


def auth_variants(client: Peer, server: Peer) -> list[AuthVariant]:
    """Both sides' defaults and, where their paddings differ and one side can switch to the
    other's, that switch (3.17+ servers; 3.17-3.19 clients)."""
    variants = [AuthVariant()]
    if server.oaep_by_default and not client.oaep_by_default:
        variants.append(AuthVariant(server_pkcs1=True))
    elif client.oaep_by_default and not server.oaep_by_default and client.pkcs1_option_as_client:
        variants.append(AuthVariant(client_pkcs1=True))
    return variants


def _auth(site: Site, cpeer: Peer, speer: Peer, keys: dict[str, str]) -> None:
    """Authentication in each of the pair's variants, each compared with its direct run."""
    env = {"IPERF3_PASSWORD": AUTH_PASSWORD}
    dprob, pprob, details, last = [], [], [], None
    for variant in auth_variants(cpeer, speer):
        backend = site.auth_backend(pkcs1=variant.server_pkcs1)
        args = ["--username", AUTH_USER, "--rsa-public-key-path", keys["pubkey"], "-t", "1",
                *(["--use-pkcs1-padding"] if variant.client_pkcs1 else [])]
        direct = site.run(cpeer, args, "direct", backend, env)
        proxied = site.run(cpeer, args, "proxied", backend, env)
        label = variant.label(cpeer, speer)
        refused = direct.result.returncode != 0 or bool(failure_text(direct.result))
        expected = variant.expected_direct(cpeer, speer)
        if expected is not None and expected == refused:
            dprob.append(f"{label}: directly {'refused' if refused else 'accepted'}, expected "
                         f"{'accepted' if expected else 'refused'}: "
                         f"{race_testbed.describe(direct.result)}")
        if refused:
            problems = refusal_problems(direct, proxied)
            why = [e.rsplit(":", 1)[-1] for e in openssl_errors(direct.result)]
            details.append(f"{label}: refused alike ("
                           + "".join(f"client: {w}; " for w in why)
                           + f"\"{failure_text(direct.result)}\")")
        else:
            d, problems = evaluate(direct, proxied, 1, cpeer, speer)
            dprob += [f"{label}: {p}" for p in d]
            details.append(f"{label}: accepted")
        pprob += [f"{label}: {p}" for p in problems]
        last = proxied if problems else last
    pprob += site.alive_problems()
    _record(cpeer, speer, "auth", _cell("fail", "; ".join(dprob + pprob)) if dprob or pprob else
            _cell("pass", "; ".join(details)))
    assert not dprob, "the direct runs are not what this pair does:\n" + "\n".join(dprob)
    assert not pprob, ("passes directly, differs through the proxy\n"
                       + (_explain("proxied", last, pprob) if last else "\n".join(pprob)))
