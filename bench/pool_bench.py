#!/usr/bin/python3
"""Benchmark: many tests at once through one proxy port in front of a pool of iperf3 servers.

A benchmark, not a test: it prints figures and decides nothing. Run as root or not, from the
repository root, with Debian's python (it reuses integration/harness.py):

    /usr/bin/python3 bench/pool_bench.py                 # 32 tests, 8 servers, 3 rounds
    /usr/bin/python3 bench/pool_bench.py --tests 32 --servers 8 --rounds 5 --threads 2

What it measures, in one run, rotating the order of the paths in every round:

  set-up   Short tests (`-k 1`: one block each way), the same load on both paths: as many
           client chains as servers, each running its share of the tests one after the other.
           `direct`: each chain has an `iperf3 -s` of its own. `proxy`: every chain dials the
           proxy, which has that many embedded servers. A test's set-up time runs from the
           client's exec to its first data write, which it makes on TEST_RUNNING (taken from
           `strace -ttt` of the client's writes alone: the same small cost on both paths); its
           whole time is the client's wall time, set-up plus the test plus tear-down (where the
           proxy waits for the upload to drain at TEST_END). p50 and p99 of both, and
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
import shutil
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
    return cpu_seconds_of(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`, by thread id."""
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            seconds[int(task.name)] = cpu_seconds_of(task / "stat")
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended
    return seconds


