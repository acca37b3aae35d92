#!/usr/bin/python3
"""Render the compatibility tables (written by the matrix tests) into README.md.

    IPERF3_PROXY_BIN=... /usr/bin/python3 -m pytest integration/test_compat_matrix.py
    /usr/bin/python3 integration/render_matrix.py [MATRIX_JSON] [--readme README.md] [--check]
    IPERF3_PROXY_BIN=... /usr/bin/python3 -m pytest integration/test_versions.py
    /usr/bin/python3 integration/render_matrix.py --table versions [JSON] [--check]

Two tables, each between its own marker lines in the README, each with a caption naming the
iperf3 versions and the date of the run. They are never written by hand.
  compat    (default) test_compat_matrix.py: every mode, Debian's iperf3 on both ends; between
            `<!-- matrix:begin -->` and `<!-- matrix:end -->`.
  versions  test_versions.py: every client x server pair of iperf3 versions; between
            `<!-- versions:begin -->` and `<!-- versions:end -->`.

The JSON file defaults to the table's environment variable (IPERF3_MATRIX_OUT,
IPERF3_VERSION_MATRIX_OUT), else the file the test writes by default (`default_json_path()`).
--check only compares and exits 1 if the README is not up to date. A file from a partial run
(pytest -k) is refused unless --partial is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    file_name: str                     # in the proxy's build directory
    env: str                           # environment variable naming the JSON file instead
    begin: str
    end: str
    render: Callable[[dict], str]
    counts: Callable[[dict], tuple[int, Optional[int]]]  # (results present, results defined)


def default_json_path(table: Optional[Table] = None) -> Path:
    """$IPERF3_MATRIX_OUT (for the versions table $IPERF3_VERSION_MATRIX_OUT), else
    compat_matrix.json (version_matrix.json) in the proxy binary's build directory.

    The binary is IPERF3_PROXY_BIN (as for the tests) or build/ci/src/iperf3-proxy; its build
    directory is the parent of src/. If that directory does not exist, /tmp.
    """
    table = table or TABLES["compat"]
    env = os.environ.get(table.env)
    if env:
        return Path(env)
    binary = Path(os.environ.get("IPERF3_PROXY_BIN") or REPO_ROOT / "build/ci/src/iperf3-proxy")
    build_dir = binary.resolve().parent.parent
    if build_dir.is_dir() and os.access(build_dir, os.W_OK):
        return build_dir / table.file_name
    return Path(f"/tmp/iperf3-proxy-{table.file_name}")


def _cell_text(cell: dict) -> str:
    status, detail = cell.get("status", "?"), cell.get("detail", "")
    if not detail:
        return status
    if status == "pass":
        return f"pass ({detail})"
    return f"{status}: {detail}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def render(doc: dict) -> str:
    iperf3 = doc.get("iperf3", "iperf3 ?")
    package = doc.get("iperf3_package")
    version = iperf3.split(" (")[0]
    where = f"`{doc.get('iperf3_binary', '?')}`"
    if package:
        where += f", Debian package {package}"
    lines = [
        f"Generated {doc.get('generated', '?')} with {version} ({where}) on both ends, "
        f"{doc.get('proxy', 'iperf3-proxy')}, Linux {doc.get('kernel', '?')}, "
        f"{doc.get('cpus', '?')} CPUs, by `integration/test_compat_matrix.py` "
        f"({doc.get('runtime_s', '?')} s) and `integration/render_matrix.py`; do not edit by hand. "
        f"Each mode runs directly and through the proxy and the two JSON results are compared "
        f"(same keys, parameters, streams and roles; TCP throughput ratio through the proxy / "
        f"direct; UDP loss). All runs use `-J` unless the mode says text.",
        "",
        "| mode | client args | direct | proxied | note |",
        "|---|---|---|---|---|",
    ]
    for row in doc["rows"]:
        note = row.get("note", "")
        if row.get("server_args"):
            note = f"server `{row['server_args']}`" + (f"; {note}" if note else "")
        lines.append("| " + " | ".join(_escape(x) for x in (
            row["mode"], _code(row["client_args"]), _cell_text(row["direct"]),
            _cell_text(row["proxied"]), note)) + " |")
    return "\n".join(lines) + "\n"


def render_versions(doc: dict) -> str:
    """The version table: one row per client x server pair, one column per kind of test."""
    versions = [f"{v['version']} ({v.get('source') or v['binary']})"
                for v in doc.get("versions", [])]
    # The direct deadlock per server version, versions with the same evidence grouped.
    by_evidence: dict[str, list[str]] = {}
    for d in doc.get("direct_race", []):
        text = d["evidence"] if d["deadlocked"] else "no deadlock (unexpected)"
        by_evidence.setdefault(text, []).append(d["version"])
    direct_text = "; ".join(f"{', '.join(v)}: {e}" for e, v in by_evidence.items())
    columns = doc.get("columns", [])
    lines = [
        f"Generated {doc.get('generated', '?')} with iperf3 {', '.join(versions) or '?'}, "
        f"{doc.get('proxy', 'iperf3-proxy')}, Linux {doc.get('kernel', '?')}, "
        f"{doc.get('cpus', '?')} CPUs, by `integration/test_versions.py` "
        f"({doc.get('runtime_s', '?')} s) and `integration/render_matrix.py --table versions`; "
        f"do not edit by hand. Every pair runs in a private network namespace with `-J -t 1`. "
        f"The first column runs through the proxy only, while the race testbed makes the "
        f"client's first sending stream complete its handshake late, which deadlocks the same "
        f"test run directly (client and server of one version: {direct_text or 'not run'}). "
        f"The other columns run directly and through the proxy and compare the two results "
        f"(same keys, parameters, streams and roles; no error through the proxy that is absent "
        f"directly; upload bytes add up with what the proxy relayed, as each version counts "
        f"them; for UDP, the connect and reply datagrams counted on both legs; for "
        f"`--get-server-output`, the server's report names the client).",
        "",
        "| client | server | " + " | ".join(c["label"] for c in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for pair in doc.get("pairs", []):
        cells = [_cell_text(pair["cells"][c["id"]]) if c["id"] in pair["cells"] else "not run"
                 for c in columns]
        lines.append("| " + " | ".join(_escape(x) for x in (
            pair["client"], pair["server"], *cells)) + " |")
    if doc.get("notes"):
        lines += ["", *(f"- {note}" for note in doc["notes"])]
    return "\n".join(lines) + "\n"


def _compat_counts(doc: dict) -> tuple[int, Optional[int]]:
    return len(doc.get("rows", [])), doc.get("rows_defined")


def _versions_counts(doc: dict) -> tuple[int, Optional[int]]:
    return doc.get("rows_run", 0), doc.get("rows_defined")


TABLES = {
    "compat": Table("compat", "compat_matrix.json", "IPERF3_MATRIX_OUT", BEGIN, END, render,
                    _compat_counts),
    "versions": Table("versions", "version_matrix.json", "IPERF3_VERSION_MATRIX_OUT",
                      "<!-- versions:begin -->", "<!-- versions:end -->", render_versions,
                      _versions_counts),
}


def replace_section(readme: str, table: str, begin: str = BEGIN, end: str = END) -> str:
    if (readme.count(begin) != 1 or readme.count(end) != 1
            or readme.index(begin) > readme.index(end)):
        raise SystemExit(f"README must contain one '{begin}' line followed by one '{end}' line")
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{table}{end}{tail}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="?", type=Path, default=None)
    ap.add_argument("--table", choices=sorted(TABLES), default="compat")
    ap.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README is out of date")
    ap.add_argument("--partial", action="store_true", help="accept a run that skipped rows")
    opts = ap.parse_args(argv)
    table = TABLES[opts.table]
    path = opts.json or default_json_path(table)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"render_matrix: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    present, defined = table.counts(doc)
    if present != defined and not opts.partial:
        print(f"render_matrix: {path} has {present} of {defined} results (partial run); "
              "rerun the whole file or pass --partial", file=sys.stderr)
        return 2
    old = opts.readme.read_text()
    new = replace_section(old, table.render(doc), table.begin, table.end)
    if opts.check:
        if new != old:
            print(f"render_matrix: {opts.readme} is not up to date with {path}", file=sys.stderr)
            return 1
        return 0
    if new != old:
        opts.readme.write_text(new)
    print(f"render_matrix: {table.name} table, {present} results from {path} -> {opts.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
