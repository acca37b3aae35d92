#!/usr/bin/python3
"""Running the proxy as a service (issue 10): metrics, health, JSON records, log file, daemon.

Run (about a minute; the race case needs root for its network namespace):

    /usr/bin/python3 -m pytest integration/test_service.py -v

Real iperf3 3.12 clients and servers through the real proxy binary:
  * /metrics scraped during and after real tests (forward, --bidir, UDP) on two worker threads:
    tests running while one runs, bytes growing while it runs, the set-up histogram, and after
    the tests every counter equal to what the test-ended lines say;
  * a test refused "busy" (--servers 1, one test running), counted by reason; /readyz 503 while
    the one backend is taken; a connection that is not iperf3 and a stray datagram counted;
  * a repaired role race (race testbed) counted in roles_repaired and out_of_order;
  * /healthz and /readyz: not ready once the only backend refuses connections, ready again once
    a server listens there;
  * --log-format json: every line one JSON object; each test-ended record matches the client's
    own JSON (version, protocol, mode, streams, bytes);
  * -D -I --logfile with relative paths: the command returns once the proxy is ready, the pidfile
    names it, the log file gets the lines, SIGHUP after a rename starts a new file, SIGTERM
    stops it and removes the pidfile; a startup error after the fork is printed by the command;
  * the open-files limit raised at start, and a warning when --max-tests cannot fit in it.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

CLIENT_TIMEOUT_S = 30.0
IO_TIMEOUT_S = 10.0
BUSY = "the server is busy running a test"

# --------------------------------------------------------------------------------------------
# HTTP and the Prometheus text format
# --------------------------------------------------------------------------------------------

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics(dict):
    """{(name, frozenset of (label, value)): value} from one scrape."""

    def get_value(self, name: str, **labels) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self, f"no sample {name}{labels} in the scrape"
        return self[key]

    def total(self, name: str, **labels) -> float:
        """Sum over every sample of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.items() if n == name and wanted <= ls)


def parse_metrics(text: str) -> Metrics:
    metrics = Metrics()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        assert m, f"not a Prometheus text sample: {line!r}"
        labels = frozenset(_LABEL_RE.findall(m.group(2) or ""))
        metrics[(m.group(1), labels)] = float(m.group(3))
    return metrics


def http_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT_S)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def scrape(port: int) -> Metrics:
    status, body = http_get(port, "/metrics")
    assert status == 200, body
    return parse_metrics(body)


_SCRAPE_IN_NETNS = """
import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode())
"""


def scrape_in(netns: str, port: int) -> Metrics:
    return parse_metrics(harness.run_checked([sys.executable, "-c", _SCRAPE_IN_NETNS, str(port)],
                                             netns=netns))


def context(proxy: harness.Proxy, *extra: str) -> str:
    return "\n".join([*extra, "proxy log tail:", proxy.log_tail(40)])


def wait_ends(proxy: harness.Proxy, count: int) -> list[harness.SessionEnd]:
    assert harness.wait_until(lambda: len(harness.session_ends(proxy.log_text())) >= count,
                              IO_TIMEOUT_S), context(proxy, f"fewer than {count} test-ended lines")
    return harness.session_ends(proxy.log_text())


def metrics_proxy(tmp_path: Path, proxy_bin, *extra: str, backend=None) -> harness.Proxy:
    metrics_port = harness.free_port()
    proxy = harness.Proxy(harness.free_port(), backend=backend, binary=proxy_bin,
                          log_dir=tmp_path,
                          extra_args=["--metrics", f"127.0.0.1:{metrics_port}", *extra])
    proxy.metrics_port = metrics_port
    return proxy


# --------------------------------------------------------------------------------------------
# /metrics during and after real tests
# --------------------------------------------------------------------------------------------


