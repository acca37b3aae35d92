#!/usr/bin/python3
"""Short `--bidir` tests (`-n`/`-k` ending within milliseconds): through the proxy as directly.

Run (root; about 20 s):

    /usr/bin/python3 -m pytest integration/test_short_bidir.py -v

THE TABLE (issue 12). Every row runs RUNS times directly and RUNS times through the proxy, in
one private network namespace (a clean loopback) with one `iperf3 -s` and one proxy, the paths
alternating. Streams are compared by their place in the client's report (its senders, then its
receivers, each in creation order). Per row:
  * completes: no proxied run fails (the direct ones must all complete); the proxy logs one
    completed test per run, with no guessed role;
  * uploads exact: every client-to-server stream through the proxy counts, at the server,
    exactly what the client sent (directly the server often counts less, down to 0 B for -k 1);
  * every stream moves data: a stream that moved data (sender and receiver counts above 0) in a
    direct run moves data in every proxied run, except what is physically out of reach
    (below), which is marked xfail with the figures of both paths;
  * for the -P 1 rows out of reach: the proxy did pair the receiving connection and delivered
    the server's bytes to it (its summary's down_bytes), so nothing but the client's timing
    kept them from being counted.

THE PHYSICAL LIMIT. iperf3 3.12's client (one select() loop) counts a received byte only in
a loop iteration that runs in TEST_RUNNING, reads only the sockets that were readable when that
iteration's select() returned, and stops reading its receiving streams once it has sent
TEST_END (src/iperf_client_api.c: iperf_run_client; iperf_api.c: iperf_send, iperf_recv). Its
first running iteration writes as much as its socket buffers take, on loopback 1.5 to 2 MB per
sending stream, and when that reaches its -n/-k it sends TEST_END in that same iteration: it
then counts only what was readable *before its first write*. Directly the server's first block
is there about 20 us after TEST_RUNNING, before that. Through the proxy, nothing on a plain
client's data connection says which ones receive until the client writes on its senders (no
role byte; source-port order is a guess), so the server's bytes reach the receiving connection
just after the client stopped counting. That is rows -k 1, -k 10 and -n 1M. In -n 1K -P 2 the
client reaches 1K on its first sender and never writes on the second, which therefore cannot
ever be told from the two receivers: the receivers are never certain (and would fall under the
same limit if they were). A client that sends the role byte (docs/ROLE_BYTE.md) has every
connection paired before the test runs and is not limited.

A RUN LOST TO THE HOST. Through the proxy the path holds more bytes than directly (a second
hop's socket buffers), so when the server gets no CPU for a few milliseconds right after
TEST_RUNNING (three busy processes on a shared 2-core host) a -n 10M client can write its
whole test into those buffers and end it before the server's first bytes arrive; directly it
would have waited for the server. The proxy bounds what it holds unsent (128 KiB per
connection) and relays the first bytes within about a millisecond once their role is certain,
but cannot give the server a CPU: on this 2-core host at load 10, 2 runs in 150 still lost a
stream (before this was fixed, 10 in 150; direct, none; bench/README.md). So a proxied run in
which a stream within reach moved no data is repeated up to REPEATS times, with a warning that
shows it, and the last repeat counts: a proxy that loses streams by itself still fails.

THE RACE TESTBED. The same short tests with race_testbed.LateHandshakeRule making connections
that cross the sender/receiver boundary complete their handshake late. Directly that swaps
roles (the run must show it); through the proxy (the rule on the proxy's port) each run must
complete, deliver uploads exactly, repair roles, and move data on every stream that moves
data in a clean direct run, with the same physical limit.

Everything here needs root, `ip`, `nft` and network namespaces (conftest.race_env).
"""

from __future__ import annotations

import dataclasses
import re
import sys
import warnings
from pathlib import Path
from typing import Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import race_testbed  # noqa: E402

pytestmark = pytest.mark.usefixtures("race_env")

RUNS = 3
# Extra proxied runs standing in for one in which a stream within reach moved no data (see
# "A RUN LOST TO THE HOST" above); the last one counts.
REPEATS = 2
CLIENT_TIMEOUT_S = 20.0

