#!/usr/bin/python3
"""The packaging that needs no image build: systemd readiness, the units, the Kubernetes YAML,
the compose files and the container's environment mapping (issue 10, part 6).

Run (about 5 seconds; no root needed, systemd-analyze for the unit check):

    /usr/bin/python3 -m pytest integration/test_packaging.py -v

  readiness        the real proxy, with NOTIFY_SOCKET pointing at a socket of the test's: READY=1
                   arrives once it listens (the port accepts by then), STOPPING=1 at SIGTERM, and
                   nothing when it does not start (an option iperf3 rejects after --)
  systemd units    `systemd-analyze verify` on the unit and an instance of the template unit
  Kubernetes       the YAML parses; the Service carries TCP and UDP on one port with
                   sessionAffinity ClientIP; the probes ask /healthz and /readyz
  compose          both files publish the port for TCP and UDP
  entrypoint       docker/entrypoint.sh turns IPERF3_PROXY_* into options (run with a stand-in
                   for the binary that prints its arguments), and every option of the real
                   binary has a variable or a reason not to

The image itself (built, TCP, --bidir and UDP through its published port, HEALTHCHECK, not root)
is docker/test-image.sh: minutes, so not part of this run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STARTUP_S = 15.0


# --------------------------------------------------------------------------------------------
# systemd readiness (sd_notify without libsystemd)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path):
    """A datagram socket in systemd's place; its path goes into NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(STARTUP_S)
    yield sock, str(path)
    sock.close()


def test_ready_once_listening_and_stopping_at_sigterm(proxy_bin, notify_socket, tmp_path):
    sock, path = notify_socket
    port = harness.free_port()
    log = (tmp_path / "proxy.log").open("w")
    proxy = subprocess.Popen([str(proxy_bin), "-p", str(port), "--servers", "2"],
                             env={**os.environ, "NOTIFY_SOCKET": path},
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = sock.recv(4096).decode()
        assert ready.startswith("READY=1\nSTATUS=listening on "), ready
        # Ready means it serves: the port accepts now, and both embedded servers listen.
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert "ready: listening on" in (tmp_path / "proxy.log").read_text()
        proxy.send_signal(signal.SIGTERM)
        assert sock.recv(4096).decode() == "STOPPING=1"
        assert proxy.wait(timeout=STARTUP_S) == 0
    finally:
        if proxy.poll() is None:
            proxy.kill()
            proxy.wait()
        log.close()


def test_no_readiness_when_it_does_not_start(proxy_bin, notify_socket):
    sock, path = notify_socket
    done = subprocess.run([str(proxy_bin), "-p", str(harness.free_port()), "--", "-t", "5"],
                          env={**os.environ, "NOTIFY_SOCKET": path}, capture_output=True,
                          text=True, timeout=STARTUP_S, check=False)
    assert done.returncode == 2, done
    sock.settimeout(0)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


# --------------------------------------------------------------------------------------------
# systemd units
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("unit,instance", [("iperf3-proxy.service", "iperf3-proxy.service"),
                                           ("iperf3-proxy@.service", "iperf3-proxy@5202.service")])
def test_systemd_units_verify(proxy_bin, tmp_path, unit, instance):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    text = (ROOT / "packaging" / "systemd" / unit).read_text()
    assert "Type=notify" in text and "DynamicUser=yes" in text
    assert "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" in text
    # The installed path does not exist here: verify against the built binary.
    (tmp_path / instance).write_text(text.replace("/usr/local/bin/iperf3-proxy", str(proxy_bin)))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / instance)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done


# --------------------------------------------------------------------------------------------
# Kubernetes and compose
# --------------------------------------------------------------------------------------------


