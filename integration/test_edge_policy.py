#!/usr/bin/python3
"""Options as iperf3 users expect them, and the edge policy, with real iperf3 3.12 processes.

Run (no root needed; about 30 seconds):

    /usr/bin/python3 -m pytest integration/test_edge_policy.py -v

  options after --        reach every embedded iperf3 -s: authentication end to end (the right
                          password passes, none and a wrong one fail as they would directly)
  options iperf3 refuses  the proxy exits at start with iperf3's own words, whether iperf3
                          refuses them as it parses (an unknown option) or only when it sets
                          up (CPU affinity); the proxy's own (-s, -p, -D, ...) are refused
  durations               take units; a bare number is the option's documented unit
  --max-streams           each refused before the test starts, with the error the real
  --max-bitrate             client prints, one log line, and the server never reading the
  --max-duration            test's parameters (its log has no "Accepted connection")
  --max-tests-per-client  a second test from one address hears "busy"; another address runs
  --allow / --deny        a denied address hears "test authorization failed" at once, and no
                          server sees a byte of it
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from fake_client import (  # noqa: E402
    BackgroundClient, assert_real_test_passes, context, count_log, wait_log)

CLIENT_TIMEOUT_S = 20.0
# "At once": a reaction that involves no deadline.
PROMPT_S = 2.0
AUTH_USER = "mario"
AUTH_PASSWORD = "rossi"
# iperf3 -s prints this once it has read a test's parameters (iperf_on_connect).
ACCEPTED = r"Accepted connection from"


def start_proxy(proxy_bin, tmp_path, *args: str, backend=None) -> harness.Proxy:
    return harness.Proxy(harness.free_port(), backend=backend, binary=proxy_bin,
                         log_dir=tmp_path, extra_args=list(args)).start()


def run_proxy_to_exit(proxy_bin, *args: str) -> subprocess.CompletedProcess:
    """Runs the proxy with arguments it must refuse; it may not start serving."""
    return subprocess.run([str(proxy_bin), "-p", str(harness.free_port()), *args],
                          capture_output=True, text=True, timeout=30, check=False)


def refused_with(proxy: harness.Proxy, args: list[str], message: str) -> harness.ClientResult:
    """A real client's test is refused before it starts: iperf3 prints `message` at once."""
    result = harness.run_client(proxy.port, args, CLIENT_TIMEOUT_S)
    assert result.error and message in result.error, context(proxy, result.summary())
    assert not result.streams() and result.duration < PROMPT_S, context(proxy, result.summary())
    return result


def session_end_of(proxy: harness.Proxy, result: harness.ClientResult) -> harness.SessionEnd:
    cookie = ((result.json or {}).get("start") or {}).get("cookie", "")
    assert cookie, result.summary()
    assert harness.wait_until(lambda: any(e.sid == cookie[:8] for e in
                                          harness.session_ends(proxy.log_text())), PROMPT_S)
    return next(e for e in harness.session_ends(proxy.log_text()) if e.sid == cookie[:8])


# --------------------------------------------------------------------------------------------
# Options after --
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, str]:
    """An RSA key pair and an authorized-users file, made for this run."""
    return harness.make_auth_files(tmp_path_factory.mktemp("edge-keys"), AUTH_USER, AUTH_PASSWORD)


def test_authentication_end_to_end_through_options_after_double_dash(proxy_bin, tmp_path, keys,
                                                                    monkeypatch):
    # The password of every client below, unless it says otherwise (a client with --username
    # and no IPERF3_PASSWORD would ask for one on the terminal).
    monkeypatch.setenv("IPERF3_PASSWORD", AUTH_PASSWORD)
    proxy = start_proxy(proxy_bin, tmp_path, "--servers", "2", "--",
                        "--rsa-private-key-path", keys["privkey"],
                        "--authorized-users-path", keys["users"])
    try:
        credentials = ["--username", AUTH_USER, "--rsa-public-key-path", keys["pubkey"]]
        good = harness.run_client(proxy.port, [*credentials, "-t", "1"], CLIENT_TIMEOUT_S)
        assert_real_test_passes(proxy, good, streams=1)
        # Both embedded servers got the options: two tests at once land on both.
        with BackgroundClient(proxy, [*credentials, "-t", "3"]) as first:
            first.wait_running()
            second = harness.run_client(proxy.port, [*credentials, "-t", "1"], CLIENT_TIMEOUT_S)
            running = first.result()
        assert_real_test_passes(proxy, second, streams=1)
        for result in (running, second):
            assert "embedded-" in session_end_of(proxy, result).line
        assert {re.search(r"backend=(embedded-\d)", session_end_of(proxy, r).line)[1]
                for r in (running, second)} == {"embedded-1", "embedded-2"}, context(proxy)
        # Without credentials, and with a wrong password, the servers refuse the test.
        for env, args in (({}, ["-t", "1"]),
                          ({"IPERF3_PASSWORD": "wrong"}, [*credentials, "-t", "1"])):
            refused = harness.run_client(proxy.port, args, CLIENT_TIMEOUT_S, env=env)
            assert refused.error and "authorization failed" in refused.error, context(
                proxy, refused.summary())
        assert count_log(proxy, r"\[embedded-\d iperf3 -s\] iperf3: error - test authorization "
                                r"failed$") == 2, context(proxy)
    finally:
        proxy.stop()