FITS_FIRST_ITERATION = (
    "physical limit: the client writes its whole -n/-k in its first running select() iteration "
    "and sends TEST_END in it, counting only bytes readable before its first write; the "
    "receiving connections are certain only after that write")
SENDER_NEVER_WRITES = (
    "physical limit: the client never writes on its second sender, which cannot be told from "
    "the receivers, so no receiver is ever certain (and the client sends TEST_END in its first "
    "running iteration anyway)")


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    parallel: int
    ending: tuple[str, ...]
    # Why the proxy cannot make the client's receiving streams count, or "" if it can.
    out_of_reach: str = ""

    def args(self) -> list[str]:
        return harness.bidir_args(self.parallel, rcv_timeout_ms=None, ending=self.ending)


ROWS = [
    Row("k1", 1, ("-k", "1"), FITS_FIRST_ITERATION),
    Row("k10", 1, ("-k", "10"), FITS_FIRST_ITERATION),
    Row("n1M", 1, ("-n", "1M"), FITS_FIRST_ITERATION),
    Row("n10M-P2", 2, ("-n", "10M")),
    Row("n1K-P2", 2, ("-n", "1K"), SENDER_NEVER_WRITES),
]
ROW_BY_ID = {row.id: row for row in ROWS}


@dataclasses.dataclass
class ProxiedRun:
    result: harness.ClientResult
    end: Optional[harness.SessionEnd]  # the proxy's summary of this test


@dataclasses.dataclass
class Table:
    direct: dict[str, list[harness.ClientResult]]
    proxied: dict[str, list[ProxiedRun]]
    # Proxied runs in which a stream within reach moved no data, each with what stood in for it
    # (REPEATS at most; the last one counts).
    repeated: dict[str, list[tuple[harness.ClientResult, list[harness.ClientResult]]]]
    proxy_log: str


def session_id(result: harness.ClientResult) -> Optional[str]:
    """The proxy names a test by the first 8 characters of its cookie."""
    cookie = (result.json or {}).get("start", {}).get("cookie")
    return cookie[:8] if cookie else None


def with_summaries(results: list[harness.ClientResult], log: str) -> list[ProxiedRun]:
    ends = {end.sid: end for end in harness.session_ends(log)}
    return [ProxiedRun(result, ends.get(session_id(result) or "")) for result in results]


@pytest.fixture(scope="module")
def table(proxy_bin, tmp_path_factory) -> Table:
    log_dir = tmp_path_factory.mktemp("short-bidir")
    direct: dict[str, list[harness.ClientResult]] = {row.id: [] for row in ROWS}
    proxied: dict[str, list[harness.ClientResult]] = {row.id: [] for row in ROWS}
    repeated: dict[str, list] = {row.id: [] for row in ROWS}
    with race_testbed.NetNamespace("short") as ns:
        server_port = harness.free_port(ns.name)
        with harness.IperfServer(server_port, netns=ns.name, log_dir=log_dir), \
                harness.Proxy(harness.free_port(ns.name), backend=server_port, netns=ns.name,
                              binary=proxy_bin, log_dir=log_dir) as proxy:

            def run(row: Row, port: int) -> harness.ClientResult:
                return harness.run_client(port, row.args(), CLIENT_TIMEOUT_S, netns=ns.name)

            for round_no in range(RUNS):
                for row in ROWS:
                    paths = [(direct, server_port), (proxied, proxy.port)]
                    for results, port in paths if round_no % 2 == 0 else reversed(paths):
                        results[row.id].append(run(row, port))
            for row in ROWS:
                for i, result in enumerate(proxied[row.id]):
                    stand_ins: list[harness.ClientResult] = []
                    while len(stand_ins) < REPEATS and data_problems(
                            row, direct[row.id], [stand_ins[-1] if stand_ins else result])[0]:
                        stand_ins.append(run(row, proxy.port))
                    if stand_ins:
                        repeated[row.id].append((result, stand_ins))
                        proxied[row.id][i] = stand_ins[-1]
            # Each summary is logged once both control legs closed, just after the client.
            runs = RUNS * len(ROWS) + sum(len(r[1]) for rs in repeated.values() for r in rs)
            harness.wait_until(lambda: len(harness.session_ends(proxy.log_text())) >= runs, 5.0)
            log = proxy.log_text()
    return Table(direct, {row_id: with_summaries(results, log)
                          for row_id, results in proxied.items()}, repeated, log)


