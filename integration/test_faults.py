#!/usr/bin/python3
"""Faults: exhausted resources, limits, shutdown, and peers that die or go silent.

Run (no root needed; about 2 minutes):

    /usr/bin/python3 -m pytest integration/test_faults.py -v

Every case drives a real proxy binary with real iperf3 3.12 processes (and, where a real
client cannot misbehave precisely enough, a scripted fake client) and checks three things: the
fault costs only what it hits (the proxy keeps running and a real test passes afterwards, or
alongside), the client sees what the README's "Limits and failure behaviour" table promises,
and the proxy's log names the reason.

  fd exhaustion           the proxy under RLIMIT_NOFILE=48 pauses accepting, survives, serves;
                          no fd left for the backend: "busy", and the backend is not blamed
  1000 idle connections   evicted oldest-first past --max-pending while a real test runs;
                          a plain iperf3 -s is stalled by far fewer
  --max-tests             a second test is answered "busy" before it reaches the backend
  --max-duration          too long a -t is refused at once; a -n test is stopped at cap + 10 s
  SIGTERM / SIGINT        drain: running test completes, newcomers get "busy", exit 0;
                          --drain-timeout cuts it short; a second signal exits at once
  dying peers             backend or embedded server killed mid-test, client killed, client
                          silent (network gone): the test ends within its deadline, the
                          backend is released, the next test passes
  client abort by stage   FIN or RST from the client after every step of the control
                          protocol: one logged reason, the backend released at once
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from fake_client import (  # noqa: E402
    BASE_PARAMS, EXCHANGE_RESULTS, TEST_END, TEST_RUNNING, TEST_START, FakeClient,
    RUNNING_RE, BackgroundClient, assert_real_test_passes, client_results, context, count_log,
    ends_of, read_until_closed, wait_log, wait_session_end)
from test_lifetimes import (  # noqa: E402
    fd_count, is_sanitized, kill_leftover_server, process_state, settled_fd_count,
    wait_embedded)

CLIENT_TIMEOUT_S = 20.0
IO_TIMEOUT_S = 5.0
# "At once": a reaction that involves no deadline.
PROMPT_S = 2.0
# A peer that died is noticed through its FIN/RST; the client then ends within this.
DEATH_NOTICED_S = 3.0
IDLE_TIMEOUT_MS = 3000
# The proxy checks for idleness once a second (Session::onIdleTick).
IDLE_TICK_S = 1.0

BUSY = "busy"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def backend(tmp_path):
    with harness.start_iperf_server(log_dir=tmp_path) as server:
        yield server


def kill_mid_test(proxy: harness.Proxy, args: list[str], victim: str,
                  kill: Callable[[], None]) -> harness.ClientResult:
    """Runs a real test, kills `victim` half a second into it, and checks that the client then
    ends promptly with an error."""
    with BackgroundClient(proxy, args) as test:
        test.wait_running()
        time.sleep(0.5)
        kill()
        killed_at = time.monotonic()
        result = test.result()
    assert not result.hung and test.ended_at - killed_at < DEATH_NOTICED_S, context(
        proxy, f"client ended {test.ended_at - killed_at:.2f}s after the {victim} died",
        result.summary())
    assert result.error, context(proxy, "the client saw no error", result.summary())
    return result


def backend_idle(backend: harness.IperfServer) -> bool:
    """True once iperf3 -s has no connection left and listens: it has ended every test it took
    on (it closes all of a test's connections and re-opens its listener after each)."""
    return (backend.running() and harness.connected_sockets(backend.pid) == 0
            and harness.is_listening(backend.pid, backend.port))


def assert_backend_released(proxy: harness.Proxy, backend: harness.IperfServer,
                            timeout: float = PROMPT_S) -> None:
    assert harness.wait_until(lambda: backend_idle(backend), timeout), context(
        proxy, f"the backend is still in a test {timeout}s later "
               f"({harness.connected_sockets(backend.pid)} connections open)",
        "backend log:", backend.log_text()[-1500:])


def real_test_passes(proxy: harness.Proxy, args: Optional[list[str]] = None,
                     streams: int = 2, within: Optional[float] = None) -> harness.ClientResult:
    """A real test through the proxy passes (and, with `within`, takes at most that long)."""
    args = args or ["--bidir", "-t", "1"]
    result = harness.run_client(proxy.port, args, CLIENT_TIMEOUT_S)
    assert_real_test_passes(proxy, result, streams)
    if within is not None:
        assert result.duration <= within, context(
            proxy, f"{args} took {result.duration:.2f}s, expected at most {within}s")
    return result


def signal_proxy(proxy: harness.Proxy, sig: int) -> float:
    """Signal the proxy process itself (not its group: the embedded server has its own group,
    and only the proxy may stop it). Returns when."""
    proxy.proc.send_signal(sig)
    return time.monotonic()


def wait_exit(proxy: harness.Proxy, timeout: float) -> tuple[Optional[int], float]:
    """(exit code or None if still running, when it was seen gone)."""
    try:
        code = proxy.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.monotonic()
    return code, time.monotonic()


def assert_gone(pid: int) -> None:
    assert process_state(pid) is None, (
        f"embedded iperf3 server {pid} still there after the proxy exited: "
        f"state {process_state(pid)}")


def raise_own_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def open_idle(port: int, n: int) -> list[socket.socket]:
    """n TCP connections to the port that never send a byte."""
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S))
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def ports_of(socks: list[socket.socket]) -> set[int]:
    return {s.getsockname()[1] for s in socks}


