"""One bisect step: build a commit (cached), run the selection on the target N times, record it.

A step is the same whether `git bisect run` calls it (through `snp-harness bisect-step`)
or the driver does (endpoints, confirmation, the revert check). Every step appends one
JSON line to steps.jsonl the moment it ends, so an interrupted bisect loses nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from harness.bisect.outcome import Verdict, classify
from harness.errors import BuildError, BuildTimeout, ConfigError, InfraError, PatchError
from harness.kernel.patches import Series

PLAN = "bisect.json"
STEPS = "steps.jsonl"


def read_plan(bisect_dir: Path) -> dict:
    try:
        return json.loads((Path(bisect_dir) / PLAN).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{bisect_dir}: not a bisect directory ({PLAN}: {e})") from e


def write_plan(bisect_dir: Path, plan: dict) -> None:
    tmp = Path(bisect_dir) / f".{PLAN}.tmp"
    tmp.write_text(json.dumps(plan, indent=2))
    os.replace(tmp, Path(bisect_dir) / PLAN)


def _next_index(bisect_dir: Path) -> int:
    try:
        return 1 + sum(1 for line in (bisect_dir / STEPS).read_text().splitlines() if line.strip())
    except FileNotFoundError:
        return 1


def _record(bisect_dir: Path, record: dict) -> None:
    with open(bisect_dir / STEPS, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():  # a writer killed mid-line must not swallow this record too
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
            f.seek(0, os.SEEK_END)
            if torn:
                f.write(b"\n")
        f.write(json.dumps(record).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def commit_subject(tree: str | Path, commit: str) -> str:
    from harness.kernel.source import _git

    return _git(Path(tree), "log", "-1", "--format=%s", commit).strip()


def run_step(bisect_dir: Path, commit: str, phase: str, *, series: Series | None = None,
             label: str = "", progress: Callable | None = None) -> dict:
    """Test `commit` as the plan says; returns (and records) the step.

    series: patches applied on the commit instead of the plan's series (the revert check).
    An infrastructure failure is recorded as outcome "infra", never as bad.
    """
    from harness.config import find_config, load_config
    from harness.kernel.build import build
    from harness.kernel.plan import build_request
    from harness.run import pytest_argv, run_suites

    bisect_dir = Path(bisect_dir)
    plan = read_plan(bisect_dir)
    n = _next_index(bisect_dir)
    step_dir = bisect_dir / "steps" / f"{n:02d}-{commit[:12]}{label}"
    if step_dir.exists():  # an attempt cut short before it was recorded: keep it, apart
        for k in range(1, 1000):
            if not (aside := step_dir.with_name(f"{step_dir.name}.cut-{k}")).exists():
                step_dir.rename(aside)
                break
    step_dir.mkdir(parents=True)
    record = {"n": n, "phase": phase, "commit": commit, "subject": commit_subject(plan["tree"], commit),
              "outcome": None, "reason": "", "build_key": None, "build_hit": None, "build_s": None,
              "test_s": None, "runs": 0, "failed_runs": 0, "failed_tests": [],
              "run_dir": str(step_dir.relative_to(bisect_dir)),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    config = load_config(find_config(plan.get("config")))
    t = time.monotonic()
    try:
        request = build_request(config, tree=Path(plan["tree"]), base=commit, series=series,
                                series_name=None if series else plan.get("series"),
                                instrumentation=plan.get("instrumentation"))  # None: the inventory's
        b = build(request, step_dir / "build.log", progress)
    except BuildTimeout as e:  # a stuck machine says nothing about the commit
        return _finish(bisect_dir, record, Verdict("infra", f"build: {_one_line(e)}"), build_s=time.monotonic() - t)
    except (BuildError, PatchError) as e:  # this commit can't be tested; git skips it
        verdict = Verdict("skip", f"{'build failed' if isinstance(e, BuildError) else 'a patch does not apply'}: "
                                  f"{_one_line(e)}")
        return _finish(bisect_dir, record, verdict, build_s=time.monotonic() - t)
    except (InfraError, ConfigError) as e:
        return _finish(bisect_dir, record, Verdict("infra", f"build: {_one_line(e)}"), build_s=time.monotonic() - t)
    record.update(build_key=b.key, build_hit=b.hit, build_s=round(time.monotonic() - t, 1))

    t = time.monotonic()
    repeat = int(plan.get("repeat", 1))
    extra = [*plan["selection"], f"--snp-build={b.key}", *([f"--snp-repeat={repeat}"] if repeat > 1 else [])]
    argv = pytest_argv(step_dir, config=config.path, hosts=plan.get("hosts", []), install=plan.get("install", False),
                       series=None, extra=extra)
    report = run_suites(step_dir, argv, {"build": b.key, "commit": commit, "phase": phase, "bisect": str(bisect_dir),
                                         "hosts": plan.get("hosts") or ["qemu://"]})
    verdict = classify(report.pytest_exit, report.cases, repeat)
    if report.disk_full is not None:  # tests that "passed" on a full disk were not all recorded
        verdict = Verdict("infra", str(report.disk_full))
    elif verdict.outcome == "infra" and any(c.outcome == "error" for c in report.cases):
        crash = crash_evidence(step_dir, b.metadata.get("kernel_release", ""))
        if crash:  # the target died, and the kernel under test said why: that is the commit's doing
            verdict = Verdict("bad", f"the kernel under test crashed: {crash} ({verdict.reason})", 1, 1,
                              verdict.failed_tests)
    return _finish(bisect_dir, record, verdict, test_s=time.monotonic() - t)


# Splats that mean the kernel itself went down or stopped (not a WARN it lived through).
FATAL = frozenset({"panic", "oops", "bug", "gpf", "hard_lockup", "soft_lockup", "hung_task", "rcu_stall"})


def crash_evidence(step_dir: Path, release: str) -> str | None:
    """The first fatal splat the build under test logged in this step, as `title (file:line)`.

    A console capture may begin with the previous kernel going down: only what follows the
    build's own "Linux version <release>" banner counts. kmsg.log is read from the booted
    build only. Nothing here may blame a commit for another kernel's crash.
    """
    from harness.evidence.splats import classify as splats

    banner = f"Linux version {release} " if release else None
    for log in (*sorted(step_dir.glob("targets/*/console.log")), *sorted(step_dir.glob("targets/*/kmsg.log"))):
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        start = 0
        if log.name == "console.log":
            ours = [i for i, line in enumerate(lines) if banner and banner in line]
            if not ours:
                continue
            start = ours[-1]
        found = [s for s in splats(lines[start:]).splats if s.category in FATAL]
        if found:
            return f"{found[0].title} ({log.relative_to(step_dir)}:{start + found[0].first_line})"
    return None


def _finish(bisect_dir: Path, record: dict, verdict: Verdict, *, build_s: float | None = None,
            test_s: float | None = None) -> dict:
    record.update(outcome=verdict.outcome, reason=verdict.reason, runs=verdict.runs,
                  failed_runs=verdict.failed_runs, failed_tests=list(verdict.failed_tests), exit=verdict.exit)
    if build_s is not None:
        record["build_s"] = round(build_s, 1)
    if test_s is not None:
        record["test_s"] = round(test_s, 1)
    _record(bisect_dir, record)
    return record


def _one_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    first = getattr(e, "first_errors", ())  # the compiler's first error says more than "make failed"
    return (f"{text}: {first[0]}" if first else text)[:400]
