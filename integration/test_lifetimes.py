#!/usr/bin/python3
"""Lifetimes: what the proxy holds per test is released after it, one log line per test, and
the embedded iperf3 server lives and dies with the proxy.

Run (no root needed; about 70 s, most of it the two soaks):

    /usr/bin/python3 -m pytest integration/test_lifetimes.py -v -s

  test_no_fd_or_memory_growth    1000 short tests (forward, -R, --bidir; plus refused junk
                                 connections and tests that end badly) through one proxy:
                                 open fds unchanged, RSS within a small bound. Against
                                 a sanitizer build (detected, or IPERF3_PROXY_SANITIZED=1) only
                                 fds are compared and 200 tests are run: ASan's RSS only grows.
  test_no_fd_or_memory_growth_mixed_modes_with_udp
                                 the same over 500 tests of TCP and UDP in every mode, -P 2
                                 included (100 under ASan).
  test_one_line_per_test_bytes_agree
                                 every test has exactly one "test ended" line whose byte
                                 counts lie between what the receiver read and what the sender
                                 wrote, per iperf3's own JSON.
  test_embedded_server_restarts_and_stops
                                 without --backend: kill the embedded iperf3 -s, it comes back
                                 and serves; SIGTERM stops the proxy (exit 0) and the server.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

SOAK_TESTS = 1000
SOAK_TESTS_SANITIZED = 200
WARMUP_TESTS = 10
RSS_GROWTH_LIMIT_KIB = 2048
# The fastest complete tests 3.12 allows: one 1 KiB block (3.12 reads -t with atoi, so
# `-t 0.1` is -t 0, which never ends).
# Modes in turn: forward, reverse, bidirectional.
SHORT_TESTS = [["-n", "1K", "-l", "1K"], ["-n", "1K", "-l", "1K", "-R"],
               ["-n", "1K", "-l", "1K", "--bidir"]]
# The mixed soak adds UDP in every mode (3.12 takes -n with -u; one 1 KiB datagram at a rate
# that does not make the client wait) and -P 2 of both transports.
_UDP = ["-u", "-n", "1K", "-l", "1K", "-b", "100M"]
MIXED_TESTS = SHORT_TESTS + [_UDP, _UDP + ["-R"], _UDP + ["--bidir"],
                             ["-u", "-P", "2", "-n", "2K", "-l", "1K", "-b", "100M"],
                             ["-P", "2", "-n", "2K", "-l", "1K", "--bidir"]]
MIXED_SOAK_TESTS = 500
MIXED_SOAK_TESTS_SANITIZED = 100
SHORT_TEST_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 20.0
IO_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------------------------
# Process inspection
# --------------------------------------------------------------------------------------------


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid: int) -> list[str]:
    targets = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            targets.append(f"{fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return targets


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def settled_fd_count(pid: int, timeout: float = IO_TIMEOUT_S) -> int:
    """The fd count once three readings in a row agree (deferred deletes have run)."""
    readings: list[int] = []

    def stable() -> bool:
        readings.append(fd_count(pid))
        return len(readings) >= 3 and len(set(readings[-3:])) == 1

    assert harness.wait_until(stable, timeout, interval=0.05), f"fd count not settling: {readings}"
    return readings[-1]


def process_state(pid: int) -> Optional[str]:
    """The state letter from /proc/PID/stat (R, S, Z, ...), or None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]



def kill_leftover_server(pid: int) -> None:
    """Teardown only: kill exactly this embedded server if a failure left it behind."""
    if process_state(pid) not in (None, "Z"):
        try:
            if "iperf3" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def is_sanitized(binary: Path) -> bool:
    """True for an ASan build: IPERF3_PROXY_SANITIZED=1, libasan linked (gcc) or the ASan
    runtime linked in statically (clang)."""
    if os.environ.get("IPERF3_PROXY_SANITIZED") == "1":
        return True
    try:
        ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=10)
        if "libasan" in ldd.stdout:
            return True
    except (OSError, subprocess.TimeoutExpired):
        pass
    return b"__asan_init" in binary.read_bytes()


# --------------------------------------------------------------------------------------------
# Traffic
# --------------------------------------------------------------------------------------------


