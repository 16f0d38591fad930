"""The bisect's git side on a small real repository: plan checks, the worktree, resume by replay."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.bisect.driver import ensure_bisecting, new_plan, revert_series
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
    bisect_dir.mkdir()
    plan = plan_for(r, commits[0], commits[-1])
    write_plan(bisect_dir, plan)
    wt = ensure_bisecting(bisect_dir, plan)
    assert not (wt / "f.c").exists(), "the bisect worktree must not check the tree out"
    first = git(wt, "rev-parse", "BISECT_HEAD")
    git(wt, "bisect", "skip", first)
    (bisect_dir / "git-bisect.log").write_text(git(wt, "bisect", "log") + "\n")
    subprocess.run(["rm", "-rf", str(wt)], check=True)
    git(r, "worktree", "prune")

    wt = ensure_bisecting(bisect_dir, plan)
    log = git(wt, "bisect", "log")
    assert f"git bisect skip {first}" in log
    assert git(wt, "rev-parse", "BISECT_HEAD") != first
    assert not (wt / "f.c").exists()


def test_revert_series_undoes_text_binary_and_new_files(tmp_path):
    r = tmp_path / "linux"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "a.c").write_text("int a = 0;\n")
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

    series = revert_series(r, culprit, tmp_path / "revert")
    (patch,) = series.patches
    assert patch.subject == 'Revert "the culprit"'
    assert revert_series(r, culprit, tmp_path / "again").patches[0].path.read_bytes() == patch.path.read_bytes()
    wt = tmp_path / "apply"
    git(r, "worktree", "add", "-q", "--detach", str(wt), "main")
    git(wt, "am", "-3", str(patch.path))
    assert (wt / "a.c").read_text() == "int a = 0;\n"
    assert (wt / "b.bin").read_bytes() == bytes(range(256))
    assert not (wt / "new.h").exists() and (wt / "c.c").exists()


def test_a_step_that_cannot_start_aborts_the_bisect_instead_of_marking(tmp_path):
    class Args:
        bisect_dir = str(tmp_path / "no-such-bisect")

    assert cmd_bisect_step(Args()) == ABORT >= 128