def test_metrics_follow_real_tests(proxy_bin, tmp_path):
    """Two worker threads, two embedded servers: a forward test scraped while it runs, then a
    --bidir and a UDP test; afterwards every counter matches the test-ended lines."""
    with metrics_proxy(tmp_path, proxy_bin, "--servers", "2", "--threads", "2") as proxy:
        before = scrape(proxy.metrics_port)
        assert before.get_value("iperf3_proxy_tests_running") == 0
        assert before.total("iperf3_proxy_tests_total") == 0
        assert before.get_value("iperf3_proxy_ready") == 1
        assert len([k for k in before if k[0] == "iperf3_proxy_build_info"]) == 1

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            forward = pool.submit(harness.run_client, proxy.port, ["-t", "3"], CLIENT_TIMEOUT_S)
            # While it runs: one test running, its set-up observed, its bytes counted live.
            during: list[Metrics] = []

            def bytes_seen() -> bool:
                during.append(scrape(proxy.metrics_port))
                return during[-1].get_value("iperf3_proxy_bytes_total", direction="up",
                                            protocol="tcp") > 0
            assert harness.wait_until(bytes_seen, 5.0, interval=0.2), context(proxy)
            live = during[-1]
            forward_result = forward.result()
        assert not harness.client_failures(forward_result), forward_result.summary()
        assert live.get_value("iperf3_proxy_tests_running") == 1, context(proxy)
        assert live.get_value("iperf3_proxy_test_setup_seconds_count") == 1
        assert live.total("iperf3_proxy_tests_total") == 0
        assert live.total("iperf3_proxy_backend_state", state="running") == 1

        bidir = harness.run_client(proxy.port, ["--bidir", "-P", "2", "-t", "1"],
                                   CLIENT_TIMEOUT_S)
        udp = harness.run_client(proxy.port, ["-u", "-b", "20M", "-t", "1"], CLIENT_TIMEOUT_S)
        for result in (bidir, udp):
            assert not harness.client_failures(result), result.summary()
        ends = wait_ends(proxy, 3)
        after = scrape(proxy.metrics_port)

    assert [e.reason for e in ends] == ["completed"] * 3, context(proxy)
    assert after.get_value("iperf3_proxy_tests_total", outcome="completed",
                           reason="completed") == 3
    assert after.total("iperf3_proxy_tests_total") == 3
    assert after.get_value("iperf3_proxy_tests_running") == 0
    assert after.get_value("iperf3_proxy_tests_queued") == 0
    # The bytes: exactly what the three test-ended lines say, by protocol and direction.
    for protocol, mine in (("tcp", ends[:2]), ("udp", ends[2:])):
        for direction, field in (("up", "up_bytes"), ("down", "down_bytes")):
            expected = sum(getattr(e, field) for e in mine)
            assert after.get_value("iperf3_proxy_bytes_total", direction=direction,
                                   protocol=protocol) == expected, (protocol, direction)
    assert after.get_value("iperf3_proxy_bytes_total", direction="up", protocol="tcp") >= \
        live.get_value("iperf3_proxy_bytes_total", direction="up", protocol="tcp")
    assert after.get_value("iperf3_proxy_bytes_total", direction="down", protocol="tcp") > 0
    assert after.get_value("iperf3_proxy_bytes_total", direction="up", protocol="udp") > 0
    # The forward test's bytes lie between what its receiver read and its sender wrote.
    sent = sum(s.sender_bytes for s in forward_result.streams())
    received = sum(s.receiver_bytes for s in forward_result.streams())
    assert received <= ends[0].up_bytes <= sent, (received, ends[0].line, sent)
    # Set-up latency: one observation per test, cumulative buckets.
    assert after.get_value("iperf3_proxy_test_setup_seconds_count") == 3
    assert 0 < after.get_value("iperf3_proxy_test_setup_seconds_sum") < 30
    buckets = sorted((float(dict(ls)["le"]), v) for (n, ls), v in after.items()
                     if n == "iperf3_proxy_test_setup_seconds_bucket")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets) and buckets[-1][1] == 3
    # Each embedded server ran some of the tests, and is idle again.
    assert after.total("iperf3_proxy_backend_tests_total", kind="embedded") == 3
    assert after.total("iperf3_proxy_backend_state", state="idle") == 2
    assert after.total("iperf3_proxy_roles_repaired_total") == 0
    assert after.total("iperf3_proxy_connections_refused_total") == 0