def run_short_test(port: int, args: list[str]) -> subprocess.CompletedProcess:
    """One quick iperf3 client, without -J (JSON costs time and 3.12 exits 0 on errors then)."""
    return subprocess.run([harness.iperf3_binary(), "-c", "127.0.0.1", "-p", str(port), *args],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=SHORT_TEST_TIMEOUT_S)


SEED = int(os.environ.get("IPERF3_PROXY_TEST_SEED", time.time_ns() % 2**32))
_rng = random.Random(SEED)
PARAMS = {"tcp": True, "omit": 0, "time": 1, "num": 0, "blockcount": 0, "parallel": 1,
          "len": 131072, "pacing_timer": 1000, "client_version": "3.12"}


def backend_listens(backend: harness.IperfServer) -> int:
    """How often iperf3 -s has (re)opened its listener: at start and after every test."""
    return len(re.findall(r"^Server listening on \d+", backend.log_text(), re.MULTILINE))


def _recv_state(sock: socket.socket) -> int:
    byte = sock.recv(1)
    assert byte, "the proxy closed the control connection"
    return byte[0]


def broken_sessions(port: int, backend: harness.IperfServer) -> list[str]:
    """Two tests that end badly after reaching the backend: params that are not JSON
    (params-rejected), and a client that goes away after CREATE_STREAMS
    (control-closed-early). Waits until the backend has ended each; returns the reasons."""
    reasons = []
    for broken, reason in ((True, "params-rejected"), (False, "control-closed-early")):
        listens = backend_listens(backend)
        cookie = "".join(_rng.choice("abcdefghijklmnopqrstuvwxyz234567")
                         for _ in range(36)).encode() + b"\0"
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as sock:
            sock.sendall(cookie)
            assert _recv_state(sock) == 0x09, "no PARAM_EXCHANGE"
            body = b"not json" if broken else json.dumps(PARAMS).encode()
            sock.sendall(struct.pack(">I", len(body)) + body)
            if not broken:
                assert _recv_state(sock) == 0x0A, "no CREATE_STREAMS"
        assert harness.wait_until(lambda: backend_listens(backend) > listens, IO_TIMEOUT_S), (
            f"the backend did not end the {reason} test\n{backend.log_text()[-2000:]}")
        reasons.append(reason)
    return reasons


def junk_connections(port: int) -> int:
    """Connections the proxy must refuse before any test exists: garbage, and a cookie cut
    short by a close. Returns how many were made."""
    for payload in (b"GET / HTTP/1.0\r\n\r\n", b"abcdefghij"):
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            try:
                while sock.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            except socket.timeout:
                raise AssertionError(f"the proxy did not close the junk connection "
                                     f"{payload!r} within {IO_TIMEOUT_S}s") from None
    return 2


# Back to back, a client can reach the server before the server has finished the previous
# test; the server then answers "busy" (or, in the moment it re-creates its listener, resets
# the connection). Before the proxy waited for the previous test's backend connection to close
# (and reconnected after a reset before the server's first byte), this was seen in about 2 of
# 1000 back-to-back tests (0 of 1000 directly). The soak retries such a test so that a
# regression shows as this count, not as a leak; none is allowed.
BACK_TO_BACK_ERRORS = ("the server is busy", "control socket has closed unexpectedly")
BACK_TO_BACK_RETRY_LIMIT = 0.0


@dataclasses.dataclass
class Batch:
    tests: int = 0
    junk: int = 0          # junk connections made (each must be refused once)
    broken: list[str] = dataclasses.field(default_factory=list)  # reasons of broken sessions
    retried: list[str] = dataclasses.field(default_factory=list)  # back-to-back failures


def run_batch(port: int, backend: harness.IperfServer, count: int, start_index: int = 0,
              batch: Optional[Batch] = None, tests: list[list[str]] = SHORT_TESTS) -> Batch:
    """`count` short tests in turn over `tests`, with junk connections every 10th test and
    broken sessions every 100th. Fails on the first test that fails other than by the
    back-to-back race."""
    batch = batch or Batch()
    for i in range(start_index, start_index + count):
        args = tests[i % len(tests)]
        for attempt in range(3):
            proc = run_short_test(port, args)
            err = proc.stderr.strip()
            if proc.returncode == 0 or not any(e in err for e in BACK_TO_BACK_ERRORS):
                break
            batch.retried.append(f"test #{i} ({' '.join(args)}) attempt {attempt + 1}: {err}")
        assert proc.returncode == 0, f"test #{i} ({' '.join(args)}) failed: {err}"
        batch.tests += 1
        if i % 10 == 9:
            batch.junk += junk_connections(port)
        if i % 100 == 99:
            batch.broken += broken_sessions(port, backend)
    return batch


