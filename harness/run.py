"""The main job: build (cached), bring up the target(s), run the kernel suites, report.

The suites run in a pytest child process (the harness's plugin does the target
work); everything lands in one run directory: build.log, the targets' console
logs, per-test selftest output, junit.xml, metadata.json with a reproducer.

Faults the run survives (README, "Reliability"): SIGINT/SIGTERM are forwarded
to the child, which tears its targets down, and the run directory is then
finished with what ran; a full artifact disk ends the run as an infrastructure
error, finished from a reserve set aside in the run directory when it began.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from harness.artifacts import (FULL_BELOW, ArtifactDiskFull, free_at_end, hold_reserve, is_disk_full, release_reserve,
                               says_disk_full)

if TYPE_CHECKING:  # pragma: no cover - the report modules load with a run (numpy); the plugin needs less
    from harness.report.junit import Case

REPO_ROOT = Path(__file__).resolve().parents[1]

@dataclass(frozen=True)
class RunReport:
    run_dir: Path
    pytest_exit: int
    cases: tuple[Case, ...] = field(default_factory=tuple)
    summary: tuple[Path, ...] = ()          # junit.xml (enriched), summary.md, summary.html, maps
    report_problems: tuple[str, ...] = ()
    stop_signal: int | None = None          # SIGINT or SIGTERM, when one stopped the run
    disk_full: ArtifactDiskFull | None = None

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


class _Forward:
    """While the child runs: SIGINT and SIGTERM go on to it (its plugin tears the targets down)
    and are remembered, instead of ending this process with the child still running."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.child: subprocess.Popen | None = None
        self._old: dict = {}

    def __enter__(self) -> _Forward:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, _frame) -> None:
        self.signum = self.signum or signum
        if self.child is not None and self.child.poll() is None:
            os.kill(self.child.pid, signum)

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


def run_suites(run_dir: Path, argv: list[str], metadata: dict) -> RunReport:
    """Run pytest (its output goes straight to the terminal), then read its JUnit.

    A signal is forwarded to pytest, which stops; a full disk is reported, not raised: either
    way the run directory is finished with what was collected.
    """
    start = time.monotonic()
    meta = {**metadata, "pytest": shlex.join(argv)}
    try:
        hold_reserve(run_dir)
        (run_dir / "metadata.json").write_text(json.dumps(meta, indent=2))
    except OSError as e:
        release_reserve(run_dir)
        if is_disk_full(e):
            raise ArtifactDiskFull(run_dir, str(e)) from e
        raise
    from harness.report.finish import drop_unnamed_cases, finish_run
    from harness.report.junit import read_cases
    from harness.targets.qemu import stop_stray_qemu

    with _Forward() as fwd:
        rc = 2  # pytest's "interrupted": the signal came before it started
        if fwd.signum is None:
            fwd.child = subprocess.Popen(argv, cwd=REPO_ROOT)
            rc = fwd.child.wait()
        stopped = stop_stray_qemu(run_dir)  # a child killed outright leaves its VMs behind
        free = free_at_end(run_dir)
        if (run_dir / "junit.xml").exists():
            drop_unnamed_cases(run_dir / "junit.xml")  # before counting: a test cut short is no result
        cases = read_cases(run_dir / "junit.xml")
        full = [f"{free} bytes free when the tests ended"] if free is not None and free < FULL_BELOW else []
        full += [f"{c.nodeid}: {_first_line(c.message)}" for c in cases
                 if c.outcome == "error" and says_disk_full(c.message)]
        meta.update(pytest_exit=rc, duration_s=round(time.monotonic() - start, 1),
                    counts={o: sum(1 for c in cases if c.outcome == o)
                            for o in ("passed", "failed", "error", "skipped")})
        if fwd.signum is not None:
            meta["interrupted"] = signal.Signals(fwd.signum).name
        if stopped:
            meta["stray_qemu_stopped"] = stopped
        if full:
            meta["disk_full"] = str(ArtifactDiskFull(run_dir, full[0]))
        written: tuple[Path, ...] = ()
        problems: tuple[str, ...] = ()
        try:
            (run_dir / "metadata.json").write_text(json.dumps(meta, indent=2))
            finished = finish_run(run_dir)  # enriched JUnit + summary.md/html, offline from what was written
            written, problems = finished.written, finished.problems
        except OSError as e:
            if not is_disk_full(e):
                raise
            full.append(f"finishing the run directory: {e}")
        full += [p for p in problems if says_disk_full(p)]
        cases = read_cases(run_dir / "junit.xml")  # as enriched: errors named for what they were
    return RunReport(run_dir, rc, tuple(cases), written, problems, fwd.signum,
                     ArtifactDiskFull(run_dir, full[0]) if full else None)


def _first_line(text: str) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
