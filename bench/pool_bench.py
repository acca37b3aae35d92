#!/usr/bin/python3
"""Benchmark: many tests at once through one proxy port in front of a pool of iperf3 servers.

A benchmark, not a test: it prints figures and decides nothing. Run as root or not, from the
repository root, with Debian's python (it reuses integration/harness.py):

    /usr/bin/python3 bench/pool_bench.py                 # 32 tests, 8 servers, 3 rounds
    /usr/bin/python3 bench/pool_bench.py --tests 32 --servers 8 --rounds 5 --threads 2

What it measures, in one run, rotating the order of the paths in every round:

  set-up   Short tests (`-k 1`: one block each way, the test is nearly all set-up and
           tear-down), the same load on both paths: as many client chains as servers, each
           running its share of the tests one after the other. `direct`: each chain has an
           `iperf3 -s` of its own. `proxy`: every chain dials the proxy, which has that many
           embedded servers. A test's time is its client's wall time. p50 and p99 of both, and
           proxy / direct.
  burst    All the tests started at once against the proxy (more tests than servers, so most
           wait in the queue): how many completed, and the queue waits the proxy reports
           (`queued=` in each summary line), p50 and max.
  load     The same number of full-rate tests (`-t T`, mixed modes) at once through the proxy:
           the proxy's peak RSS (VmHWM) and CPU seconds (utime + stime) over the run.

The proxy binary: $IPERF3_PROXY_BIN, else build/release/src/iperf3-proxy, else
build/ci/src/iperf3-proxy.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "integration"))
import harness  # noqa: E402

SHORT = ["-k", "1"]
LOAD_MODES = [["--bidir", "-P", "2"], ["-R", "-P", "4"], [], ["-u", "--bidir", "-b", "20M"]]


def proxy_binary() -> str:
    if os.environ.get("IPERF3_PROXY_BIN"):
        return os.environ["IPERF3_PROXY_BIN"]
    for preset in ("release", "ci"):
        path = REPO / "build" / preset / "src" / "iperf3-proxy"
        if path.exists():
            return str(path)
    sys.exit("no proxy binary: build it (cmake --preset release && cmake --build --preset "
             "release) or set IPERF3_PROXY_BIN")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_chains(ports: list[int], tests: int) -> list[float]:
    """Runs `tests` short tests in len(ports) concurrent chains, chain i against ports[i]."""
    def chain(port: int, count: int) -> list[float]:
        times = []
        for _ in range(count):
            result = harness.run_client(port, SHORT, 30.0)
            if not harness.client_failures(result):
                times.append(result.duration)
        return times

    share = [tests // len(ports) + (1 if i < tests % len(ports) else 0) for i in range(len(ports))]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(ports)) as pool:
        chains = list(pool.map(chain, ports, share))
    return [t for times in chains for t in times]


def setup_direct(tests: int, servers: int, log_dir: Path) -> list[float]:
    started = [harness.start_iperf_server(log_dir=log_dir) for _ in range(servers)]
    try:
        return run_chains([server.port for server in started], tests)
    finally:
        for server in started:
            server.stop()


def proxy_args(servers: int, threads: int) -> list[str]:
    return ["--servers", str(servers), "--queue-timeout", "120000", "--threads", str(threads),
            "--log-level", "info"]


def setup_proxy(binary: str, tests: int, servers: int, threads: int, log_dir: Path) -> list[float]:
    with harness.Proxy(harness.free_port(), binary=binary, log_dir=log_dir,
                       extra_args=proxy_args(servers, threads)) as proxy:
        return run_chains([proxy.port] * servers, tests)


def burst_proxy(binary: str, tests: int, servers: int, threads: int,
                log_dir: Path) -> tuple[int, list[float]]:
    """All tests at once: how many completed, and each one's queue wait (seconds)."""
    with harness.Proxy(harness.free_port(), binary=binary, log_dir=log_dir,
                       extra_args=proxy_args(servers, threads)) as proxy:
        with concurrent.futures.ThreadPoolExecutor(max_workers=tests) as pool:
            results = list(pool.map(lambda _: harness.run_client(proxy.port, SHORT, 120.0),
                                    range(tests)))
        harness.wait_until(lambda: len(harness.session_ends(proxy.log_text())) >= tests, 10)
        waits = []
        for end in harness.session_ends(proxy.log_text()):
            m = re.search(r" queued=([\d.]+)s", end.line)
            waits.append(float(m.group(1)) if m else 0.0)
        completed = sum(1 for result in results if not harness.client_failures(result))
        return completed, waits