def refused_ports(proxy: harness.Proxy, why: str) -> set[int]:
    return {int(m[1]) for m in re.finditer(
        rf"refused connection from 127\.0\.0\.1:(\d+): {why}", proxy.log_text())}


# --------------------------------------------------------------------------------------------
# 1. fd exhaustion
# --------------------------------------------------------------------------------------------

FD_LIMIT = 48
FD_IDLE_CONNECTIONS = 80
FD_COOKIE_TIMEOUT_MS = 1000


def test_fd_exhaustion_pauses_accepting_and_recovers(proxy_bin, backend, tmp_path):
    """Under RLIMIT_NOFILE=48, 80 idle connections drive accept(2) into EMFILE. The proxy pauses
    accepting (instead of spinning or dying), the cookie deadline frees the slots wave by wave,
    and once the idle connections are gone real tests pass."""
    if is_sanitized(proxy_bin):
        # UBSan's vptr check probes memory through a pipe(2) (IsAccessibleMemoryRange); with no
        # fd left that fails, and it reports "object has invalid vptr <memory cannot be
        # printed>" for a valid object and aborts (-fno-sanitize-recover). Not the proxy's.
        pytest.skip("fd exhaustion makes the UBSan runtime report false vptr errors")
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path, rlimit_nofile=FD_LIMIT,
                       extra_args=["--cookie-timeout", str(FD_COOKIE_TIMEOUT_MS)]) as proxy:
        baseline = settled_fd_count(proxy.pid)
        socks = open_idle(proxy.port, FD_IDLE_CONNECTIONS)
        try:
            wait_log(proxy, r"accept: .*; pausing new connections for \d+ ms$")
            assert "Too many open files" in proxy.log_text(), context(proxy)
            assert proxy.running(), context(proxy, f"proxy died: rc={proxy.returncode}")
            # Never more open than the limit allows (the kernel enforces it; this shows the
            # test really reached it).
            assert fd_count(proxy.pid) >= FD_LIMIT - 2, context(
                proxy, f"only {fd_count(proxy.pid)} fds open: EMFILE was not the reason")
            # Let them time out: every idle connection is accepted in some wave and refused at
            # the cookie deadline; a wave holds ~35, so 80 need ~3 deadlines.
            ours = ports_of(socks)
            assert harness.wait_until(
                lambda: ours <= refused_ports(proxy, "no complete cookie"),
                FD_IDLE_CONNECTIONS / (FD_LIMIT - 15) * FD_COOKIE_TIMEOUT_MS / 1000 + 5,
                interval=0.1), context(
                proxy, f"{len(ours - refused_ports(proxy, 'no complete cookie'))} of "
                       f"{len(ours)} idle connections were never refused at the deadline")
            assert harness.wait_until(lambda: fd_count(proxy.pid) == baseline, IO_TIMEOUT_S), (
                context(proxy, f"fds {fd_count(proxy.pid)}, {baseline} before"))
            # Still holding our ends open: the proxy has closed its ends, slots are free.
            real_test_passes(proxy, ["-t", "1"], streams=1)
            real_test_passes(proxy, ["--bidir", "-t", "1"], streams=2)
        finally:
            close_all(socks)
        assert proxy.running(), context(proxy, f"proxy died: rc={proxy.returncode}")
        code = proxy.stop()
    assert code == 0, context(proxy, f"proxy exit code {code}")


