"""The bisect's git side on a small real repository: plan checks, the worktree, resume by replay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.bisect.driver import GUARD, ensure_bisecting, new_plan, revert_series
from harness.bisect.outcome import STEP_BAD
from harness.bisect.step import write_plan
from harness.cli.bisect import ABORT, cmd_bisect_step
from harness.errors import ConfigError


def git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(repo)}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> tuple[Path, list[str]]:
    r = tmp_path / "linux"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    commits = []
    for n in range(6):
        (r / "f.c").write_text(f"int v = {n};\n")
        (r / "blob.bin").write_bytes(bytes([n, 0, 255]))
        git(r, "add", "-A")
        git(r, "commit", "-qm", f"c{n}")
        commits.append(git(r, "rev-parse", "HEAD"))
    return r, commits


def plan_for(repo: Path, good: str, bad: str, **kw) -> dict:
    return new_plan(repo, good, bad, ["tests/snp/test_gmem.py::test_x"], repeat=kw.pop("repeat", 1), hosts=[],
                    install=False, series=None, verify_revert=False, config=None, reproducer="snp-harness bisect")


def planned(repo: Path, bisect_dir: Path, good: str, bad: str) -> dict:
    """A bisect directory holding a plan from good to bad; the plan."""
    bisect_dir.mkdir()
    plan = plan_for(repo, good, bad)
    write_plan(bisect_dir, plan)
    return plan


def test_plan_resolves_both_ends(repo):
    r, commits = repo
    plan = plan_for(r, commits[0], "main")
    assert (plan["good_commit"], plan["bad_commit"]) == (commits[0], commits[-1])
    assert plan["result"] == {"status": "running"} and plan["endpoints_checked"] is False


@pytest.mark.parametrize("good,bad,message", [
    ("nosuchref", "main", "--good 'nosuchref' is not a commit"),
    ("main", "main", "the same commit"),
    ("main", "main~3", "is not an ancestor of --bad"),
])
def test_plan_refuses_bad_endpoints(repo, good, bad, message):
    r, _ = repo
    with pytest.raises(ConfigError, match=message):
        plan_for(r, good, bad)


def test_plan_needs_a_git_tree_and_a_selection(tmp_path, repo):
    with pytest.raises(ConfigError, match="not a git repository"):
        plan_for(tmp_path, "a", "b")
    r, commits = repo
    with pytest.raises(ConfigError, match="give the tests to bisect"):
        new_plan(r, commits[0], commits[-1], [], repeat=1, hosts=[], install=False, series=None,
                 verify_revert=False, config=None, reproducer="")


def test_a_lost_worktree_is_rebuilt_from_the_saved_log(repo, tmp_path):
    r, commits = repo
    bisect_dir = tmp_path / "bisect"
    plan = planned(r, bisect_dir, commits[0], commits[-1])
    wt = ensure_bisecting(bisect_dir, plan)
    assert not (wt / "f.c").exists(), "the bisect worktree must not check the tree out"
    first = git(wt, "rev-parse", "BISECT_HEAD")
    git(wt, "bisect", "skip", first)
    (bisect_dir / "git-bisect.log").write_text(git(wt, "bisect", "log") + "\n")
    subprocess.run(["rm", "-rf", str(wt)], check=True)  # gone, but still registered with git

    wt = ensure_bisecting(bisect_dir, plan)
    log = git(wt, "bisect", "log")
    assert f"git bisect skip {first}" in log
    assert git(wt, "rev-parse", "BISECT_HEAD") != first
    assert not (wt / "f.c").exists()


def test_revert_series_undoes_text_binary_and_new_files(tmp_path):
    """Also with a user's diff settings that would spoil a porcelain diff."""
    r = tmp_path / "linux"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "a.c").write_bytes(b"int a = 0; /* caf\xe9 */\n")  # not UTF-8: must come back byte for byte
    (r / "b.bin").write_bytes(bytes(range(256)))
    git(r, "add", "-A")
    git(r, "commit", "-qm", "base")
    (r / "a.c").write_text("int a = 1;\n")
    (r / "b.bin").write_bytes(bytes(reversed(range(256))))
    (r / "new.h").write_text("#define NEW 1\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "the culprit")
    culprit = git(r, "rev-parse", "HEAD")
    (r / "c.c").write_text("int c;\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "later")

    git(r, "config", "diff.noprefix", "true")
    git(r, "config", "color.diff", "always")
    series = revert_series(r, culprit, tmp_path / "revert")
    (patch,) = series.patches
    assert patch.subject == 'Revert "the culprit"'
    assert revert_series(r, culprit, tmp_path / "again").patches[0].path.read_bytes() == patch.path.read_bytes()
    wt = tmp_path / "apply"
    git(r, "worktree", "add", "-q", "--detach", str(wt), "main")
    git(wt, "am", "-3", str(patch.path))
    assert (wt / "a.c").read_bytes() == b"int a = 0; /* caf\xe9 */\n"
    assert (wt / "b.bin").read_bytes() == bytes(range(256))
    assert not (wt / "new.h").exists() and (wt / "c.c").exists()


def test_a_step_that_cannot_start_aborts_the_bisect_instead_of_marking(tmp_path):
    class Args:
        bisect_dir = str(tmp_path / "no-such-bisect")

    assert cmd_bisect_step(Args()) == ABORT >= 128


@pytest.mark.parametrize("step_exit,git_sees", [(0, 0), (STEP_BAD, 1), (125, 125), (1, 128), (2, 128),
                                                (3, 128), (128, 128), (-9, 128)])
def test_only_the_steps_own_verdicts_reach_git(step_exit, git_sees):
    """A Python traceback (exit 1) or an argparse error (2) must stop the bisect, never mark bad."""
    body = ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)" if step_exit < 0
            else f"raise SystemExit({step_exit})")
    r = subprocess.run(["sh", "-c", GUARD, "sh", sys.executable, "-c", body], capture_output=True)
    assert r.returncode == git_sees


