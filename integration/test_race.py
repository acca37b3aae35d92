#!/usr/bin/python3
"""The iperf3 --bidir role race (esnet/iperf#2029) with and without the proxy.

Run (root; about 2 minutes):

    /usr/bin/python3 -m pytest integration/test_race.py -v
    IPERF3_PROXY_BIN=/path/to/iperf3-proxy /usr/bin/python3 -m pytest integration/test_race.py

Each case runs in its own network namespace, where race_testbed.LateHandshakeRule makes the
chosen connections to the listening port complete their handshake ~200 ms late, so the
connections the client opened after them are accepted first (see race_testbed.py).
Connection index 0 is iperf3's control connection; for `--bidir -P N`, 1..N are the client's
sending streams and N+1..2N its receiving streams. Every case first proves that the rule hit
exactly the intended packets, that the test opened the expected number of TCP connections
and that all of them used the intended IP version.

  DIRECT   client -> iperf3 -s, rule on the server's port. A late sending stream makes the
           server hand the receiving role to a client receiver: the test must show the
           deadlock (client error or hang, or a receiving stream with 0 bytes).
           Over IPv4 and IPv6 (server -B ::1, client -6 -c ::1).
  CONTROL  same, but the late connection does not cross the sender/receiver boundary
           (a late receiver, or the control connection): the test must be clean. This shows
           the drops alone do no harm and the result checks do not cry wolf.
  PROXIED  client -> proxy -> iperf3 -s, rule on the PROXY's port (nothing on the server's):
           the proxy has to restore the client's roles, so every case must be clean, every
           receiving stream in both directions must have moved data, every client-to-server
           stream must arrive exactly (receiver == sender, per stream), and the proxy must log
           one completed test whose roles_repaired is non-zero exactly when the late
           connections cross the role boundary (the proxy saw the race). Over IPv6 the
           proxy listens dual-stack (its default) and reaches the server at
           --backend [::1]:PORT. Skipped only if the proxy binary does not exist.
  SERVER HOP  client -> proxy -> iperf3 -s, rule on the SERVER's port (nothing on the
           proxy's): the proxy's own connections to the server complete late, several of them,
           up to -P 4. The server gives roles in its accept order, so the proxy must dial each
           data connection only after the server has queued the one before (StreamDialer: the
           cookie acknowledged); every case must be clean as above, the client's roles were
           never out of order (roles_repaired=0), and the proxy must have waited for every
           late connection (its dials, and so its test, take the delay).
  UDP      `-u --bidir` with the control connection late (index 0: in a UDP test it is the
           only TCP connection; UDP stream setup is lock-step, docs/PROTOCOL.md §4.3/§7.5, so
           there is nothing to reorder). Direct and proxied must both pass with datagrams on
           every stream: UDP has no #2029 race, and a late control connection must not
           disturb the proxy's control path or its UDP flows.

Everything here needs root, `ip`, `nft` and network namespaces; otherwise it is skipped
(conftest.race_env).
"""

from __future__ import annotations

import datetime
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from race_testbed import CaseRun, result_problems, run_case  # noqa: E402

pytestmark = pytest.mark.usefixtures("race_env")

TEST_SECONDS = 3
UDP_SECONDS = 2
# Per UDP stream; low enough for loopback without loss on a busy 2-core machine.
UDP_BITRATE = "10M"
# Client --rcv-timeout (3.10+): turns the -P 1 deadlock into a quick error instead of a run
# that ends after TEST_SECONDS with zero bytes. Both outcomes are detected.
RCV_TIMEOUT_MS = 2000
# Hard bound for one client run; a clean run takes TEST_SECONDS + ~0.3 s.
CLIENT_TIMEOUT_S = 15.0

# (parallel, late connection indexes). Every case puts a client *sending* stream behind
# at least one later stream, i.e. crosses the role boundary.
RACE_CASES = [
    pytest.param(1, {1}, id="P1-late1"),
    pytest.param(4, {1}, id="P4-late1"),
    pytest.param(4, {2}, id="P4-late2"),
    pytest.param(4, {3}, id="P4-late3"),
    pytest.param(4, {4}, id="P4-late4"),
    pytest.param(4, {1, 2}, id="P4-late1+2"),
    pytest.param(4, {1, 3, 4}, id="P4-late1+3+4"),
]
# The same race over IPv6 (a subset: the mechanism is the same, the path is not).
RACE_CASES_IPV6 = [
    pytest.param(1, {1}, id="ipv6-P1-late1"),
    pytest.param(4, {1}, id="ipv6-P4-late1"),
]
# Late connections that stay on their side of the boundary: the roles stay right.
CONTROL_CASES = [
    pytest.param(1, {2}, id="P1-late2"),
    pytest.param(1, {0}, id="P1-late0-control-conn"),
    pytest.param(4, {5}, id="P4-late5"),
]
# UDP --bidir: the control connection (index 0) is the only TCP connection to the port.
UDP_CASES = [
    pytest.param(1, 4, id="udp-P1-late0"),
    pytest.param(4, 4, id="udp-P4-late0"),
]
UDP_CASES_PROXIED = UDP_CASES + [
    pytest.param(1, 6, id="ipv6-udp-P1-late0"),
    pytest.param(4, 6, id="ipv6-udp-P4-late0"),
]

