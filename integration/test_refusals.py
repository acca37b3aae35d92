#!/usr/bin/python3
"""What the front refuses, and how it says so: the real proxy binary, real iperf3 3.12.

    /usr/bin/python3 -m pytest integration/test_refusals.py      # about 20 seconds

  late data connection  a connection with the cookie of a test that has ended (a data
                        connection that came too late) is answered ACCESS_DENIED and closed; it
                        does not reach the backend as a test of its own (the front remembers
                        recently ended cookies, src/proxy/recent_cookies.h)
  floods of refusals    garbage connections, idle connections evicted past --max-pending, new
                        tests while the only backend is busy: each refusal has exactly one line
                        at debug level; at warning level the first of a second is shown and one
                        line counts the rest, so at most two warnings per second and kind of
                        refusal (src/proxy/throttled_log.h)
  evicted connection    a connection dropped to make room for a newer one never becomes a test,
                        whichever of its cookie and the newer connection the proxy sees first
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import socket
import sys
from pathlib import Path
from typing import Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from fake_client import (  # noqa: E402
    ACCESS_DENIED, BackgroundClient, CLIENT_TIMEOUT_S, IO_TIMEOUT_S, assert_real_test_passes,
    context, dial, new_cookie, read_until_closed, wait_log)

# ThrottledLog's interval in the proxy (Server: one per kind of refusal).
THROTTLE_S = 1.0


@pytest.fixture
def backend(tmp_path):
    with harness.start_iperf_server(log_dir=tmp_path) as server:
        yield server


def accepted_by(server: harness.IperfServer) -> int:
    """Control connections the iperf3 server accepted (one per test it ran)."""
    return len(re.findall(r"^Accepted connection from ", server.log_text(), re.MULTILINE))


# --------------------------------------------------------------------------------------------
# A data connection after its test ended
# --------------------------------------------------------------------------------------------


def test_a_data_connection_after_its_test_ended_is_refused(proxy_bin, backend, tmp_path):
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path) as proxy:
        result = harness.run_client(proxy.port, ["-t", "1"], CLIENT_TIMEOUT_S)
        assert_real_test_passes(proxy, result, streams=1)
        cookie = result.json["start"]["cookie"].encode() + b"\0"
        tests_before = accepted_by(backend)
        late = dial(proxy.port)
        port = late.getsockname()[1]
        late.sendall(cookie)
        answer, how = read_until_closed(late)
        late.close()
        # What iperf3 -s answers a data connection it does not want.
        assert (answer, how) == (bytes([ACCESS_DENIED]), "eof"), context(
            proxy, f"the late connection got {answer!r}, then {how}")
        wait_log(proxy, rf"refused connection from 127\.0\.0\.1:{port}: its test has already "
                        rf"ended$")
        # Not a test of its own: no session, nothing reached the backend.
        assert f"new test from 127.0.0.1:{port}" not in proxy.log_text(), context(proxy)
        assert len(harness.session_ends(proxy.log_text())) == 1, context(proxy)
        assert accepted_by(backend) == tests_before, backend.log_text()
        # The backend is free for the next test.
        result = harness.run_client(proxy.port, ["-t", "1"], CLIENT_TIMEOUT_S)
        assert_real_test_passes(proxy, result, streams=1)


# --------------------------------------------------------------------------------------------
# Floods of refusals
# --------------------------------------------------------------------------------------------

_LOG_LINE_RE = re.compile(r"^(?P<time>\S+) (?P<level>\w+) (?P<text>.*)$", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class LogLine:
    time: datetime.datetime
    level: str
    text: str


def log_lines(log: str) -> list[LogLine]:
    lines = []
    for m in _LOG_LINE_RE.finditer(log):
        try:
            when = datetime.datetime.fromisoformat(m["time"])
        except ValueError:
            continue  # not a line of the proxy's own (e.g. an embedded server's output)
        lines.append(LogLine(when, m["level"], m["text"]))
    return lines


def counted_refusals(proxy: harness.Proxy, kind: str) -> int:
    return sum(int(n) for n in re.findall(rf"\.\.\. and (\d+) more {kind} within 1000 ms",
                                          proxy.log_text()))


# Every line one ThrottledLog writes for its events, whatever the reason given.
KIND_LINES = {"refused connections": r"^refused connection from ",
              "refused tests": r"^refused a new test from "}


def flood_problems(proxy: harness.Proxy, event: str, kind: str, count: int) -> list[str]:
    """What is wrong with how the proxy logged `count` refusals matching `event` (a regex of
    the line's text), throttled as `kind` ([] if it is right)."""
    lines = log_lines(proxy.log_text())
    events = [ln for ln in lines if re.search(event, ln.text)]
    # The other refusals of the same kind share the throttle (e.g. the flood's last pending
    # connections, closed at its end): the counts account for all of them.
    of_kind = [ln for ln in lines if re.search(KIND_LINES[kind], ln.text)]
    shown = [ln for ln in of_kind if ln.level == "warning"]
    counts = [ln for ln in lines if ln.level == "warning" and
              re.match(rf"\.\.\. and \d+ more {kind} within", ln.text)]
    problems = []
    if len(events) != count:
        problems.append(f"{len(events)} lines for {count} refusals")
    if any(ln.level not in ("warning", "debug") for ln in of_kind):
        problems.append(f"levels: {sorted({ln.level for ln in of_kind})}")
    if len(shown) + counted_refusals(proxy, kind) != len(of_kind):
        problems.append(f"{len(shown)} shown and {counted_refusals(proxy, kind)} counted, for "
                        f"{len(of_kind)} {kind}")
    warnings = sorted(ln.time for ln in shown + counts)
    for t in warnings:
        within = [u for u in warnings if t <= u < t + datetime.timedelta(seconds=THROTTLE_S)]
        if len(within) > 2:
            problems.append(f"{len(within)} warnings within a second from {t}")
            break
    if count > 10 and len(shown) > count // 2:
        problems.append(f"{len(shown)} of {count} refusals shown as warnings: not throttled")
    return problems


GARBAGE = b"GET / HTTP/1.0\r\n\r\n"
FLOOD = 200
MAX_PENDING = 4


def flood_garbage(proxy: harness.Proxy) -> int:
    for _ in range(FLOOD):
        with dial(proxy.port) as sock:
            sock.sendall(GARBAGE)
    return FLOOD


def flood_evictions(proxy: harness.Proxy) -> int:
    socks = [dial(proxy.port) for _ in range(FLOOD)]
    try:
        wait_log(proxy, r"refused connection from 127\.0\.0\.1:" +
                 str(socks[FLOOD - MAX_PENDING - 1].getsockname()[1]) + ": more than")
    finally:
        for sock in socks:
            sock.close()
    return FLOOD - MAX_PENDING


def flood_busy(proxy: harness.Proxy) -> int:
    busy = FLOOD // 4
    with BackgroundClient(proxy, ["-t", "4"]) as running:
        running.wait_running()
        for _ in range(busy):
            with dial(proxy.port) as sock:
                sock.sendall(new_cookie())
                answer, _ = read_until_closed(sock)
                assert answer == bytes([ACCESS_DENIED]), answer
        assert_real_test_passes(proxy, running.result(), streams=1)
    return busy


# flood -> (run it, the refusal's line, its kind in the count line, proxy arguments)
FLOODS = {
    "garbage": (flood_garbage, r"^refused connection from 127\.0\.0\.1:\d+: not an iperf3 "
                               r"cookie", "refused connections", []),
    "evicted": (flood_evictions, r"^refused connection from 127\.0\.0\.1:\d+: more than "
                                 rf"{MAX_PENDING} connections without a cookie; dropped the "
                                 r"oldest$", "refused connections",
                ["--max-pending", str(MAX_PENDING)]),
    "busy": (flood_busy, r"^refused a new test from 127\.0\.0\.1:\d+: every backend is running "
                         r"a test$", "refused tests", []),
}


@pytest.mark.parametrize("flood", list(FLOODS))
def test_a_flood_of_refusals_is_throttled_at_warning_level_and_complete_at_debug(
        proxy_bin, backend, tmp_path, flood):
    run, event, kind, args = FLOODS[flood]
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path, extra_args=args) as proxy:
        count = run(proxy)
        # The last count comes at the end of its second.
        harness.wait_until(lambda: not flood_problems(proxy, event, kind, count),
                           THROTTLE_S + IO_TIMEOUT_S)
        problems = flood_problems(proxy, event, kind, count)
        assert not problems, context(proxy, *problems)
        assert proxy.running(), context(proxy)


