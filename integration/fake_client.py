#!/usr/bin/python3
"""A scripted iperf3 client, and the checks the tests that use it share.

Imported by test_bad_input.py and test_role_byte.py (not a test module itself).

`FakeClient` speaks the control side of an iperf3 client step by step: the cookie, the params
after PARAM_EXCHANGE, the data connections after CREATE_STREAMS, and, if the test wants, the
whole end of a test (TEST_END, both results JSONs, IPERF_DONE). It can break the protocol at any
chosen point, or do legal but unusual things a real client never does (open its data
connections in any order, from chosen source ports, with or without a role byte).

The rest of the module reads the proxy's log around such a client: waiting for a line, the
per-test summary line, and the real iperf3 test that must pass afterwards.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import re
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

# A real test run right after a scripted session, to show the backend was released.
AFTER_ARGS = ["--bidir", "-t", "1"]
CLIENT_TIMEOUT_S = 20.0
# Bound for one socket operation of the fake client and for "the proxy reacts at once".
IO_TIMEOUT_S = 5.0
PROMPT_S = 2.0

# iperf3 state bytes (docs/PROTOCOL.md §1.3).
TEST_START = 0x01
TEST_RUNNING = 0x02
TEST_END = 0x04
PARAM_EXCHANGE = 0x09
CREATE_STREAMS = 0x0A
EXCHANGE_RESULTS = 0x0D
DISPLAY_RESULTS = 0x0E
IPERF_DONE = 0x10
ACCESS_DENIED = 0xFF
SERVER_ERROR = 0xFE
IERECVPARAMS = 114

# The parameters a 3.12 `iperf3 -c -t 1` sends, give or take.
BASE_PARAMS = {"tcp": True, "omit": 0, "time": 1, "num": 0, "blockcount": 0, "parallel": 1,
               "len": 131072, "pacing_timer": 1000, "client_version": "3.12"}

# ≤3.13 print the -1 of a receiving stream's retransmits as 2**64-1 (docs/PROTOCOL.md §1.5).
RECEIVING_RETRANSMITS = (-1, 2**64 - 1)

SEED = int(os.environ.get("IPERF3_PROXY_TEST_SEED", time.time_ns() % 2**32))
rng = random.Random(SEED)
COOKIE_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def new_cookie() -> bytes:
    return "".join(rng.choice(COOKIE_ALPHABET) for _ in range(36)).encode() + b"\0"


# --------------------------------------------------------------------------------------------
# Sockets
# --------------------------------------------------------------------------------------------


def dial(port: int, sock: Optional[socket.socket] = None) -> socket.socket:
    """A TCP connection to 127.0.0.1:port; `sock` is an unconnected socket to use (e.g. one
    already bound to a chosen source port)."""
    if sock is None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
    else:
        sock.settimeout(IO_TIMEOUT_S)
        sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def local_port(sock: socket.socket) -> int:
    return sock.getsockname()[1]


def read_until_closed(sock: socket.socket, timeout: float = IO_TIMEOUT_S) -> tuple[bytes, str]:
    """Everything the peer sends until it closes: (bytes, "eof" | "reset" | "timeout")."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data, "timeout"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, "timeout"
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk


def recv_exact(sock: socket.socket, n: int, timeout: float = IO_TIMEOUT_S) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < n:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"wanted {n} bytes, got {data!r} within {timeout}s"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(n - len(data))
        except socket.timeout:
            continue
        assert chunk, f"peer closed after {data!r}, wanted {n} bytes"
        data += chunk
    return data