# Late connections on the proxy-to-server hop, counted as the server sees them: 0 is the
# proxy's control connection, 1..2N the data connections it dials, in the order the server
# must accept them (its receivers, then for --bidir its senders).
SERVER_HOP_CASES = [
    pytest.param(1, {1}, id="P1-late1"),
    pytest.param(1, {0, 2}, id="P1-late0+2"),
    pytest.param(4, {1, 3, 6}, id="P4-late1+3+6"),
    pytest.param(4, {2, 4, 5, 8}, id="P4-late2+4+5+8"),
]

# Errors a 3.12 client reports when the swapped roles stall a receiving stream
# (docs/PROTOCOL.md §7.3).
DEADLOCK_ERRORS = ("idle timeout for receiving data", "control socket has closed unexpectedly")


def _deadlock_evidence(result: harness.ClientResult) -> list[str]:
    """Symptoms that are specific to the role race, not just any failure.

    A broken setup (wrong port, refused connection, bad option) would also fail the client;
    it must not count as "the race reproduced".
    """
    evidence = []
    if result.hung:
        evidence.append("client hung")
    if result.error and any(e in result.error for e in DEADLOCK_ERRORS):
        evidence.append(f"client error: {result.error}")
    zero = [s.index for s in result.streams() if s.receiver_bytes == 0]
    if zero:
        evidence.append(f"receiving side of streams {zero} moved 0 bytes")
    return evidence


def _run(tmp_path: Path, parallel: int, late: set[int], *, family: int = 4,
         proxy_bin=None, udp: bool = False, late_hop: str = "client") -> CaseRun:
    """One case in a fresh namespace; direct unless `proxy_bin` is given."""
    run = run_case(parallel, late, family=family, udp=udp, proxy=proxy_bin,
                   direct=proxy_bin is None,
                   seconds=UDP_SECONDS if udp else TEST_SECONDS, rcv_timeout_ms=RCV_TIMEOUT_MS,
                   bitrate=UDP_BITRATE if udp else None, client_timeout=CLIENT_TIMEOUT_S,
                   log_dir=tmp_path, late_hop=late_hop)
    kind = ("PROXIED" if proxy_bin is not None else "DIRECT") + f" IPv{family}"
    if late_hop == "server":
        kind += " (late on the server's hop)"
    print(f"{kind} {'-u ' if udp else ''}--bidir -P {parallel} late={sorted(late)}:\n"
          f"{run.summary()}\ntestbed counters: {run.counters}")
    # Prove the testbed did exactly what it claims before judging iperf3 or the proxy.
    assert not run.misses, ("race testbed did not hit the intended packets:\n  "
                            + "\n  ".join(run.misses) + "\n" + run.context())
    return run


def _assert_clean(run: CaseRun, parallel: int, udp: bool = False) -> None:
    problems = result_problems(run, parallel, udp)
    assert not problems, "\n".join(problems) + "\n" + run.context()


def _crosses_roles(parallel: int, late: set[int]) -> bool:
    """Whether arrivals delayed as in `late` give a plain server the wrong roles: a client
    sender (index 1..N) is late and at least one client receiver (N+1..2N) is not."""
    receivers = set(range(parallel + 1, 2 * parallel + 1))
    return any(1 <= i <= parallel for i in late) and not receivers <= late


def _assert_proxy_saw_race(run: CaseRun, parallel: int, late: set[int]) -> None:
    """The proxy's summary line must count the repair the late connections made necessary."""
    lines = [e.line for e in harness.session_ends(run.proxy_log or "")]
    match = re.search(r" roles_repaired=(\d+) ", lines[0]) if len(lines) == 1 else None
    assert match, f"no single summary line with roles_repaired: {lines}\n{run.context()}"
    repaired = int(match.group(1))
    crosses = _crosses_roles(parallel, late)
    assert (repaired > 0) == crosses, (
        f"late={sorted(late)} {'crosses' if crosses else 'does not cross'} the role boundary, "
        f"but the proxy logged roles_repaired={repaired}: {lines[0]}")


def _assert_deadlock(run: CaseRun, late: set[int]) -> None:
    evidence = _deadlock_evidence(run.result)
    assert evidence, (f"expected the #2029 deadlock with late connections {sorted(late)}, "
                      f"but the test looks clean or failed differently:\n{run.context()}")