def wait_sessions(proxy: harness.Proxy, count: int, timeout: float = IO_TIMEOUT_S
                  ) -> list[harness.SessionEnd]:
    """Wait until the proxy has logged `count` "test ended" lines; return them."""
    ends: list[harness.SessionEnd] = []

    def enough() -> bool:
        ends[:] = harness.session_ends(proxy.log_text())
        return len(ends) >= count

    assert harness.wait_until(enough, timeout, interval=0.1), (
        f"{len(ends)} of {count} 'test ended' lines\n{proxy.log_tail()}")
    return ends


# --------------------------------------------------------------------------------------------
# (a) no fd or memory growth
# --------------------------------------------------------------------------------------------


@pytest.fixture
def backend(tmp_path):
    with harness.start_iperf_server(log_dir=tmp_path) as server:
        yield server


def test_no_fd_or_memory_growth(proxy_bin, backend, tmp_path):
    sanitized = is_sanitized(proxy_bin)
    soak_check(proxy_bin, backend, tmp_path, SHORT_TESTS,
               SOAK_TESTS_SANITIZED if sanitized else SOAK_TESTS, sanitized)


def test_no_fd_or_memory_growth_mixed_modes_with_udp(proxy_bin, backend, tmp_path):
    """As above over TCP and UDP, forward, -R, --bidir and -P 2 in turn: UDP flows (a socket
    pair per client flow) must be released as well as TCP relays."""
    sanitized = is_sanitized(proxy_bin)
    soak_check(proxy_bin, backend, tmp_path, MIXED_TESTS,
               MIXED_SOAK_TESTS_SANITIZED if sanitized else MIXED_SOAK_TESTS, sanitized)


def soak_check(proxy_bin, backend: harness.IperfServer, tmp_path, tests: list[list[str]],
               soak: int, sanitized: bool) -> None:
    """`soak` short tests over `tests` through one proxy after a warm-up: open fds unchanged,
    VmRSS within RSS_GROWTH_LIMIT_KIB (not under ASan), one completed line per test."""
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path) as proxy:
        pid = proxy.pid
        batch = run_batch(proxy.port, backend, WARMUP_TESTS, tests=tests)
        wait_sessions(proxy, batch.tests + len(batch.retried) + len(batch.broken))
        fds_before = settled_fd_count(pid)
        fd_list_before = fd_targets(pid)
        rss_before = rss_kib(pid)

        started = time.monotonic()
        run_batch(proxy.port, backend, soak, start_index=WARMUP_TESTS, batch=batch, tests=tests)
        elapsed = time.monotonic() - started
        ends = wait_sessions(proxy, batch.tests + len(batch.retried) + len(batch.broken))
        fds_after_ok = harness.wait_until(lambda: fd_count(pid) == fds_before, IO_TIMEOUT_S)
        fds_after = fd_count(pid)
        fd_list_after = fd_targets_safe(pid)
        rss_after = rss_kib(pid)
        log = proxy.log_text()
        code = proxy.stop()

    modes = sorted({" ".join(t) for t in tests})
    print(f"\nsoak: {soak} tests (+{WARMUP_TESTS} before) over {len(tests)} modes "
          f"({'; '.join(modes)}) with {batch.junk} junk connections "
          f"and {len(batch.broken)} broken sessions in all, in {elapsed:.1f}s "
          f"({elapsed / soak * 1000:.1f} ms/test); sanitized={sanitized}\n"
          f"fds: {fds_before} -> {fds_after}\n"
          f"VmRSS: {rss_before} KiB -> {rss_after} KiB ({rss_after - rss_before:+d} KiB)\n"
          f"back-to-back retries: {len(batch.retried)}" +
          "".join(f"\n  {r}" for r in batch.retried))
    assert fds_after_ok, (f"fd count {fds_before} -> {fds_after} after {soak} tests\n"
                          f"before:\n  " + "\n  ".join(fd_list_before) +
                          "\nafter:\n  " + "\n  ".join(fd_list_after))
    if not sanitized:
        assert rss_after - rss_before <= RSS_GROWTH_LIMIT_KIB, (
            f"VmRSS grew by {rss_after - rss_before} KiB over {soak} tests "
            f"({rss_before} -> {rss_after} KiB)")
    # Every test ended exactly once and completed; every retried attempt is one session the
    # backend turned away; every junk connection was refused once.
    assert len(ends) == batch.tests + len(batch.retried) + len(batch.broken), (
        f"{len(ends)} 'test ended' lines for {batch.tests} tests, {len(batch.retried)} "
        f"retried attempts and {len(batch.broken)} broken sessions")
    assert len({e.sid for e in ends}) == len(ends), "a test was logged twice"
    completed = [e for e in ends if e.reason == "completed"]
    turned_away = [e for e in ends if e.reason in ("server-busy", "server-reset")
                   and e.mode == "unknown"]
    broken = sorted(e.reason for e in ends if e.reason in ("params-rejected",
                                                           "control-closed-early"))
    other = [e.line for e in ends if e.reason not in (
        "completed", "server-busy", "server-reset", "params-rejected", "control-closed-early")]
    assert not other, "unexpected sessions:\n" + "\n".join(other[:10])
    assert len(completed) == batch.tests and len(turned_away) == len(batch.retried)
    assert broken == sorted(batch.broken), (broken, batch.broken)
    assert len(batch.retried) <= BACK_TO_BACK_RETRY_LIMIT * batch.tests, (
        f"{len(batch.retried)} back-to-back tests were turned away by the backend")
    refused = len(re.findall(r"^\S+ \w+ refused connection from ", log, re.MULTILINE))
    assert refused == batch.junk, f"{refused} refusal lines for {batch.junk} junk connections"
    assert code == 0, f"proxy exit code {code}"


