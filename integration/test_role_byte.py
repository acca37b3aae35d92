#!/usr/bin/python3
"""The role-byte extension (docs/ROLE_BYTE.md) against a real iperf3 -s.

Run (no root needed; about 10 s):

    /usr/bin/python3 -m pytest integration/test_role_byte.py -v

A scripted `--bidir -P 2` client (fake_client.FakeClient) runs a whole test through the proxy
against Debian's iperf3 3.12, opening its four data connections in a hostile order: its two
receivers first, then its two senders in reverse. Through a plain relay that order deadlocks the
test (docs/PROTOCOL.md §7): the server gives the first two connections it accepts the
receiving role.

What proves what:
  * The fake sends a different, known number of bytes on each of its senders, and reads until
    the server has read everything before it ends the test. The server's results JSON, per stream
    id, must then show exactly those numbers on its receiving streams 1 and 3: one byte more would
    be a forwarded role byte, a swapped pair of numbers a pairing that did not follow the index
    (client id 1 is the sender with index 0, id 3 the one with index 1; docs/PROTOCOL.md §3.7).
  * The server sends iperf3's repeating payload (`repeating_payload`), and the fake reads its
    receiving connections to EOF: every byte must be that payload from its first byte on, and
    the count must equal what the server says it sent on streams 4 and 5.
  * With the role byte, the source ports of the four connections are chosen to contradict it
    (the receivers have the lowest ports, and within each role the index runs against the port
    order), and the proxy must pair every connection before the fake sends a single byte: the
    roles and the ranking can then only have come from the role byte.
  * Without the role byte, the ports follow the client's creation order, as a real client's do,
    and the proxy must work the roles out from the data (nothing is paired before the fake's
    senders write; nothing is guessed).
  * The proxy's summary line: reason=completed, all four roles repaired, all four connections out
    of order, and exactly the bytes the fake moved.
"""

from __future__ import annotations

import concurrent.futures
import re
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from fake_client import (  # noqa: E402
    EXCHANGE_RESULTS, IO_TIMEOUT_S, PROMPT_S, RECEIVING_RETRANSMITS, TEST_END, TEST_RUNNING,
    TEST_START, FakeClient, client_results, context, read_until_closed, rng, run_real_after, wait_log, wait_session_end)

PARALLEL = 2
BLOCK_SIZE = 131072
PARAMS = {"parallel": PARALLEL, "bidirectional": True, "len": BLOCK_SIZE,
          # Longer than the test: the client ends it, the server's own timer must not.
          "time": 10,
          # The server's payload is then a known pattern (docs/PROTOCOL.md §3.8).
          "repeating_payload": 1,
          # Per stream; keeps the server's two senders from burning the CPU the proxy needs.
          "bandwidth": 200_000_000}
# Bytes the fake sends on its sender with index 0 and 1: different, so a swap shows.
UPLOAD_BYTES = (1 << 20, 3 << 19)
# iperf3's stream ids (docs/PROTOCOL.md §3.7): the client's senders by index, then its
# receivers by index.
SENDER_IDS = (1, 3)
RECEIVER_IDS = (4, 5)
# Receivers first, then the senders in reverse: (client sends, index) in connection order.
HOSTILE_ORDER = ((False, 0), (False, 1), (True, 1), (True, 0))
# Gap between two connections, so the proxy takes them in exactly this order.
CONNECT_GAP_S = 0.05
# How long the fake reads on its receivers before it ends the test.
RUN_S = 1.0
RECEIVER_DEADLINE_S = 15.0
EXPECTED_MODE = f"tcp bidir streams={PARALLEL}"


@pytest.fixture
def backend(tmp_path):
    with harness.start_iperf_server(log_dir=tmp_path) as server:
        yield server


@pytest.fixture
def proxy(proxy_bin, backend, tmp_path):
    with harness.Proxy(harness.free_port(), backend=backend.port, binary=proxy_bin,
                       log_dir=tmp_path) as p:
        yield p


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def repeating_pattern(size: int) -> bytes:
    """iperf3's `fill_with_repeating_pattern`: '0'..'9' over and over, restarting per buffer."""
    return bytes(ord("0") + i % 10 for i in range(size))