# --------------------------------------------------------------------------------------------
# Checks shared by the table and the race testbed
# --------------------------------------------------------------------------------------------


def completion_problems(run: ProxiedRun) -> list[str]:
    problems = harness.client_failures(run.result)
    if run.end is None:
        problems.append("no summary line from the proxy for this test")
    elif run.end.reason != "completed" or "roles_guessed" in run.end.line:
        problems.append(f"proxy: {run.end.line}")
    return problems


def upload_problems(result: harness.ClientResult) -> list[str]:
    return [f"stream#{s.index} (client sends): server counted {s.receiver_bytes} of "
            f"{s.sender_bytes}" for s in result.streams()
            if s.client_sends and s.receiver_bytes != s.sender_bytes]


def moves(stream: harness.StreamBytes) -> bool:
    return stream.sender_bytes > 0 and stream.receiver_bytes > 0


def stream_figures(results: list[harness.ClientResult], index: int) -> str:
    return "/".join(f"{s.sender_bytes}->{s.receiver_bytes}" for r in results
                    for s in r.streams() if s.index == index) or "none"


def data_problems(row: Row, direct: list[harness.ClientResult],
                  proxied: list[harness.ClientResult]) -> tuple[list[str], list[str]]:
    """(problems, out-of-reach shortfalls): streams that moved data in a direct run but not in
    every proxied run. A client receiving stream of a row whose receivers are out of reach is a
    shortfall, not a problem."""
    problems: list[str] = []
    shortfalls: list[str] = []
    moved_directly = {s.index: s.client_sends for r in direct for s in r.streams() if moves(s)}
    for index, client_sends in sorted(moved_directly.items()):
        if all(any(s.index == index and moves(s) for s in r.streams()) for r in proxied):
            continue
        text = (f"stream#{index} ({'client sends' if client_sends else 'client receives'}): "
                f"sent->counted direct {stream_figures(direct, index)}, "
                f"proxied {stream_figures(proxied, index)} B")
        (shortfalls if row.out_of_reach and not client_sends else problems).append(text)
    return problems, shortfalls


def assert_or_xfail(row: Row, problems: list[str], shortfalls: list[str], context: str) -> None:
    assert not problems, "\n".join(problems) + "\n" + context
    if shortfalls:
        pytest.xfail(f"{row.out_of_reach}: " + "; ".join(shortfalls))


def describe(results: list[harness.ClientResult]) -> str:
    return "\n".join(r.summary() for r in results)


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_completes_as_directly(table: Table, row: Row):
    for result in table.direct[row.id]:
        assert not harness.client_failures(result), f"direct run failed:\n{result.summary()}"
    for run in table.proxied[row.id]:
        problems = completion_problems(run)
        assert not problems, "\n".join(problems) + "\n" + run.result.summary() + \
            "\nproxy log tail:\n" + "\n".join(table.proxy_log.splitlines()[-40:])


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_uploads_exact_through_the_proxy(table: Table, row: Row):
    for run in table.proxied[row.id]:
        problems = upload_problems(run.result)
        assert not problems, "\n".join(problems) + "\n" + run.result.summary()


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_every_stream_moves_data_as_directly(table: Table, row: Row):
    proxied = [run.result for run in table.proxied[row.id]]
    for lost, stand_ins in table.repeated[row.id]:
        warnings.warn(f"{row.id}: a proxied run lost a stream and was repeated "
                      f"{len(stand_ins)} time(s):\n{lost.summary()}\nrepeat(s):\n"
                      f"{describe(stand_ins)}")
    problems, shortfalls = data_problems(row, table.direct[row.id], proxied)
    assert_or_xfail(row, problems, shortfalls,
                    f"direct:\n{describe(table.direct[row.id])}\nproxied:\n{describe(proxied)}")


