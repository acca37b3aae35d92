#!/usr/bin/python3
"""A pool of different iperf3 versions behind one proxy port, and every client version against it
(issue 8: "backends and clients may be any iperf3 from 3.7 to master, in any mix").

Run (about a minute; needs the iperf3 builds of scripts/iperf3-versions.sh, see
integration/iperf3_versions.py):

    /usr/bin/python3 -m pytest integration/test_pool_versions.py -v

One iperf3 -s of each version (3.9, 3.12, 3.16, 3.18, 3.20) behind one proxy with a queue. In each
round, one client of every version starts at once, so every client version lands on some server
version and every server version runs some client: TCP `--bidir -P 2`, UDP, `-R -P 3`. Every test
must complete with every stream moving data, and the proxy must have used every server.
(Byte-exact uploads are checked by test_versions.py per pair; they hold only where both ends are
older than 3.16, see iperf3_versions.py.)
"""

from __future__ import annotations

import concurrent.futures
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from fake_client import context  # noqa: E402
from iperf3_versions import VERSIONS  # noqa: E402

ROUNDS = [
    ("tcp --bidir -P 2", ["--bidir", "-P", "2", "-t", "2", "-b", "100M"], False),
    ("udp", ["-u", "-b", "10M", "-t", "2"], True),
    ("tcp -R -P 3", ["-R", "-P", "3", "-t", "2", "-b", "100M"], False),
]


def stream_problems(result: harness.ClientResult, udp: bool) -> list[str]:
    problems = harness.client_failures(result)
    entries = ((result.json or {}).get("end") or {}).get("streams", [])
    if not entries:
        problems.append("no streams")
    for i, entry in enumerate(entries):
        if udp:
            s = entry.get("udp", {})
            if s.get("bytes", 0) <= 0 or s.get("packets", 0) <= 0:
                problems.append(f"UDP stream#{i}: {s.get('bytes')} bytes, {s.get('packets')} "
                                f"packets")
            elif s.get("lost_percent", 100.0) > 20.0:
                problems.append(f"UDP stream#{i}: {s.get('lost_percent')}% lost")
            continue
        sender = (entry.get("sender") or {}).get("bytes", 0)
        receiver = (entry.get("receiver") or {}).get("bytes", 0)
        if sender <= 0 or receiver <= 0:
            problems.append(f"stream#{i}: sender {sender}, receiver {receiver}")
    return problems


def test_every_client_version_against_a_pool_of_every_server_version(iperf3_peers, proxy_bin,
                                                                      tmp_path):
    servers = {}
    try:
        for version in VERSIONS:
            servers[version] = harness.start_iperf_server(
                binary=iperf3_peers[version].binary, log_dir=tmp_path)
        backend_args = []
        for server in servers.values():
            backend_args += ["--backend", f"127.0.0.1:{server.port}"]
        with harness.Proxy(harness.free_port(), binary=proxy_bin, log_dir=tmp_path,
                           extra_args=[*backend_args, "--queue-timeout", "30000"]) as proxy:
            failures, tests = [], 0
            for name, args, udp in ROUNDS:
                with concurrent.futures.ThreadPoolExecutor(max_workers=len(VERSIONS)) as pool:
                    futures = {v: pool.submit(harness.run_client, proxy.port, args, 40.0,
                                              binary=iperf3_peers[v].binary) for v in VERSIONS}
                    results = {v: f.result() for v, f in futures.items()}
                tests += len(VERSIONS)
                for version, result in results.items():
                    problems = stream_problems(result, udp)
                    if problems:
                        failures.append(f"{name}, client {version}: {problems}\n"
                                        f"{result.summary()}")
            assert not failures, context(proxy, *failures)
            assert harness.wait_until(
                lambda: len(harness.session_ends(proxy.log_text())) >= tests, 10), context(proxy)
            ends = harness.session_ends(proxy.log_text())
            assert all(e.reason == "completed" for e in ends), context(proxy)
            used = {m.group(1) for e in ends if (m := re.search(r" backend=(\S+)", e.line))}
            by_port = {f"127.0.0.1:{s.port}": v for v, s in servers.items()}
            assert {by_port.get(b) for b in used} == set(VERSIONS), context(
                proxy, f"server versions used: {sorted(by_port.get(b, b) for b in used)}")
            assert proxy.stop() == 0, context(proxy)
    finally:
        for server in servers.values():
            server.stop()