def cpu_seconds_of(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_seconds() -> float:
    """Seconds all CPUs of the machine spent idle (or waiting for I/O) since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# A client wrapped in strace, tracing only its exec and its writes (seccomp-bpf: the other system
# calls do not stop), into the file named by $SETUP_TRACE.
TRACED_CLIENT = """#!/bin/sh
exec strace -f -qq -ttt --seccomp-bpf -e trace=execve,write -e signal=none \\
    -o "$SETUP_TRACE" {iperf3} "$@"
"""
TRACE_LINE = re.compile(r"^(?:\d+\s+)?(\d+\.\d+) (\w+)\((\d+)?.*= (-?\d+)")
# The smallest write that is test data: iperf3's control messages are a few bytes to a few KiB
# of JSON, its TCP blocks 128 KiB by default.
DATA_WRITE_MIN = 16 * 1024


def traced_client(log_dir: Path) -> Path:
    if not shutil.which("strace"):
        sys.exit("pool_bench: strace is missing (scripts/install-deps.sh --bench installs it)")
    path = log_dir / "iperf3-traced"
    path.write_text(TRACED_CLIENT.format(iperf3=harness.iperf3_binary()))
    path.chmod(0o755)
    return path


def setup_seconds(trace: Path) -> tuple[float, float] | None:
    """From the client's exec, and from its first write (the cookie, just after it connected),
    to its first data write; None if it wrote no data."""
    started = connected = None
    for line in trace.read_text().splitlines():
        m = TRACE_LINE.match(line)
        if not m:
            continue
        stamp, call, fd, result = float(m[1]), m[2], m[3], int(m[4])
        if started is None:
            started = stamp  # the first line is the exec
        elif call != "write" or fd in ("1", "2"):
            continue
        elif connected is None:
            connected = stamp
        elif result >= DATA_WRITE_MIN:
            return stamp - started, stamp - connected
    return None


def run_chains(ports: list[int], tests: int, log_dir: Path) -> list[tuple[float, float, float]]:
    """Runs `tests` short tests in len(ports) concurrent chains, chain i against ports[i]:
    (set-up from exec, set-up from connect, whole) seconds of each test that succeeded."""
    client = traced_client(log_dir)

    def chain(index: int, port: int, count: int) -> list[tuple[float, float, float]]:
        times = []
        trace = log_dir / f"chain{index}.trace"
        for _ in range(count):
            result = harness.run_client(port, SHORT, 30.0, binary=str(client),
                                        env={"SETUP_TRACE": str(trace)})
            setup = setup_seconds(trace) if trace.exists() else None
            if not harness.client_failures(result) and setup is not None:
                times.append((*setup, result.duration))
        return times

    share = [tests // len(ports) + (1 if i < tests % len(ports) else 0) for i in range(len(ports))]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(ports)) as pool:
        chains = list(pool.map(chain, range(len(ports)), ports, share))
    return [t for times in chains for t in times]


def setup_direct(tests: int, servers: int, log_dir: Path) -> list[tuple[float, float, float]]:
    started = [harness.start_iperf_server(log_dir=log_dir) for _ in range(servers)]
    try:
        return run_chains([server.port for server in started], tests, log_dir)
    finally:
        for server in started:
            server.stop()


def proxy_args(servers: int, threads: int | None) -> list[str]:
    # No --threads: the proxy's own default (one loop per core), as users run it.
    thread_args = [] if threads is None else ["--threads", str(threads)]
    return ["--servers", str(servers), "--queue-timeout", "120000", *thread_args,
            "--log-level", "info"]


def setup_proxy(binary: str, tests: int, servers: int, threads: int | None,
                log_dir: Path) -> list[tuple[float, float, float]]:
    with harness.Proxy(harness.free_port(), binary=binary, log_dir=log_dir,
                       extra_args=proxy_args(servers, threads)) as proxy:
        return run_chains([proxy.port] * servers, tests, log_dir)


def burst_proxy(binary: str, tests: int, servers: int, threads: int | None,
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


def load_proxy(binary: str, tests: int, servers: int, threads: int | None, seconds: int,
               log_dir: Path) -> tuple[float, float, int, float, float]:
    """Peak RSS (MiB), CPU seconds and failed tests of a round of `tests` tests at once; the
    busiest proxy thread's CPU as a share of the round's wall time, and the machine's idle CPUs
    over it (to tell a proxy thread that caps the test from a machine that is simply full)."""
    with harness.Proxy(harness.free_port(), binary=binary, log_dir=log_dir,
                       extra_args=proxy_args(servers, threads)) as proxy:
        cpu_before = cpu_seconds(proxy.pid)
        threads_before = thread_cpu_seconds(proxy.pid)
        idle_before = idle_cpu_seconds()
        wall_before = time.monotonic()
        runs = [[*LOAD_MODES[i % len(LOAD_MODES)], "-t", str(seconds)] for i in range(tests)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=tests) as pool:
            results = list(pool.map(lambda args: harness.run_client(proxy.port, args, 300.0),
                                    runs))
        wall = time.monotonic() - wall_before
        idle = idle_cpu_seconds() - idle_before
        cpu = cpu_seconds(proxy.pid) - cpu_before
        threads_after = thread_cpu_seconds(proxy.pid)
        busiest = max((used - threads_before.get(tid, 0.0) for tid, used in threads_after.items()),
                      default=0.0)
        rss = peak_rss_mib(proxy.pid)
        failed = sum(1 for r in results if harness.client_failures(r))
        return rss, cpu, failed, busiest / wall, idle / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=32)
    parser.add_argument("--servers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="proxy event loops (default: the proxy's own, one per core)")
    parser.add_argument("-t", "--time", type=int, default=5, help="seconds of each load test")
    args = parser.parse_args()
    binary = proxy_binary()
    log_dir = Path(os.environ.get("BENCH_LOG_DIR", "/tmp")) / f"pool-bench-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"# pool benchmark {time.strftime('%Y-%m-%d %H:%M')} on {os.uname().nodename}, "
          f"{os.cpu_count()} CPUs: {args.tests} tests, {args.servers} servers, "
          f"--threads {args.threads or 'default'}, {args.rounds} rounds; proxy {binary}")
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
              f"{loads[-1][2]} failed, busiest thread {100 * loads[-1][3]:.0f} %, idle CPUs "
              f"{loads[-1][4]:.2f}", flush=True)
    print()
    print(f"`iperf3 -c -k 1` in {args.servers} chains of tests, seconds. set-up: from the "
          "client's exec (what a user waits) and from its connect (the protocol alone) to its "
          "first data write; whole: wall time")
    columns = ("set-up", "from conn", "whole")
    print(f"{'':10} " + " ".join(f"{c + ' p50':>15} {'p99':>7}" for c in columns) + f" {'n':>5}")
    for name, samples in (("direct", direct), ("proxy", proxied)):
        cells = [f"{percentile([t[c] for t in samples], 50):15.4f} "
                 f"{percentile([t[c] for t in samples], 99):7.4f}" for c in range(3)]
        print(f"{name:10} " + " ".join(cells) + f" {len(samples):5d}")
    cells = []
    for c in range(3):
        ratio = [percentile([t[c] for t in proxied], p) / percentile([t[c] for t in direct], p)
                 for p in (50, 99)]
        cells.append(f"{ratio[0]:15.3f} {ratio[1]:7.3f}")
    print(f"{'proxy/dir':10} " + " ".join(cells))
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
          f"{sum(load[2] for load in loads)}; busiest proxy thread median "
          f"{100 * statistics.median(load[3] for load in loads):.0f} % of one CPU (max "
          f"{100 * max(load[3] for load in loads):.0f} %) while the machine had "
          f"{statistics.median(load[4] for load in loads):.2f} CPUs idle")
    print(f"logs: {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
