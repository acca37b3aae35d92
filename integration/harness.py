#!/usr/bin/python3
"""Reusable helpers for the iperf3-proxy integration tests.

Usage: imported by the pytest files in this directory, which are run with
Debian's interpreter and pytest (the `python3` on PATH may be a different one):

    /usr/bin/python3 -m pytest integration/ -v

Running this file directly does a short self-check (a direct `iperf3 --bidir`
test on 127.0.0.1, no proxy, no root needed):

    /usr/bin/python3 integration/harness.py

Principles (see docs/style guide, "Tests: layers and habits"):
  * No fixed ports: every port comes from `free_port()`.
  * Every wait is bounded; a process that does not finish in time is killed
    and the expiry is reported (for the iperf3 client: as `hung`).
  * Every child runs in its own session (process group), so teardown can kill
    the whole group by its id, never by name.
  * Any command can be run inside a network namespace (`ip netns exec NAME`).

Environment:
  IPERF3_BIN        iperf3 binary (default: /usr/bin/iperf3)
  IPERF3_PROXY_BIN  proxy binary (default: <repo>/build/ci/src/iperf3-proxy)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROXY_BIN = REPO_ROOT / "build" / "ci" / "src" / "iperf3-proxy"
DEFAULT_IPERF3_BIN = "/usr/bin/iperf3"

# The proxy's startup line contains this word once it listens (contract with src/main.cc).
# Matched as a whole word so that e.g. "address already in use" does not count.
PROXY_READY_WORD = "ready"
_PROXY_READY_RE = re.compile(r"\b" + PROXY_READY_WORD + r"\b")

# Bounds for process start/stop. Generous for a loaded 2-core CI machine, but finite.
START_TIMEOUT_S = 10.0
STOP_GRACE_S = 5.0

# TCP state code for LISTEN in /proc/net/tcp{,6} (include/net/tcp_states.h: TCP_LISTEN = 10).
_TCP_LISTEN = "0A"


class HarnessError(RuntimeError):
    """A helper could not set up what the test asked for (not a test failure as such)."""


# --------------------------------------------------------------------------------------------
# Binaries and namespaces
# --------------------------------------------------------------------------------------------


def iperf3_binary() -> str:
    return os.environ.get("IPERF3_BIN", DEFAULT_IPERF3_BIN)


def proxy_binary() -> Path:
    """Path of the proxy under test; it may not exist yet (callers decide whether to skip)."""
    env = os.environ.get("IPERF3_PROXY_BIN")
    return Path(env) if env else DEFAULT_PROXY_BIN


def netns_prefix(netns: Optional[str]) -> list[str]:
    """Argv prefix that runs a command inside `netns` (or nothing for the current namespace).

    `ip netns exec` execs the command in place (no fork), so the pid we get from Popen is
    the command's own pid; /proc/PID/net and signals therefore reach the real process.
    """
    return ["ip", "netns", "exec", netns] if netns else []


def run_checked(argv: Sequence[str],
                netns: Optional[str] = None,
                input_text: Optional[str] = None,
                timeout: float = 10.0) -> str:
    """Run a short helper command (ip, nft, ...) with a bound; raise with its stderr on failure."""
    cmd = netns_prefix(netns) + list(argv)
    try:
        proc = subprocess.run(cmd, input=input_text, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"command timed out after {timeout}s: {cmd}") from exc
    if proc.returncode != 0:
        raise HarnessError(f"command failed (rc={proc.returncode}): {cmd}\n{proc.stderr.strip()}")
    return proc.stdout


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `predicate` until it is true or `timeout` elapses; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------

_FREE_PORT_SNIPPET = r"""
import socket
# Ask the kernel for an unused TCP port, then make sure UDP is free on the same
# number too: the proxy (like iperf3) serves UDP tests on its TCP port number.
for _ in range(50):
    t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    t.bind(("::", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        u.bind(("::", port))
    except OSError:
        t.close()
        continue
    u.close()
    t.close()
    print(port)
    break
else:
    raise SystemExit("no free port")
"""


def free_port(netns: Optional[str] = None) -> int:
    """A TCP (and UDP) port that is free right now, in `netns` or the current namespace.

    The port is released before returning, so another process could take it; callers that
    start a listener on it should be prepared to retry (see `start_iperf_server`). Inside a
    private test namespace nobody else binds ports, so collisions do not happen there.
    A namespace cannot be entered from this process (os.setns needs Python 3.12), so the
    lookup runs as a tiny child process under `ip netns exec`.
    """
    out = run_checked([sys.executable, "-c", _FREE_PORT_SNIPPET], netns=netns)
    return int(out.strip())


def _proc_tcp_rows(pid: int):
    """The rows of /proc/PID/net/tcp and tcp6 (PID's network namespace), split into fields:
    sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ..."""
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 10:
                yield fields


def _listening_inodes(pid: int, port: int) -> set[str]:
    """Socket inodes LISTENing on `port` in the network namespace of process `pid`.

    /proc/PID/net/tcp{,6} shows the namespace of PID, so this works for a process started
    under `ip netns exec` without spawning `cat` inside the namespace on every poll.
    """
    inodes: set[str] = set()
    for fields in _proc_tcp_rows(pid):
        if fields[3] == _TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(fields[9])
    return inodes


def _process_socket_inodes(pid: int) -> set[str]:
    found: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:["):-1])
    return found


def is_listening(pid: int, port: int) -> bool:
    """True once process `pid` itself owns a TCP socket listening on `port`.

    We never probe by connecting: iperf3 would take any connection for a client
    (and the proxy would count it as a session). Matching the socket inode against the
    process's own fds also rules out a stale listener from some other process.
    """
    listening = _listening_inodes(pid, port)
    return bool(listening) and bool(listening & _process_socket_inodes(pid))


def connected_sockets(pid: int) -> int:
    """How many TCP sockets process `pid` holds that are not listening (its connections).

    An iperf3 server with none is between tests: it closes every connection of a test when
    the test ends, however it ended.
    """
    own = _process_socket_inodes(pid)
    return sum(1 for fields in _proc_tcp_rows(pid)
               if fields[3] != _TCP_LISTEN and fields[9] in own)


# --------------------------------------------------------------------------------------------
# Managed processes
# --------------------------------------------------------------------------------------------


class _ManagedProcess:
    """A long-running child in its own process group with output in a log file."""

    def __init__(self, argv: list[str], log_path: Path,
                 preexec_fn: Optional[Callable[[], None]] = None):
        self.argv = argv
        self.log_path = log_path
        # Runs in the child between fork and exec, e.g. to lower its resource limits.
        self.preexec_fn = preexec_fn
        self.proc: Optional[subprocess.Popen] = None

    def _spawn(self) -> None:
        with open(self.log_path, "wb") as log:
            # start_new_session: the child leads its own process group, so teardown can
            # signal exactly that group (and anything it forked) by id.
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=self.preexec_fn)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> Optional[int]:
        """None while running; otherwise the exit code (negative = killed by that signal)."""
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _signal_group(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace: float = STOP_GRACE_S) -> Optional[int]:
        """SIGTERM the group, SIGKILL it if it is still there after `grace`; return the code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Also reap leftovers in the group even if the leader already exited.
        self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"process {self.proc.pid} survived SIGKILL: {self.argv}") from exc
        return self.proc.returncode


def _log_path(log_dir: Optional[os.PathLike], stem: str) -> Path:
    directory = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="iperf3-proxy-it-"))
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{stem}-", suffix=".log", dir=directory)
    os.close(fd)
    return Path(name)