def test_no_fd_for_the_backend_is_the_proxys_limit_not_the_backends_fault(
        proxy_bin, backend, tmp_path):
    """With exactly one descriptor left, a client's control connection is accepted but the
    connection to the backend cannot be made (EMFILE). The client hears "busy" (try again), the
    log names local-resources, and the backend is not blamed: no "refuses connections", no
    backoff, the next test passes at once."""
    if is_sanitized(proxy_bin):
        pytest.skip("fd exhaustion makes the UBSan runtime report false vptr errors")
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path, extra_args=["--threads", "1"]) as proxy:
        settled_fd_count(proxy.pid)
        used = {int(name) for name in os.listdir(f"/proc/{proxy.pid}/fd")}
        free = [fd for fd in range(max(used) + 3) if fd not in used]
        soft, hard = resource.prlimit(proxy.pid, resource.RLIMIT_NOFILE)
        # The accepted connection gets free[0]; the backend socket would get free[1].
        resource.prlimit(proxy.pid, resource.RLIMIT_NOFILE, (free[1], hard))
        try:
            refused = harness.run_client(proxy.port, ["-t", "1"], timeout=CLIENT_TIMEOUT_S)
        finally:
            resource.prlimit(proxy.pid, resource.RLIMIT_NOFILE, (soft, hard))
        assert "busy" in (refused.error or ""), context(proxy, refused.summary())
        wait_log(proxy, r"reason=local-resources: connecting to backend 127\.0\.0\.1:\d+: "
                        r"Too many open files")
        real_test_passes(proxy, ["-t", "1"], streams=1)
        assert "refuses connections" not in proxy.log_text(), context(proxy)
        assert count_log(proxy, r"asking for another") == 0, context(proxy)
        assert proxy.stop() == 0, context(proxy)


# --------------------------------------------------------------------------------------------
# 2. A thousand idle connections and a real test
# --------------------------------------------------------------------------------------------

IDLE_CONNECTIONS = 1000
DEFAULT_MAX_PENDING = 512
DIRECT_IDLE_CONNECTIONS = 300
DIRECT_STALL_S = 3.0


def test_thousand_idle_connections_do_not_stop_a_real_test(proxy_bin, backend, tmp_path):
    raise_own_nofile(IDLE_CONNECTIONS + 256)
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path) as proxy:
        socks = open_idle(proxy.port, IDLE_CONNECTIONS)
        order = [s.getsockname()[1] for s in socks]
        try:
            evicted_re = (rf"refused connection from 127\.0\.0\.1:\d+: more than "
                          rf"{DEFAULT_MAX_PENDING} connections without a cookie; dropped the "
                          rf"oldest$")
            expected = IDLE_CONNECTIONS - DEFAULT_MAX_PENDING
            assert harness.wait_until(lambda: count_log(proxy, evicted_re) >= expected,
                                      IO_TIMEOUT_S), context(
                proxy, f"{count_log(proxy, evicted_re)} evictions, expected {expected}")
            # The idle connections are still open on our side while the real test runs.
            result = harness.run_client(proxy.port, harness.bidir_args(2, seconds=2),
                                        CLIENT_TIMEOUT_S)
            assert_real_test_passes(proxy, result, streams=4)
            problems = harness.bidir_problems(result, 2)
            assert not problems, context(proxy, *problems, result.summary())
        finally:
            close_all(socks)
        # Oldest first: the first connections were dropped, the newest were kept.
        evicted = refused_ports(proxy, f"more than {DEFAULT_MAX_PENDING} connections")
        assert set(order[:expected]) <= evicted, context(
            proxy, "not all of the oldest connections were dropped")
        # (The real test's 5 connections made room for themselves by 5 more.)
        kept = order[expected + 5 + 1:]
        assert not set(kept) & evicted, context(proxy, "newer connections were dropped")
        assert proxy.running()
        code = proxy.stop()
    assert code == 0, context(proxy, f"proxy exit code {code}")


