"""Finish a run directory: enrich its JUnit, then write summary.md/.html (offline)."""

from __future__ import annotations

from pathlib import Path

from harness.report.junit import enrich, read_metadata
from harness.report.summary import SummaryResult, write_summary


def finish_run(run_dir: Path) -> SummaryResult:
    run_dir = Path(run_dir)
    meta, problems = read_metadata(run_dir)
    junit = run_dir / "junit.xml"
    written: list[Path] = []
    if junit.exists():
        problems += enrich(junit, run_dir, meta)
        written.append(junit)
    summary = write_summary(run_dir)
    return SummaryResult(written=(*written, *summary.written), problems=(*problems, *summary.problems))