# ---- TCP, IPv4 ------------------------------------------------------------------------------

def test_case_lists_match_their_claims():
    """RACE cases cross the role boundary, CONTROL cases do not (pure; no namespace)."""
    for case in RACE_CASES + RACE_CASES_IPV6:
        assert _crosses_roles(*case.values), case.id
    for case in CONTROL_CASES:
        assert not _crosses_roles(*case.values), case.id


@pytest.mark.parametrize("parallel,late", RACE_CASES)
def test_direct_late_sender_deadlocks(tmp_path, parallel, late):
    _assert_deadlock(_run(tmp_path, parallel, late), late)


@pytest.mark.parametrize("parallel,late", CONTROL_CASES)
def test_direct_late_without_role_crossing_is_clean(tmp_path, parallel, late):
    _assert_clean(_run(tmp_path, parallel, late), parallel)


@pytest.mark.parametrize("parallel,late", RACE_CASES + CONTROL_CASES)
def test_proxied_late_connection_keeps_roles(tmp_path, proxy_bin, parallel, late):
    run = _run(tmp_path, parallel, late, proxy_bin=proxy_bin)
    _assert_clean(run, parallel)
    _assert_proxy_saw_race(run, parallel, late)


# ---- TCP, late on the proxy-to-server hop ---------------------------------------------------

# The least the proxy's stream setup takes with every late connection waited for: the first
# retransmission of the cookie comes after the minimum RTO (200 ms on Linux).
LATE_DIAL_MIN_S = 0.2


@pytest.mark.parametrize("parallel,late", SERVER_HOP_CASES)
def test_proxied_late_server_connections_keep_roles(tmp_path, proxy_bin, parallel, late):
    run = _run(tmp_path, parallel, late, proxy_bin=proxy_bin, late_hop="server")
    _assert_clean(run, parallel)
    lines = [e.line for e in harness.session_ends(run.proxy_log or "")]
    assert len(lines) == 1 and " roles_repaired=0 " in lines[0], (
        f"the client's connections were in order; expected roles_repaired=0: {lines}")
    # The data connections the proxy dialled late were waited for one after the other: the
    # server's TEST_START, which it sends once it has accepted every stream, came that much
    # later than CREATE_STREAMS (both in the proxy's debug log).
    data_late = len([i for i in late if i > 0])
    setup = _stream_setup_seconds(run.proxy_log or "")
    print(f"stream setup: {setup} s with {data_late} late data connections")
    assert setup is not None and setup >= data_late * LATE_DIAL_MIN_S * 0.9, (
        f"stream setup took {setup} s with {data_late} late data connections\n{run.context()}")


def _stream_setup_seconds(log: str):
    """Seconds from the server's CREATE_STREAMS to its TEST_START in a proxy's debug log."""
    stamps = {}
    for state in ("CREATE_STREAMS", "TEST_START"):
        m = re.search(r"^(\S+) \w+ \[s:[^\]]+\] server -> " + state + "$", log, re.MULTILINE)
        if not m:
            return None
        stamps[state] = datetime.datetime.fromisoformat(m.group(1))
    return (stamps["TEST_START"] - stamps["CREATE_STREAMS"]).total_seconds()


# ---- TCP, IPv6 ------------------------------------------------------------------------------

@pytest.mark.parametrize("parallel,late", RACE_CASES_IPV6)
def test_ipv6_direct_late_sender_deadlocks(tmp_path, parallel, late):
    _assert_deadlock(_run(tmp_path, parallel, late, family=6), late)


@pytest.mark.parametrize("parallel,late", RACE_CASES_IPV6)
def test_ipv6_proxied_late_connection_keeps_roles(tmp_path, proxy_bin, parallel, late):
    run = _run(tmp_path, parallel, late, family=6, proxy_bin=proxy_bin)
    _assert_clean(run, parallel)
    _assert_proxy_saw_race(run, parallel, late)


# ---- UDP ------------------------------------------------------------------------------------

@pytest.mark.parametrize("parallel,family", UDP_CASES)
def test_udp_direct_late_control_is_clean(tmp_path, parallel, family):
    """No #2029 race for UDP even directly: stream setup is lock-step
    (docs/PROTOCOL.md §4.3, §7.5)."""
    _assert_clean(_run(tmp_path, parallel, {0}, family=family, udp=True), parallel, udp=True)


@pytest.mark.parametrize("parallel,family", UDP_CASES_PROXIED)
def test_udp_proxied_late_control_is_clean(tmp_path, proxy_bin, parallel, family):
    _assert_clean(_run(tmp_path, parallel, {0}, family=family, proxy_bin=proxy_bin, udp=True),
                  parallel, udp=True)