def test_kubernetes_service_carries_tcp_and_udp_on_one_port_with_client_affinity():
    docs = [d for d in yaml.safe_load_all((ROOT / "packaging/kubernetes/iperf3-proxy.yaml")
                                          .read_text()) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    service = next(s for s in by_kind["Service"] if s["metadata"]["name"] == "iperf3-proxy")
    spec = service["spec"]
    assert spec["sessionAffinity"] == "ClientIP"
    assert {(p["port"], p["protocol"]) for p in spec["ports"]} == {(5201, "TCP"), (5201, "UDP")}
    deployment = by_kind["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    assert deployment["spec"]["selector"]["matchLabels"].items() <= \
        deployment["spec"]["template"]["metadata"]["labels"].items()
    assert spec["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    container = pod["containers"][0]
    assert {(p["containerPort"], p["protocol"]) for p in container["ports"]} >= \
        {(5201, "TCP"), (5201, "UDP")}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = {e["name"] for e in container["env"]}
    assert "IPERF3_PROXY_METRICS" in env


@pytest.mark.parametrize("name", ["compose.yaml", "compose.fronting.yaml"])
def test_compose_files_publish_tcp_and_udp(name):
    doc = yaml.safe_load((ROOT / "docker" / name).read_text())
    proxy = doc["services"]["iperf3-proxy"]
    assert {"5201:5201/tcp", "5201:5201/udp"} <= set(proxy["ports"])
    assert proxy["cap_drop"] == ["ALL"] and proxy["read_only"] is True
    # Every read-only container that runs iperf3 has a writable /tmp for its stream buffers.
    for service in doc["services"].values():
        if service.get("read_only"):
            assert "/tmp" in service.get("tmpfs", []), service


# --------------------------------------------------------------------------------------------
# The container's entrypoint
# --------------------------------------------------------------------------------------------


@pytest.fixture
def entrypoint(tmp_path):
    """Runs docker/entrypoint.sh with a stand-in iperf3-proxy that prints its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "iperf3-proxy"
    stand_in.write_text("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n")
    stand_in.chmod(0o755)

    def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("IPERF3_PROXY_")}
        return subprocess.run(["bash", str(ROOT / "docker" / "entrypoint.sh"), *args],
                              env={**clean, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env},
                              capture_output=True, text=True, timeout=30, check=False)
    return run


def test_entrypoint_maps_the_environment_to_options(entrypoint):
    done = entrypoint({"IPERF3_PROXY_PORT": "5201", "IPERF3_PROXY_SERVERS": "4",
                       "IPERF3_PROXY_IDLE_TIMEOUT": "30s", "IPERF3_PROXY_MAX_BITRATE": "1G",
                       "IPERF3_PROXY_METRICS": "",  # empty: no option
                       "IPERF3_PROXY_ALLOW": "10.0.0.0/8, 192.168.0.0/16",
                       "IPERF3_PROXY_IPERF3_ARGS": "--rcv-timeout 30000 -A 1"},
                      "--log-level", "debug")
    assert done.returncode == 0, done
    assert done.stdout.splitlines() == [
        "--port", "5201", "--servers", "4", "--idle-timeout", "30s", "--max-bitrate", "1G",
        "--allow", "10.0.0.0/8", "--allow", "192.168.0.0/16", "--log-level", "debug",
        "--", "--rcv-timeout", "30000", "-A", "1"]


def test_entrypoint_adds_server_options_after_the_callers_double_dash(entrypoint):
    done = entrypoint({"IPERF3_PROXY_IPERF3_ARGS": "-A 1"}, "--", "--rcv-timeout", "9")
    assert done.stdout.splitlines() == ["--", "--rcv-timeout", "9", "-A", "1"], done


def test_entrypoint_refuses_a_kubernetes_service_link(entrypoint):
    done = entrypoint({"IPERF3_PROXY_PORT": "tcp://10.0.0.7:5201"})
    assert done.returncode == 2 and "enableServiceLinks: false" in done.stderr, done


def test_every_option_of_the_binary_is_reachable_from_the_environment(proxy_bin):
    help_text = subprocess.run([str(proxy_bin), "--help"], capture_output=True, text=True,
                               timeout=10, check=True).stdout
    options = set(re.findall(r"^\s+(?:-\w,)?--([a-z][a-z0-9-]+)", help_text, re.MULTILINE))
    assert {"port", "max-streams", "allow"} <= options, help_text
    script = (ROOT / "docker" / "entrypoint.sh").read_text()
    lists = script[script.index("readonly VALUE_OPTIONS=("):script.index("variable_of()")]
    listed = set(re.findall(r"[a-z][a-z0-9-]+", lists)) - {"readonly"}
    assert options <= listed, f"no IPERF3_PROXY_ variable for: {sorted(options - listed)}"


# --------------------------------------------------------------------------------------------
# The image's HEALTHCHECK script
# --------------------------------------------------------------------------------------------

# A stand-in for the proxy, named iperf3-proxy (a script's process takes its file's name): it
# answers GET /healthz with STATUS on the --metrics port, or, without --metrics, only listens
# on its -p port. Lets the healthcheck be tested against both of its paths, whichever build of
# the proxy is at hand (--metrics is issue 10, part 1).
STAND_IN = r'''#!/usr/bin/python3
import http.server, socket, sys, time
args = sys.argv[1:]
status = int(args[args.index("--status") + 1])
if "--metrics" in args:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()
        def log_message(self, *a):
            pass
    port = int(args[args.index("--metrics") + 1].rsplit(":", 1)[-1])
    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()
else:
    listener = socket.socket(socket.AF_INET6)
    listener.bind(("::", int(args[args.index("-p") + 1])))
    listener.listen()
    print("ready", flush=True)
    time.sleep(60)
'''


@pytest.mark.parametrize("args,healthy,says", [
    (["--metrics", "0.0.0.0:{metrics}", "--status", "200"], True, "/healthz on 127.0.0.1:"),
    (["--metrics", "{metrics}", "--status", "503"], False, "/healthz answered: HTTP/1.0 503"),
    (["-p", "{port}", "--status", "0"], True, "listening on port"),
], ids=["healthz-ok", "healthz-503", "no-metrics-listener"])
def test_healthcheck_asks_healthz_or_the_listener(tmp_path, args, healthy, says):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a PID namespace of its own, as in a container)")
    stand_in = tmp_path / "iperf3-proxy"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    words = [a.format(metrics=harness.free_port(), port=harness.free_port()) for a in args]
    # In a PID namespace with its own /proc, as the container has: the script finds the stand-in
    # and no other iperf3-proxy of this machine.
    script = (f"{stand_in} {' '.join(words)} > {tmp_path}/out & "
              f"for i in $(seq 100); do grep -q ready {tmp_path}/out && break; sleep 0.05; done; "
              f"{ROOT}/docker/healthcheck.sh")
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", script],
                          capture_output=True, text=True, timeout=30, check=False)
    assert (done.returncode == 0) == healthy and says in done.stdout, done
