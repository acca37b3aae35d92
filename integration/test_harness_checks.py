#!/usr/bin/python3
"""The integration tests' own UDP checks, fed results with an empty stream: each must fail.

    /usr/bin/python3 -m pytest integration/test_harness_checks.py      # under a second

A check that passes a test whose stream carried nothing proves nothing. A UDP stream's entry in
iperf3's end.streams shows the sending end only (harness.py, "UDP results, per stream"), so a
stream of which not one datagram arrived looks like every other one there. The results in
testdata/udp/ are real iperf3 3.12 runs in which nftables dropped one stream's datagrams (see
its README); the checks of every file that runs UDP tests (test_udp_modes, test_race via
race_testbed, test_compat_matrix, test_versions, test_pool) must name that stream, must pass
the good runs, and must not pass a result that does not show a stream's receiving end at all.
The UDP cases those files run must give the checks what they need to see (the server's output
when the client sends on several streams). Pure: no process is started.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import race_testbed  # noqa: E402
import test_compat_matrix  # noqa: E402
import test_pool  # noqa: E402
import test_udp_modes  # noqa: E402
import test_versions  # noqa: E402
from iperf3_versions import Peer  # noqa: E402

TESTDATA = Path(__file__).resolve().parent / "testdata" / "udp"

# file -> (streams, index of the empty stream or None, whether the client sends on it)
CAPTURES = {
    "up-p2-stream1-empty.server-text.json": (2, 1, True),
    "up-p2-stream1-empty.server-json.json": (2, 1, True),
    "down-p2-stream1-empty.json": (2, 1, False),
    "bidir-p1-up-empty.json": (2, 0, True),
    "bidir-p1-down-empty.json": (2, 1, False),
    "bidir-p2-up-stream1-empty.server-text.json": (4, 1, True),
    "up-p2-good.server-text.json": (2, None, None),
    "bidir-p1-good.json": (2, None, None),
}
EMPTY = [name for name, (_, index, _) in CAPTURES.items() if index is not None]
GOOD = [name for name, (_, index, _) in CAPTURES.items() if index is None]


def load(name: str) -> dict:
    return json.loads((TESTDATA / name).read_text())


def as_result(doc: dict) -> harness.ClientResult:
    return harness.ClientResult(argv=["iperf3", "-c", "..."], returncode=0,
                                stdout=json.dumps(doc), stderr="", json=doc, hung=False,
                                duration=1.0)


def as_case_run(result: harness.ClientResult) -> race_testbed.CaseRun:
    """A direct run of the race testbed that produced `result`."""
    return race_testbed.CaseRun(result=result, misses=[], counters={}, server_log="",
                                proxy_log=None, proxy_alive=None, proxy_exit=None)


def names_stream(problems: list[str], index: int) -> bool:
    return any(f"stream#{index} " in p and "got none" in p for p in problems)


# ---- The harness --------------------------------------------------------------------------

@pytest.mark.parametrize("name", EMPTY)
def test_an_empty_stream_fails_the_harness_check(name):
    streams, index, client_sends = CAPTURES[name]
    doc = load(name)
    # What the capture is about: iperf3's own per-stream entry does not show it.
    entry = doc["end"]["streams"][index]["udp"]
    assert entry["packets"] > 0 and entry["lost_percent"] == 0 and entry["sender"] == client_sends
    problems = harness.udp_stream_problems(as_result(doc), streams)
    assert names_stream(problems, index), problems
    assert len(problems) == 1, problems


# Where the empty stream is the client's only sending stream, the direction's sum is that
# stream's own count: sums that look fine would mean a stream that is fine.
SEVERAL_IN_ITS_DIRECTION = [name for name in EMPTY if name != "bidir-p1-up-empty.json"]


@pytest.mark.parametrize("name", SEVERAL_IN_ITS_DIRECTION)
def test_an_empty_stream_fails_even_when_the_sums_look_fine(name):
    """Sums that add up (as they would if the lost stream's datagrams had gone to another
    stream of the test) do not hide the empty stream."""
    _, index, _ = CAPTURES[name]
    doc = copy.deepcopy(load(name))
    end = doc["end"]
    for sent, received in (("sum_sent", "sum_received"),
                           ("sum_sent_bidir_reverse", "sum_received_bidir_reverse")):
        if sent in end and received in end:
            end[received] = {**end[received], "bytes": end[sent]["bytes"],
                             "packets": end[sent]["packets"]}
    assert names_stream(harness.udp_json_problems(doc), index)


@pytest.mark.parametrize("name", GOOD)
def test_a_good_result_passes_the_harness_check(name):
    streams, _, _ = CAPTURES[name]
    result = as_result(load(name))
    assert harness.udp_stream_problems(result, streams, max_loss_percent=5,
                                       reordering=False) == []
    assert all(s.received_packets for s in harness.udp_streams(result.json))


def test_without_the_servers_report_several_uploads_are_not_passed():
    """Two client-to-server streams and no server report: nothing shows what the server got on
    each, so the check cannot pass the result, good or not."""
    for name in ("up-p2-good.no-report.json", "up-p2-stream1-empty.no-report.json"):
        problems = harness.udp_json_problems(load(name), 2)
        assert len(problems) == 2 and all("does not show" in p for p in problems), problems


def test_a_pre_3_11_bidir_layout_is_not_read_as_the_upload_sum():
    """Before 3.11 a --bidir client reports the reverse direction's sums under the same keys as
    the forward one's: the one upload stream is then not judged by a sum."""
    doc = copy.deepcopy(load("bidir-p1-good.json"))
    del doc["end"]["sum_received_bidir_reverse"]
    problems = harness.udp_json_problems(doc, 2)
    assert len(problems) == 1 and "stream#0 " in problems[0] and "does not show" in problems[0]


