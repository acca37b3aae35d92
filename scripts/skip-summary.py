#!/usr/bin/python3
"""Tells how many tests were skipped (and expected to fail) in one ctest run, and why.

    scripts/skip-summary.py LABEL REPORT_DIR

REPORT_DIR holds the JUnit reports the integration tests write (one per pytest file, see
integration/CMakeLists.txt). ctest counts a pytest file that skipped half its tests as one
passed test, so without this a whole dimension could stop running unnoticed. Prints one block:
the totals, then each reason with its count and the files it came from. Exits 0 always: a skip
is information here (under CI=true the fixtures turn missing prerequisites into failures).
"""

from __future__ import annotations

import collections
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def main(label: str, report_dir: Path) -> int:
    reports = sorted(report_dir.glob("*.xml"))
    if not reports:
        print(f"== skipped tests ({label}): no test reports in {report_dir}")
        return 0
    total = 0
    skipped: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    xfailed: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    unreadable = []
    for report in reports:
        try:
            root = ET.parse(report).getroot()
        except ET.ParseError as exc:
            unreadable.append(f"{report.name}: {exc}")
            continue
        for case in root.iter("testcase"):
            total += 1
            for element in case.findall("skipped"):
                reason = (element.get("message") or "").strip() or "(no reason given)"
                kind = xfailed if element.get("type") == "pytest.xfail" else skipped
                kind[reason][report.stem] += 1
    n_skipped = sum(sum(c.values()) for c in skipped.values())
    n_xfailed = sum(sum(c.values()) for c in xfailed.values())
    print(f"== skipped tests ({label}): {n_skipped} skipped, {n_xfailed} expected failures, "
          f"of {total} integration tests in {len(reports)} files")
    for title, groups in (("skipped", skipped), ("expected to fail", xfailed)):
        for reason, files in sorted(groups.items(), key=lambda kv: -sum(kv[1].values())):
            where = ", ".join(f"{name} x{n}" for name, n in sorted(files.items()))
            print(f"  {sum(files.values()):4d} {title}: {reason}  [{where}]")
    for problem in unreadable:
        print(f"  unreadable report: {problem}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