def load_proxy(binary: str, tests: int, servers: int, threads: int, seconds: int,
               log_dir: Path) -> tuple[float, float, int]:
    with harness.Proxy(harness.free_port(), binary=binary, log_dir=log_dir,
                       extra_args=proxy_args(servers, threads)) as proxy:
        cpu_before = cpu_seconds(proxy.pid)
        runs = [[*LOAD_MODES[i % len(LOAD_MODES)], "-t", str(seconds)] for i in range(tests)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=tests) as pool:
            results = list(pool.map(lambda args: harness.run_client(proxy.port, args, 300.0),
                                    runs))
        cpu = cpu_seconds(proxy.pid) - cpu_before
        rss = peak_rss_mib(proxy.pid)
        failed = sum(1 for r in results if harness.client_failures(r))
        return rss, cpu, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=32)
    parser.add_argument("--servers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-t", "--time", type=int, default=5, help="seconds of each load test")
    args = parser.parse_args()
    binary = proxy_binary()
    log_dir = Path(os.environ.get("BENCH_LOG_DIR", "/tmp")) / f"pool-bench-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"# pool benchmark {time.strftime('%Y-%m-%d %H:%M')} on {os.uname().nodename}, "
          f"{os.cpu_count()} CPUs: {args.tests} tests, {args.servers} servers, "
          f"--threads {args.threads}, {args.rounds} rounds; proxy {binary}")
    direct, proxied, bursts, loads = [], [], [], []
    for round_no in range(args.rounds):
        order = ["direct", "proxy"] if round_no % 2 == 0 else ["proxy", "direct"]
        for path in order:
            if path == "direct":
                direct += setup_direct(args.tests, args.servers, log_dir)
            else:
                proxied += setup_proxy(binary, args.tests, args.servers, args.threads, log_dir)
        bursts.append(burst_proxy(binary, args.tests, args.servers, args.threads, log_dir))
        loads.append(load_proxy(binary, args.tests, args.servers, args.threads, args.time,
                                log_dir))
        print(f"round {round_no + 1}: set-up samples direct={len(direct)} proxy={len(proxied)}; "
              f"burst: {bursts[-1][0]}/{args.tests} completed; "
              f"load: peak RSS {loads[-1][0]:.1f} MiB, CPU {loads[-1][1]:.2f} s, "
              f"{loads[-1][2]} failed", flush=True)
    print()
    print(f"set-up (client wall time of `iperf3 -c -k 1`, {args.servers} chains of tests), "
          "seconds")
    print(f"{'':10} {'p50':>8} {'p99':>8} {'n':>5}")
    for name, values in (("direct", direct), ("proxy", proxied)):
        print(f"{name:10} {percentile(values, 50):8.4f} {percentile(values, 99):8.4f} "
              f"{len(values):5d}")
    print(f"{'proxy/dir':10} {percentile(proxied, 50) / percentile(direct, 50):8.3f} "
          f"{percentile(proxied, 99) / percentile(direct, 99):8.3f}")
    print()
    waits = [wait for burst in bursts for wait in burst[1]]
    print(f"burst ({args.tests} tests at once, {args.servers} servers): completed "
          f"{sum(burst[0] for burst in bursts)}/{args.tests * len(bursts)}; queue wait p50 "
          f"{percentile(waits, 50):.3f} s, max {max(waits, default=0.0):.3f} s")
    rss = [load[0] for load in loads]
    cpu = [load[1] for load in loads]
    print(f"load ({args.tests} tests at once, -t {args.time}, mixed modes): proxy peak RSS "
          f"median {statistics.median(rss):.1f} MiB (max {max(rss):.1f}), CPU median "
          f"{statistics.median(cpu):.2f} s per round; failed tests: "
          f"{sum(load[2] for load in loads)}")
    print(f"logs: {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
