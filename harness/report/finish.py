"""Finish a run directory: enrich its JUnit, then write summary.md/.html (offline)."""

from __future__ import annotations

import os
from pathlib import Path
from xml.etree import ElementTree as ET

from typing import TYPE_CHECKING

from harness.report.junit import enrich, read_metadata

if TYPE_CHECKING:  # pragma: no cover
    from harness.report.summary import SummaryResult


def finish_run(run_dir: Path) -> SummaryResult:
    from harness.report.summary import SummaryResult, write_summary  # numpy: only when a run ends

    run_dir = Path(run_dir)
    meta, problems = read_metadata(run_dir)
    junit = run_dir / "junit.xml"
    written: list[Path] = []
    if junit.exists():
        problems += drop_unnamed_cases(junit)
        problems += enrich(junit, run_dir, meta)
        written.append(junit)
    summary = write_summary(run_dir)
    return SummaryResult(written=(*written, *summary.written), problems=(*problems, *summary.problems))


def drop_unnamed_cases(junit: Path) -> list[str]:
    """Remove the nameless <testcase> pytest writes for a test an interrupt cut short: it
    has no result, and read as one it would count as passed. Problems, as enrich's."""
    try:
        tree = ET.parse(junit)
    except (OSError, ET.ParseError):
        return []  # enrich says why
    dropped = 0
    for suite in tree.iter("testsuite"):
        for case in suite.findall("testcase"):
            if not case.get("name"):
                suite.remove(case)
                dropped += 1
    if not dropped:
        return []
    tmp = junit.with_name(junit.name + ".tmp")
    try:
        tree.write(tmp, encoding="utf-8", xml_declaration=True)
        os.replace(tmp, junit)
    except OSError as e:
        return [f"{junit}: cannot write: {e}"]
    return []