def test_idle_connections_stall_a_direct_server(tmp_path):
    """Control for the test above: fewer idle connections hold a plain iperf3 -s 3.12 (it reads
    the cookie of the first one with a blocking read), so a real client gets nowhere."""
    with harness.start_iperf_server(log_dir=tmp_path) as server:
        socks = open_idle(server.port, DIRECT_IDLE_CONNECTIONS)
        try:
            result = harness.run_client(server.port, ["-t", "1"], timeout=DIRECT_STALL_S)
        finally:
            close_all(socks)
    assert result.hung or result.error or result.returncode != 0, (
        "a direct iperf3 -s served a client past idle connections; the proxied test above "
        "proves nothing then\n" + result.summary())


# --------------------------------------------------------------------------------------------
# 3. --max-tests
# --------------------------------------------------------------------------------------------


def test_max_tests_answers_busy(proxy_bin, backend, tmp_path):
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path, extra_args=["--max-tests", "1"]) as proxy:
        with BackgroundClient(proxy, ["-t", "3"]) as first:
            first.wait_running()
            second = harness.run_client(proxy.port, ["-t", "1"], CLIENT_TIMEOUT_S)
            sessions_meanwhile = count_log(proxy, r"\] new test from ")
            result = first.result()
        assert second.error and BUSY in second.error, context(proxy, second.summary())
        assert second.duration < PROMPT_S, context(proxy, second.summary())
        wait_log(proxy, r"refused a new test from 127\.0\.0\.1:\d+: 1 tests are already "
                        r"running or queued \(--max-tests\)$")
        # The proxy answered it itself: no session, so the backend never saw a second test.
        assert sessions_meanwhile == 1, context(proxy)
        assert_real_test_passes(proxy, result, streams=1)
        assert len(harness.session_ends(proxy.log_text())) == 1, context(proxy)
        # The slot is free again.
        real_test_passes(proxy, ["-t", "1"], streams=1)
        code = proxy.stop()
    assert code == 0, context(proxy, f"proxy exit code {code}")


# --------------------------------------------------------------------------------------------
# 4. --max-duration
# --------------------------------------------------------------------------------------------

MAX_DURATION_S = 2
# Session.cc kDurationGraceMs: a -n/-k test may run this long past the cap.
DURATION_GRACE_S = 10


def test_max_duration(proxy_bin, backend, tmp_path):
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path,
                       extra_args=["--max-duration", str(MAX_DURATION_S)]) as proxy:
        # Too long a -t: refused before the server sees the parameters.
        refused = harness.run_client(proxy.port, ["-t", "5"], CLIENT_TIMEOUT_S)
        assert refused.error and "duration" in refused.error and refused.duration < PROMPT_S, (
            context(proxy, refused.summary()))
        assert harness.wait_until(lambda: harness.session_ends(proxy.log_text()), PROMPT_S), (
            context(proxy, "no 'test ended' line for the refused test"))
        cookie = ((refused.json or {}).get("start") or {}).get("cookie")
        sid = cookie[:8] if cookie else None
        ends = harness.session_ends(proxy.log_text())
        assert len(ends) == 1 and ends[0].reason == "duration-exceeded", context(proxy)
        assert "-t 5 -O 0 is above --max-duration 2" in ends[0].detail, ends[0].line
        assert sid is None or ends[0].sid == sid
        assert_backend_released(proxy, backend)

        # Within the cap: passes.
        real_test_passes(proxy, ["-t", "1"], streams=1)

        # Bytes-bound, would run ~160 s: stopped once it runs 10 s past the cap.
        with BackgroundClient(proxy, ["-n", "2000M", "-b", "100M"], timeout=25.0) as long_test:
            running_at = long_test.wait_running()
            result = long_test.result()
        ran = long_test.ended_at - running_at
        limit = MAX_DURATION_S + DURATION_GRACE_S
        assert not result.hung and limit - 0.5 <= ran <= limit + 3, context(
            proxy, f"the -n test ended {ran:.1f}s after it started running; the cap is "
                   f"{MAX_DURATION_S}s + {DURATION_GRACE_S}s", result.summary())
        assert result.error, context(proxy, "the client did not notice", result.summary())
        ends = harness.session_ends(proxy.log_text())
        assert ends[-1].reason == "duration-exceeded", context(proxy, ends[-1].line)
        assert f"still running {DURATION_GRACE_S} s after --max-duration" in ends[-1].detail
        assert ends[-1].up_bytes > 0
        assert_backend_released(proxy, backend)
        real_test_passes(proxy, ["-t", "1"], streams=1)
        code = proxy.stop()
    assert code == 0, context(proxy, f"proxy exit code {code}")


