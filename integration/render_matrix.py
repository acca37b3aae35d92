#!/usr/bin/python3
"""Render the compatibility matrix (written by test_compat_matrix.py) into README.md.

    IPERF3_PROXY_BIN=... /usr/bin/python3 -m pytest integration/test_compat_matrix.py
    /usr/bin/python3 integration/render_matrix.py [MATRIX_JSON] [--readme README.md] [--check]

Replaces everything between the `<!-- matrix:begin -->` and `<!-- matrix:end -->` lines of the
README with a Markdown table (mode, client args, direct, proxied, note) and a caption naming the
iperf3 version and the date of the run. The table is never written by hand.

MATRIX_JSON defaults to $IPERF3_MATRIX_OUT, else the file the test writes by default
(`default_json_path()`). --check only compares and exits 1 if the README is not up to date.
A file from a partial run (pytest -k) is refused unless --partial is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"


def default_json_path() -> Path:
    """$IPERF3_MATRIX_OUT, else compat_matrix.json in the proxy binary's build directory.

    The binary is IPERF3_PROXY_BIN (as for the tests) or build/ci/src/iperf3-proxy; its build
    directory is the parent of src/. If that directory does not exist, /tmp.
    """
    env = os.environ.get("IPERF3_MATRIX_OUT")
    if env:
        return Path(env)
    binary = Path(os.environ.get("IPERF3_PROXY_BIN") or REPO_ROOT / "build/ci/src/iperf3-proxy")
    build_dir = binary.resolve().parent.parent
    if build_dir.is_dir() and os.access(build_dir, os.W_OK):
        return build_dir / "compat_matrix.json"
    return Path("/tmp/iperf3-proxy-compat_matrix.json")


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


def replace_section(readme: str, table: str) -> str:
    if (readme.count(BEGIN) != 1 or readme.count(END) != 1
            or readme.index(BEGIN) > readme.index(END)):
        raise SystemExit(f"README must contain one '{BEGIN}' line followed by one '{END}' line")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="?", type=Path, default=None)
    ap.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README is out of date")
    ap.add_argument("--partial", action="store_true", help="accept a run that skipped rows")
    opts = ap.parse_args(argv)
    path = opts.json or default_json_path()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"render_matrix: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    if len(doc.get("rows", [])) != doc.get("rows_defined") and not opts.partial:
        print(f"render_matrix: {path} has {len(doc.get('rows', []))} of {doc.get('rows_defined')}"
              " rows (partial run); rerun the whole file or pass --partial", file=sys.stderr)
        return 2
    old = opts.readme.read_text()
    new = replace_section(old, render(doc))
    if opts.check:
        if new != old:
            print(f"render_matrix: {opts.readme} is not up to date with {path}", file=sys.stderr)
            return 1
        return 0
    if new != old:
        opts.readme.write_text(new)
    print(f"render_matrix: {len(doc['rows'])} rows from {path} -> {opts.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
