"""`snp-harness bisect` for real: a generated history on the default tree, the QEMU target, git bisect run.

Eight commits (harness/testing/kernel_history.py): one does not build, one breaks
KVM_SET_MEMORY_ATTRIBUTES so the misaligned-conversion scenario fails. The bisect is
first cut short by killing the target's QEMU in the middle of a step, which must abort
it without marking any commit; --resume then finishes it. Last, endpoints that do not
reproduce are refused.

Then the one rule by which a dead target blames a commit: a fatal splat the build under
test printed after its own banner. A commit whose kernel panics at boot (a branch of its
own, harness/testing/kernel_history.py) is named; a VM killed while its kernel boots, which
printed no splat, blames none.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.bisect.report import read_steps
from harness.kernel.source import IMPORT_TAG
from harness.targets.qemu import READY_MARKER
from harness.testing.kernel_history import COMMITS, PANIC_MESSAGE, make_history, make_panic_commit
from harness.testing.procs import running, wait_until
from harness.testing.slowness import scaled

# On a cold machine this test's setup is the first kernel build (~6 min), and the bisect adds
# ~5 min: more than the suite's default 600 s. Its own waits are bounded below.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

SELECTION = "tests/snp/test_gmem.py::test_gmem_misaligned_conversions"
REPEAT = 3


def _snp_harness(*args: str, log: Path) -> subprocess.Popen:
    cli = Path(sys.executable).parent / "snp-harness"
    return subprocess.Popen([str(cli), *args], stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def _kill_qemu_mid_step(proc: subprocess.Popen, runs: Path, timeout: float) -> int:
    """Once the endpoints are done, kill the first bisect step's QEMU while its tests run; its PID."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for d in runs.glob("*-bisect/steps/*"):
            steps = read_steps(d.parents[1] / "steps.jsonl")
            done = {s["run_dir"] for s in steps}
            pidfile, console = d / "targets" / "qemu" / "qemu.pid", d / "targets" / "qemu" / "console.log"
            if (f"steps/{d.name}" in done or len(steps) < 2 or not pidfile.exists()
                    or READY_MARKER not in console.read_text(errors="replace")
                    or not (d / "selftests").exists()):  # the tests have started
                continue
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.2)
    pytest.fail(f"no bisect step reached its tests (bisect exit {proc.poll()})")


def _wait(proc: subprocess.Popen, timeout: float, log: Path) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        pytest.fail(f"bisect did not finish in {timeout:.0f} s; log tail:\n{log.read_text()[-3000:]}")


def test_bisect_skips_the_broken_build_names_the_culprit_and_survives_a_dead_target(
        kernel_cache, kernel_source, kernel_build, tmp_path, record_testsuite_property):
    history = make_history(kernel_source.repo, kernel_cache / "test-trees" / "bisect", IMPORT_TAG)
    runs = tmp_path / "runs"
    inventory = tmp_path / "inv.toml"
    inventory.write_text(f'[harness]\ncache_dir = "{kernel_cache}"\n[artifacts]\nroot = "{runs}"\n')
    log = tmp_path / "bisect.log"
    t0 = time.monotonic()

    # 1. The target dies in the middle of the first step that boots: abort, nothing marked.
    proc = _snp_harness("--config", str(inventory), "bisect", "--tree", str(history.repo),
                        "--good", history.base, "--bad", "bisect-history", "--repeat", str(REPEAT),
                        "--verify-revert", "--", SELECTION, log=log)
    try:
        killed = _kill_qemu_mid_step(proc, runs, timeout=2400)
        rc = _wait(proc, 600, log)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 3, f"a dead target must abort the bisect (exit 3), got {rc}:\n{log.read_text()[-3000:]}"
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)
    (bisect_dir,) = runs.glob("*-bisect")
    plan = json.loads((bisect_dir / "bisect.json").read_text())
    assert plan["result"]["status"] == "aborted", plan["result"]
    steps = read_steps(bisect_dir / "steps.jsonl")
    assert [s["outcome"] for s in steps[:2]] == ["good", "bad"]  # the endpoints reproduce
    assert steps[-1]["outcome"] == "infra" and steps[-1]["phase"] == "bisect", steps[-1]
    marks = (bisect_dir / "git-bisect.log").read_text()
    assert "git bisect bad" not in marks and "git bisect good" not in marks, marks
    aborted_s = time.monotonic() - t0

    # 2. --resume finishes it: the broken build is skipped, the culprit named, confirmed, its revert passes.
    proc = _snp_harness("--config", str(inventory), "bisect", "--resume", str(bisect_dir), log=log)
    rc = _wait(proc, 3600, log)
    assert rc == 0, f"bisect did not name a confirmed culprit (exit {rc}):\n{log.read_text()[-4000:]}"
    result = json.loads((bisect_dir / "bisect.json").read_text())["result"]
    assert result["culprit"] == history.culprit, result
    assert result["confirmed"] is True and result["revert_verified"] is True, result

    steps = read_steps(bisect_dir / "steps.jsonl")
    bisecting = [s for s in steps if s["phase"] == "bisect" and s["outcome"] != "infra"]
    skipped = [s for s in bisecting if s["outcome"] == "skip"]
    assert [s["commit"] for s in skipped] == [history.broken_build], skipped
    assert "build failed" in skipped[0]["reason"]
    assert len(bisecting) <= math.ceil(math.log2(len(COMMITS))) + len(skipped) + 1, \
        [(s["commit"][:12], s["outcome"]) for s in bisecting]
    by_phase = {s["phase"]: s for s in steps}
    assert by_phase["endpoint-good"]["build_hit"] is True  # the default build: the same tree
    assert by_phase["confirm"]["build_hit"] is True  # revisiting a commit costs a cache lookup
    assert by_phase["confirm"]["failed_runs"] >= 1 and by_phase["confirm"]["runs"] == REPEAT

    report = (bisect_dir / "bisect.md").read_text().replace("\\", "")  # as read: no Markdown escapes
    assert history.culprit[:12] in report and "KVM_SET_MEMORY_ATTRIBUTES" in report
    cases = {tc.get("name"): tc for tc in ET.parse(bisect_dir / "junit.xml").iter("testcase")}
    assert cases["culprit"].find("failure") is None and cases["culprit"].find("error") is None
    for name, value in (("bisect_steps", len(bisecting)), ("bisect_skipped", len(skipped)),
                        ("bisect_wall_s", round(time.monotonic() - t0)), ("bisect_aborted_after_s", round(aborted_s)),
                        ("bisect_resumed_wall_s", result["wall_s"])):
        record_testsuite_property(name, value)

    # 3. Endpoints that don't reproduce are refused: here --good already has the regression.
    proc = _snp_harness("--config", str(inventory), "bisect", "--tree", str(history.repo), "--good", history.culprit,
                        "--bad", "bisect-history", "--", SELECTION, log=log)
    assert _wait(proc, 1200, log) == 1
    (refused,) = [d for d in runs.glob("*-bisect*") if d != bisect_dir]
    result = json.loads((refused / "bisect.json").read_text())["result"]
    assert result["status"] == "refused" and "the good endpoint" in result["message"], result
    assert [s["phase"] for s in read_steps(refused / "steps.jsonl")] == ["endpoint-good"]
    assert not (refused / "git").exists()  # no bisect was started


