"""Faults injected for real into runs on the QEMU target: a full artifact disk, Ctrl-C, SIGTERM.

Each run must end in the right class with the right exit code, keep what it collected (the
run directory, a JUnit of the tests that ran, the console and kmsg logs), and leave nothing
running: the QEMU it booted is gone (the PID from its pidfile), and so is every process that
inherited the test's tag (harness/testing/procs.py).
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from harness.report.junit import read_cases
from harness.testing.procs import running, tagged_env, tagged_processes, wait_until
from harness.testing.slowness import scaled

pytestmark = [pytest.mark.slow, pytest.mark.timeout(scaled(1800))]

REPO = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "snp-harness"
FIRST = "test_probe_parses_without_problems"
LONG = "test_set_memory_region"  # ~30 s under TCG: a stop sent once it has started lands while it runs
SELECTION = f"{FIRST} or {LONG}"
DISK_SELECTION = f"{FIRST} or test_guest_memfd"  # a test after the disk filled up: it writes its evidence
# The artifact disk: room for the initramfs (and the selftests unpacked while it is built).
DISK_SIZE = "256m"


class Job:
    """A command started the way a user or a CI runner starts it: a session of its own."""

    def __init__(self, argv: list[str], tmp_path: Path, name: str) -> None:
        self.tag = uuid.uuid4().hex
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=tagged_env(self.tag), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, start_new_session=True)

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def errors(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for(self, predicate, what: str, timeout: float = 600):
        try:
            return wait_until(predicate, timeout=scaled(timeout), what=what, alive=lambda: self.proc.poll() is None)
        except (RuntimeError, TimeoutError) as e:
            pytest.fail(f"{e}; exit {self.proc.poll()}\n{self.output()[-3000:]}\n{self.errors()[-2000:]}")

    def passed(self, test: str) -> bool:
        return f"{test}[qemu://] PASSED" in self.output()

    def run_dir(self) -> Path | None:
        m = re.search(r"^run directory: (\S+)$", self.output(), re.M)
        return Path(m.group(1)) if m else None

    def finish(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {scaled(timeout):.0f} s after the fault:\n{self.output()[-3000:]}")

    def stop(self) -> None:
        """After the test: whatever of it is still running (a failed test) ends here, by PID."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in tagged_processes(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def jobs():
    started: list[Job] = []
    yield started
    for job in started:
        job.stop()


def _inventory(tmp_path: Path, cache: Path, root: Path) -> Path:
    path = tmp_path / "inv.toml"
    path.write_text(f'[harness]\ncache_dir = "{cache}"\n[artifacts]\nroot = "{root}"\n')
    return path


def _left_nothing(job: Job, qemu_pid: int) -> None:
    assert not running(qemu_pid), f"QEMU {qemu_pid} (from its pidfile) is still running"
    assert tagged_processes(job.tag) == [], "processes the run started are still running"


def _kept(run_dir: Path, kernel_build) -> list:
    """What a finished run directory must still hold; its testcases (all named: no placeholder)."""
    console = (run_dir / "targets" / "qemu" / "console.log").read_text(errors="replace")
    assert f"Linux version {kernel_build.metadata['kernel_release']} " in console
    assert (run_dir / "targets" / "qemu" / "kmsg.log").stat().st_size > 0
    cases = read_cases(run_dir / "junit.xml")
    assert cases and all(c.name for c in cases), cases
    by_name = {c.name: c.outcome for c in cases}
    assert by_name[f"{FIRST}[qemu://]"] == "passed", by_name
    return cases


def _qemu_pid(run_dir: Path) -> int:
    return int((run_dir / "targets" / "qemu" / "qemu.pid").read_text())


STOPS = [pytest.param(signal.SIGINT, id="ctrl-c"), pytest.param(signal.SIGTERM, id="sigterm")]


def _send(job: Job, sig: int) -> None:
    if sig == signal.SIGINT:
        os.killpg(job.proc.pid, sig)  # Ctrl-C: the terminal signals the whole foreground group
    else:
        job.proc.send_signal(sig)  # a CI runner's cancel: the job's own process


def _run_until_the_long_test_runs(kernel_cache, tmp_path: Path, jobs) -> tuple[Job, Path, int]:
    """`snp-harness run` started, FIRST passed and LONG's selftest running: (job, run dir, QEMU's PID)."""
    inv = _inventory(tmp_path, kernel_cache, tmp_path / "runs")
    job = Job([str(CLI), "--config", str(inv), "run", "--", "-k", SELECTION], tmp_path, "run")
    jobs.append(job)
    job.wait_for(lambda: job.passed(FIRST), f"{FIRST} passing")
    run_dir = job.run_dir()
    job.wait_for(lambda: list(run_dir.glob(f"selftests/*{LONG}*")), f"{LONG} starting its selftest")
    return job, run_dir, _qemu_pid(run_dir)


@pytest.mark.parametrize("sig", STOPS)
def test_a_stop_ends_snp_harness_run_with_its_vm_and_a_finished_run_directory(
        sig, kernel_build, kernel_cache, tmp_path, jobs):
    job, run_dir, qemu = _run_until_the_long_test_runs(kernel_cache, tmp_path, jobs)
    _send(job, sig)

    rc = job.finish()
    name = signal.Signals(sig).name
    assert rc == 128 + sig, f"exit {rc}:\n{job.output()[-3000:]}\n{job.errors()[-2000:]}"
    _left_nothing(job, qemu)
    cases = _kept(run_dir, kernel_build)
    assert f"interrupted by {name}" in job.errors() and "Traceback" not in job.errors(), job.errors()
    assert "KeyboardInterrupt" in job.output()  # pytest stopped in order, its fixtures torn down
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["interrupted"] == name and meta["pytest_exit"] == pytest.ExitCode.INTERRUPTED, meta
    assert meta["counts"]["passed"] == sum(c.outcome == "passed" for c in cases), (meta["counts"], cases)
    assert FIRST in (run_dir / "summary.md").read_text()