class IperfServer(_ManagedProcess):
    """`iperf3 -s -p PORT [extra]` as a context manager; ready once its socket LISTENs."""

    def __init__(self, port: int, extra_args: Iterable[str] = (), netns: Optional[str] = None,
                 binary: Optional[str] = None, log_dir: Optional[os.PathLike] = None):
        self.port = port
        self.netns = netns
        # --forceflush: iperf3 writes through stdio, which is block-buffered into a file;
        # without it the log is empty when a test fails and we want to show it.
        argv = netns_prefix(netns) + [binary or iperf3_binary(), "-s", "-p", str(port),
                                      "--forceflush", *extra_args]
        super().__init__(argv, _log_path(log_dir, f"iperf3-s-{port}"))

    def start(self, timeout: float = START_TIMEOUT_S) -> "IperfServer":
        self._spawn()
        wait_until(lambda: not self.running() or is_listening(self.pid, self.port), timeout)
        if not self.running():
            self.stop()  # reap anything left in its process group
            raise HarnessError(f"iperf3 server exited early (rc={self.returncode}) on port "
                               f"{self.port}:\n{self.log_text()}")
        if not is_listening(self.pid, self.port):
            self.stop()
            raise HarnessError(f"iperf3 server not listening on {self.port} after {timeout}s")
        return self

    def __enter__(self) -> "IperfServer":
        # Entering a server that start_iperf_server() already started is fine.
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_iperf_server(netns: Optional[str] = None, extra_args: Iterable[str] = (),
                       attempts: int = 3, **kwargs) -> IperfServer:
    """Pick a free port and start a server on it, retrying if the port was taken meanwhile.

    The caller owns the returned (already started) server and must stop() it, e.g. with
    `with start_iperf_server(...) as srv:` (entering an already started server is a no-op).
    """
    last: Optional[Exception] = None
    for _ in range(attempts):
        server = IperfServer(free_port(netns), extra_args, netns=netns, **kwargs)
        try:
            server.start()
        except HarnessError as exc:
            last = exc
            continue
        return server
    raise HarnessError(f"could not start iperf3 server after {attempts} attempts: {last}")