def test_one_driver_per_bisect_directory(tmp_path):
    from harness.bisect.driver import _exclusive

    with _exclusive(tmp_path):
        with pytest.raises(ConfigError, match="still working here"):
            with _exclusive(tmp_path):
                pass
    with _exclusive(tmp_path):  # free again once the first let go
        pass


def test_resume_refuses_new_options_and_finished_bisects(tmp_path, repo, capsys):
    from harness import cli

    r, commits = repo
    plan = plan_for(r, commits[0], commits[-1])
    plan["result"] = {"status": "found"}
    write_plan(tmp_path, plan)
    assert cli.main(["bisect", "--resume", str(tmp_path), "--repeat", "3"]) == cli.EXIT_USAGE
    assert "drop --repeat" in capsys.readouterr().err
    assert cli.main(["bisect", "--resume", str(tmp_path)]) == cli.EXIT_USAGE
    assert "this bisect is finished (found)" in capsys.readouterr().err


def test_plan_refuses_hosts_without_install_and_ids_with_repeat(repo):
    r, commits = repo
    with pytest.raises(ConfigError, match="needs --install"):
        new_plan(r, commits[0], commits[-1], ["tests/snp"], repeat=1, hosts=["epyc1"], install=False,
                 series=None, verify_revert=False, config=None, reproducer="")
    with pytest.raises(ConfigError, match="without their \\[id\\]"):
        new_plan(r, commits[0], commits[-1], ["tests/snp/test_gmem.py::test_x[qemu://]"], repeat=3, hosts=[],
                 install=False, series=None, verify_revert=False, config=None, reproducer="")


def test_where_git_stands_on_resume(repo, tmp_path):
    """A resume asks git first: a named culprit is not bisected again; only-skipped is inconclusive."""
    from harness.bisect.driver import _FIRST_BAD, _ONLY_SKIPPED, _git_where

    r, commits = repo
    bisect_dir = tmp_path / "bisect"
    plan = planned(r, bisect_dir, commits[0], commits[-1])
    assert _git_where(bisect_dir, plan) == ""  # nothing started yet
    wt = ensure_bisecting(bisect_dir, plan)
    head = git(wt, "rev-parse", "BISECT_HEAD")
    assert "Bisecting" in _git_where(bisect_dir, plan) and git(wt, "rev-parse", "BISECT_HEAD") == head

    while True:  # commits[3] is the first bad one
        cur = git(wt, "rev-parse", "BISECT_HEAD")
        out = git(wt, "bisect", "bad" if commits.index(cur) >= 3 else "good", cur)
        if "is the first bad commit" in out:
            break
    found = _FIRST_BAD.search(_git_where(bisect_dir, plan))
    assert found and found.group(1) == commits[3]
    assert "git bisect bad" in (bisect_dir / "git-bisect.log").read_text()  # saved as it stands

    other = tmp_path / "other"
    plan2 = planned(r, other, commits[2], commits[4])
    wt2 = ensure_bisecting(other, plan2)
    skip = subprocess.run(["git", "-C", str(wt2), "bisect", "skip", git(wt2, "rev-parse", "BISECT_HEAD")],
                          capture_output=True, text=True)  # by hand, as the abort message suggests
    assert _ONLY_SKIPPED in skip.stdout + skip.stderr
    assert _ONLY_SKIPPED in _git_where(other, plan2)