def test_a_busy_answer_is_counted_and_not_ready_while_taken(proxy_bin, tmp_path):
    with metrics_proxy(tmp_path, proxy_bin, "--servers", "1") as proxy:
        assert http_get(proxy.metrics_port, "/readyz")[0] == 200
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(harness.run_client, proxy.port, ["-t", "3"], CLIENT_TIMEOUT_S)
            assert harness.wait_until(
                lambda: scrape(proxy.metrics_port).get_value("iperf3_proxy_tests_running") == 1,
                5.0, interval=0.1), context(proxy)
            # The one server runs a test and there is no queue: not ready, and "busy" at once.
            status, body = http_get(proxy.metrics_port, "/readyz")
            second = harness.run_client(proxy.port, ["-t", "1"], CLIENT_TIMEOUT_S)
            during = scrape(proxy.metrics_port)
            first_result = first.result()
        assert status == 503 and "no backend" in body, (status, body)
        assert second.error and BUSY in second.error, second.summary()
        assert not harness.client_failures(first_result), first_result.summary()
        wait_ends(proxy, 1)
        assert harness.wait_until(lambda: http_get(proxy.metrics_port, "/readyz")[0] == 200,
                                  IO_TIMEOUT_S), context(proxy)
        after = scrape(proxy.metrics_port)
        # Strangers on the test port: a connection that is not iperf3, a stray datagram.
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=IO_TIMEOUT_S) as tcp:
            tcp.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 16)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"not iperf3", ("127.0.0.1", proxy.port))

        def strangers_counted() -> bool:
            m = scrape(proxy.metrics_port)
            return (m.get_value("iperf3_proxy_connections_refused_total",
                                reason="not-a-cookie") == 1 and
                    m.get_value("iperf3_proxy_udp_datagrams_dropped_total",
                                reason="no-test") == 1)
        assert harness.wait_until(strangers_counted, IO_TIMEOUT_S, interval=0.1), context(proxy)
    assert during.get_value("iperf3_proxy_tests_total", outcome="refused",
                            reason="no-backend-free") == 1
    assert during.get_value("iperf3_proxy_backend_state", backend="embedded-1", kind="embedded",
                            state="running") == 1
    assert after.get_value("iperf3_proxy_tests_total", outcome="completed",
                           reason="completed") == 1
    assert after.total("iperf3_proxy_tests_total") == 2
    # The refused test never reached a backend.
    assert after.get_value("iperf3_proxy_backend_tests_total", backend="embedded-1",
                           kind="embedded") == 1


def test_a_repaired_race_is_counted(proxy_bin, tmp_path, race_env):
    """The race testbed delays the client's sending connection of a --bidir test: the proxy
    repairs the roles, and the counters say so, as the test-ended line does."""
    import race_testbed
    args = race_testbed.client_args(1, seconds=1)
    with race_testbed.NetNamespace("metrics") as ns:
        server_port = harness.free_port(ns.name)
        with harness.IperfServer(server_port, netns=ns.name, log_dir=tmp_path):
            proxy_port = harness.free_port(ns.name)
            metrics_port = harness.free_port(ns.name)
            with harness.Proxy(proxy_port, backend=server_port, netns=ns.name, binary=proxy_bin,
                               log_dir=tmp_path,
                               extra_args=["--metrics", f"127.0.0.1:{metrics_port}"]) as proxy:
                race_testbed.LateHandshakeRule(ns.name, proxy_port, {1}).install()
                result = harness.run_client(proxy_port, args, CLIENT_TIMEOUT_S, netns=ns.name)
                (end,) = wait_ends(proxy, 1)
                metrics = scrape_in(ns.name, metrics_port)
    assert not harness.bidir_problems(result, 1), result.summary()
    repaired = int(re.search(r" roles_repaired=(\d+)", end.line).group(1))
    misordered = int(re.search(r" out_of_order=(\d+)", end.line).group(1))
    assert repaired > 0 and misordered > 0, end.line
    assert metrics.get_value("iperf3_proxy_roles_repaired_total") == repaired
    assert metrics.get_value("iperf3_proxy_out_of_order_connections_total") == misordered
    assert metrics.get_value("iperf3_proxy_tests_total", outcome="completed",
                             reason="completed") == 1