# --------------------------------------------------------------------------------------------
# An evicted connection
# --------------------------------------------------------------------------------------------

EVICTION_ROUNDS = 30


def test_an_evicted_connection_never_becomes_a_test(proxy_bin, backend, tmp_path):
    """--max-pending 1: a connection A with all but the last byte of its cookie, then a new
    connection B (which evicts A, unless A's cookie is complete by then) and A's last byte, in
    either order, so that the proxy often sees both in one turn of its loop. Whatever it sees
    first, A is either evicted or becomes a test (a session, or a "busy" answer while the
    backend still ends an earlier round's test), never both."""
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path, extra_args=["--max-pending", "1"]) as proxy:
        ports = []
        for round_no in range(EVICTION_ROUNDS):
            cookie = new_cookie()
            a = dial(proxy.port)
            ports.append(a.getsockname()[1])
            a.sendall(cookie[:-1])
            try:
                if round_no % 2:
                    b = socket.create_connection(("127.0.0.1", proxy.port), timeout=IO_TIMEOUT_S)
                    a.sendall(cookie[-1:])
                else:
                    a.sendall(cookie[-1:])
                    b = socket.create_connection(("127.0.0.1", proxy.port), timeout=IO_TIMEOUT_S)
            except OSError:
                b = None  # A was evicted and reset before its last byte
            # Each A ends one way or the other before the next round.
            assert harness.wait_until(lambda: outcome(proxy, ports[-1]) is not None,
                                      IO_TIMEOUT_S), context(proxy, f"round {round_no}: no outcome")
            a.close()
            if b is not None:
                b.close()
        outcomes = [outcome(proxy, port) for port in ports]
        both = [p for p, o in zip(ports, outcomes) if o == "both"]
        assert not both, context(proxy, f"evicted and a test: ports {both}")
        print(f"{outcomes.count('evicted')} evicted, {outcomes.count('test')} became tests")
        # The proxy and the backend are unharmed.
        assert harness.wait_until(lambda: harness.connected_sockets(backend.pid) == 0,
                                  IO_TIMEOUT_S), context(proxy, "the backend still runs a test")
        result = harness.run_client(proxy.port, ["-t", "1"], CLIENT_TIMEOUT_S)
        assert_real_test_passes(proxy, result, streams=1)


def outcome(proxy: harness.Proxy, port: int) -> Optional[str]:
    """How the proxy dealt with the connection from `port`: "evicted", "test", "both" (wrong),
    or None (not yet)."""
    log = proxy.log_text()
    peer = rf"127\.0\.0\.1:{port}"
    evicted = re.search(rf"refused connection from {peer}: more than 1 connections", log)
    test = re.search(rf"(\] new test from {peer}\b|refused a new test from {peer}:)", log)
    if evicted and test:
        return "both"
    return "evicted" if evicted else "test" if test else None