def test_server_text_with_timestamps_and_unknown_loss_is_read():
    doc = copy.deepcopy(load("up-p2-stream1-empty.server-text.json"))
    lines = doc["server_output_text"].splitlines()
    doc["server_output_text"] = "\n".join(
        "Mon Nov 30 02:09:47 2026 " + ln.replace(" 0/125 (0%)", " Unknown/125") for ln in lines)
    streams = harness.udp_streams(doc)
    assert [s.received_packets for s in streams] == [125, 0]


def test_the_summary_shows_both_ends_of_a_udp_stream():
    summary = as_result(load("down-p2-stream1-empty.json")).summary()
    assert "stream#1 socket=7 server->client: sent=125 received=0" in summary, summary


# ---- The checks of the test files ---------------------------------------------------------

def udp_row(args: tuple[str, ...]) -> test_compat_matrix.Row:
    return test_compat_matrix.Row("x", "x", ("-u", *args))


@pytest.mark.parametrize("name", EMPTY)
def test_every_files_udp_check_fails_on_an_empty_stream(name):
    streams, index, _ = CAPTURES[name]
    doc = load(name)
    result = as_result(doc)
    bidir = name.startswith("bidir")
    parallel = streams // 2 if bidir else streams
    checks = {
        "test_pool": test_pool.stream_problems(result, udp=True),
        "test_compat_matrix": test_compat_matrix._json_stream_problems(
            udp_row(("--bidir",) if bidir else ("-P", str(parallel))), doc, "proxied"),
        "test_versions": test_versions.run_problems(
            test_versions.Run(result), streams, Peer("3.12", "iperf3"), Peer("3.12", "iperf3")),
    }
    if bidir:
        checks["race_testbed"] = race_testbed.result_problems(as_case_run(result), parallel,
                                                              udp=True)
    for file, problems in checks.items():
        assert names_stream(problems, index), f"{file}: {problems}"


@pytest.mark.parametrize("name", GOOD)
def test_every_files_udp_check_passes_a_good_run(name):
    streams, _, _ = CAPTURES[name]
    doc = load(name)
    result = as_result(doc)
    bidir = name.startswith("bidir")
    parallel = streams // 2 if bidir else streams
    assert test_pool.stream_problems(result, udp=True) == []
    assert test_compat_matrix._json_stream_problems(
        udp_row(("--bidir",) if bidir else ("-P", str(parallel))), doc, "proxied") == []
    assert test_versions.run_problems(test_versions.Run(result), streams,
                                      Peer("3.12", "iperf3"), Peer("3.12", "iperf3")) == []
    if bidir:
        assert race_testbed.result_problems(as_case_run(result), parallel, udp=True) == []


def client_sending_streams(args) -> int:
    args = list(args)
    if "-R" in args:
        return 0
    return int(args[args.index("-P") + 1]) if "-P" in args else 1


def sees_every_upload(args, pre_3_11: bool = False) -> bool:
    """Whether a UDP test run with `args` shows what the server got on each client stream."""
    if any(a in args for a in harness.UDP_RECEIPT_ARGS):
        return True
    return client_sending_streams(args) <= (0 if pre_3_11 else 1)


def test_every_udp_case_lets_its_check_see_every_stream():
    """The UDP cases the test files run: with several client-to-server streams (or an older
    client) they must ask for the server's output, or their check can never pass."""
    cases = [(f"test_udp_modes {m}", a) for m, a in test_udp_modes.MODES.items()]
    cases += [(f"test_compat_matrix {r.id}", r.args) for r in test_compat_matrix.ROWS
              if test_compat_matrix.is_udp(r) and r.expect == "pass"]
    cases += [("race_testbed -P 4", race_testbed.client_args(4, udp=True))]
    cases += [(f"test_pool {a}", a) for a, udp in test_pool.MIXED if udp]
    missing = [f"{label}: {' '.join(args)}" for label, args in cases if not sees_every_upload(args)]
    # test_versions pairs 3.9 clients too: every UDP mode must ask for the server's output.
    missing += [f"test_versions {m.id}" for m in test_versions.MODES
                if "-u" in m.args and not sees_every_upload(m.args, pre_3_11=True)]
    assert not missing, missing