# --------------------------------------------------------------------------------------------
# 5. Shutdown
# --------------------------------------------------------------------------------------------


def embedded_proxy(proxy_bin, tmp_path, *extra: str) -> tuple[harness.Proxy, int]:
    proxy = harness.Proxy(harness.free_port(), binary=proxy_bin, log_dir=tmp_path,
                          extra_args=list(extra)).start()
    try:
        pid, _ = wait_embedded(proxy, 1)
    except BaseException:
        proxy.stop()
        raise
    return proxy, pid


def test_sigterm_drains_running_test(proxy_bin, tmp_path):
    proxy, server_pid = embedded_proxy(proxy_bin, tmp_path)
    try:
        with BackgroundClient(proxy, ["--bidir", "-t", "4"]) as test:
            running_at = test.wait_running()
            time.sleep(1.0)
            sigterm_at = signal_proxy(proxy, signal.SIGTERM)
            wait_log(proxy, r"draining: no new tests; waiting for 1 running test\(s\)$")
            newcomer = harness.run_client(proxy.port, ["-t", "1"], CLIENT_TIMEOUT_S)
            assert proxy.running(), context(proxy, "the proxy did not wait for the test")
            result = test.result()
        code, exited_at = wait_exit(proxy, IO_TIMEOUT_S)
        assert code == 0, context(proxy, f"proxy exit code {code} after SIGTERM")
        problems = harness.bidir_problems(result, 1)
        assert not problems and result.returncode == 0, context(
            proxy, *problems, result.summary())
        assert newcomer.error and BUSY in newcomer.error, context(proxy, newcomer.summary())
        assert re.search(r"refused a new test from 127\.0\.0\.1:\d+: the proxy is shutting down",
                         proxy.log_text()), context(proxy)
        # It exited after the test, not at the signal: the test had ~3 s left then.
        assert exited_at - sigterm_at >= 2.0 and exited_at >= test.ended_at - 0.5, context(
            proxy, f"exited {exited_at - sigterm_at:.2f}s after SIGTERM; test ran "
                   f"{test.ended_at - running_at:.2f}s")
        log = proxy.log_text()
        ended = [e for e in harness.session_ends(log)]
        assert [e.reason for e in ended] == ["completed"], context(proxy)
        assert log.index(ended[0].line) < log.rindex("stopped"), context(proxy)
        assert_gone(server_pid)
    finally:
        proxy.stop()
        kill_leftover_server(server_pid)


DRAIN_TIMEOUT_MS = 1000


