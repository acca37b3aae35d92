#!/usr/bin/python3
"""UDP tests through the real proxy, with real iperf3 client and server processes.

    /usr/bin/python3 -m pytest integration/test_udp_modes.py

iperf3 sends UDP test data to the control port's number, one flow per stream, identified by
source address only (docs/PROTOCOL.md §4). For each mode: clean exit, no iperf3 error, every stream
checked on its own (harness.udp_stream_problems): its sender sent datagrams and its receiving
end got them, little loss at modest rates on loopback, no reordering; and one summary line with
reason=completed. Modes with several client-to-server streams ask for the server's output, the
only place a per-stream count of what the server received shows. Junk datagrams at the proxy's
port are dropped and counted, never relayed.
"""

from __future__ import annotations

import re
import socket

import pytest

import harness

MODES = {
    "udp": ["-u", "-t", "2"],
    "udp-reverse": ["-u", "-R", "-t", "2"],
    "udp-bidir": ["-u", "--bidir", "-t", "2"],
    "udp-parallel-4": ["-u", "-P", "4", "-t", "2", *harness.UDP_RECEIPT_ARGS],
    "udp-bidir-parallel-3": ["-u", "--bidir", "-P", "3", "-b", "50M", "-t", "2",
                             *harness.UDP_RECEIPT_ARGS],
    "udp-64bit-counters": ["-u", "--udp-counters-64bit", "-t", "1"],
    "udp-len-16": ["-u", "-l", "16", "-t", "1"],
    "udp-len-64k": ["-u", "-l", "65000", "-t", "1"],
    "udp-1400-100M": ["-u", "-l", "1400", "-b", "100M", "-t", "2"],
    # Fast enough that the proxy reads the flow on its poll tick (--udp-poll-us), each way.
    "udp-1400-400M-polled": ["-u", "-l", "1400", "-b", "400M", "-t", "2"],
    "udp-1400-400M-polled-reverse": ["-u", "-l", "1400", "-b", "400M", "-R", "-t", "2"],
}

SUMMARY_RE = re.compile(r"test ended: .*mode=udp .*up_bytes=(\d+) down_bytes=(\d+) .*reason=(\S+)")


def expected_streams(args: list[str]) -> int:
    parallel = int(args[args.index("-P") + 1]) if "-P" in args else 1
    return 2 * parallel if "--bidir" in args else parallel


@pytest.mark.parametrize("mode", list(MODES))
def test_udp_mode_passes_through_proxy(proxied, mode):
    args = MODES[mode]
    log_before = len(proxied.log_text())
    result = harness.run_client(proxied.port, args, timeout=30)
    # At these rates on loopback little is lost; a proxy that splits, merges or duplicates
    # datagrams shows up as loss or as out-of-order packets, one that loses a flow as a stream
    # whose receiving end got nothing.
    problems = harness.udp_stream_problems(result, expected_streams(args), max_loss_percent=5,
                                           reordering=False)
    assert not problems, "\n".join(problems) + "\n" + result.summary()
    assert harness.wait_until(lambda: SUMMARY_RE.search(proxied.log_text()[log_before:]), 5)
    up, down, reason = SUMMARY_RE.search(proxied.log_text()[log_before:]).groups()
    assert reason == "completed", proxied.log_tail()
    assert int(up) > 0 or int(down) > 0


def test_udp_junk_is_dropped_and_a_real_test_still_passes(proxied):
    """Datagrams from random ports while no UDP test is creating streams are counted, not relayed."""
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for payload in (b"9876", b"hello", b"\x00" * 1400):
            junk.sendto(payload, ("127.0.0.1", proxied.port))
    finally:
        junk.close()
    assert harness.wait_until(lambda: "dropped UDP datagram from" in proxied.log_text(), 5)
    assert "no UDP test from that address is creating streams" in proxied.log_text()
    result = harness.run_client(proxied.port, ["-u", "-t", "1"], timeout=30)
    assert not harness.udp_stream_problems(result, 1), result.summary()


def test_udp_through_the_embedded_server(proxy_bin):
    """Without --backend the proxy's own iperf3 -s serves UDP as well."""
    with harness.Proxy(harness.free_port(), binary=proxy_bin) as proxy:
        result = harness.run_client(proxy.port, ["-u", "--bidir", "-t", "1"], timeout=30)
        problems = harness.udp_stream_problems(result, 2)
        assert not problems, "\n".join(problems) + "\n" + result.summary() + proxy.log_tail()
