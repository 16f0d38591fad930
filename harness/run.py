"""The main job: build (cached), bring up the target(s), run the kernel suites, report.

The suites run in a pytest child process (the harness's plugin does the target
work); everything lands in one run directory: build.log, the targets' console
logs, per-test selftest output, junit.xml, metadata.json with a reproducer.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from harness.report.finish import finish_run
from harness.report.junit import Case, read_cases

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RunReport:
    run_dir: Path
    pytest_exit: int
    cases: tuple[Case, ...] = field(default_factory=tuple)
    summary: tuple[Path, ...] = ()          # junit.xml (enriched), summary.md, summary.html, maps
    report_problems: tuple[str, ...] = ()

    def count(self, outcome: str) -> int:
        return sum(1 for c in self.cases if c.outcome == outcome)


def pytest_argv(run_dir: Path, *, config: Path | None, hosts: Sequence[str], install: bool,
                series: str | None, extra: Sequence[str], tree: str | None = None) -> list[str]:
    # Test ids among the extras (a reproducer's `-- tests/snp/x.py::test[qemu://]`) replace the suite dir.
    chosen = [a for a in extra if not a.startswith("-") and ("::" in a or a.endswith(".py"))]
    suite = [] if chosen else [str(REPO_ROOT / "tests" / "snp")]
    argv = [sys.executable, "-m", "pytest", *suite, "-m", "snp", "-v", "-rs", "-p", "no:cacheprovider", f"--junitxml={run_dir / 'junit.xml'}", f"--snp-run-dir={run_dir}"]
    if config:
        argv.append(f"--snp-config={config}")
    for h in hosts:
        argv.append(f"--snp-host={h}")
    if install:
        argv.append("--snp-install")
    if series:
        argv.append(f"--snp-series={series}")
    if tree:
        argv.append(f"--snp-kernel-tree={tree}")
    return [*argv, *extra]


def run_suites(run_dir: Path, argv: list[str], metadata: dict) -> RunReport:
    """Run pytest (its output goes straight to the terminal), then read its JUnit."""
    start = time.monotonic()
    (run_dir / "metadata.json").write_text(json.dumps({**metadata, "pytest": shlex.join(argv)}, indent=2))
    rc = subprocess.call(argv, cwd=REPO_ROOT)
    cases = read_cases(run_dir / "junit.xml")
    meta = {**metadata, "pytest": shlex.join(argv), "pytest_exit": rc,
            "duration_s": round(time.monotonic() - start, 1),
            "counts": {o: sum(1 for c in cases if c.outcome == o) for o in ("passed", "failed", "error", "skipped")}}
    (run_dir / "metadata.json").write_text(json.dumps(meta, indent=2))
    finished = finish_run(run_dir)  # enriched JUnit + summary.md/html, offline from what was written
    cases = read_cases(run_dir / "junit.xml")  # as enriched: errors named for what they were
    return RunReport(run_dir, rc, tuple(cases), finished.written, finished.problems)