# The server sends its BLOCK_SIZE buffer over and over; a stream is this, read from offset 0.
SERVER_BLOCK = repeating_pattern(BLOCK_SIZE)
RECV_CHUNK = 1 << 18
_REFERENCE = memoryview(SERVER_BLOCK * (2 + RECV_CHUNK // BLOCK_SIZE))


def bound_sockets(count: int) -> list[socket.socket]:
    """`count` unconnected sockets bound to consecutive source ports below the ephemeral range,
    as `iperf3 --cport` would bind them, so that port order is exactly what the test chose."""
    for _ in range(50):
        base = rng.randrange(20000, 30000 - count)
        socks: list[socket.socket] = []
        try:
            for i in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", base + i))
            return socks
        except OSError:
            for sock in socks:
                sock.close()
    raise harness.HarnessError(f"no {count} consecutive free ports in 20000..30000")


class ReceiveResult:
    def __init__(self) -> None:
        self.count = 0
        self.how = "timeout"
        self.mismatch = ""  # where the bytes first differed from the server's payload


def receive(sock: socket.socket) -> ReceiveResult:
    """Read a receiving connection until the peer closes, checking every byte against the
    server's payload (which starts at offset 0, so a byte the proxy put in front shows)."""
    result = ReceiveResult()
    buf = bytearray(RECV_CHUNK)
    deadline = time.monotonic() + RECEIVER_DEADLINE_S
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            n = sock.recv_into(buf)
        except socket.timeout:
            continue
        except OSError as exc:  # a reset, or our own shutdown in teardown
            result.how = f"error: {exc}"
            return result
        if n == 0:
            result.how = "eof"
            return result
        offset = result.count % BLOCK_SIZE
        if not result.mismatch and _REFERENCE[offset:offset + n] != memoryview(buf)[:n]:
            got = bytes(buf[:n])
            first = next(i for i in range(n) if got[i] != _REFERENCE[offset + i])
            result.mismatch = (f"byte {result.count + first} is 0x{got[first]:02x}, expected "
                               f"0x{_REFERENCE[offset + first]:02x}; got {got[:16]!r}... "
                               f"at stream offset {result.count}")
        result.count += n
    return result


def _tcp_sockets():
    """(local port, remote port, state, tx_queue, rx_queue) of every TCP socket here."""
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            tx, rx = (int(x, 16) for x in fields[4].split(":"))
            yield (int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16),
                   fields[3], tx, rx)


def upload_backlog(proxy_port: int, backend_port: int) -> list[str]:
    """Bytes still on their way to the server: unread by the proxy (client legs) or by the
    server, or sent by the proxy and not yet acknowledged. [] once the server has read all."""
    backlog = []
    for local, remote, state, tx, rx in _tcp_sockets():
        if state != "01":  # ESTABLISHED
            continue
        if local in (proxy_port, backend_port) and rx:
            backlog.append(f":{local} <- :{remote} has {rx} unread bytes")
        if remote == backend_port and tx:
            backlog.append(f":{local} -> :{remote} has {tx} unacknowledged bytes")
    return backlog


def wait_upload_drained(proxy: harness.Proxy, backend: harness.IperfServer) -> None:
    """Until the server has read every byte the fake sent (steady for a few polls: data in the
    proxy's pipes is invisible here, but cannot stay there while every socket is empty)."""
    quiet = [0]
    last: list[list[str]] = [[]]

    def drained() -> bool:
        last[0] = upload_backlog(proxy.port, backend.port)
        quiet[0] = quiet[0] + 1 if not last[0] else 0
        return quiet[0] >= 3

    assert harness.wait_until(drained, IO_TIMEOUT_S, interval=0.05), context(
        proxy, "the server did not read everything the fake sent:", *last[0])


def paired_line(sid: str) -> str:
    return (rf"\[s:{sid}\] all {2 * PARALLEL} data connections paired; "
            r"roles repaired: (\d+), arrived out of order: (\d+)$")


# --------------------------------------------------------------------------------------------
# A whole --bidir -P 2 test with the connections in a hostile order
# --------------------------------------------------------------------------------------------


def run_hostile_bidir(proxy: harness.Proxy, backend: harness.IperfServer,
                      role_byte: bool) -> None:
    fake = FakeClient(proxy.port)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2 * PARALLEL)
    payloads = [rng.randbytes(n) for n in UPLOAD_BYTES]
    try:
        fake.start(**PARAMS, **({"role_byte": True} if role_byte else {}))
        # Source ports, (client sends, index) -> socket. With the role byte they contradict it
        # completely: receivers lowest, each role's index against port order. Without it they
        # are the client's creation order (senders by index, then receivers), as from a real
        # client, and arrival order alone is hostile.
        bound = bound_sockets(2 * PARALLEL)  # ascending ports
        creation = [(True, i) for i in range(PARALLEL)] + [(False, i) for i in range(PARALLEL)]
        if role_byte:
            bound.reverse()
        sock_of = dict(zip(creation, bound))
        senders: dict[int, socket.socket] = {}
        receivers: dict[int, socket.socket] = {}
        for sends, index in HOSTILE_ORDER:
            byte = ((0 if sends else 0x80) | index) if role_byte else None
            sock = fake.open_stream(byte, sock_of[(sends, index)])
            (senders if sends else receivers)[index] = sock
            time.sleep(CONNECT_GAP_S)
        fake.expect_state(TEST_START)
        fake.expect_state(TEST_RUNNING)

        if role_byte:
            # Every role and rank is known from the role bytes alone: all paired, no data yet.
            m = wait_log(proxy, paired_line(fake.sid), PROMPT_S)
            assert (int(m[1]), int(m[2])) == (4, 4), context(proxy, m[0])
        else:
            assert not re.search(paired_line(fake.sid), proxy.log_text(), re.MULTILINE), context(
                proxy, "paired before any evidence: the roles cannot have come from the data")

        started = time.monotonic()
        received = {i: pool.submit(receive, sock) for i, sock in receivers.items()}
        # Senders in parallel, the later index first: without a role byte, neither is paired
        # before both have shown data, so one sendall() alone could block on the other.
        sent = [pool.submit(senders[i].sendall, payloads[i]) for i in reversed(range(PARALLEL))]
        for future in sent:
            future.result(timeout=IO_TIMEOUT_S)
        time.sleep(max(0.0, RUN_S - (time.monotonic() - started)))
        # The server drops what it has not read when the test ends (docs/PROTOCOL.md §5.1).
        wait_upload_drained(proxy, backend)
        if not role_byte:
            m = wait_log(proxy, paired_line(fake.sid), PROMPT_S)
            assert (int(m[1]), int(m[2])) == (4, 4), context(proxy, m[0])

        fake.send(bytes([TEST_END]))  # the server closes its data connections at once
        fake.expect_state(EXCHANGE_RESULTS)
        got = {i: future.result(timeout=IO_TIMEOUT_S) for i, future in received.items()}
        server_results = fake.exchange_results(client_results(
            {**{SENDER_IDS[i]: UPLOAD_BYTES[i] for i in range(PARALLEL)},
             **{RECEIVER_IDS[i]: got[i].count for i in range(PARALLEL)}}))
        came_back = {i: read_until_closed(sock, PROMPT_S) for i, sock in senders.items()}
    finally:
        for sock in fake.streams:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a receiver thread still in recv()
            except OSError:
                pass
        pool.shutdown(wait=True)
        fake.close()

    problems = []
    by_id = {s["id"]: s for s in server_results["streams"]}
    if sorted(by_id) != sorted(SENDER_IDS + RECEIVER_IDS):
        problems.append(f"server stream ids {sorted(by_id)}")
    for i in range(PARALLEL):
        upload = by_id.get(SENDER_IDS[i], {})
        if upload.get("retransmits") not in RECEIVING_RETRANSMITS:
            problems.append(f"server stream {SENDER_IDS[i]} is not receiving: {upload}")
        if upload.get("bytes") != UPLOAD_BYTES[i]:
            problems.append(f"server stream {SENDER_IDS[i]} received {upload.get('bytes')} bytes;"
                            f" the fake sent {UPLOAD_BYTES[i]} on its sender {i} "
                            f"(all: {UPLOAD_BYTES})")
        download = by_id.get(RECEIVER_IDS[i], {})
        if download.get("retransmits") in RECEIVING_RETRANSMITS:
            problems.append(f"server stream {RECEIVER_IDS[i]} is not sending: {download}")
        result = got[i]
        if result.how != "eof" or result.count == 0 or result.mismatch:
            problems.append(f"receiver {i}: {result.count} bytes, then {result.how}"
                            f"{'; ' + result.mismatch if result.mismatch else ''}")
        if download.get("bytes") != result.count:
            problems.append(f"server stream {RECEIVER_IDS[i]} sent {download.get('bytes')} bytes;"
                            f" the fake's receiver {i} got {result.count}")
        data, how = came_back[i]
        if data or how == "timeout":
            problems.append(f"sender {i}: the proxy sent back {data[:16]!r} then {how}")
    assert not problems, context(proxy, *problems, f"server results: {server_results}")

    end = wait_session_end(proxy, fake.sid)
    total_down = sum(r.count for r in got.values())
    assert (end.reason, end.level, end.mode) == ("completed", "info", EXPECTED_MODE), context(
        proxy, end.line)
    assert re.search(r" roles_repaired=4 out_of_order=4( |$)", end.line), context(proxy, end.line)
    assert (end.up_bytes, end.down_bytes) == (sum(UPLOAD_BYTES), total_down), context(
        proxy, end.line, f"the fake sent {sum(UPLOAD_BYTES)} and received {total_down}")