class Proxy(_ManagedProcess):
    """The proxy under test as a context manager.

    Runs `iperf3-proxy -p PORT [--backend HOST:PORT] --log-level debug [extra]` with stdout and
    stderr in a log file, and waits for its "ready" line. `backend` may be "host:port" or a
    port number (meaning 127.0.0.1). `rlimit_nofile` caps the proxy's open files (soft and
    hard), e.g. to drive it into EMFILE.
    """

    def __init__(self, port: int, backend=None, extra_args: Iterable[str] = (),
                 netns: Optional[str] = None, binary: Optional[os.PathLike] = None,
                 log_dir: Optional[os.PathLike] = None, rlimit_nofile: Optional[int] = None):
        self.port = port
        self.netns = netns
        self.binary = Path(binary) if binary else proxy_binary()
        argv = netns_prefix(netns) + [str(self.binary), "-p", str(port)]
        if backend is not None:
            if isinstance(backend, int):
                backend = f"127.0.0.1:{backend}"
            argv += ["--backend", str(backend)]
        extra_args = list(extra_args)
        # Debug logging unless the caller chose a level (the benchmarks log less).
        if "--log-level" not in extra_args:
            argv += ["--log-level", "debug"]
        argv += extra_args
        preexec = None
        if rlimit_nofile is not None:
            def preexec() -> None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (rlimit_nofile, rlimit_nofile))
        super().__init__(argv, _log_path(log_dir, f"proxy-{port}"), preexec_fn=preexec)
        self.exit_code: Optional[int] = None

    def start(self, timeout: float = START_TIMEOUT_S) -> "Proxy":
        if not os.access(self.binary, os.X_OK):
            raise HarnessError(f"proxy binary not found or not executable: {self.binary}")
        self._spawn()
        wait_until(lambda: not self.running() or self.is_ready(), timeout)
        if not self.is_ready():
            why = "exited before" if not self.running() else f"did not report within {timeout}s"
            code = self.stop()
            raise HarnessError(f"proxy {why} '{PROXY_READY_WORD}' (rc={code}): {self.argv}\n"
                               f"{self.log_text()}")
        if not self.running():
            self.stop()
            raise HarnessError(f"proxy exited right after start (rc={self.returncode}):\n"
                               f"{self.log_text()}")
        return self

    def is_ready(self) -> bool:
        return bool(_PROXY_READY_RE.search(self.log_text()))

    def stop(self, grace: float = STOP_GRACE_S) -> Optional[int]:
        if self.proc is not None and self.exit_code is None:
            # Keep the code of the leader's own exit: SIGTERM handling is part of what we test.
            self.exit_code = super().stop(grace)
        return self.exit_code

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> "Proxy":
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# Client and results
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StreamBytes:
    """One data stream of an iperf3 test, from the client's JSON `end.streams[i]`.

    client_sends: the client writes on this stream (`sender` flag of the entry).
    sender_bytes / receiver_bytes: bytes counted by the sending / receiving end. One of the
    two numbers comes from the server's results, matched by stream id (docs/PROTOCOL.md §3.7).
    local_port: the client's source port of the connection (joined via `socket`), if known.
    """
    index: int
    socket: Optional[int]
    client_sends: bool
    sender_bytes: int
    receiver_bytes: int
    local_port: Optional[int]


