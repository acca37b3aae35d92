#!/usr/bin/python3
"""The iperf3 --bidir role race (esnet/iperf#2029) with and without the proxy.

Run (root; about 1-2 minutes):

    /usr/bin/python3 -m pytest integration/test_race.py -v
    IPERF3_PROXY_BIN=/path/to/iperf3-proxy /usr/bin/python3 -m pytest integration/test_race.py

Each case runs in its own network namespace, where race_testbed.LateHandshakeRule makes the
chosen connections to the listening port complete their handshake ~200 ms late, so the
connections the client opened after them are accepted first (see race_testbed.py).
Connection index 0 is iperf3's control connection; for `--bidir -P N`, 1..N are the client's
sending streams and N+1..2N its receiving streams.

  DIRECT   client -> iperf3 -s, rule on the server's port. A late sending stream makes the
           server hand the receiving role to a client receiver: the test must show the
           deadlock (client error or hang, or a receiving stream with 0 bytes).
  CONTROL  same, but the late connection does not cross the sender/receiver boundary
           (a late receiver, or the control connection): the test must be clean. This shows
           the drops alone do no harm and the result checks do not cry wolf.
  PROXIED  client -> proxy -> iperf3 -s, rule on the PROXY's port (nothing on the server's):
           the proxy has to restore the client's roles, so every case must be clean and
           every receiving stream in both directions must have moved data.
           Skipped only if the proxy binary does not exist.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from race_testbed import LateHandshakeRule, NetNamespace  # noqa: E402

pytestmark = pytest.mark.usefixtures("race_env")

TEST_SECONDS = 3
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
# Late connections that stay on their side of the boundary: the roles stay right.
CONTROL_CASES = [
    pytest.param(1, {2}, id="P1-late2"),
    pytest.param(1, {0}, id="P1-late0-control-conn"),
    pytest.param(4, {5}, id="P4-late5"),
]

# Errors a 3.12 client reports when the swapped roles stall a receiving stream (§7.3).
DEADLOCK_ERRORS = ("idle timeout for receiving data", "control socket has closed unexpectedly")


def _client_args(parallel: int) -> list[str]:
    return harness.bidir_args(parallel, TEST_SECONDS, RCV_TIMEOUT_MS)


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


def _run_direct(tmp_path: Path, parallel: int, late: set[int]):
    with NetNamespace("direct") as ns:
        port = harness.free_port(ns.name)
        with harness.IperfServer(port, netns=ns.name, log_dir=tmp_path) as server:
            rule = LateHandshakeRule(ns.name, port, late).install()
            result = harness.run_client(port, _client_args(parallel), CLIENT_TIMEOUT_S,
                                        netns=ns.name)
            # Prove the testbed did exactly what it claims before judging iperf3.
            rule.assert_hit_exactly(result.json)
            return result, server.log_text()


@pytest.mark.parametrize("parallel,late", RACE_CASES)
def test_direct_late_sender_deadlocks(tmp_path, parallel, late):
    result, server_log = _run_direct(tmp_path, parallel, late)
    print(f"DIRECT --bidir -P {parallel} late={sorted(late)}:\n{result.summary()}")
    evidence = _deadlock_evidence(result)
    assert evidence, (f"expected the #2029 deadlock with late connections {sorted(late)}, "
                      f"but the test looks clean or failed differently:\n{result.summary()}\n"
                      f"server log tail:\n{server_log[-2000:]}")


@pytest.mark.parametrize("parallel,late", CONTROL_CASES)
def test_direct_late_without_role_crossing_is_clean(tmp_path, parallel, late):
    result, server_log = _run_direct(tmp_path, parallel, late)
    problems = harness.bidir_problems(result, parallel)
    assert not problems, ("\n".join(problems) + f"\n{result.summary()}\n"
                          f"server log tail:\n{server_log[-2000:]}")


@pytest.mark.parametrize("parallel,late", RACE_CASES + CONTROL_CASES)
def test_proxied_late_connection_keeps_roles(tmp_path, proxy_bin, parallel, late):
    with NetNamespace("proxied") as ns:
        server_port = harness.free_port(ns.name)
        with harness.IperfServer(server_port, netns=ns.name, log_dir=tmp_path) as server:
            proxy_port = harness.free_port(ns.name)
            with harness.Proxy(proxy_port, backend=server_port, netns=ns.name,
                               binary=proxy_bin, log_dir=tmp_path) as proxy:
                # The rule sits on the proxy's port only: the proxy sees the client's
                # connections out of order and must not pass that order on to the server.
                rule = LateHandshakeRule(ns.name, proxy_port, late).install()
                result = harness.run_client(proxy_port, _client_args(parallel),
                                            CLIENT_TIMEOUT_S, netns=ns.name)
                proxy_alive = proxy.running()
                rule.assert_hit_exactly(result.json)
            context = (f"{result.summary()}\nproxy exit={proxy.exit_code} "
                       f"alive after client={proxy_alive}\nproxy log tail:\n{proxy.log_tail()}"
                       f"\nserver log tail:\n{server.log_text()[-2000:]}")
    print(f"PROXIED --bidir -P {parallel} late={sorted(late)}:\n{result.summary()}")
    problems = harness.bidir_problems(result, parallel)
    assert not problems, "\n".join(problems) + "\n" + context
    assert proxy_alive, "proxy exited during the test\n" + context