# --------------------------------------------------------------------------------------------
# /healthz and /readyz
# --------------------------------------------------------------------------------------------


def test_readyz_follows_whether_a_backend_listens(proxy_bin, tmp_path):
    dead_port = harness.free_port()
    with metrics_proxy(tmp_path, proxy_bin, backend=dead_port) as proxy:
        assert http_get(proxy.metrics_port, "/healthz") == (200, "ok\n")
        # A given backend counts as up until a connection to it is refused.
        result = harness.run_client(proxy.port, ["-t", "1"], CLIENT_TIMEOUT_S)
        assert result.error and "unable to connect" in result.error, result.summary()
        status, body = http_get(proxy.metrics_port, "/readyz")
        assert status == 503 and "no backend" in body, context(proxy, body)
        # It stays down (checked every second, still refusing), and the process still serves.
        time.sleep(1.5)
        assert http_get(proxy.metrics_port, "/readyz")[0] == 503, context(proxy)
        assert http_get(proxy.metrics_port, "/healthz")[0] == 200
        down = scrape(proxy.metrics_port)
        backend = f"127.0.0.1:{dead_port}"
        assert down.get_value("iperf3_proxy_ready") == 0
        assert down.get_value("iperf3_proxy_backend_state", backend=backend, kind="given",
                              state="down") == 1
        assert down.get_value("iperf3_proxy_tests_total", outcome="refused",
                              reason="backend-unreachable") == 1
        assert http_get(proxy.metrics_port, "/nothing-here")[0] == 404
        # A server starts on that port: ready again within a check or two, and tests run.
        with harness.IperfServer(dead_port, log_dir=tmp_path):
            assert harness.wait_until(lambda: http_get(proxy.metrics_port, "/readyz")[0] == 200,
                                      IO_TIMEOUT_S), context(proxy)
            result = harness.run_client(proxy.port, ["-t", "1"], CLIENT_TIMEOUT_S)
            assert not harness.client_failures(result), context(proxy, result.summary())


# --------------------------------------------------------------------------------------------
# JSON log lines
# --------------------------------------------------------------------------------------------

JSON_CASES = [["-P", "2", "-t", "1"], ["-R", "-t", "1"], ["--bidir", "-t", "1"],
              ["-u", "-b", "10M", "-t", "1"]]