def fd_targets_safe(pid: int) -> list[str]:
    try:
        return fd_targets(pid)
    except OSError:
        return ["(process gone)"]


# --------------------------------------------------------------------------------------------
# (b) one line per test, byte counts agree with iperf3's
# --------------------------------------------------------------------------------------------

BYTES_CASES = [
    ["-t", "1", "-P", "2"],
    ["-t", "1", "-R"],
    ["-t", "1", "--bidir"],
    ["-n", "1K", "-l", "1K"],
    ["-n", "1K", "-l", "1K", "-R"],
    ["-n", "1K", "-l", "1K", "--bidir"],
    ["-n", "10M", "-P", "3"],
    ["-n", "10M", "-R", "-P", "2"],
    ["-n", "10M", "--bidir", "-P", "2"],
]


def _direction_bytes(doc: dict, client_sends: bool) -> tuple[int, int]:
    """(sender bytes, receiver bytes) summed over one direction's streams."""
    streams = [s for s in harness.stream_bytes(doc) if s.client_sends == client_sends]
    return sum(s.sender_bytes for s in streams), sum(s.receiver_bytes for s in streams)


def test_one_line_per_test_bytes_agree(proxy_bin, backend, tmp_path):
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path) as proxy:
        results = []
        for args in BYTES_CASES:
            result = harness.run_client(proxy.port, args, CLIENT_TIMEOUT_S)
            symptoms = harness.race_symptoms(result)
            if "-n" in args:
                # A byte-count test ends when the client has sent its bytes: what the other
                # direction had in flight then is legitimately never counted (directly, too:
                # `-n 1K --bidir` against iperf3 -s shows a receiver with 0 bytes every time).
                symptoms = [s for s in symptoms if "received 0 bytes" not in s]
            assert not symptoms, f"{args}:\n{result.summary()}"
            results.append((args, result))
        ends = wait_sessions(proxy, len(BYTES_CASES))
        code = proxy.stop()
    assert len(ends) == len(BYTES_CASES), "\n".join(e.line for e in ends)
    problems = []
    for args, result in results:
        sid = result.json["start"]["cookie"][:8]
        mine = [e for e in ends if e.sid == sid]
        if len(mine) != 1:
            problems.append(f"{args}: {len(mine)} 'test ended' lines for [s:{sid}]")
            continue
        end = mine[0]
        if end.reason != "completed":
            problems.append(f"{args}: {end.line}")
        reverse = "-R" in args
        bidir = "--bidir" in args
        for client_sends, relayed, label in ((True, end.up_bytes, "up"),
                                             (False, end.down_bytes, "down")):
            sent, received = _direction_bytes(result.json, client_sends)
            used = bidir or (reverse != client_sends)
            if not used:
                if relayed != 0:
                    problems.append(f"{args}: {label}_bytes={relayed} in a direction no "
                                    f"stream uses")
                continue
            print(f"{' '.join(args)}: {label}: receiver {received} <= proxy {relayed} <= "
                  f"sender {sent}")
            if not received <= relayed <= sent:
                problems.append(f"{args}: {label}_bytes={relayed} not between receiver "
                                f"{received} and sender {sent}")
    assert not problems, "\n".join(problems) + "\n" + "\n".join(e.line for e in ends)
    assert code == 0, f"proxy exit code {code}"