def stream_bytes(doc: Optional[dict]) -> list[StreamBytes]:
    """Per-stream sender/receiver bytes of every stream in an iperf3 client JSON (may be [])."""
    if not doc:
        return []
    connected = doc.get("start", {}).get("connected", [])
    ports = {c.get("socket"): c.get("local_port") for c in connected}
    result = []
    for i, entry in enumerate(doc.get("end", {}).get("streams", [])):
        sender = entry.get("sender") or {}
        receiver = entry.get("receiver") or {}
        sock = sender.get("socket", receiver.get("socket"))
        # Every 3.7+ entry carries the `sender` flag; a missing flag means a plain forward test.
        sends = bool(sender.get("sender", receiver.get("sender", True)))
        result.append(StreamBytes(index=i, socket=sock, client_sends=sends,
                                  sender_bytes=int(sender.get("bytes", 0)),
                                  receiver_bytes=int(receiver.get("bytes", 0)),
                                  local_port=ports.get(sock)))
    return result


@dataclasses.dataclass
class ClientResult:
    argv: list[str]
    returncode: Optional[int]
    stdout: str
    stderr: str
    json: Optional[dict]
    hung: bool
    duration: float

    @property
    def error(self) -> Optional[str]:
        """iperf3's own error text from the JSON (`error` key), if any."""
        return self.json.get("error") if self.json else None

    def streams(self) -> list[StreamBytes]:
        return stream_bytes(self.json)

    def summary(self) -> str:
        """Compact human-readable description for assertion messages."""
        parts = [f"rc={self.returncode} hung={self.hung} t={self.duration:.2f}s "
                 f"error={self.error!r}"]
        udp = udp_streams(self.json) if _is_udp(self.json) else []
        for u in udp:
            received = "?" if u.received_packets is None else u.received_packets
            parts.append(f"  stream#{u.index} socket={u.socket} {u.direction}: sent="
                         f"{u.sent_packets} received={received} lost={u.lost_percent:.1f}% "
                         f"out_of_order={u.out_of_order}")
        for s in [] if udp else self.streams():
            role = "client->server" if s.client_sends else "server->client"
            parts.append(f"  stream#{s.index} port={s.local_port} {role}: sender={s.sender_bytes}"
                         f" receiver={s.receiver_bytes}")
        if self.json is None:
            parts.append(f"  stdout: {self.stdout[-500:]!r}")
        if self.stderr.strip():
            parts.append(f"  stderr: {self.stderr.strip()[-500:]}")
        return "\n".join(parts)