def drain(sock: socket.socket, timeout: float = CLIENT_TIMEOUT_S) -> int:
    """Read and count until the peer closes (the server closes its streams at TEST_END)."""
    total = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(1 << 18)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        total += len(chunk)
    return total


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class FakeClient:
    """The control side of an iperf3 client, scripted step by step."""

    def __init__(self, port: int):
        self.port = port
        self.cookie = new_cookie()
        self.control = dial(port)
        self.streams: list[socket.socket] = []

    @property
    def sid(self) -> str:
        """How the proxy names this test in its log: the cookie's first 8 characters."""
        return self.cookie[:8].decode()

    def send(self, data: bytes) -> None:
        self.control.sendall(data)

    def expect_state(self, state: int) -> None:
        got = recv_exact(self.control, 1)
        assert got[0] == state, f"expected state 0x{state:02x}, got 0x{got[0]:02x}"

    def send_json(self, doc) -> None:
        body = doc if isinstance(doc, bytes) else json.dumps(doc, separators=(",", ":")).encode()
        self.send(struct.pack(">I", len(body)) + body)

    def recv_json(self) -> dict:
        (length,) = struct.unpack(">I", recv_exact(self.control, 4))
        return json.loads(recv_exact(self.control, length))

    def hello(self) -> None:
        """Cookie, then wait for PARAM_EXCHANGE."""
        self.send(self.cookie)
        self.expect_state(PARAM_EXCHANGE)

    def start(self, **params) -> None:
        """Cookie and params, up to CREATE_STREAMS."""
        self.hello()
        self.send_json({**BASE_PARAMS, **params})
        self.expect_state(CREATE_STREAMS)

    def run_to_test_running(self, **params) -> socket.socket:
        """Cookie, params, one data connection (a forward `-P 1` test unless `params` say
        otherwise), then TEST_START and TEST_RUNNING: the test runs. Returns the data
        connection."""
        self.start(**params)
        stream = self.open_stream()
        self.expect_state(TEST_START)
        self.expect_state(TEST_RUNNING)
        return stream

    def flood(self, pattern: bytes, until: float, chunk: int = 64 * 1024) -> tuple[int, str]:
        """Send `pattern` over and over on the control connection until the peer closes it or
        the monotonic clock reaches `until`: (bytes sent, "closed" | "deadline")."""
        block = pattern * max(1, chunk // len(pattern))
        sent = 0
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return sent, "deadline"
            self.control.settimeout(min(remaining, 0.2))
            try:
                sent += self.control.send(block)
            except socket.timeout:
                continue  # the proxy is not reading: keep pushing until the deadline
            except (BrokenPipeError, ConnectionResetError):
                return sent, "closed"

    def open_stream(self, role_byte: Optional[int] = None,
                    sock: Optional[socket.socket] = None) -> socket.socket:
        """A data connection: the cookie, then the role byte if one is given (docs/ROLE_BYTE.md).
        `sock`: an unconnected socket to connect, e.g. one bound to a chosen source port."""
        sock = dial(self.port, sock)
        self.streams.append(sock)
        sock.sendall(self.cookie + (b"" if role_byte is None else bytes([role_byte])))
        return sock

    def finish(self, client_results_doc: dict) -> dict:
        """The end of a test from TEST_END on: send TEST_END, answer EXCHANGE_RESULTS with
        `client_results_doc`, return the server's results, then IPERF_DONE and a half-close;
        the server must then close the control connection without sending anything more."""
        self.send(bytes([TEST_END]))
        self.expect_state(EXCHANGE_RESULTS)
        return self.exchange_results(client_results_doc)

    def exchange_results(self, client_results_doc: dict) -> dict:
        """After EXCHANGE_RESULTS: our results, theirs, DISPLAY_RESULTS, IPERF_DONE, close."""
        self.send_json(client_results_doc)
        server_results = self.recv_json()
        self.expect_state(DISPLAY_RESULTS)
        self.send(bytes([IPERF_DONE]))
        self.control.shutdown(socket.SHUT_WR)
        rest, how = read_until_closed(self.control)
        assert how == "eof" and rest == b"", f"after IPERF_DONE: {rest!r} then {how}"
        return server_results

    def close(self) -> None:
        for sock in [self.control, *self.streams]:
            sock.close()


def client_results(stream_bytes: dict[int, int]) -> dict:
    """A client results JSON as 3.12 sends it (docs/PROTOCOL.md §5.2)."""
    return {"cpu_util_total": 1.0, "cpu_util_user": 0.5, "cpu_util_system": 0.5,
            "sender_has_retransmits": 1,
            "streams": [{"id": sid, "bytes": n, "retransmits": 0, "jitter": 0, "errors": 0,
                         "packets": 0, "start_time": 0, "end_time": 1}
                        for sid, n in stream_bytes.items()]}


# --------------------------------------------------------------------------------------------
# The proxy's log, and a real test afterwards
# --------------------------------------------------------------------------------------------


def context(proxy: harness.Proxy, *extra: str) -> str:
    return "\n".join([*extra, f"seed={SEED}", "proxy log tail:", proxy.log_tail(40)])


def wait_log(proxy: harness.Proxy, pattern: str, timeout: float = IO_TIMEOUT_S) -> re.Match:
    """Wait for a regex to match the proxy's log; fail with the log tail if it never does."""
    found: list[re.Match] = []

    def check() -> bool:
        m = re.search(pattern, proxy.log_text(), re.MULTILINE)
        if m:
            found.append(m)
        return bool(m)

    assert harness.wait_until(check, timeout), context(
        proxy, f"no log line matching {pattern!r} within {timeout}s")
    return found[0]


RUNNING_RE = r"\] server -> TEST_RUNNING$"


def count_log(proxy: harness.Proxy, pattern: str) -> int:
    return len(re.findall(pattern, proxy.log_text(), re.MULTILINE))


class BackgroundClient:
    """A real iperf3 client through the proxy in a thread. `wait_running()` blocks until the
    proxy logged the server's TEST_RUNNING for this test (one more than when it started);
    `ended_at` is when the client returned."""

    def __init__(self, proxy: harness.Proxy, args: list[str],
                 timeout: float = CLIENT_TIMEOUT_S):
        self.proxy = proxy
        self.timeout = timeout
        self.ended_at: Optional[float] = None
        self._running_before = count_log(proxy, RUNNING_RE)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._future = self._pool.submit(harness.run_client, proxy.port, args, timeout)
        self._future.add_done_callback(lambda _: setattr(self, "ended_at", time.monotonic()))

    def wait_running(self) -> float:
        """Return when the test was seen running."""
        assert harness.wait_until(lambda: count_log(self.proxy, RUNNING_RE) > self._running_before,
                                  self.timeout), context(self.proxy, "the test never ran")
        return time.monotonic()

    def result(self) -> harness.ClientResult:
        try:
            return self._future.result(timeout=self.timeout + 15)
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "BackgroundClient":
        return self

    def __exit__(self, *exc) -> None:
        # run_client bounds itself; this only makes sure the thread is joined on any exit path.
        self._pool.shutdown(wait=True)


def ends_of(proxy: harness.Proxy, sid: str) -> list[harness.SessionEnd]:
    return [e for e in harness.session_ends(proxy.log_text()) if e.sid == sid]


def wait_session_end(proxy: harness.Proxy, sid: str,
                     timeout: float = IO_TIMEOUT_S) -> harness.SessionEnd:
    assert harness.wait_until(lambda: ends_of(proxy, sid), timeout), context(
        proxy, f"no 'test ended' line for [s:{sid}] within {timeout}s")
    ends = ends_of(proxy, sid)
    assert len(ends) == 1, context(proxy, f"{len(ends)} 'test ended' lines for [s:{sid}]")
    return ends[0]


def real_test_problems(result: harness.ClientResult, proxy: harness.Proxy,
                       streams: int) -> list[str]:
    """What is wrong with a real client's run through the proxy ([] if it passed)."""
    problems = harness.race_symptoms(result)
    if len(result.streams()) != streams:
        problems.append(f"expected {streams} streams, got {len(result.streams())}")
    cookie = ((result.json or {}).get("start") or {}).get("cookie", "")
    ends = ends_of(proxy, cookie[:8]) if cookie else []
    if len(ends) != 1:
        problems.append(f"{len(ends)} 'test ended' lines for the real test (cookie {cookie!r})")
    elif ends[0].reason != "completed":
        problems.append(f"proxy says: {ends[0].line}")
    return problems


def assert_real_test_passes(proxy: harness.Proxy, result: harness.ClientResult,
                            streams: int) -> None:
    # The proxy logs the session once both control legs closed, which can be a moment after
    # the client exited.
    cookie = ((result.json or {}).get("start") or {}).get("cookie", "")
    if cookie:
        harness.wait_until(lambda: ends_of(proxy, cookie[:8]), IO_TIMEOUT_S)
    problems = real_test_problems(result, proxy, streams)
    assert not problems, context(proxy, *problems, result.summary())


def backend_listens(backend: harness.IperfServer) -> int:
    """How often iperf3 -s has (re)opened its listener: once at start, then after every test
    it ended (docs/PROTOCOL.md §1.6), however the test ended."""
    return len(re.findall(r"^Server listening on \d+", backend.log_text(), re.MULTILINE))


def run_real_after(proxy: harness.Proxy, backend: harness.IperfServer) -> None:
    """A real --bidir test right after a scripted session, which was the backend's first test.

    The backend must have ended that test promptly, i.e. the proxy closed its side instead of
    leaving the server waiting for bytes that never come; and a real test must pass then.
    (Waiting for the re-listen also keeps the real client out of the moment in which iperf3
    closes and re-opens its listener, which would reset it, proxy or not.)
    """
    assert harness.wait_until(lambda: backend_listens(backend) >= 2, PROMPT_S), context(
        proxy, "the backend did not end the scripted test", "backend log:", backend.log_text())
    result = harness.run_client(proxy.port, AFTER_ARGS, CLIENT_TIMEOUT_S)
    assert_real_test_passes(proxy, result, streams=2)
