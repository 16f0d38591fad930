"""`snp-harness bisect`: check the endpoints, drive `git bisect run`, confirm the culprit, report.

The bisect runs in a worktree of its own (`git worktree add --no-checkout` under the
bisect directory) with `git bisect start --no-checkout`: the user's checkout is never
touched, and no kernel tree is checked out just to move BISECT_HEAD. Each step builds
its commit through the build cache (in the harness's own build worktree), so a commit
seen before costs a cache lookup.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Iterator, Sequence

from harness.bisect.outcome import STEP_BAD
from harness.bisect.step import STEPS, commit_subject, read_plan, run_step, write_plan
from harness.errors import ConfigError, HarnessError, InfraError
from harness.kernel.patches import Series, load_mbox
from harness.kernel.source import _git

Say = Callable[[str], None]

_FIRST_BAD = re.compile(r"^([0-9a-f]{40}) is the first bad commit$", re.M)
_MARK = re.compile(r"^git bisect (good|bad|skip) ", re.M)
# git bisect run's command: only the step's own "bad" (STEP_BAD) reaches git as bad. A step that
# could not run at all (Python missing, an import error, argparse) exits 1 or 2: that aborts.
GUARD = ('r=0; "$@" || r=$?; case $r in 0|125) exit $r;; '
         f'{STEP_BAD}) exit 1;; *) echo "bisect-step failed (exit $r): stopping the bisect" >&2; exit 128;; esac')
_ONLY_SKIPPED = "There are only 'skip'ped commits left to test."
_SHA = re.compile(r"^([0-9a-f]{40})\b", re.M)


def new_plan(tree: Path, good: str, bad: str, selection: Sequence[str], *, repeat: int, hosts: Sequence[str],
             install: bool, series: str | None, verify_revert: bool, config: Path | None,
             reproducer: str, instrumentation: bool | None = None) -> dict:
    """The bisect's inputs, checked: both ends are commits of `tree` and good is an ancestor of bad."""
    tree = Path(tree).expanduser().resolve()
    if not (tree / ".git").exists() and not (tree / "HEAD").exists():
        raise ConfigError(f"--tree {tree}: not a git repository (bisect needs the history)")
    if repeat < 1:
        raise ConfigError("--repeat must be 1 or more")
    if not selection:
        raise ConfigError("give the tests to bisect with after --, e.g. "
                          "-- tests/snp/test_gmem.py::test_gmem_misaligned_conversions")
    if repeat > 1 and any("::" in a and a.endswith("]") for a in selection):
        raise ConfigError("with --repeat, name tests without their [id] (each run adds -runK to it), "
                          "or narrow them with -k")
    if hosts and not install:
        raise ConfigError("bisecting on --snp-host needs --install: otherwise every step tests the kernel "
                          "the host runs now")
    ends = {}
    for name, ref in (("good", good), ("bad", bad)):
        try:
            ends[name] = _git(tree, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
        except InfraError:
            raise ConfigError(f"--{name} {ref!r} is not a commit in {tree}") from None
    if ends["good"] == ends["bad"]:
        raise ConfigError(f"--good and --bad are the same commit ({ends['good'][:12]})")
    if subprocess.run(["git", "-C", str(tree), "merge-base", "--is-ancestor", ends["good"], ends["bad"]]).returncode:
        raise ConfigError(f"--good {good} ({ends['good'][:12]}) is not an ancestor of --bad {bad} "
                          f"({ends['bad'][:12]}); bisect needs good before bad on one line of history")
    return {"tree": str(tree), "good": good, "bad": bad, "good_commit": ends["good"], "bad_commit": ends["bad"],
            "selection": list(selection), "repeat": repeat, "hosts": list(hosts), "install": install,
            "series": series, "verify_revert": verify_revert, "config": str(config) if config else None,
            "instrumentation": instrumentation,  # None: as the inventory's [kernel] says
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reproducer": reproducer,
            "endpoints_checked": False, "result": {"status": "running"}}


def bisect(bisect_dir: Path, say: Say, progress: Callable | None = None) -> dict:
    """Run (or resume) the bisect in `bisect_dir`; returns the plan's result, also written there."""
    bisect_dir = Path(bisect_dir).resolve()  # git runs the step from its worktree: no relative paths
    with _exclusive(bisect_dir) as lock_fd:
        plan = read_plan(bisect_dir)
        status = plan.get("result", {}).get("status")
        if status not in ("running", "aborted"):
            raise ConfigError(f"{bisect_dir}: this bisect is finished ({status}); see its bisect.md")
        t0 = time.monotonic() - plan.get("result", {}).get("wall_s", 0.0)
        try:
            result = _bisect(bisect_dir, plan, say, progress, lock_fd)
        except KeyboardInterrupt:
            result = {"status": "aborted", "message": "interrupted; continue with "
                                                      f"`snp-harness bisect --resume {bisect_dir}`"}
        except HarnessError as e:  # an infrastructure error, or one only a person can mend
            result = {"status": "aborted", "message": f"{e}; fix it and continue with "
                                                      f"`snp-harness bisect --resume {bisect_dir}`"}
        finally:
            _save_log(bisect_dir, plan)
        plan = read_plan(bisect_dir)
        if plan.get("first_bad") and result["status"] == "aborted":
            result.setdefault("culprit", plan["first_bad"])  # named by git; not yet confirmed
        marks = _marks(bisect_dir)  # what git acted on, not every record (a cut-short step is not one)
        result.update(wall_s=round(time.monotonic() - t0, 1), bisect_steps=len(marks),
                      skipped_steps=sum(1 for m in marks if m == "skip"))
        plan["result"] = result  # a resumed bisect's verdict replaces the abort's, all but the time
        write_plan(bisect_dir, plan)
        if result["status"] != "aborted":
            _drop_worktree(plan)
    from harness.bisect.report import write_report

    write_report(bisect_dir)
    return plan["result"]


def _marks(bisect_dir: Path) -> list[str]:
    """good/bad/skip, in order, for each commit git bisect run judged (from the saved log)."""
    saved = bisect_dir / "git-bisect.log"
    return _MARK.findall(saved.read_text()) if saved.exists() else []


@contextmanager
def _exclusive(bisect_dir: Path) -> Iterator[int]:
    """One driver per bisect directory. The lock's descriptor goes to `git bisect run` and its step
    too, so one whose driver was killed holds it until those end (a resume then is refused)."""
    fd = os.open(bisect_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{bisect_dir}: another snp-harness bisect (or the git bisect run of one "
                              "that was killed) is still working here; wait for it to end") from None
        yield fd
    finally:
        os.close(fd)


def _bisect(bisect_dir: Path, plan: dict, say: Say, progress, lock_fd: int) -> dict:
    def step(commit: str, phase: str, **kw) -> dict:
        say(f"[{phase}] {commit[:12]} {_subject(plan, commit)}: build, boot, run x{plan['repeat']}")
        s = run_step(bisect_dir, commit, phase, progress=progress, **kw)
        say(f"[{phase}] {commit[:12]}: {s['outcome']} - {s['reason']}")
        if s["outcome"] == "infra":
            raise InfraError(f"infrastructure error at step {s['n']} ({phase}, {commit[:12]}): {s['reason']}; "
                             "no commit was marked")
        return s

    if not plan.get("endpoints_checked"):
        for phase, want in (("endpoint-good", "good"), ("endpoint-bad", "bad")):
            commit = plan[f"{want}_commit"]
            s = step(commit, phase)
            if s["outcome"] != want:
                return {"status": "refused", "message": (
                    f"the {want} endpoint {plan[want]} ({commit[:12]}) is not {want} here: {s['outcome']}, "
                    f"{s['reason']}. Bisecting would blame the wrong commit; check that the selection "
                    f"{'passes' if want == 'good' else 'fails'} there (try --repeat for a flaky failure) "
                    f"or choose another --{want}.")}
        plan["endpoints_checked"] = True
        write_plan(bisect_dir, plan)

    culprit, output = plan.get("first_bad"), ""
    if culprit is None:
        # Where git stands now (a resume; marks made by hand): named, stuck on skips, or testing on.
        output = _git_where(bisect_dir, plan)
        found = _FIRST_BAD.search(output)
        culprit = found.group(1) if found else None
    if culprit is None and _ONLY_SKIPPED not in output:  # not named yet: run (or go on with) git bisect run
        before = len(_steps(bisect_dir))
        output = _git_bisect_run(bisect_dir, plan, say, lock_fd)
        new_steps = _steps(bisect_dir)[before:]
        last = new_steps[-1] if new_steps else {}
        if not new_steps and "bisect-step failed" in output:
            raise InfraError(f"the bisect step itself failed before testing a commit; no commit was marked:\n"
                             f"{output[-2000:]}")
        if last.get("outcome") == "infra":
            raise InfraError(
                f"infrastructure error at step {last['n']} ({last['commit'][:12]}): {last['reason']}; git bisect "
                f"stopped there and no commit was marked. If this commit can never be tested (say it hangs at "
                f"boot), skip it: git -C {plan['worktree']} bisect skip {last['commit']}")
    if culprit is None:
        if _ONLY_SKIPPED in output:
            candidates = _SHA.findall(output.split(_ONLY_SKIPPED, 1)[1])
            return {"status": "inconclusive", "candidates": candidates, "message": (
                f"only untestable (skipped) commits are left: the first bad commit is one of "
                f"{', '.join(c[:12] for c in candidates)}.")}
        found = _FIRST_BAD.search(output)
        if not found:
            raise InfraError(f"git bisect run ended without naming a commit:\n{output[-2000:]}")
        culprit = found.group(1)
    plan["first_bad"] = culprit  # a resume from here on confirms; git is not asked again
    write_plan(bisect_dir, plan)

    result = {"status": "found", "culprit": culprit, "culprit_subject": _subject(plan, culprit)}
    say(f"first bad commit: {culprit[:12]} {result['culprit_subject']}; confirming with {plan['repeat']} run(s)")
    confirm = step(culprit, "confirm")
    result["confirmed"] = confirm["outcome"] == "bad"
    if confirm.get("build_key"):  # the culprit's own build, to reproduce by hand
        plan["run_reproducer"] = shlex.join([
            "pytest", "-m", "snp", *plan["selection"], f"--snp-build={confirm['build_key']}",
            *(f"--snp-host={h}" for h in plan.get("hosts", [])), *(["--snp-install"] if plan.get("install") else [])])
        write_plan(bisect_dir, plan)
    if plan.get("verify_revert"):
        result.update(_verify_revert(bisect_dir, plan, culprit, step))
    if not result["confirmed"]:
        result.update(status="inconclusive", message=(
            f"git named {culprit[:12]}, but it did not fail again in {plan['repeat']} run(s) "
            f"({confirm['outcome']}: {confirm['reason']}): the failure is flaky at this rate; bisect again "
            "with a higher --repeat."))
    elif result.get("revert_note"):
        result["message"] = f"{culprit[:12]} is confirmed; {result['revert_note']}"
    elif result.get("revert_verified") is False:
        result["message"] = (f"{culprit[:12]} fails and its parent passes, but {plan['bad']} with it "
                             "reverted still fails: more than one commit is involved.")
    return result


def _verify_revert(bisect_dir: Path, plan: dict, culprit: str, step) -> dict:
    """--bad with the culprit reverted must pass; a revert that can't be built or applied proves nothing."""
    try:
        revert = revert_series(Path(plan["tree"]), culprit, bisect_dir / "revert")
        if plan.get("series"):
            from harness.kernel.patches import load_series
            from harness.kernel.plan import find_series

            revert = revert.then(load_series(find_series(plan["series"])))
    except HarnessError as e:
        return {"revert_verified": None, "revert_note": f"no revert check: {e}"}
    s = step(plan["bad_commit"], "verify-revert", series=revert, label="-revert")
    if s["outcome"] == "skip":
        return {"revert_verified": None, "revert_note": f"the revert could not be tested: {s['reason']}"}
    return {"revert_verified": s["outcome"] == "good"}


def _git_where(bisect_dir: Path, plan: dict) -> str:
    """`git bisect next`'s answer in a bisect already under way ("" before one starts): it names
    the first bad commit, says only skipped commits are left, or moves to the next candidate."""
    wt = plan.get("worktree")
    if not wt or not _bisecting(Path(wt)):
        return ""
    r = subprocess.run(["git", "-C", wt, "bisect", "next"], capture_output=True, text=True, errors="replace")
    _save_log(bisect_dir, plan)
    return r.stdout + r.stderr


def ensure_bisecting(bisect_dir: Path, plan: dict) -> Path:
    """The bisect's worktree, bisecting: as it was, or made again with git's marks replayed from
    the saved log (a lost worktree), or started fresh. Nothing of the tree is checked out."""
    wt = Path(plan.setdefault("worktree", str(bisect_dir / "git")))
    write_plan(bisect_dir, plan)
    if _bisecting(wt):
        return wt
    if not (wt / ".git").exists():  # -f: ours may still be registered after its directory went
        _git(Path(plan["tree"]), "worktree", "add", "-f", "--detach", "--no-checkout", str(wt), plan["bad_commit"])
    saved = bisect_dir / "git-bisect.log"
    if saved.exists() and saved.read_text().strip():
        _git(wt, "bisect", "replay", str(saved))
    else:
        _git(wt, "bisect", "start", "--no-checkout", plan["bad_commit"], plan["good_commit"])
    return wt


def _git_bisect_run(bisect_dir: Path, plan: dict, say: Say, lock_fd: int) -> str:
    """Start (or continue) `git bisect run` in the bisect's worktree; its output, also shown as it comes."""
    wt = ensure_bisecting(bisect_dir, plan)
    cmd = ["git", "-C", str(wt), "bisect", "run", "sh", "-c", GUARD, "sh",
           sys.executable, "-m", "harness.cli", "bisect-step", str(bisect_dir)]
    out: list[str] = []
    # A session of its own: a Ctrl-C reaches the driver, which then ends git and its step together.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            pass_fds=(lock_fd,), start_new_session=True)
    try:
        for line in proc.stdout:
            out.append(line)
            say(line.rstrip("\n"))
    except BaseException:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group we started, by its leader's PID
        proc.stdout.close()  # and stop reading: git must not block on a full pipe while we wait
        raise
    finally:
        proc.wait()
        _save_log(bisect_dir, plan)
    return "".join(out)


def _bisecting(wt: Path) -> bool:
    return (wt / ".git").exists() and subprocess.run(["git", "-C", str(wt), "bisect", "log"],
                                                     capture_output=True).returncode == 0


def _save_log(bisect_dir: Path, plan: dict) -> None:
    wt = plan.get("worktree")
    if wt and _bisecting(Path(wt)):
        (bisect_dir / "git-bisect.log").write_text(_git(Path(wt), "bisect", "log"))


def _drop_worktree(plan: dict) -> None:
    wt = plan.get("worktree")
    if not wt or not Path(wt).exists():
        return
    subprocess.run(["git", "-C", wt, "bisect", "reset"], capture_output=True)
    subprocess.run(["git", "-C", plan["tree"], "worktree", "remove", "--force", wt], capture_output=True)


def _steps(bisect_dir: Path) -> list[dict]:
    from harness.bisect.report import read_steps

    return read_steps(bisect_dir / STEPS)


def _subject(plan: dict, commit: str) -> str:
    return commit_subject(plan["tree"], commit)


def revert_series(tree: Path, commit: str, workdir: Path) -> Series:
    """A one-patch series reverting `commit`, for `git am` on any later commit (no checkout needed).

    Plumbing with every user-config knob that changes a diff turned off, read and written as
    bytes: a CRLF file or a binary blob must come back exactly.
    """
    r = subprocess.run(["git", "-C", str(tree), "-c", "diff.noprefix=false", "diff-tree", "-p", "--binary",
                        "--full-index", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames",
                        commit, f"{commit}^"], capture_output=True)
    if r.returncode != 0:
        raise InfraError(f"git diff-tree {commit[:12]} in {tree}: {r.stderr.decode(errors='replace').strip()}")
    if not r.stdout.strip():
        raise ConfigError(f"{commit[:12]} changes nothing: there is nothing to revert")
    subject = commit_subject(tree, commit)
    workdir.mkdir(parents=True, exist_ok=True)
    mbox = workdir / "revert.mbox"
    head = (f"From {commit} Mon Sep 17 00:00:00 2001\nFrom: snp-harness <snp-harness@localhost>\n"
            f"Date: Thu, 1 Jan 1970 00:00:00 +0000\nSubject: [PATCH] Revert \"{subject}\"\n\n"
            f"This reverts commit {commit}.\n---\n")
    mbox.write_bytes(head.encode() + r.stdout)
    return load_mbox(mbox, workdir / "patches")