def test_json_records_match_the_clients_results(proxy_bin, tmp_path):
    with harness.Proxy(harness.free_port(), binary=proxy_bin, log_dir=tmp_path,
                       extra_args=["--log-format", "json", "--threads", "2"]) as proxy:
        results = [harness.run_client(proxy.port, args, CLIENT_TIMEOUT_S) for args in JSON_CASES]
        for result in results:
            assert not harness.client_failures(result), result.summary()

        def records() -> list[dict]:
            return [json.loads(line) for line in proxy.log_text().splitlines()]
        assert harness.wait_until(
            lambda: len([r for r in records() if r.get("event") == "test-ended"]) == len(results),
            IO_TIMEOUT_S), context(proxy)
        lines = records()  # every line parses as one JSON object
    for line in lines:
        assert isinstance(line, dict) and {"time", "level", "message"} <= line.keys(), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line
    ended = {r["test"]: r for r in lines if r.get("event") == "test-ended"}
    for args, result in zip(JSON_CASES, results):
        start = result.json["start"]
        record = ended[start["cookie"][:8]]
        test_start = start["test_start"]
        # 3.12 names no --bidir in test_start; its results have a second pair of sums.
        bidir = "sum_sent_bidir_reverse" in result.json["end"]
        mode = "bidir" if bidir else "reverse" if test_start["reverse"] else "forward"
        assert record["message"] == "test ended" and record["level"] == "info", record
        assert record["reason"] == "completed" and record["detail"] == "", record
        assert record["client_version"] == start["version"].split()[-1], (record, start)
        assert record["protocol"] == test_start["protocol"].lower(), record
        assert record["mode"] == mode, (args, record)
        assert record["streams"] == test_start["num_streams"], (args, record)
        assert record["client"].startswith("127.0.0.1:"), record
        assert record["backend"] and record["backends_skipped"] == 0, record
        assert record["duration_s"] > 0 and record["roles_repaired"] >= 0, record
        # Bytes each way it is used: between what the receivers read and what the senders
        # wrote.
        # The proxy counts every datagram it relays: in a UDP test also each stream's 4-byte
        # connect message and the server's 4-byte reply, which iperf3 leaves out.
        handshake = 4 * test_start["num_streams"] if record["protocol"] == "udp" else 0
        used = {"bytes_up": mode != "reverse", "bytes_down": mode != "forward"}
        for client_sends, field in ((True, "bytes_up"), (False, "bytes_down")):
            if used[field]:
                sent, received = _direction_bytes(result.json, client_sends)
                assert received <= record[field] - handshake <= sent, (
                    args, field, received, record, sent)
            else:
                assert record[field] == handshake, (args, field, record)
    # Lines of a test carry its id, moved out of the message.
    assert any(r.get("test") and "TEST_RUNNING" in r["message"] for r in lines)
    assert not any(r["message"].startswith("[s:") for r in lines)


def _direction_bytes(doc: dict, client_sends: bool) -> tuple[int, int]:
    """(sender bytes, receiver bytes) of one direction's streams (a UDP test has one)."""
    if doc["start"]["test_start"]["protocol"] == "UDP":
        end = doc["end"]
        return end["sum_sent"]["bytes"], end["sum_received"]["bytes"]
    groups = [s for s in harness.stream_bytes(doc) if s.client_sends == client_sends]
    return sum(s.sender_bytes for s in groups), sum(s.receiver_bytes for s in groups)