# --------------------------------------------------------------------------------------------
# (c) the embedded server
# --------------------------------------------------------------------------------------------

# "embedded-1": the proxy's only embedded server (--servers 1, the default) is the first.
_EMBEDDED_RE = re.compile(
    r"embedded-1 iperf3 server \(pid (\d+)\) on 127\.0\.0\.1:(\d+)")


def embedded_servers(proxy: harness.Proxy) -> list[tuple[int, int]]:
    """(pid, port) of every embedded server the proxy has started, in order."""
    return [(int(m[1]), int(m[2])) for m in _EMBEDDED_RE.finditer(proxy.log_text())]


def wait_embedded(proxy: harness.Proxy, count: int) -> tuple[int, int]:
    """Wait for the count-th embedded server to be a listening child of the proxy."""
    def up() -> bool:
        servers = embedded_servers(proxy)
        if len(servers) < count:
            return False
        pid, port = servers[count - 1]
        return pid in children_of(proxy.pid) and harness.is_listening(pid, port)

    assert harness.wait_until(up, 15.0, interval=0.05), (
        f"embedded server #{count} not up\n{proxy.log_tail()}")
    return embedded_servers(proxy)[count - 1]


def test_embedded_server_restarts_and_stops(proxy_bin, tmp_path):
    proxy = harness.Proxy(harness.free_port(), binary=proxy_bin, log_dir=tmp_path)
    started_pids: list[int] = []
    try:
        proxy.start()
        first_pid, _ = wait_embedded(proxy, 1)
        started_pids.append(first_pid)
        assert children_of(proxy.pid) == [first_pid], (children_of(proxy.pid), first_pid)
        result = harness.run_client(proxy.port, harness.bidir_args(1, seconds=1),
                                    CLIENT_TIMEOUT_S)
        problems = harness.bidir_problems(result, 1)
        assert not problems, "\n".join(problems) + "\n" + proxy.log_tail()

        os.kill(first_pid, signal.SIGKILL)
        second_pid, _ = wait_embedded(proxy, 2)
        started_pids.append(second_pid)
        assert second_pid != first_pid
        assert re.search(r"embedded-1 iperf3 server exited \(signal 9\); restarting in \d+ ms",
                         proxy.log_text()), proxy.log_tail()
        assert process_state(first_pid) in (None, "Z") and first_pid not in children_of(
            proxy.pid), "the killed server was not reaped"
        result = harness.run_client(proxy.port, harness.bidir_args(1, seconds=1),
                                    CLIENT_TIMEOUT_S)
        problems = harness.bidir_problems(result, 1)
        assert not problems, "\n".join(problems) + "\n" + proxy.log_tail()
        ends = wait_sessions(proxy, 2)
        assert [e.reason for e in ends] == ["completed", "completed"], proxy.log_tail()

        # SIGTERM (harness: to the proxy's process group; the embedded server has its own, so
        # only the proxy can stop it).
        assert os.getpgid(second_pid) != os.getpgid(proxy.pid)
        proxy.proc.send_signal(signal.SIGTERM)
        try:
            code = proxy.proc.wait(timeout=harness.STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, f"proxy exit code after SIGTERM: {code}\n{proxy.log_tail()}"
        # The proxy reaps its server before it exits, so no zombie is left either.
        assert process_state(second_pid) is None, (
            f"embedded server {second_pid} still there after the proxy exited: "
            f"state {process_state(second_pid)}")
        assert "stopped" in proxy.log_text()
    finally:
        proxy.stop()
        for pid in started_pids:
            # Only if a failure above left one behind: kill exactly the servers this proxy
            # started, by pid, after checking it is still an iperf3 process.
            kill_leftover_server(pid)
