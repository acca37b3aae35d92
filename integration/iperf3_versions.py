#!/usr/bin/python3
"""The iperf3 releases the version tests run against, and what each of them can do.

    /usr/bin/python3 integration/iperf3_versions.py     # build what is missing, list the peers

3.12 is Debian's /usr/bin/iperf3; the others are built from unmodified upstream archives by
scripts/iperf3-versions.sh into a cache outside the repository (see that script for where the
archives and the cache are). `locate()` runs the script (a cached build is reused at once) and
returns one Peer per version; it raises Unavailable when the archives cannot be found, and the
caller (conftest.iperf3_peers) skips with that reason (fails with IPERF3_VERSIONS_REQUIRED=true).

Version facts the tests rely on (docs/PROTOCOL.md §6, each build's --help and source, and
what the direct runs of test_versions.py show):
  --rcv-timeout        3.10+
  --bidir              3.7+ (all of these)
  --bidir JSON sums    before 3.11 the client reports both directions under the same keys
                       ("sum_sent" and "sum_received" twice); 3.11+ name the second pair
                       *_bidir_reverse (iperf3 #952)
  UDP connect message  3.7-3.11 send 123456789 (x86 bytes 15 cd 5b 07) and the server replies
                       987654321 (b1 68 de 3a); 3.12+ send "9876" and reply "6789"
  auth RSA padding     PKCS#1 v1.5 up to 3.16; OAEP from 3.17. --use-pkcs1-padding switches
                       3.17+ to PKCS#1; from 3.20 it is a server-only option
  auth token, 3.16-3.19 clients: with an OpenSSL that checks the output buffer of RSA
                       encryption (Debian 12's 3.0.x security updates, 3.5.3+), the client fails
                       to encrypt ("output buffer too small") and is refused by every server;
                       esnet/iperf#1951, fixed in 3.20 (PR #1956). 3.12 and 3.9 use the older
                       OpenSSL API and are not affected
  byte counts, 3.16+   one thread per stream, cancelled at the end of the test: a sender may not
                       count its last write (so its receiver can count up to one block more),
                       and a receiver stops counting when the main thread reads TEST_END, with
                       what its socket still holds uncounted
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

# Every version the tests pair up, oldest first. 3.12 is the Debian package.
VERSIONS = ("3.9", "3.12", "3.16", "3.18", "3.20")
DEBIAN_VERSION = "3.12"
BUILD_SCRIPT = harness.REPO_ROOT / "scripts" / "iperf3-versions.sh"
# scripts/iperf3-versions.sh exits with this when it finds no archives (unless they are required).
EXIT_NO_ARCHIVES = 3
# A cold build takes about a minute per version on 2 cores; this only bounds a stuck one.
BUILD_TIMEOUT_S = 1200


class Unavailable(Exception):
    """The peers cannot be provided here (no archives, or a build failed); the message says why."""


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclasses.dataclass(frozen=True)
class Peer:
    version: str
    binary: str

    def at_least(self, version: str) -> bool:
        return version_key(self.version) >= version_key(version)

    @property
    def has_rcv_timeout(self) -> bool:
        return self.at_least("3.10")

    @property
    def legacy_udp_connect(self) -> bool:
        """Sends 123456789 as its UDP connect message and, as a server, replies 987654321."""
        return not self.at_least("3.12")

    @property
    def oaep_by_default(self) -> bool:
        """Encrypts / decrypts the auth token with OAEP unless given --use-pkcs1-padding."""
        return self.at_least("3.17")

    @property
    def pkcs1_option_as_client(self) -> bool:
        """Accepts --use-pkcs1-padding as a client (3.20 made it a server-only option)."""
        return self.oaep_by_default and not self.at_least("3.20")

    @property
    def auth_token_may_fail(self) -> bool:
        """As a client, may fail to encrypt its auth token (esnet/iperf#1951, see above)."""
        return self.at_least("3.16") and not self.at_least("3.20")

    @property
    def threaded(self) -> bool:
        """One thread per stream (3.16+), with the byte-count effects described above."""
        return self.at_least("3.16")

    def __str__(self) -> str:
        return self.version


def _reported_version(binary: str) -> str:
    """"3.12" from `iperf 3.12 (cJSON 1.7.15)`."""
    proc = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                          check=False)
    words = (proc.stdout or proc.stderr).split()
    return words[1] if len(words) > 1 and words[0] == "iperf" else "?"


def locate() -> dict[str, Peer]:
    """One Peer per entry of VERSIONS; builds what is not cached yet (minutes when cold)."""
    try:
        proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"{BUILD_SCRIPT} did not finish within {BUILD_TIMEOUT_S} s") from exc
    if proc.returncode == EXIT_NO_ARCHIVES:
        raise Unavailable(proc.stderr.strip().splitlines()[-1])
    if proc.returncode != 0:
        raise Unavailable(f"{BUILD_SCRIPT} failed (exit {proc.returncode}):\n"
                          f"{proc.stderr.strip()[-2000:]}")
    binaries = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    binaries[DEBIAN_VERSION] = os.environ.get("IPERF3_BIN", harness.DEFAULT_IPERF3_BIN)
    peers = {}
    for version in VERSIONS:
        binary = binaries.get(version)
        if binary is None:
            raise Unavailable(f"no iperf3 {version}: the archives hold only "
                              f"{sorted(set(binaries) - {DEBIAN_VERSION}, key=version_key)}")
        reported = _reported_version(binary)
        if reported != version:
            raise Unavailable(f"{binary} reports iperf {reported}, expected {version}")
        peers[version] = Peer(version, binary)
    return peers


if __name__ == "__main__":
    try:
        for peer in locate().values():
            print(f"{peer.version} {peer.binary}")
    except Unavailable as exc:
        sys.exit(f"iperf3_versions: {exc}")
