"""`snp-harness bisect`: check the endpoints, drive `git bisect run`, confirm the culprit, report.

The bisect runs in a worktree of its own (`git worktree add --no-checkout` under the
bisect directory) with `git bisect start --no-checkout`: the user's checkout is never
touched, and no kernel tree is checked out just to move BISECT_HEAD. Each step builds
its commit through the build cache (in the harness's own build worktree), so a commit
seen before costs a cache lookup.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from harness.bisect.step import STEPS, commit_subject, read_plan, run_step, write_plan
from harness.errors import ConfigError, InfraError
from harness.kernel.patches import Series, load_mbox
from harness.kernel.source import _git

Say = Callable[[str], None]

_FIRST_BAD = re.compile(r"^([0-9a-f]{40}) is the first bad commit$", re.M)
_ONLY_SKIPPED = "There are only 'skip'ped commits left to test."
_SHA = re.compile(r"^([0-9a-f]{40})\b", re.M)


def new_plan(tree: Path, good: str, bad: str, selection: Sequence[str], *, repeat: int, hosts: Sequence[str],
             install: bool, series: str | None, verify_revert: bool, config: Path | None,
             reproducer: str) -> dict:
    """The bisect's inputs, checked: both ends are commits of `tree` and good is an ancestor of bad."""
    tree = Path(tree).expanduser().resolve()
    if not (tree / ".git").exists() and not (tree / "HEAD").exists():
        raise ConfigError(f"--tree {tree}: not a git repository (bisect needs the history)")
    if repeat < 1:
        raise ConfigError("--repeat must be 1 or more")
    if not selection:
        raise ConfigError("give the tests to bisect with after --, e.g. "
                          "-- tests/snp/test_gmem.py::test_gmem_misaligned_conversions")
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
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reproducer": reproducer,
            "endpoints_checked": False, "result": {"status": "running"}}


def bisect(bisect_dir: Path, say: Say, progress: Callable | None = None) -> dict:
    """Run (or resume) the bisect in `bisect_dir`; returns the plan's result, also written there."""
    bisect_dir = Path(bisect_dir)
    plan = read_plan(bisect_dir)
    t0 = time.monotonic() - plan.get("result", {}).get("wall_s", 0.0)
    try:
        result = _bisect(bisect_dir, plan, say, progress)
    except KeyboardInterrupt:
        result = {"status": "aborted", "message": "interrupted; continue with "
                                                  f"`snp-harness bisect --resume {bisect_dir}`"}
    except InfraError as e:
        result = {"status": "aborted", "message": f"infrastructure error: {e}; fix it and continue with "
                                                  f"`snp-harness bisect --resume {bisect_dir}`"}
    finally:
        _save_log(bisect_dir, plan)
    steps = _steps(bisect_dir)
    result.update(wall_s=round(time.monotonic() - t0, 1),
                  bisect_steps=sum(1 for s in steps if s["phase"] == "bisect" and s["outcome"] != "infra"),
                  skipped_steps=sum(1 for s in steps if s["outcome"] == "skip"))
    plan = read_plan(bisect_dir)
    plan["result"] = {**plan.get("result", {}), **result}
    write_plan(bisect_dir, plan)
    if result["status"] != "aborted":
        _drop_worktree(plan)
    from harness.bisect.report import write_report

    write_report(bisect_dir)
    return plan["result"]