@pytest.mark.parametrize("args,message", [
    # Refused by iperf3 as it parses its arguments.
    (["--no-such-option"], "unrecognized option '--no-such-option'"),
    (["-t", "5"], "some option you are trying to set is client only"),
    # Refused by iperf3 only as it sets up, after parsing: the proxy waits until it listens.
    (["-A", "99999"], "unable to set CPU affinity"),
], ids=["unknown", "client-only", "affinity"])
def test_options_iperf3_refuses_stop_the_proxy_with_its_own_words(proxy_bin, args, message):
    done = run_proxy_to_exit(proxy_bin, "--", *args)
    assert done.returncode == 2, done
    assert "would not start with the options after --" in done.stderr + done.stdout, done
    assert message in done.stderr + done.stdout, done
    assert "ready" not in done.stdout + done.stderr, done


@pytest.mark.parametrize("args", [["-s"], ["-p", "5201"], ["-B", "0.0.0.0"], ["-D"], ["-1"],
                                  ["--logfile", "/tmp/x"], ["-VD"], ["--one"]],
                         ids=lambda a: " ".join(a))
def test_the_proxys_own_options_are_refused(proxy_bin, args):
    done = run_proxy_to_exit(proxy_bin, "--", *args)
    assert done.returncode == 2, done
    assert "cannot be passed to the embedded iperf3 servers" in done.stderr, done


# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (["--idle-timeout", "0"], "outside 1s to 86400s"),
    (["--idle-timeout", "90000"], "outside 1s to 86400s"),  # seconds, not milliseconds
    (["--cookie-timeout", "5x"], "unknown unit 'x'"),
    (["--max-duration", "1500ms"], "not a whole number of seconds"),
    (["--max-bitrate", "1Q"], "not a rate"),
    (["--allow", "10.0.0.1/8"], "address bits set beyond its /8"),
])
def test_malformed_values_are_argument_errors(proxy_bin, args, message):
    done = run_proxy_to_exit(proxy_bin, *args)
    assert done.returncode == 2 and message in done.stderr, done


def test_durations_take_units_and_bare_numbers_their_documented_unit(proxy_bin, tmp_path):
    # --cookie-timeout is the proxy's own (bare: ms); --idle-timeout is iperf3's (bare: s).
    proxy = start_proxy(proxy_bin, tmp_path, "--cookie-timeout", "0.5s", "--idle-timeout", "2",
                        "--max-duration", "1m")
    try:
        silent = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        opened = time.monotonic()
        assert silent.recv(1) == b""
        waited = time.monotonic() - opened
        assert 0.4 <= waited < PROMPT_S, context(proxy, f"closed after {waited:.2f}s")
        silent.close()
        assert_real_test_passes(proxy, harness.run_client(proxy.port, ["-t", "1"],
                                                          CLIENT_TIMEOUT_S), streams=1)
    finally:
        proxy.stop()


# --------------------------------------------------------------------------------------------
# Edge policy: per test
# --------------------------------------------------------------------------------------------