@pytest.mark.parametrize("row", [row for row in ROWS if row.out_of_reach and row.parallel == 1],
                         ids=lambda row: row.id)
def test_out_of_reach_receiver_still_gets_the_servers_bytes(table: Table, row: Row):
    """The limit is the client's timing, not the proxy: the receiving connection was paired and
    the server's bytes delivered to it, only after the client had stopped counting."""
    for run in table.proxied[row.id]:
        sent = sum(s.sender_bytes for s in run.result.streams() if not s.client_sends)
        assert run.end is not None and sent > 0 and run.end.down_bytes == sent, (
            f"server sent {sent} B to the client, the proxy delivered "
            f"{run.end.down_bytes if run.end else '?'} B\n{run.result.summary()}")


# --------------------------------------------------------------------------------------------
# The race testbed
# --------------------------------------------------------------------------------------------

# (row, late connection indexes): 0 is the control connection, 1..P the client's senders.
# Every case makes a sender late, so a plain server gives a client receiver its receiving role.
RACE_CASES = [
    pytest.param("k1", {1}, id="k1-late1"),
    pytest.param("k10", {1}, id="k10-late1"),
    pytest.param("n1M", {1}, id="n1M-late1"),
    pytest.param("n10M-P2", {1, 2}, id="n10M-P2-late1+2"),
    pytest.param("n1K-P2", {1}, id="n1K-P2-late1"),
]


@pytest.mark.parametrize("row_id,late", RACE_CASES)
def test_race_testbed_short_test(table: Table, proxy_bin, tmp_path, row_id: str, late: set):
    row = ROW_BY_ID[row_id]
    common = dict(ending=row.ending, rcv_timeout_ms=2000, client_timeout=CLIENT_TIMEOUT_S,
                  log_dir=tmp_path)
    racing = race_testbed.run_case(row.parallel, late, direct=True, label="shortd", **common)
    assert not racing.misses, racing.context()
    # The testbed does what it is for: directly, the late sender swaps roles, so the test fails
    # or a stream that moves data in a clean direct run does not. A clean direct run of a short
    # row may itself count no stream (the server can read TEST_END before any data; one asan CI
    # run saw it for k10): then there is nothing to compare with, and only the proxied checks
    # below remain.
    if any(moves(s) for r in table.direct[row.id] for s in r.streams()):
        assert harness.client_failures(racing.result) or any(
            data_problems(row, table.direct[row.id], [racing.result])), (
            "the direct run under the testbed shows no race:\n" + racing.context())
    else:
        warnings.warn(f"{row.id}: the clean direct run counted no stream; the testbed's effect "
                      f"cannot be checked against it:\n{describe(table.direct[row.id])}")
    runs = [race_testbed.run_case(row.parallel, late, direct=False, proxy=proxy_bin,
                                  label="shortp", **common)]
    while len(runs) <= REPEATS and data_problems(row, table.direct[row.id], [runs[-1].result])[0]:
        warnings.warn(f"{row.id} under the testbed: a proxied run lost a stream; repeating it "
                      f"(see A RUN LOST TO THE HOST):\n{runs[-1].summary()}")
        runs.append(race_testbed.run_case(row.parallel, late, direct=False, proxy=proxy_bin,
                                          label="shortp", **common))
    run = runs[-1]
    assert not run.misses, run.context()
    ends = harness.session_ends(run.proxy_log or "")
    proxied = ProxiedRun(run.result, ends[-1] if ends else None)
    problems = completion_problems(proxied) + upload_problems(run.result)
    if not run.proxy_alive:
        problems.append("proxy exited during the test")
    if proxied.end is not None and not re.search(r"roles_repaired=[1-9]", proxied.end.line):
        problems.append(f"the proxy repaired no role: {proxied.end.line}")
    assert not problems, "\n".join(problems) + "\n" + run.context()
    data, shortfalls = data_problems(row, table.direct[row.id], [run.result])
    assert_or_xfail(row, data, shortfalls, run.context())