def _bisect(bisect_dir: Path, plan: dict, say: Say, progress) -> dict:
    def step(commit: str, phase: str, **kw) -> dict:
        say(f"[{phase}] {commit[:12]} {_subject(plan, commit)}: build, boot, run x{plan['repeat']}")
        s = run_step(bisect_dir, commit, phase, progress=progress, **kw)
        say(f"[{phase}] {commit[:12]}: {s['outcome']} - {s['reason']}")
        if s["outcome"] == "infra":
            raise InfraError(f"step {s['n']} ({phase}, {commit[:12]}): {s['reason']}; no commit was marked")
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

    output = _git_bisect_run(bisect_dir, plan, say)
    last = (_steps(bisect_dir) or [{}])[-1]
    if last.get("outcome") == "infra":
        raise InfraError(f"step {last['n']} ({last['commit'][:12]}): {last['reason']}; git bisect stopped "
                         "there and no commit was marked")
    if _ONLY_SKIPPED in output:
        candidates = _SHA.findall(output.split(_ONLY_SKIPPED, 1)[1])
        return {"status": "inconclusive", "candidates": candidates, "message": (
            f"only untestable (skipped) commits are left: the first bad commit is one of "
            f"{', '.join(c[:12] for c in candidates)}.")}
    found = _FIRST_BAD.search(output)
    if not found:
        raise InfraError(f"git bisect run ended without naming a commit:\n{output[-2000:]}")
    culprit = found.group(1)
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
        revert = revert_series(Path(plan["tree"]), culprit, bisect_dir / "revert")
        if plan.get("series"):
            from harness.kernel.patches import load_series
            from harness.kernel.plan import find_series

            revert = revert.then(load_series(find_series(plan["series"])))
        result["revert_verified"] = step(plan["bad_commit"], "verify-revert", series=revert,
                                         label="-revert")["outcome"] == "good"
    if not result["confirmed"]:
        result.update(status="inconclusive", message=(
            f"git named {culprit[:12]}, but it did not fail again in {plan['repeat']} run(s): the failure is "
            "flaky at this rate; bisect again with a higher --repeat."))
    elif result.get("revert_verified") is False:
        result["message"] = (f"{culprit[:12]} fails and its parent passes, but {plan['bad'][:12]} with it "
                             "reverted still fails: more than one commit is involved.")
    return result


def ensure_bisecting(bisect_dir: Path, plan: dict) -> Path:
    """The bisect's worktree, bisecting: as it was, or made again with git's marks replayed from
    the saved log (a lost worktree), or started fresh. Nothing of the tree is checked out."""
    wt = Path(plan.setdefault("worktree", str(bisect_dir / "git")))
    write_plan(bisect_dir, plan)
    if _bisecting(wt):
        return wt
    if not (wt / ".git").exists():
        subprocess.run(["git", "-C", plan["tree"], "worktree", "prune"], capture_output=True)
        _git(Path(plan["tree"]), "worktree", "add", "--detach", "--no-checkout", str(wt), plan["bad_commit"])
    saved = bisect_dir / "git-bisect.log"
    if saved.exists() and saved.read_text().strip():
        _git(wt, "bisect", "replay", str(saved))
    else:
        _git(wt, "bisect", "start", "--no-checkout", plan["bad_commit"], plan["good_commit"])
    return wt


def _git_bisect_run(bisect_dir: Path, plan: dict, say: Say) -> str:
    """Start (or continue) `git bisect run` in the bisect's worktree; its output, also shown as it comes."""
    wt = ensure_bisecting(bisect_dir, plan)
    cmd = ["git", "-C", str(wt), "bisect", "run", sys.executable, "-m", "harness.cli", "bisect-step", str(bisect_dir)]
    out: list[str] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    try:
        for line in proc.stdout:
            out.append(line)
            say(line.rstrip("\n"))
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
    """A one-patch series reverting `commit`, for `git am` on any later commit (no checkout needed)."""
    subject = commit_subject(tree, commit)
    diff = _git(tree, "diff", "--binary", "--full-index", commit, f"{commit}^")
    if not diff.strip():
        raise ConfigError(f"{commit[:12]} changes nothing: there is nothing to revert")
    workdir.mkdir(parents=True, exist_ok=True)
    mbox = workdir / "revert.mbox"
    mbox.write_text(f"From {commit} Mon Sep 17 00:00:00 2001\nFrom: snp-harness <snp-harness@localhost>\n"
                    f"Date: Thu, 1 Jan 1970 00:00:00 +0000\nSubject: [PATCH] Revert \"{subject}\"\n\n"
                    f"This reverts commit {commit}.\n---\n{diff}")
    return load_mbox(mbox, workdir / "patches")