def test_per_test_limits_refuse_before_the_server_reads_the_test(proxy_bin, tmp_path):
    with harness.start_iperf_server(log_dir=tmp_path) as backend:
        proxy = start_proxy(proxy_bin, tmp_path, "--max-streams", "2", "--max-bitrate", "10M",
                            "--max-duration", "3", backend=backend.port)
        try:
            cases = [
                (["-P", "3", "-b", "1M", "-t", "1"], "number of parallel streams too large",
                 "too-many-streams", "3 data streams (-P 3) are above --max-streams 2"),
                (["--bidir", "-P", "2", "-b", "1M", "-t", "1"],
                 "number of parallel streams too large", "too-many-streams",
                 "4 data streams (-P 2 --bidir) are above --max-streams 2"),
                (["-t", "1"], "total required bandwidth is larger than server limit",
                 "bitrate-exceeded", "no -b limit (TCP's default) is above --max-bitrate 10M"),
                (["-u", "-b", "0", "-t", "1"], "total required bandwidth is larger than server "
                 "limit", "bitrate-exceeded", "no -b limit (-b 0) is above --max-bitrate 10M"),
                (["-u", "-b", "6M", "-P", "2", "-t", "1"], "total required bandwidth",
                 "bitrate-exceeded", "-b 6M x 2 streams is above --max-bitrate 10M"),
                (["-b", "1M", "-t", "5"], "test duration too long", "duration-exceeded",
                 "-t 5 -O 0 is above --max-duration 3"),
            ]
            for args, client_says, reason, detail in cases:
                result = refused_with(proxy, args, client_says)
                end = session_end_of(proxy, result)
                assert (end.reason, end.detail) == (reason, detail), context(proxy, end.line)
            # Within every limit (5M each way is 10M in all): the test runs.
            passed = harness.run_client(proxy.port, ["--bidir", "-b", "5M", "-t", "1"],
                                        CLIENT_TIMEOUT_S)
            assert_real_test_passes(proxy, passed, streams=2)
            # The server read the parameters of that test only.
            assert len(re.findall(ACCEPTED, backend.log_text())) == 1, backend.log_text()
            assert len(harness.session_ends(proxy.log_text())) == len(cases) + 1
        finally:
            proxy.stop()


# --------------------------------------------------------------------------------------------
# Edge policy: per connection (the front)
# --------------------------------------------------------------------------------------------


def test_per_client_limit_and_address_blocks(proxy_bin, tmp_path):
    # The dual-stack listener shows 127.0.0.3 as ::ffff:127.0.0.3: the IPv4 blocks match it.
    proxy = start_proxy(proxy_bin, tmp_path, "--servers", "2", "--max-tests-per-client", "1",
                        "--allow", "127.0.0.0/8", "--deny", "127.0.0.3")
    try:
        with BackgroundClient(proxy, ["-t", "3"]) as first:
            first.wait_running()
            # A second test from the same address: "busy", before any server is asked.
            busy = refused_with(proxy, ["-t", "1"], "the server is busy running a test")
            assert busy.error
            wait_log(proxy, r"refused a new test from 127\.0\.0\.1:\d+: 127\.0\.0\.1 already "
                            r"has 1 tests running or queued \(--max-tests-per-client\)$")
            # Another address runs at the same time, on the other server.
            other = harness.run_client(proxy.port, ["-B", "127.0.0.2", "-t", "1"],
                                       CLIENT_TIMEOUT_S)
            assert_real_test_passes(proxy, other, streams=1)
            # A denied address hears so at once; nothing of it reaches a server or a session.
            denied = refused_with(proxy, ["-B", "127.0.0.3", "-t", "1"],
                                  "test authorization failed")
            assert denied.error
            wait_log(proxy, r"refused connection from 127\.0\.0\.3:\d+: --deny 127\.0\.0\.3$")
            result = first.result()
        assert_real_test_passes(proxy, result, streams=1)
        # The slot is free again once the first test ended.
        assert_real_test_passes(proxy, harness.run_client(proxy.port, ["-t", "1"],
                                                          CLIENT_TIMEOUT_S), streams=1)
        # IPv6 is held by no --allow.
        ipv6 = harness.run_client(proxy.port, ["-t", "1"], CLIENT_TIMEOUT_S, host="::1")
        assert ipv6.error and "test authorization failed" in ipv6.error, context(proxy,
                                                                                 ipv6.summary())
        wait_log(proxy, r"refused connection from \[::1\]:\d+: no --allow holds it$")
        # Three tests ran; the refused ones never had a session, and no server saw them.
        assert len(harness.session_ends(proxy.log_text())) == 3, context(proxy)
        assert count_log(proxy, r"\[embedded-\d iperf3 -s\] " + ACCEPTED) == 3, context(proxy)
        code = proxy.stop()
        assert code == 0
        assert re.search(r"refused-busy=1 \(per-client=1\) \| connections refused: denied=2 ",
                         proxy.log_text()), context(proxy)
    finally:
        proxy.stop()