def test_drain_timeout_closes_running_test(proxy_bin, tmp_path):
    proxy, server_pid = embedded_proxy(proxy_bin, tmp_path,
                                       "--drain-timeout", str(DRAIN_TIMEOUT_MS))
    try:
        with BackgroundClient(proxy, ["-t", "5"]) as test:
            running_at = test.wait_running()
            time.sleep(0.5)
            sigterm_at = signal_proxy(proxy, signal.SIGTERM)
            code, exited_at = wait_exit(proxy, IO_TIMEOUT_S)
            result = test.result()
        took = exited_at - sigterm_at
        assert code == 0, context(proxy, f"proxy exit code {code}")
        assert DRAIN_TIMEOUT_MS / 1000 - 0.1 <= took <= DRAIN_TIMEOUT_MS / 1000 + 1.0, context(
            proxy, f"exited {took:.2f}s after SIGTERM; --drain-timeout {DRAIN_TIMEOUT_MS} ms")
        # The client is told: an error, or at least a test cut short.
        assert not result.hung and test.ended_at - running_at < 4.0, context(
            proxy, result.summary())
        assert result.error or result.returncode != 0, context(proxy, result.summary())
        log = proxy.log_text()
        deadline_line = "drain deadline reached; closing the remaining tests"
        assert deadline_line in log and re.search(r" info stopped$", log, re.MULTILINE), (
            context(proxy))
        ends = harness.session_ends(log)
        assert [e.reason for e in ends] == ["shutdown"], context(proxy)
        assert log.index(deadline_line) < log.index(ends[0].line) < log.rindex("stopped"), (
            context(proxy))
        assert_gone(server_pid)
    finally:
        proxy.stop()
        kill_leftover_server(server_pid)


def test_second_sigint_exits_at_once(proxy_bin, tmp_path):
    proxy, server_pid = embedded_proxy(proxy_bin, tmp_path)
    try:
        with BackgroundClient(proxy, ["--bidir", "-t", "5"]) as test:
            test.wait_running()
            signal_proxy(proxy, signal.SIGINT)
            wait_log(proxy, r"draining: no new tests; waiting for 1 running test\(s\)$")
            time.sleep(0.3)
            assert proxy.running(), context(proxy, "the first SIGINT did not drain")
            second_at = signal_proxy(proxy, signal.SIGINT)
            code, exited_at = wait_exit(proxy, IO_TIMEOUT_S)
            result = test.result()
        assert code == 0, context(proxy, f"proxy exit code {code}")
        assert exited_at - second_at < 1.0, context(
            proxy, f"exited {exited_at - second_at:.2f}s after the second SIGINT")
        assert "second signal: stopping now" in proxy.log_text(), context(proxy)
        ends = harness.session_ends(proxy.log_text())
        assert [e.reason for e in ends] == ["shutdown"], context(proxy)
        assert not result.hung and (result.error or result.returncode != 0), context(
            proxy, result.summary())
        assert_gone(server_pid)
    finally:
        proxy.stop()
        kill_leftover_server(server_pid)


# --------------------------------------------------------------------------------------------
# 6. Peers that die or go silent
# --------------------------------------------------------------------------------------------


# The server died: the proxy sees its control connection close (FIN) or reset. Not
# "completed": 3.12 clients send IPERF_DONE on their error path too (iperf_client_end), so an
# IPERF_DONE alone does not make a test complete.
KILLED_SERVER_REASONS = ("server-reset", "control-closed-early")


def assert_killed_test_logged(proxy: harness.Proxy, result: harness.ClientResult) -> None:
    cookie = ((result.json or {}).get("start") or {}).get("cookie", "")
    assert cookie, result.summary()
    end = wait_session_end(proxy, cookie[:8], timeout=PROMPT_S)
    assert end.level == "warning" and end.reason in KILLED_SERVER_REASONS, context(
        proxy, f"the server was killed mid-test; expected reason in {KILLED_SERVER_REASONS}",
        end.line)


def test_backend_killed_mid_test(proxy_bin, backend, tmp_path):
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path) as proxy:
        # No --rcv-timeout: the client must be ended by the proxy, not by its own timer.
        result = kill_mid_test(proxy, ["--bidir", "-P", "2", "-t", "5"], "backend",
                               lambda: os.killpg(backend.pid, signal.SIGKILL))
        assert_killed_test_logged(proxy, result)
        assert proxy.running(), context(proxy)
        backend.stop()
        # A new backend on the same port: the proxy serves again.
        with harness.IperfServer(backend.port, log_dir=tmp_path) as revived:
            real_test_passes(proxy, ["--bidir", "-t", "1"])
            # ...through the new server, which has ended that test too.
            assert_backend_released(proxy, revived)
            assert "Accepted connection from" in revived.log_text(), revived.log_text()
        code = proxy.stop()
    assert code == 0, context(proxy, f"proxy exit code {code}")