def run_client(port: int, args: Sequence[str], timeout: float, netns: Optional[str] = None,
               host: str = "127.0.0.1", binary: Optional[str] = None,
               env: Optional[dict] = None, json_output: bool = True) -> ClientResult:
    """Run `iperf3 -c HOST -p PORT -J ARGS` with a hard timeout.

    On expiry the client is reported as hung. It first gets SIGTERM, so it sends
    CLIENT_TERMINATE to the server (which then ends the test, freeing the server) and prints
    its partial JSON; if it is still alive after a short grace it gets SIGKILL.

    env: extra environment variables for the client (e.g. IPERF3_PASSWORD), on top of ours.
    json_output=False leaves out -J (plain-text output; the result's `json` is then None).
    """
    argv = netns_prefix(netns) + [binary or iperf3_binary(), "-c", host, "-p", str(port),
                                  *(["-J"] if json_output else []), *args]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **env} if env else None)
    hung = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung = True
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, STOP_GRACE_S)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                out, err = proc.communicate(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            raise HarnessError(f"iperf3 client {proc.pid} survived SIGKILL")
    duration = time.monotonic() - started
    try:
        doc = json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        doc = None
    return ClientResult(argv=argv, returncode=proc.returncode, stdout=out, stderr=err, json=doc,
                        hung=hung, duration=duration)


# --------------------------------------------------------------------------------------------
# Result checks
# --------------------------------------------------------------------------------------------


def client_failures(result: ClientResult) -> list[str]:
    """How the client run itself failed (hung, no JSON, an iperf3 error, a bad exit code)."""
    failures = []
    if result.hung:
        failures.append("client hung (killed at timeout)")
    if result.json is None:
        failures.append("no JSON output")
    if result.error:
        failures.append(f"iperf3 error: {result.error}")
    if result.returncode not in (0, None):
        failures.append(f"client exit code {result.returncode}")
    return failures


def race_symptoms(result: ClientResult) -> list[str]:
    """Reasons why a test run shows the #2029 deadlock (or any failure); [] for a clean run.

    The deadlock shows in one of these ways (docs/PROTOCOL.md §7.3): the client hangs, iperf3
    reports an error (typically "idle timeout for receiving data" or a closed control
    socket), or the test "succeeds" with a receiving side that counted 0 bytes.
    """
    symptoms = client_failures(result)
    for s in result.streams():
        if s.receiver_bytes == 0:
            symptoms.append(f"stream#{s.index} ({'client' if s.client_sends else 'server'} "
                            f"sending) received 0 bytes")
    return symptoms


def bidir_problems(result: ClientResult, parallel: int, min_ratio: float = 0.5) -> list[str]:
    """Everything wrong with the result of a `--bidir -P parallel` test ([] if it is good).

    Checks: clean exit; 2*parallel streams, half in each direction; every stream moved data
    on both ends; per direction the receivers got no more than the senders sent and at least
    `min_ratio` of it (the remainder is what was in flight when the client stopped); the
    JSON sums equal the per-stream sums.

    Per-stream sender/receiver pairs are not compared with each other: if streams of the
    same direction reach the server in a different order, iperf3 pairs their result entries
    by id and swaps the numbers within that direction while the sums stay right
    (docs/PROTOCOL.md §3.7, §7.1).
    """
    problems = [f"race symptom: {s}" for s in race_symptoms(result)]
    streams = result.streams()
    if len(streams) != 2 * parallel:
        problems.append(f"expected {2 * parallel} streams, got {len(streams)}")
    end = (result.json or {}).get("end", {})
    for client_sends, sent_key, recv_key in ((True, "sum_sent", "sum_received"),
                                             (False, "sum_sent_bidir_reverse",
                                              "sum_received_bidir_reverse")):
        group = [s for s in streams if s.client_sends == client_sends]
        label = "client->server" if client_sends else "server->client"
        if len(group) != parallel:
            problems.append(f"{label}: expected {parallel} streams, got {len(group)}")
        for s in group:
            if s.sender_bytes <= 0:
                problems.append(f"{label} stream#{s.index}: sender moved 0 bytes")
        sent = sum(s.sender_bytes for s in group)
        received = sum(s.receiver_bytes for s in group)
        if received > sent:
            problems.append(f"{label}: received {received} > sent {sent}")
        elif sent and received < min_ratio * sent:
            problems.append(f"{label}: received {received} < {min_ratio:.0%} of sent {sent}")
        for key, total in ((sent_key, sent), (recv_key, received)):
            reported = end.get(key, {}).get("bytes")
            if reported is not None and int(reported) != total:
                problems.append(f"{label}: end.{key}.bytes={reported} != stream sum {total}")
    return problems


def bidir_args(parallel: int, seconds: int = 3, rcv_timeout_ms: Optional[int] = 2000,
               ending: Optional[Sequence[str]] = None) -> list[str]:
    """Client arguments for a `--bidir` test. --rcv-timeout exists on 3.10+ clients.

    `ending`: what ends the test instead of `-t seconds`, e.g. ["-n", "1M"] or ["-k", "1"].
    """
    args = ["--bidir", "-P", str(parallel), *(ending or ["-t", str(seconds)])]
    if rcv_timeout_ms is not None:
        args += ["--rcv-timeout", str(rcv_timeout_ms)]
    return args


# --------------------------------------------------------------------------------------------
# UDP results, per stream
# --------------------------------------------------------------------------------------------
#
# A UDP stream's entry in the client's end.streams is one `udp` object, and it shows the
# *sending* end only: `bytes` and `packets` are what the sender counted, and `lost_packets`
# counts the gaps in the sequence numbers the receiver saw, so a stream of which not one
# datagram arrived shows its full packet count and 0 % lost (iperf3 3.9-3.20, checked with a
# stream dropped by nftables; the captures are in testdata/udp/). What a stream's receiving end
# got is elsewhere:
#   * a stream the client receives: the client's own intervals (per socket);
#   * a stream the client sends: the server's report, which the client has only with
#     --get-server-output (`server_output_text`, or `server_output_json` from a server with -J),
#     one receiver summary per server receiving stream, in the server's accept order (which is
#     the client's creation order); or, when the client sends on one stream only, the sum the
#     server reported for that direction (3.11+ clients; before 3.11 a --bidir client reports
#     both directions' sums under the same keys, and 3.9 has no received sum for UDP at all).
# A check that cannot see a stream's receiving end says so: it does not pass.

# Client arguments that put the server's view of every stream into the client's result: a UDP
# test needs them for a per-stream check when the client sends on more than one stream, or
# when the client is older than 3.11.
UDP_RECEIPT_ARGS = ["--get-server-output"]

# The server's receiver summary of one stream in its text report (iperf_locale.c,
# report_bw_udp_format and ..._no_omitted_error), e.g.
#   [  5][RX-S]   0.00-1.00   sec   122 KBytes  1000 Kbits/sec  0.038 ms  0/125 (0%)  receiver
# Not anchored at the start: a server with --timestamps prefixes its lines.
_SERVER_TEXT_RECEIVER_RE = re.compile(
    r"\[\s*(?P<id>\d+)\](?:\[RX-S\])?\s+[\d.]+-\s*[\d.]+\s+sec\s+.*?\s"
    r"(?P<lost>\d+|Unknown)/(?P<total>\d+)(?:\s+\([^)]*\))?\s+receiver\s*$", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class UdpStream:
    """One UDP stream of an iperf3 test, both ends.

    sent_bytes / sent_packets / lost_percent / out_of_order: the client's end.streams[i].udp.
    received_packets: datagrams its receiving end got (sequence-number based, as iperf3 counts
    them), or None when the result does not show that end; `seen_by` says where it came from.
    """
    index: int
    socket: Optional[int]
    client_sends: bool
    sent_bytes: int
    sent_packets: int
    lost_percent: float
    out_of_order: int
    received_packets: Optional[int]
    seen_by: str

    @property
    def direction(self) -> str:
        return "client->server" if self.client_sends else "server->client"


def _is_udp(doc: Optional[dict]) -> bool:
    return bool(doc) and (doc.get("start") or {}).get("test_start", {}).get("protocol") == "UDP"


def _client_received(doc: dict) -> dict[int, int]:
    """{socket: datagrams} the client received, from its intervals."""
    received: dict[int, int] = {}
    for interval in doc.get("intervals") or []:
        for s in interval.get("streams") or []:
            if s.get("sender") is False and "socket" in s:
                received[s["socket"]] = received.get(s["socket"], 0) + int(s.get("packets", 0))
    return received


def _server_received(doc: dict) -> Optional[list[int]]:
    """Datagrams each of the server's receiving streams got, in the server's stream order, from
    its report (--get-server-output); None without a report."""
    report = doc.get("server_output_json")
    if isinstance(report, dict):
        per_socket: dict[int, int] = {}  # insertion order: the server's stream order
        for interval in report.get("intervals") or []:
            for s in interval.get("streams") or []:
                if s.get("sender") is False and "socket" in s:
                    per_socket[s["socket"]] = per_socket.get(s["socket"], 0) + int(
                        s.get("packets", 0))
        return list(per_socket.values())
    text = doc.get("server_output_text")
    if isinstance(text, str):
        counts = []
        for m in _SERVER_TEXT_RECEIVER_RE.finditer(text):
            total = int(m["total"])
            counts.append(total - int(m["lost"]) if m["lost"] != "Unknown" else total)
        return counts
    return None


def _forward_sum_received(doc: dict, bidir: bool) -> Optional[int]:
    """Datagrams the server received over all of the client's sending streams, where the
    client's JSON says so unambiguously (3.11+ clients); None otherwise."""
    end = doc.get("end") or {}
    if bidir and "sum_received_bidir_reverse" not in end:
        return None  # before 3.11 the second direction's sums overwrite the first's keys
    packets = (end.get("sum_received") or {}).get("packets")
    return None if packets is None else int(packets)


def udp_streams(doc: Optional[dict]) -> list[UdpStream]:
    """Every UDP stream of a client's JSON result with what its receiving end got, where the
    result shows it ([] without a result)."""
    if not doc:
        return []
    entries = [e.get("udp") or {} for e in (doc.get("end") or {}).get("streams") or []]
    client_received = _client_received(doc)
    server_received = _server_received(doc)
    sending = [i for i, e in enumerate(entries) if e.get("sender")]
    bidir = 0 < len(sending) < len(entries)
    forward_sum = _forward_sum_received(doc, bidir) if len(sending) == 1 else None
    streams = []
    for i, e in enumerate(entries):
        received, seen_by = None, "nothing"
        if not e.get("sender"):
            if e.get("socket") in client_received:
                received, seen_by = client_received[e["socket"]], "the client's intervals"
        elif server_received is not None:
            k = sending.index(i)
            if len(server_received) == len(sending):
                received, seen_by = server_received[k], "the server's report"
            else:
                seen_by = (f"a server report of {len(server_received)} receiving streams for "
                           f"{len(sending)} sending ones")
        elif forward_sum is not None:
            received, seen_by = forward_sum, "the server's sum for its only stream"
        streams.append(UdpStream(index=i, socket=e.get("socket"), client_sends=bool(
            e.get("sender")), sent_bytes=int(e.get("bytes", 0)), sent_packets=int(
            e.get("packets", 0)), lost_percent=float(e.get("lost_percent", 0.0)),
            out_of_order=int(e.get("out_of_order", 0)), received_packets=received,
            seen_by=seen_by))
    return streams


def udp_stream_problems(result: ClientResult, expected_streams: Optional[int] = None,
                        max_loss_percent: Optional[float] = None,
                        reordering: bool = True) -> list[str]:
    """Everything wrong with a UDP test's result ([] if it is good): the client run itself
    (client_failures), then every stream on its own (udp_json_problems)."""
    problems = client_failures(result)
    if result.json is not None:
        problems += udp_json_problems(result.json, expected_streams, max_loss_percent,
                                      reordering)
    return problems


def udp_json_problems(doc: dict, expected_streams: Optional[int] = None,
                      max_loss_percent: Optional[float] = None,
                      reordering: bool = True) -> list[str]:
    """Everything wrong with the streams of a UDP test's client JSON, each on its own.

    Checks: the number of streams, if given; per stream: its sender sent datagrams, its
    receiving end got datagrams (seen as described above; a stream whose receiving end the
    result does not show is a problem too), at most `max_loss_percent` lost (iperf3's own
    figure, which misses datagrams lost at the end of a stream), and, with reordering=False,
    no datagram out of order.
    """
    problems = []
    protocol = (doc.get("start") or {}).get("test_start", {}).get("protocol")
    if protocol != "UDP":
        problems.append(f"test protocol is {protocol!r}, not UDP")
    streams = udp_streams(doc)
    if not streams:
        problems.append("no streams")
    elif expected_streams is not None and len(streams) != expected_streams:
        problems.append(f"expected {expected_streams} streams, got {len(streams)}")
    for s in streams:
        where = f"UDP stream#{s.index} socket={s.socket} {s.direction}"
        if s.sent_bytes <= 0 or s.sent_packets <= 0:
            problems.append(f"{where}: its sender sent {s.sent_packets} datagrams, "
                            f"{s.sent_bytes} bytes")
        if s.received_packets is None:
            problems.append(f"{where}: the result does not show what its receiving end got "
                            f"(seen: {s.seen_by}); run the client with "
                            f"{' '.join(UDP_RECEIPT_ARGS)}")
        elif s.received_packets <= 0:
            problems.append(f"{where}: its receiving end got none of the {s.sent_packets} "
                            f"datagrams sent (seen in {s.seen_by})")
        if max_loss_percent is not None and s.lost_percent > max_loss_percent:
            problems.append(f"{where}: {s.lost_percent:.1f}% lost of {s.sent_packets}")
        if not reordering and s.out_of_order != 0:
            problems.append(f"{where}: {s.out_of_order} datagrams out of order")
    return problems


# --------------------------------------------------------------------------------------------
# The proxy's log
# --------------------------------------------------------------------------------------------

# One per test session (src/proxy/session.cc, Session::logSummary), e.g.
#   2026-11-27T14:31:05.567 info [s:kpdjmnui] test ended: client=127.0.0.1:33238 mode=tcp bidir
#   streams=1 up_bytes=1 down_bytes=2 duration=2.02s reason=completed roles_repaired=0
#   out_of_order=0
_SESSION_END_RE = re.compile(
    r"^\S+ (?P<level>\w+) \[s:(?P<sid>[^\]]+)\] test ended: client=(?P<client>\S+) "
    r"mode=(?P<mode>.*?) up_bytes=(?P<up>\d+) down_bytes=(?P<down>\d+) "
    r"duration=(?P<duration>[\d.]+)s reason=(?P<reason>[a-z-]+)(?:: (?P<detail>.*?))? "
    r"roles_repaired=(?P<repaired>\d+) out_of_order=(?P<misordered>\d+)(?P<extra>.*)$",
    re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class SessionEnd:
    """One "test ended" line of the proxy's log."""
    line: str
    level: str       # spdlog level name: "info" or "warning"
    sid: str         # first 8 characters of the test's cookie
    client: str      # ADDR:PORT of the client's control connection
    mode: str        # e.g. "tcp bidir streams=1", or "unknown" before the params
    up_bytes: int
    down_bytes: int
    duration: float
    reason: str      # e.g. "completed", "protocol-error"
    detail: str      # text after "reason=X: ", or ""


def session_ends(log_text: str) -> list[SessionEnd]:
    """Every "test ended" line in a proxy log, in order."""
    return [SessionEnd(line=m.group(0), level=m["level"], sid=m["sid"], client=m["client"],
                       mode=m["mode"], up_bytes=int(m["up"]), down_bytes=int(m["down"]),
                       duration=float(m["duration"]), reason=m["reason"],
                       detail=m["detail"] or "")
            for m in _SESSION_END_RE.finditer(log_text)]


def _self_check() -> int:
    with start_iperf_server() as server:
        result = run_client(server.port, bidir_args(2, seconds=1), timeout=15)
    print(result.summary())
    problems = bidir_problems(result, 2)
    print("OK" if not problems else "PROBLEMS:\n  " + "\n  ".join(problems))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(_self_check())


def make_auth_files(directory: Path, user: str, password: str) -> dict[str, str]:
    """An RSA key pair and an authorized-users file for iperf3's authentication, in
    `directory`: {"privkey", "pubkey", "users"} -> paths."""
    priv, pub, users = directory / "priv.pem", directory / "pub.pem", directory / "users.csv"
    run_checked(["openssl", "genrsa", "-out", str(priv), "2048"], timeout=60)
    run_checked(["openssl", "rsa", "-in", str(priv), "-outform", "PEM", "-pubout", "-out",
                 str(pub)])
    # iperf3 (man page, EXAMPLES): the hash is sha256 of "{user}password"
    digest = hashlib.sha256(f"{{{user}}}{password}".encode()).hexdigest()
    users.write_text(f"# username,sha256\n{user},{digest}\n")
    return {"privkey": str(priv), "pubkey": str(pub), "users": str(users)}