@pytest.mark.parametrize("sig", STOPS)
def test_a_stop_ends_a_pytest_session_with_its_vm_and_its_junit(sig, kernel_build, kernel_cache, tmp_path, jobs):
    inv = _inventory(tmp_path, kernel_cache, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "session"
    job = Job([sys.executable, "-m", "pytest", "tests/snp", "-m", "snp", "-v", "-p", "no:cacheprovider",
               "-k", SELECTION, f"--junitxml={run_dir / 'junit.xml'}", f"--snp-run-dir={run_dir}",
               f"--snp-config={inv}"], tmp_path, "pytest")
    jobs.append(job)
    job.wait_for(lambda: job.passed(FIRST), f"{FIRST} passing")
    job.wait_for(lambda: list(run_dir.glob(f"selftests/*{LONG}*")), f"{LONG} starting its selftest")
    qemu = _qemu_pid(run_dir)
    _send(job, sig)

    rc = job.finish()
    assert rc == pytest.ExitCode.INTERRUPTED, f"exit {rc}:\n{job.output()[-3000:]}\n{job.errors()[-2000:]}"
    assert f"KeyboardInterrupt: {signal.Signals(sig).name}" in job.output()
    _left_nothing(job, qemu)
    _kept(run_dir, kernel_build)


def _unshare_works() -> str | None:
    r = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    return None if r.returncode == 0 else f"unshare -rm (user + mount namespace) refused: {r.stderr.strip()}"


# In a user + mount namespace of its own, a small tmpfs is the artifact disk; once the run
# ends, the run directory is copied out (the tmpfs goes with the namespace).
_ON_SMALL_DISK = ('disk=$1 kept=$2; shift 2; mount -t tmpfs -o size=$SIZE snp-harness-test "$disk" || exit 99; '
                  '"$@"; rc=$?; rm -f "$disk/filler"; cp -a "$disk/." "$kept"; exit $rc')


def test_a_full_artifact_disk_ends_the_run_as_an_infrastructure_error(kernel_build, kernel_cache, tmp_path, jobs):
    why = _unshare_works()
    if why:
        pytest.skip(why)
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    kept.mkdir()
    inv = _inventory(tmp_path, kernel_cache, disk / "runs")
    job = Job(["unshare", "-rm", "sh", "-c", _ON_SMALL_DISK.replace("$SIZE", DISK_SIZE), "sh", str(disk), str(kept),
               str(CLI), "--config", str(inv), "run", "--", "-k", DISK_SELECTION], tmp_path, "run")
    jobs.append(job)
    job.wait_for(lambda: job.passed(FIRST), f"{FIRST} passing")
    run_dir = job.run_dir()
    inside = Path(f"/proc/{job.proc.pid}/root")  # the namespace's view: its tmpfs
    qemu = _qemu_pid(inside / run_dir.relative_to("/"))
    with open(inside / disk.relative_to("/") / "filler", "wb") as filler:
        with pytest.raises(OSError) as full:
            while True:
                filler.write(b"\0" * (1 << 20))
                filler.flush()
    assert full.value.errno == errno.ENOSPC

    rc = job.finish()
    assert rc == 3, f"exit {rc}:\n{job.output()[-3000:]}\n{job.errors()[-2000:]}"
    assert f"infrastructure error: artifact disk full at {run_dir}" in job.errors(), job.errors()
    assert "Traceback" not in job.errors(), job.errors()
    _left_nothing(job, qemu)
    run_dir = kept / run_dir.relative_to(disk)
    cases = _kept(run_dir, kernel_build)
    assert not [c for c in cases if c.outcome == "failed"], cases  # a full disk fails no test
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["disk_full"].startswith("artifact disk full at "), meta
    assert (run_dir / "summary.md").stat().st_size > 0


def test_a_target_that_dies_mid_test_is_an_infrastructure_error_never_a_failure(
        kernel_build, kernel_cache, tmp_path, jobs):
    """The VM goes away while a selftest runs on it (a crash, a reboot, a pulled plug): that test
    and the ones after it are errors of the infrastructure, the run says so (exit 3), and what ran
    before stays recorded."""
    job, run_dir, qemu = _run_until_the_long_test_runs(kernel_cache, tmp_path, jobs)
    os.kill(qemu, signal.SIGKILL)  # the QEMU this run started (its pidfile), by PID

    rc = job.finish()
    assert rc == 3, f"exit {rc}:\n{job.output()[-3000:]}\n{job.errors()[-2000:]}"
    _left_nothing(job, qemu)
    cases = _kept(run_dir, kernel_build)
    by_name = {c.name: c.outcome for c in cases}
    assert by_name[f"{LONG}[qemu://]"] == "error", by_name
    assert not [c for c in cases if c.outcome == "failed"], cases
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["counts"]["error"] >= 1 and meta["counts"]["passed"] >= 1, meta
    assert (run_dir / "summary.md").stat().st_size > 0