def test_embedded_server_killed_mid_test(proxy_bin, tmp_path):
    proxy, first_pid = embedded_proxy(proxy_bin, tmp_path)
    pids = [first_pid]
    try:
        result = kill_mid_test(proxy, ["--bidir", "-t", "5"], "server",
                               lambda: os.kill(first_pid, signal.SIGKILL))
        wait_log(proxy, r"embedded-1 iperf3 server exited \(signal 9\); restarting in \d+ ms$")
        assert_killed_test_logged(proxy, result)
        second_pid, _ = wait_embedded(proxy, 2)
        pids.append(second_pid)
        real_test_passes(proxy, ["--bidir", "-t", "1"])
        code = proxy.stop()
        assert code == 0, context(proxy, f"proxy exit code {code}")
        assert_gone(second_pid)
    finally:
        proxy.stop()
        for pid in pids:
            kill_leftover_server(pid)


@pytest.fixture
def idle_proxy(proxy_bin, backend, tmp_path):
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path,
                       extra_args=["--idle-timeout", f"{IDLE_TIMEOUT_MS}ms"]) as proxy:
        yield proxy


def test_client_killed_mid_test(idle_proxy, backend):
    proxy = idle_proxy
    proc = subprocess.Popen([harness.iperf3_binary(), "-c", "127.0.0.1", "-p", str(proxy.port),
                             "--bidir", "-P", "2", "-t", "10"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_log(proxy, RUNNING_RE, timeout=CLIENT_TIMEOUT_S)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(timeout=IO_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # The kernel closed its sockets (FIN, or RST where data was unread): noticed at once,
    # certainly within the idle deadline.
    bound = IDLE_TIMEOUT_MS / 1000 + IDLE_TICK_S + 0.5
    assert harness.wait_until(lambda: harness.session_ends(proxy.log_text()), bound), context(
        proxy, f"no 'test ended' line within {bound}s of the client's death")
    took = time.monotonic() - killed_at
    ends = harness.session_ends(proxy.log_text())
    assert len(ends) == 1 and ends[0].reason in ("control-closed-early", "client-reset"), (
        context(proxy))
    assert took < PROMPT_S, context(proxy, f"noticed {took:.2f}s after the client died")
    assert_backend_released(proxy, backend)
    real_test_passes(proxy, within=1 + PROMPT_S)
    assert proxy.stop() == 0, context(proxy)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_silent_client_released_at_idle_deadline(idle_proxy, backend, reverse):
    """The network vanishes: a client that did the handshake and opened its data connection
    goes silent without closing anything. Forward: nothing moves at all; reverse: the server
    writes until every buffer on the way is full. Either way the proxy ends the test at the
    idle deadline and releases the backend."""
    proxy = idle_proxy
    fake = FakeClient(proxy.port)
    try:
        # A long -t: the server must not end the test on its own account.
        fake.start(time=60, reverse=reverse)
        stream = fake.open_stream()
        fake.expect_state(TEST_START)
        fake.expect_state(TEST_RUNNING)
        if not reverse:
            stream.sendall(b"\0" * 65536)
        silent_at = time.monotonic()
        # Not before the deadline (reverse: the buffers fill within a moment of the start)...
        time.sleep(IDLE_TIMEOUT_MS / 1000 - 0.5)
        assert not ends_of(proxy, fake.sid), context(proxy, "ended before the idle deadline")
        # ...but at it.
        end = wait_session_end(proxy, fake.sid, timeout=IDLE_TICK_S * 2 + 1.5)
        took = time.monotonic() - silent_at
        assert end.reason == "idle-timeout" and end.level == "warning", context(proxy, end.line)
        assert re.fullmatch(r"nothing moved for \d+ ms", end.detail), end.line
        if reverse:
            assert end.down_bytes > 0, end.line
        else:
            assert end.up_bytes == 65536, end.line
        assert took < IDLE_TIMEOUT_MS / 1000 + 2 * IDLE_TICK_S + 1, context(
            proxy, f"ended {took:.2f}s after the client went silent")
        assert_backend_released(proxy, backend)
        real_test_passes(proxy, within=1 + PROMPT_S)
    finally:
        fake.close()
    assert proxy.stop() == 0, context(proxy)


# --------------------------------------------------------------------------------------------
# 7. The client goes away (FIN or RST) at every stage of the control protocol
# --------------------------------------------------------------------------------------------

PAYLOAD = 256 * 1024


def after_cookie(fake: FakeClient) -> None:
    fake.send(fake.cookie)


def after_param_exchange(fake: FakeClient) -> None:
    fake.hello()


PARAMS_BODY = json.dumps(BASE_PARAMS).encode()
# Cookie, length, half the JSON.
MID_PARAMS_OFFSET = 37 + 4 + len(PARAMS_BODY) // 2


def mid_params(fake: FakeClient) -> None:
    fake.hello()
    fake.send(struct.pack(">I", len(PARAMS_BODY)) + PARAMS_BODY[:len(PARAMS_BODY) // 2])


def after_create_streams(fake: FakeClient) -> None:
    fake.start(time=60)


def mid_test(fake: FakeClient) -> None:
    fake.start(time=60)
    stream = fake.open_stream()
    fake.expect_state(TEST_START)
    fake.expect_state(TEST_RUNNING)
    stream.sendall(b"\0" * PAYLOAD)


def after_test_end(fake: FakeClient) -> None:
    mid_test(fake)
    fake.send(bytes([TEST_END]))


def after_client_results(fake: FakeClient) -> None:
    after_test_end(fake)
    fake.expect_state(EXCHANGE_RESULTS)
    fake.send_json(client_results({1: PAYLOAD}))


STAGES = [after_cookie, after_param_exchange, mid_params, after_create_streams, mid_test,
          after_test_end, after_client_results]


def go_away(fake: FakeClient, how: str) -> tuple[bytes, str]:
    """FIN: half-close every connection and wait for the proxy to close the control connection
    (what it sends meanwhile is returned); RST: SO_LINGER {1, 0} and close."""
    socks = [fake.control, *fake.streams]
    if how == "rst":
        for sock in socks:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        fake.close()
        return b"", "rst"
    for sock in socks:
        sock.shutdown(socket.SHUT_WR)
    data, outcome = read_until_closed(fake.control, PROMPT_S)
    fake.close()
    return data, outcome


# (reason, text in its detail) per way of going away. A FIN inside the params message is a
# message cut short, which the codec names.
EXPECTED_END = {"fin": ("control-closed-early", ""), "rst": ("client-reset", "reset by peer")}
EXPECTED_END_AT = {("mid_params", "fin"): (
    "protocol-error",
    f"client at byte {MID_PARAMS_OFFSET}: message cut short (end of stream inside a message)")}


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("stage", STAGES, ids=[s.__name__.replace("_", "-") for s in STAGES])
def test_client_goes_away(proxy_bin, backend, tmp_path, stage: Callable[[FakeClient], None],
                          how: str):
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path) as proxy:
        fake = FakeClient(proxy.port)
        try:
            stage(fake)
            gone_at = time.monotonic()
            tail, outcome = go_away(fake, how)
        finally:
            fake.close()
        if how == "fin":
            # Half-closed, the client is closed in turn (not left hanging), at once.
            assert outcome in ("eof", "reset"), context(
                proxy, f"after the client's FIN: {outcome}, got {tail!r}")
        end = wait_session_end(proxy, fake.sid, timeout=PROMPT_S)
        took = time.monotonic() - gone_at
        reason, detail = EXPECTED_END_AT.get((stage.__name__, how), EXPECTED_END[how])
        assert end.level == "warning" and end.reason == reason and detail in end.detail, context(
            proxy, f"stage {stage.__name__}, {how}: expected reason={reason}: ...{detail}...",
            end.line)
        assert took < PROMPT_S, context(proxy, f"session ended {took:.2f}s after the client")
        assert_backend_released(proxy, backend)
        real_test_passes(proxy, within=1 + PROMPT_S)
        assert proxy.running()
        code = proxy.stop()
    assert code == 0, context(proxy, f"proxy exit code {code}")
