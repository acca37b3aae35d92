#!/usr/bin/python3
"""Hostile and broken input costs only its own connection.

Run (no root needed; about 40 s):

    /usr/bin/python3 -m pytest integration/test_bad_input.py -v

Every case runs a real `iperf3 -s` (Debian's 3.12) behind a fresh proxy and checks three things:
  1. the hostile connection is refused or its session is closed promptly, with the answer a real
     iperf3 server would give where there is one (0xFF, SERVER_ERROR),
  2. the proxy logs exactly one line for it that names the reason,
  3. a real iperf3 test through the same proxy still passes: concurrently when the hostile input
     never reaches the backend (a real server would be stuck or busy there, the proxy must not),
     right after it when the hostile connection legitimately owned the single-test backend (the
     proxy must have released the backend, not left it waiting for bytes that never come).

The malformed control conversations are spoken by `FakeClient` (fake_client.py), a few lines
of Python that send a cookie, wait for PARAM_EXCHANGE, send the params and so on, and can break
the protocol at any chosen point.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
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
from fake_client import (  # noqa: E402
    ACCESS_DENIED, BASE_PARAMS, CLIENT_TIMEOUT_S, CREATE_STREAMS, EXCHANGE_RESULTS,
    IERECVPARAMS, IO_TIMEOUT_S, PARAM_EXCHANGE, PROMPT_S,
    RECEIVING_RETRANSMITS, SERVER_ERROR, TEST_END, TEST_RUNNING, TEST_START, FakeClient,
    BackgroundClient, assert_real_test_passes, client_results, context, dial, drain, ends_of,
    local_port,
    new_cookie, read_until_closed, run_real_after, wait_log, wait_session_end)
from fake_client import rng as _rng  # noqa: E402

# The cookie deadline the proxy runs with in these tests (its default is 10 s).
COOKIE_TIMEOUT_MS = 500
# A real test that runs while the hostile connection does its thing.
REAL_ARGS = ["-t", "2", "-P", "2"]
REAL_PARALLEL = 2


# --------------------------------------------------------------------------------------------
# Proxy, log and real clients
# --------------------------------------------------------------------------------------------


@pytest.fixture
def backend(tmp_path):
    with harness.start_iperf_server(log_dir=tmp_path) as server:
        yield server


def start_proxy(proxy_bin, tmp_path, backend_port: int,
                cookie_timeout_ms: int = COOKIE_TIMEOUT_MS) -> harness.Proxy:
    return harness.Proxy(harness.free_port(), backend=backend_port,
                         extra_args=["--cookie-timeout", str(cookie_timeout_ms)],
                         binary=proxy_bin, log_dir=tmp_path).start()


@pytest.fixture
def proxy(proxy_bin, backend, tmp_path):
    with start_proxy(proxy_bin, tmp_path, backend.port) as p:
        yield p


def refusals(proxy: harness.Proxy, peer_port: int) -> list[str]:
    """Lines refusing the connection from 127.0.0.1:peer_port (before or after its cookie)."""
    return [line for line in proxy.log_text().splitlines()
            if re.search(rf"refused (data )?connection from 127\.0\.0\.1:{peer_port}: ", line)]


def assert_clean_exit(proxy: harness.Proxy) -> None:
    code = proxy.stop()
    assert code == 0, context(proxy, f"proxy exit code {code} after SIGTERM")


def run_plain_client(port: int, args: list[str], timeout: float = CLIENT_TIMEOUT_S
                     ) -> tuple[Optional[int], str]:
    """`iperf3 -c` without -J: (exit code, stderr). Needed for the exit code: 3.12 exits 0 on
    errors when it prints JSON. None means it hung and was killed."""
    proc = subprocess.Popen([harness.iperf3_binary(), "-c", "127.0.0.1", "-p", str(port), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return None, err
    return proc.returncode, err


# --------------------------------------------------------------------------------------------
# Before the cookie: the connection never reaches the backend
# --------------------------------------------------------------------------------------------

GARBAGE = [
    pytest.param(b"GET / HTTP/1.0\r\n\r\n", 0, 0x47, id="http-get"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0, 0x16, id="tls-hello"),
    # 37 bytes of the right alphabet but no NUL at the end: wrong at its very last byte.
    pytest.param(b"a" * 37, 36, 0x61, id="no-nul"),
]


@pytest.mark.parametrize("garbage,bad_at,bad_byte", GARBAGE)
def test_garbage_instead_of_cookie_refused_at_once(proxy_bin, backend, tmp_path, garbage,
                                                   bad_at, bad_byte):
    # A long cookie deadline, so that "refused at once" cannot be the deadline.
    with start_proxy(proxy_bin, tmp_path, backend.port, cookie_timeout_ms=30_000) as proxy:
        with BackgroundClient(proxy, REAL_ARGS) as real:
            real.wait_running()
            sock = dial(proxy.port)
            port = local_port(sock)
            started = time.monotonic()
            sock.sendall(garbage)
            answer, how = read_until_closed(sock)
            took = time.monotonic() - started
            sock.close()
            result = real.result()
        assert how in ("eof", "reset") and took < PROMPT_S, context(
            proxy, f"garbage connection: {how} after {took:.2f}s, got {answer!r}")
        assert answer == b"", context(proxy, f"the proxy answered garbage with {answer!r}")
        lines = refusals(proxy, port)
        assert len(lines) == 1, context(proxy, f"refusal lines for port {port}: {lines}")
        assert f"not an iperf3 cookie (byte {bad_at} is 0x{bad_byte:02x})" in lines[0], lines[0]
        assert_real_test_passes(proxy, result, REAL_PARALLEL)
        # Garbage never became a test: the only session is the real one.
        assert len(harness.session_ends(proxy.log_text())) == 1, context(proxy)
        assert_clean_exit(proxy)


def test_partial_cookie_then_silence_refused_at_deadline(proxy_bin, backend, tmp_path):
    # Long enough for the real test to get going while the partial cookie is still pending,
    # even on a slow machine; short enough to be "the deadline" rather than "eventually".
    deadline_s = 1.5
    with start_proxy(proxy_bin, tmp_path, backend.port, int(deadline_s * 1000)) as proxy:
        # Hostile first: a real iperf3 -s would block on this cookie (see the test below).
        sock = dial(proxy.port)
        port = local_port(sock)
        started = time.monotonic()
        sock.sendall(new_cookie()[:10])
        with BackgroundClient(proxy, REAL_ARGS) as real:
            real.wait_running()
            pending_while_real_runs = not refusals(proxy, port)
            answer, how = read_until_closed(sock)
            took = time.monotonic() - started
            sock.close()
            result = real.result()
        assert pending_while_real_runs, context(
            proxy, "the real test was not running before the partial cookie was refused; "
                   "this test then proves nothing (machine too slow?)")
        assert how in ("eof", "reset") and answer == b"", context(
            proxy, f"partial cookie: {how} after {took:.2f}s, got {answer!r}")
        assert deadline_s * 0.9 <= took < deadline_s + PROMPT_S, context(
            proxy, f"refused after {took:.2f}s; the cookie deadline is {deadline_s}s")
        lines = refusals(proxy, port)
        assert len(lines) == 1, context(proxy, f"refusal lines for port {port}: {lines}")
        assert "no complete cookie within the deadline (10 of 37 bytes)" in lines[0], lines[0]
        assert_real_test_passes(proxy, result, REAL_PARALLEL)
        assert len(harness.session_ends(proxy.log_text())) == 1, context(proxy)
        assert_clean_exit(proxy)


def test_partial_cookie_stalls_a_direct_server(backend):
    """Control for the test above: the same partial cookie sent to iperf3 -s itself holds the
    server (it reads the cookie synchronously), so a real client behind it gets nowhere."""
    sock = dial(backend.port)
    try:
        sock.sendall(new_cookie()[:10])
        result = harness.run_client(backend.port, ["-t", "1"], timeout=3.0)
    finally:
        sock.close()
    assert result.hung or result.returncode != 0, (
        "a direct iperf3 -s served a client while a partial cookie was pending; the proxied "
        "test above proves nothing then\n" + result.summary())


def test_cookie_cut_short_by_close(proxy):
    with BackgroundClient(proxy, REAL_ARGS) as real:
        real.wait_running()
        sock = dial(proxy.port)
        port = local_port(sock)
        sock.sendall(new_cookie()[:20])
        sock.shutdown(socket.SHUT_WR)
        answer, how = read_until_closed(sock)
        sock.close()
        result = real.result()
    assert how in ("eof", "reset") and answer == b"", context(proxy, f"{how}, got {answer!r}")
    lines = refusals(proxy, port)
    assert len(lines) == 1, context(proxy, f"refusal lines for port {port}: {lines}")
    assert "closed after 20 bytes, before a complete cookie" in lines[0], lines[0]
    assert_real_test_passes(proxy, result, REAL_PARALLEL)
    assert len(harness.session_ends(proxy.log_text())) == 1, context(proxy)
    assert_clean_exit(proxy)


# --------------------------------------------------------------------------------------------
# Data connections that do not belong
# --------------------------------------------------------------------------------------------


def test_stranger_cookie_during_live_test_gets_busy(proxy):
    """A connection with an unknown cookie is a new test to the proxy. While the only backend
    runs a test, the proxy answers it ACCESS_DENIED itself, as the server would answer any
    newcomer, without bothering the backend; the running test goes on."""
    with BackgroundClient(proxy, REAL_ARGS) as real:
        real.wait_running()
        stranger = new_cookie()
        sock = dial(proxy.port)
        port = local_port(sock)
        sock.sendall(stranger)
        answer, how = read_until_closed(sock)
        sock.close()
        result = real.result()
    assert answer == bytes([ACCESS_DENIED]) and how in ("eof", "reset"), context(
        proxy, f"stranger got {answer!r} then {how}")
    wait_log(proxy, rf"refused a new test from 127\.0\.0\.1:{port}: every backend is running "
                    r"a test$")
    assert not ends_of(proxy, stranger[:8].decode()), context(proxy, "a session for the stranger")
    assert_real_test_passes(proxy, result, REAL_PARALLEL)
    assert_clean_exit(proxy)


def test_extra_data_connection_refused_test_goes_on(proxy, backend):
    """One data connection more than the params declared gets 0xFF, as from iperf3 itself
    (docs/PROTOCOL.md §3.6); the test it tried to join runs to a normal end.

    --bidir -P 1 declares 2 connections. The fake client sends nothing on them until the extra
    one was refused, so the proxy is still waiting for role evidence (creating streams) when the
    extra one arrives: the refusal is for the count, not for a late arrival.
    """
    fake = FakeClient(proxy.port)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        fake.start(bidirectional=True)
        sender = fake.open_stream()     # the client's first --bidir connection sends
        receiver = fake.open_stream()   # the second one receives
        fake.expect_state(TEST_START)
        fake.expect_state(TEST_RUNNING)
        # The server writes on its sending stream from now on, and 3.12 blocks when it cannot.
        received = pool.submit(drain, receiver)
        extra = fake.open_stream()
        extra_port = local_port(extra)
        answer, how = read_until_closed(extra)
        assert answer == bytes([ACCESS_DENIED]) and how in ("eof", "reset"), context(
            proxy, f"extra data connection got {answer!r} then {how}")
        lines = refusals(proxy, extra_port)
        assert len(lines) == 1, context(proxy, f"refusal lines for port {extra_port}: {lines}")
        assert f"[s:{fake.sid}] refused data connection" in lines[0], lines[0]
        assert "more data connections than the test declared (2)" in lines[0], lines[0]

        # The test itself is unharmed: data flows both ways, results are exchanged.
        payload = _rng.randbytes(256 * 1024)
        sender.sendall(payload)
        # iperf3 -s reports its receiving stream every second; after the first report it has
        # read what we sent (it drops unread data at TEST_END, proxy or not).
        assert harness.wait_until(lambda: "[RX-S]" in backend.log_text(), IO_TIMEOUT_S), (
            context(proxy, "backend log:", backend.log_text()))
        fake.send(bytes([TEST_END]))
        fake.expect_state(EXCHANGE_RESULTS)
        got = received.result(timeout=IO_TIMEOUT_S)
        server_results = fake.exchange_results(client_results({1: len(payload), 3: got}))
    finally:
        fake.close()
        pool.shutdown(wait=True)
    by_role = {s["retransmits"] in RECEIVING_RETRANSMITS: s["bytes"]
               for s in server_results["streams"]}
    assert len(server_results["streams"]) == 2 and by_role.get(True) == len(payload), (
        f"the server should have received all {len(payload)} bytes: {server_results}")
    assert got > 0 and by_role.get(False, 0) >= got, (
        f"we received {got} bytes from the server's sending stream: {server_results}")
    end = wait_session_end(proxy, fake.sid)
    assert end.reason == "completed" and end.mode == "tcp bidir streams=1", context(
        proxy, end.line)
    assert (end.up_bytes, end.down_bytes) == (len(payload), got), context(
        proxy, f"proxy relayed up={end.up_bytes} down={end.down_bytes}; "
               f"sent {len(payload)}, received {got}")
    run_real_after(proxy, backend)
    assert_clean_exit(proxy)


# --------------------------------------------------------------------------------------------
# Broken control conversations: the session ends, the backend is released
# --------------------------------------------------------------------------------------------


def _protocol_case(proxy: harness.Proxy, backend: harness.IperfServer, break_it, reason: str,
                   detail: str, expect_answer: bytes = b"") -> None:
    fake = FakeClient(proxy.port)
    try:
        started = time.monotonic()
        break_it(fake)
        answer, how = read_until_closed(fake.control)
        took = time.monotonic() - started
    finally:
        fake.close()
    assert how in ("eof", "reset") and took < PROMPT_S, context(
        proxy, f"control connection: {how} after {took:.2f}s, got {answer!r}")
    assert answer == expect_answer, context(
        proxy, f"client got {answer.hex()}, expected {expect_answer.hex()}")
    end = wait_session_end(proxy, fake.sid)
    assert end.level == "warning" and end.reason == reason and detail in end.detail, context(
        proxy, f"expected reason={reason}: ...{detail}...", end.line)
    # The hostile session is gone and so is the backend's copy of it: a real test passes now,
    # without waiting for any timeout.
    run_real_after(proxy, backend)
    assert_clean_exit(proxy)


def test_oversize_json_length(proxy, backend):
    def break_it(fake: FakeClient) -> None:
        fake.hello()
        fake.send(b"\xff\xff\xff\xff")

    _protocol_case(proxy, backend, break_it, "protocol-error",
                   "client at byte 40: JSON message too large (JSON length 4294967295 above cap")


def test_zero_json_length(proxy, backend):
    def break_it(fake: FakeClient) -> None:
        fake.hello()
        fake.send(b"\0\0\0\0")

    _protocol_case(proxy, backend, break_it, "protocol-error",
                   "empty JSON message (JSON length 0)")


SERVER_ERROR_RECV_PARAMS = bytes([SERVER_ERROR]) + struct.pack(">ii", IERECVPARAMS, 0)

BAD_PARAMS = [
    pytest.param(b"this is not json", "parameters are not a JSON object", id="not-json"),
    pytest.param(b'{"tcp":true,"time":1', "parameters are not a JSON object", id="truncated"),
    pytest.param(b"[1,2,3]", "parameters are not a JSON object", id="array"),
    pytest.param(json.dumps({**BASE_PARAMS, "reverse": 1}).encode(),
                 "reverse is not a boolean", id="ambiguous-flag"),
    pytest.param(json.dumps({**BASE_PARAMS, "parallel": 0}).encode(),
                 "parallel=0 is outside 1..128", id="parallel-0"),
]


@pytest.mark.parametrize("body,detail", BAD_PARAMS)
def test_invalid_params_rejected_with_server_error(proxy, backend, body, detail):
    """The client gets what iperf3 itself sends for unreadable params: SERVER_ERROR with
    i_errno 114 (IERECVPARAMS) and errno 0."""
    def break_it(fake: FakeClient) -> None:
        fake.hello()
        fake.send_json(body)

    _protocol_case(proxy, backend, break_it, "params-rejected", detail,
                   expect_answer=SERVER_ERROR_RECV_PARAMS)


def test_server_state_byte_from_client(proxy, backend):
    def break_it(fake: FakeClient) -> None:
        fake.hello()
        fake.send_json(BASE_PARAMS)
        fake.expect_state(CREATE_STREAMS)
        fake.send(bytes([PARAM_EXCHANGE]))

    _protocol_case(proxy, backend, break_it, "protocol-error",
                   "unexpected state byte (byte 9 is not a client state; stage: stream creation)")


def test_second_cookie_on_control_connection(proxy, backend):
    def break_it(fake: FakeClient) -> None:
        fake.hello()
        fake.send_json(BASE_PARAMS)
        fake.expect_state(CREATE_STREAMS)
        fake.send(new_cookie())

    _protocol_case(proxy, backend, break_it, "protocol-error", "unexpected state byte (byte ")


# --------------------------------------------------------------------------------------------
# Real clients the proxy cannot or may not serve
# --------------------------------------------------------------------------------------------


SERVER_ERROR_PROTOCOL = bytes([SERVER_ERROR]) + struct.pack(">ii", 131, 0)  # IEPROTOCOL


def test_sctp_test_refused_as_unsupported(proxy, backend):
    """SCTP cannot be carried by a TCP/UDP proxy: the client reads a server error (Debian's
    iperf3 has no SCTP, so a scripted client asks for it)."""
    def break_it(fake: FakeClient) -> None:
        fake.hello()
        params = {k: v for k, v in BASE_PARAMS.items() if k != "tcp"}
        fake.send_json({**params, "sctp": True})

    _protocol_case(proxy, backend, break_it, "unsupported-test", "SCTP cannot be carried",
                   expect_answer=SERVER_ERROR_PROTOCOL)


def test_backend_not_running(proxy_bin, tmp_path):
    dead_port = harness.free_port()  # nobody listens there
    with harness.Proxy(harness.free_port(), backend=dead_port, binary=proxy_bin,
                       log_dir=tmp_path) as proxy:
        result = harness.run_client(proxy.port, ["-t", "1"], CLIENT_TIMEOUT_S)
        # The proxy retries refused connects for ~3 s (the server re-listens between tests).
        assert not result.hung and result.duration < 5.0, result.summary()
        assert result.error and "connect" in result.error, result.summary()
        # The client never learns enough to print its cookie; this session is the only one.
        assert harness.wait_until(lambda: harness.session_ends(proxy.log_text()), IO_TIMEOUT_S)
        (end,) = harness.session_ends(proxy.log_text())
        assert end.reason == "backend-unreachable" and end.level == "warning", context(
            proxy, end.line)
        assert f"127.0.0.1:{dead_port}" in end.detail, end.line
        # The only backend is out of dispatch for a backoff now: the next test is answered at
        # once, with the same error, and without a session (or, if the backoff is over, tries it
        # again and ends the same way).
        code, stderr = run_plain_client(proxy.port, ["-t", "1"], timeout=10.0)
        assert code not in (0, None) and "connect" in stderr, f"rc={code} stderr={stderr!r}"

        def answered() -> bool:
            ends = harness.session_ends(proxy.log_text())
            return (re.search(r"refused a new test from 127\.0\.0\.1:\d+: no backend is up$",
                              proxy.log_text(), re.MULTILINE) is not None
                    or (len(ends) == 2 and ends[1].reason == "backend-unreachable"))
        # The proxy sends the error first and logs right after: wait for it.
        assert harness.wait_until(answered, IO_TIMEOUT_S), context(proxy)
        assert_clean_exit(proxy)


def test_server_busy_as_directly(proxy, backend):
    """A second client while a test runs: through the proxy it gets exactly what it gets from
    iperf3 -s directly, and the running test is not disturbed."""
    def while_busy(port: int, wait_running) -> tuple[harness.ClientResult, harness.ClientResult,
                                                     tuple[Optional[int], str]]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(harness.run_client, port, ["-t", "3"], CLIENT_TIMEOUT_S)
            wait_running()
            second = harness.run_client(port, ["-t", "1"], CLIENT_TIMEOUT_S)
            plain = run_plain_client(port, ["-t", "1"])
            return first.result(timeout=CLIENT_TIMEOUT_S + 15), second, plain

    def backend_running() -> None:
        # iperf3 -s prints "[  5] local ... connected to ..." once the data connection is in.
        assert harness.wait_until(lambda: " connected to " in backend.log_text(),
                                  CLIENT_TIMEOUT_S), backend.log_text()

    direct_first, direct, direct_plain = while_busy(backend.port, backend_running)
    proxied_first, proxied, proxied_plain = while_busy(
        proxy.port, lambda: wait_log(proxy, r"\] server -> TEST_RUNNING$", CLIENT_TIMEOUT_S))

    # Control: this is what iperf3 -s says.
    assert not harness.race_symptoms(direct_first), direct_first.summary()
    assert "the server is busy" in (direct.error or ""), direct.summary()
    assert direct_plain[0] not in (0, None) and "the server is busy" in direct_plain[1], (
        direct_plain)
    # Through the proxy: the same, to the letter.
    assert proxied.error == direct.error and not proxied.hung, context(
        proxy, "through the proxy:", proxied.summary(), "directly:", direct.summary())
    assert proxied_plain == direct_plain, context(
        proxy, f"without -J: through the proxy {proxied_plain}, directly {direct_plain}")
    assert_real_test_passes(proxy, proxied_first, 1)
    # The proxy turned the two newcomers away itself (its only backend was taken): one
    # session, for the running test, and one refusal line each.
    ends = harness.session_ends(proxy.log_text())
    assert len(ends) == 1, context(proxy)
    refusals = re.findall(r"refused a new test from 127\.0\.0\.1:\d+: every backend is running "
                          r"a test$", proxy.log_text(), re.MULTILINE)
    assert len(refusals) == 2, context(proxy)
    assert_clean_exit(proxy)