# --------------------------------------------------------------------------------------------
# -D, -I, --logfile
# --------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive: the daemon's parent is init, which reaps it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_daemon_pidfile_logfile_and_sighup_reopen(proxy_bin, tmp_path):
    """Relative paths, as a user types them: they must survive the daemon's chdir("/")."""
    port = harness.free_port()
    pid: Optional[int] = None
    with harness.start_iperf_server(log_dir=tmp_path) as server:
        try:
            started = subprocess.run(
                [str(proxy_bin), "-D", "-I", "proxy.pid", "--logfile", "proxy.log", "-p",
                 str(port), "--backend", f"127.0.0.1:{server.port}"],
                cwd=tmp_path, capture_output=True, text=True, timeout=IO_TIMEOUT_S)
            # The command returns once the daemon is ready: it listens already.
            assert started.returncode == 0, started.stderr
            pid = int((tmp_path / "proxy.pid").read_text())
            assert _alive(pid) and harness.is_listening(pid, port)
            log = tmp_path / "proxy.log"
            assert " ready: listening on " in log.read_text()

            result = harness.run_client(port, ["-t", "1"], CLIENT_TIMEOUT_S)
            assert not harness.client_failures(result), result.summary()
            assert harness.wait_until(lambda: len(harness.session_ends(log.read_text())) == 1,
                                      IO_TIMEOUT_S), log.read_text()

            # logrotate: rename, SIGHUP, and the next lines go to a new file of the old name.
            log.rename(tmp_path / "proxy.log.1")
            os.kill(pid, signal.SIGHUP)
            assert harness.wait_until(log.exists, IO_TIMEOUT_S)
            result = harness.run_client(port, ["-R", "-t", "1"], CLIENT_TIMEOUT_S)
            assert not harness.client_failures(result), result.summary()
            assert harness.wait_until(lambda: len(harness.session_ends(log.read_text())) == 1,
                                      IO_TIMEOUT_S), log.read_text()
            rotated = (tmp_path / "proxy.log.1").read_text()
            assert len(harness.session_ends(rotated)) == 1 and "reopened" not in rotated
            assert "reopened the log file" in log.read_text()

            os.kill(pid, signal.SIGTERM)
            assert harness.wait_until(lambda: not _alive(pid), IO_TIMEOUT_S), log.read_text()
            pid = None
            assert not (tmp_path / "proxy.pid").exists()
            assert log.read_text().rstrip().endswith("stopped")
        finally:
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_startup_error_after_the_fork_is_printed(proxy_bin, tmp_path):
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        busy_port = taken.getsockname()[1]
        base = [str(proxy_bin), "-p", str(harness.free_port()), "--backend", "127.0.0.1:9",
                "--logfile", str(tmp_path / "proxy.log")]
        # The metrics port is taken: found after the fork, said by the command that forked.
        started = subprocess.run([*base, "-D", "-I", str(tmp_path / "proxy.pid"), "--metrics",
                                  f"127.0.0.1:{busy_port}"],
                                 capture_output=True, text=True, timeout=IO_TIMEOUT_S)
        assert started.returncode == 1, started
        assert f"cannot serve --metrics 127.0.0.1:{busy_port}" in started.stderr, started.stderr
        assert "Address already in use" in started.stderr, started.stderr
        assert not (tmp_path / "proxy.pid").exists()
        # A pidfile that cannot be written, likewise.
        started = subprocess.run([*base, "-D", "-I", str(tmp_path / "no-such-dir" / "pid")],
                                 capture_output=True, text=True, timeout=IO_TIMEOUT_S)
        assert started.returncode == 1 and "cannot write --pidfile" in started.stderr, started
        # Without -D but with --logfile, a failed start is still said on stderr.
        started = subprocess.run([*base, "--metrics", f"127.0.0.1:{busy_port}"],
                                 capture_output=True, text=True, timeout=IO_TIMEOUT_S)
        assert started.returncode == 1 and "Address already in use" in started.stderr, started
        # A malformed --metrics is an argument error.
        started = subprocess.run([*base, "--metrics", "::1:80"], capture_output=True, text=True,
                                 timeout=IO_TIMEOUT_S)
        assert started.returncode == 2 and "brackets" in started.stderr, started
    finally:
        taken.close()


# --------------------------------------------------------------------------------------------
# Resources at start
# --------------------------------------------------------------------------------------------


def _open_files_soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no 'Max open files' in /proc/PID/limits")


def test_open_files_raised_and_too_few_warned(proxy_bin, tmp_path):
    proxy = harness.Proxy(harness.free_port(), binary=proxy_bin, log_dir=tmp_path)
    proxy.preexec_fn = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, 4096))
    with proxy:
        assert _open_files_soft_limit(proxy.pid) == 4096
        assert "open files: 4096 (raised from 512" in proxy.log_text(), context(proxy)
        assert "room for --max-tests 64 tests" in proxy.log_text(), context(proxy)
    # 256 cannot hold 512 pending connections and 64 tests.
    with harness.Proxy(harness.free_port(), binary=proxy_bin, log_dir=tmp_path,
                       rlimit_nofile=256) as proxy:
        assert re.search(r"warning 256 open files are too few for --max-tests 64",
                         proxy.log_text()), context(proxy)