PANIC_SELECTION = "tests/snp/test_preflight.py::test_probe_parses_without_problems"


def _kill_qemu_while_booting(proc: subprocess.Popen, runs: Path, timeout: float) -> int:
    """SIGKILL the first step's QEMU once its kernel has printed its banner (a silent death); its PID."""
    def booting() -> int | None:
        for console in runs.glob("*-bisect/steps/*/targets/qemu/console.log"):
            pidfile = console.with_name("qemu.pid")
            try:
                if "Linux version " in console.read_text(errors="replace"):
                    return int(pidfile.read_text())
            except (OSError, ValueError):  # the pidfile is not written yet
                continue
        return None

    try:
        pid = wait_until(booting, timeout=timeout, what="a bisect step's kernel booting",
                         alive=lambda: proc.poll() is None)
    except (RuntimeError, TimeoutError) as e:
        pytest.fail(f"{e} (bisect exit {proc.poll()})")
    os.kill(pid, signal.SIGKILL)
    return pid


def test_bisect_blames_a_kernel_that_panics_at_boot_never_a_vm_that_died_silently(
        kernel_cache, kernel_source, kernel_build, tmp_path):
    from harness.targets.qemu import stop_stray_qemu

    repo = kernel_cache / "test-trees" / "bisect"
    base, panics = make_panic_commit(kernel_source.repo, repo, IMPORT_TAG)
    runs = tmp_path / "runs"
    inventory = tmp_path / "inv.toml"
    inventory.write_text(f'[harness]\ncache_dir = "{kernel_cache}"\n[artifacts]\nroot = "{runs}"\n')
    log = tmp_path / "bisect.log"

    # 1. The good endpoint's VM is killed while its kernel boots: nothing fatal was printed, so
    # no commit is blamed; the bisect aborts.
    proc = _snp_harness("--config", str(inventory), "bisect", "--tree", str(repo), "--good", base,
                        "--bad", "bisect-panic", "--", PANIC_SELECTION, log=log)
    try:
        killed = _kill_qemu_while_booting(proc, runs, timeout=scaled(1200))
        rc = _wait(proc, scaled(600), log)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 3, f"a silent death must abort the bisect (exit 3), got {rc}:\n{log.read_text()[-3000:]}"
    assert not running(killed)
    (bisect_dir,) = runs.glob("*-bisect")
    steps = read_steps(bisect_dir / "steps.jsonl")
    assert [(s["phase"], s["outcome"]) for s in steps] == [("endpoint-good", "infra")], steps
    assert "crashed" not in steps[0]["reason"], steps[0]
    assert json.loads((bisect_dir / "bisect.json").read_text())["result"]["status"] == "aborted"

    # 2. --resume: the panicking kernel makes its commit bad, and the bisect names and confirms it.
    proc = _snp_harness("--config", str(inventory), "bisect", "--resume", str(bisect_dir), log=log)
    rc = _wait(proc, scaled(3000), log)
    assert rc == 0, f"bisect did not name a confirmed culprit (exit {rc}):\n{log.read_text()[-4000:]}"
    result = json.loads((bisect_dir / "bisect.json").read_text())["result"]
    assert result["culprit"] == panics and result["confirmed"] is True, result
    steps = read_steps(bisect_dir / "steps.jsonl")
    by_phase = {s["phase"]: s for s in steps}
    assert by_phase["endpoint-good"]["outcome"] == "good", by_phase["endpoint-good"]
    for phase in ("endpoint-bad", "confirm"):
        s = by_phase[phase]
        assert s["outcome"] == "bad" and s["commit"] == panics, s
        assert "the kernel under test crashed" in s["reason"] and PANIC_MESSAGE in s["reason"], s["reason"]
    for step_dir in (bisect_dir / "steps").iterdir():
        assert stop_stray_qemu(step_dir) == [], f"{step_dir.name}: its QEMU outlived the step"
