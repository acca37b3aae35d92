#!/usr/bin/python3
"""Every TCP mode through the real proxy, with real iperf3 client and server processes.

    /usr/bin/python3 -m pytest integration/test_tcp_modes.py

For each mode: the client exits cleanly with no iperf3 error; every receiving stream moved data
(not only the sum); per stream, what the receiver counted is consistent with what its own sender
sent, which holds only if the proxy kept stream ids lined up (the server numbers streams in its
accept order, the client in creation order, docs/PROTOCOL.md §3.7); and the proxy logged one
summary line with reason=completed whose byte counts lie between iperf3's receiver and sender totals.

Client-to-server streams must count exactly the same bytes on both ends, as on a direct path: the
proxy holds the client's TEST_END until the data sent before it has reached the server.
Server-to-client streams lose what is in flight when the client stops counting (also directly),
so there the receiver only has to be within (0, sender].
"""

from __future__ import annotations

import re

import pytest

import harness

MODES = {
    "default": ["-t", "2"],
    "reverse": ["-R", "-t", "2"],
    "parallel-4": ["-P", "4", "-t", "2"],
    "bidir": ["--bidir", "-t", "2"],
    "bidir-parallel-4": ["--bidir", "-P", "4", "-t", "2"],
    "reverse-parallel-3": ["-R", "-P", "3", "-t", "2"],
    "bytes-50M": ["-n", "50M"],
    "bidir-bytes-20M": ["--bidir", "-n", "20M"],
}

SUMMARY_RE = re.compile(r"test ended: .*up_bytes=(\d+) down_bytes=(\d+) .*reason=(\S+)")


def expected_streams(args: list[str]) -> int:
    parallel = int(args[args.index("-P") + 1]) if "-P" in args else 1
    return 2 * parallel if "--bidir" in args else parallel


def stream_problems(result: harness.ClientResult, args: list[str]) -> list[str]:
    problems = []
    streams = result.streams()
    if len(streams) != expected_streams(args):
        problems.append(f"expected {expected_streams(args)} streams, got {len(streams)}")
    for s in streams:
        # Per-stream numbers come from both ends, matched by stream id: a mismatch means the
        # proxy paired the stream with another stream's connection.
        if s.sender_bytes <= 0 or s.receiver_bytes <= 0:
            problems.append(f"stream#{s.index} moved no data: {s}")
        elif s.client_sends and s.receiver_bytes != s.sender_bytes:
            problems.append(f"stream#{s.index} (client sends) receiver != sender: {s}")
        elif s.receiver_bytes > s.sender_bytes:
            problems.append(f"stream#{s.index} received more than its sender sent: {s}")
    return problems


@pytest.mark.parametrize("mode", list(MODES))
def test_mode_passes_through_proxy(proxied, mode):
    args = MODES[mode]
    log_before = proxied.log_text()
    result = harness.run_client(proxied.port, args, timeout=30)
    assert result.returncode == 0 and not result.error and not result.hung, result.summary()
    problems = stream_problems(result, args)
    assert not problems, "\n".join(problems) + "\n" + result.summary()

    # Exactly one summary line for this test, completed, with byte counts that match iperf3's.
    assert harness.wait_until(lambda: len(SUMMARY_RE.findall(proxied.log_text()[len(log_before):])) >= 1, 5)
    summaries = SUMMARY_RE.findall(proxied.log_text()[len(log_before):])
    assert len(summaries) == 1, summaries
    up, down, reason = int(summaries[0][0]), int(summaries[0][1]), summaries[0][2]
    assert reason == "completed", proxied.log_tail()
    streams = result.streams()
    for client_sends, relayed in ((True, up), (False, down)):
        group = [s for s in streams if s.client_sends == client_sends]
        sent = sum(s.sender_bytes for s in group)
        received = sum(s.receiver_bytes for s in group)
        # The proxy relays at least what the receiver read and at most what the sender wrote.
        assert received <= relayed <= sent, (mode, client_sends, received, relayed, sent)


def test_cport_bidir_keeps_roles_and_ids(proxied):
    """--cport fixes the client's source ports: senders cport..cport+N-1, receivers after."""
    cport = harness.free_port()
    args = ["--bidir", "-P", "2", "-t", "2", "--cport", str(cport)]
    result = harness.run_client(proxied.port, args, timeout=30)
    if result.error and "Address already in use" in result.error:
        pytest.skip("--cport range was taken meanwhile")
    assert result.returncode == 0 and not result.error, result.summary()
    assert not stream_problems(result, args), result.summary()
