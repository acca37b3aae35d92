#!/usr/bin/python3
"""Shared pytest fixtures for the integration tests (loaded by pytest, not run directly).

    /usr/bin/python3 -m pytest integration/ -v

Fixtures:
  proxy_bin     path of the proxy binary (IPERF3_PROXY_BIN or build/ci/src/iperf3-proxy);
                skips the test with the path in the message if it is not built yet.
  race_env      skips unless root, `ip`, `nft` and iperf3 are available and a network
                namespace can actually be created (containers may forbid it even for root).
  iperf3_peers  {version: iperf3_versions.Peer} for every version the version tests pair up;
                builds the missing ones (scripts/iperf3-versions.sh), skips without archives.

Under CI (CI=true) each of these fails the test instead of skipping it: in CI a missing
prerequisite is a broken setup, and a test that silently skips proves nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import iperf3_versions  # noqa: E402


def _unavailable(reason: str):
    """Skip the test, or fail it under CI (CI=true), where nothing may silently go missing."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (a skip is not allowed under CI=true)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def proxy_bin() -> Path:
    path = harness.proxy_binary()
    if not os.access(path, os.X_OK):
        _unavailable(f"proxy binary not built: {path} (build it or set IPERF3_PROXY_BIN)")
    return path


def _race_env_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces and nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"'{tool}' not installed"
    if not os.access(harness.iperf3_binary(), os.X_OK):
        return f"iperf3 not found at {harness.iperf3_binary()} (set IPERF3_BIN)"
    import race_testbed  # local import: it needs nothing at import time, but keeps startup lean
    try:
        with race_testbed.NetNamespace("probe"):
            pass
    except harness.HarnessError as exc:
        return f"cannot create a network namespace: {exc}"
    return None


@pytest.fixture(scope="session")
def race_env() -> None:
    problem = _race_env_problem()
    if problem:
        _unavailable(f"race testbed unavailable: {problem}")


@pytest.fixture(scope="session")
def iperf3_peers() -> dict[str, iperf3_versions.Peer]:
    try:
        return iperf3_versions.locate()
    except iperf3_versions.Unavailable as exc:
        reason = f"iperf3 versions unavailable: {exc}"
    # The archives come from outside the repository: without them the version tests skip, loudly
    # (scripts/test.sh repeats the reason at the end), even in CI, unless they are required.
    if os.environ.get("IPERF3_VERSIONS_REQUIRED") == "true":
        pytest.fail(f"{reason} (required: IPERF3_VERSIONS_REQUIRED=true)", pytrace=False)
    pytest.skip(reason)  # outside the except block: the reason alone, not a traceback chain


@pytest.fixture(scope="module")
def proxied(proxy_bin):
    """One backend server and one proxy for a whole module: back-to-back tests must work."""
    with harness.start_iperf_server() as server:
        with harness.Proxy(harness.free_port(), backend=server.port, binary=proxy_bin) as proxy:
            yield proxy