def test_role_byte_pairs_hostile_order_by_index(proxy, backend):
    run_hostile_bidir(proxy, backend, role_byte=True)


def test_without_role_byte_roles_come_from_data(proxy, backend):
    run_hostile_bidir(proxy, backend, role_byte=False)


# --------------------------------------------------------------------------------------------
# A connection that owes its role byte and closes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wait_running", [False, True], ids=["at-once", "test-running"])
def test_missing_role_byte_ends_session(proxy, backend, wait_running):
    """A data connection of a test that announced the role byte sends its cookie and closes.

    The proxy dials the backend for every data connection at once, so the server has both
    connections and starts the test whether or not the role byte comes: closed at once, the
    connection races the server's TEST_START/TEST_RUNNING to the client; closed after the fake
    read them, it leaves a backend in TEST_RUNNING with a stream that is never paired.
    """
    fake = FakeClient(proxy.port)
    try:
        fake.start(**{**PARAMS, "parallel": 1}, role_byte=True)
        good = fake.open_stream(0x00)   # the sender, with its role byte
        bad = fake.open_stream()        # the cookie, no role byte
        if wait_running:
            fake.expect_state(TEST_START)
            fake.expect_state(TEST_RUNNING)
        started = time.monotonic()
        bad.close()
        answer, how = read_until_closed(fake.control)
        took = time.monotonic() - started
        good_answer, good_how = read_until_closed(good)
    finally:
        fake.close()
    # What the server said before the proxy ended the session may have reached the client.
    expected = (b"",) if wait_running else (b"", bytes([TEST_START]),
                                            bytes([TEST_START, TEST_RUNNING]))
    assert how in ("eof", "reset") and answer in expected and took < PROMPT_S, context(
        proxy, f"control connection: {answer!r} then {how} after {took:.2f}s")
    assert good_how in ("eof", "reset") and good_answer == b"", context(
        proxy, f"the other data connection: {good_answer!r} then {good_how}")
    end = wait_session_end(proxy, fake.sid)
    assert end.reason == "stream-closed-early" and end.level == "warning", context(
        proxy, end.line)
    assert "role byte" in end.detail, context(proxy, end.line)
    run_real_after(proxy, backend)
