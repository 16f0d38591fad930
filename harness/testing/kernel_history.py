"""A small, deterministic git history on the imported default tree, for testing bisect for real.

Eight commits on top of the import: comment-only changes, one that does not build (and
the next that mends it), and one that breaks KVM_SET_MEMORY_ATTRIBUTES (the last page of
every range keeps its old attribute), which our misaligned-conversion scenario catches.
Commits are made with plumbing (no checkout of the tree) and fixed dates, so the same
inputs give the same commit ids, and a warm build cache stays warm across runs.

Apart from it, on a branch of its own off the same base: one commit whose kernel panics
on boot (make_panic_commit), for the bisect rule that blames a commit for a crash.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

GMEM = "virt/kvm/guest_memfd.c"
KVM_MAIN = "virt/kvm/kvm_main.c"
_END_GFN = "\tend = (attrs->address + attrs->size) >> PAGE_SHIFT;\n"
_WIP = "\nstatic int snp_harness_wip(void) { return 0 }\n"  # no ';': a compile error


def _note(n: int) -> Callable[[str], str]:
    return lambda text: text + f"\n/* snp-harness bisect test: note {n} */\n"


def _off_by_one(text: str) -> str:
    if _END_GFN not in text:
        raise ValueError(f"{KVM_MAIN}: the end-gfn line of kvm_vm_ioctl_set_mem_attributes() moved")
    return text.replace(_END_GFN, "\tend = (attrs->address + attrs->size - 1) >> PAGE_SHIFT;\n")


# (subject, file, edit); the 4th does not build, the 6th is the regression.
COMMITS = (
    ("KVM: guest_memfd: note the invalidation lock order", GMEM, _note(1)),
    ("KVM: note why memory attributes live in an xarray", KVM_MAIN, _note(2)),
    ("KVM: guest_memfd: note the fallocate range rules", GMEM, _note(3)),
    ("KVM: guest_memfd: WIP helper for range checks", GMEM, lambda text: text + _WIP),
    ("KVM: guest_memfd: drop the unfinished helper", GMEM, lambda text: text.replace(_WIP, "")),
    ("KVM: compute the end gfn of KVM_SET_MEMORY_ATTRIBUTES inclusively", KVM_MAIN, _off_by_one),
    ("KVM: note the memory attribute ioctl's alignment rules", KVM_MAIN, _note(7)),
    ("KVM: guest_memfd: note the hugepage plans", GMEM, _note(8)),
)
BROKEN_BUILD, REGRESSION = 3, 5  # indexes into COMMITS

# Built in (KVM=y in the local-target config): the kernel panics once it is up, after its banner.
PANIC_MESSAGE = "snp-harness test: this commit panics on boot"
_PANIC = (f"\nstatic int __init snp_harness_boot_panic(void)\n{{\n\tpanic(\"{PANIC_MESSAGE}\");\n"
          "\treturn 0;\n}\nlate_initcall(snp_harness_boot_panic);\n")
PANIC_COMMIT = ("KVM: check the memory attribute xarray once at boot", KVM_MAIN, lambda text: text + _PANIC)


@dataclass(frozen=True)
class History:
    repo: Path
    base: str
    commits: tuple[str, ...]

    @property
    def culprit(self) -> str:
        return self.commits[REGRESSION]

    @property
    def broken_build(self) -> str:
        return self.commits[BROKEN_BUILD]


def _git(repo: Path, *args: str, env: dict | None = None, stdin: str | None = None) -> str:
    r = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo}: {r.stderr.strip()}")
    return r.stdout.strip()


def make_history(source_repo: Path, dest: Path, base_ref: str, branch: str = "bisect-history") -> History:
    """A clone of source_repo at dest (objects shared, nothing checked out) with COMMITS on base_ref."""
    base = _base(source_repo, dest, base_ref)
    parent, commits = base, []
    for n, change in enumerate(COMMITS, 1):
        parent = _commit(dest, parent, n, *change)
        commits.append(parent)
    _git(dest, "update-ref", f"refs/heads/{branch}", parent)
    return History(dest, base, tuple(commits))


def make_panic_commit(source_repo: Path, dest: Path, base_ref: str, branch: str = "bisect-panic") -> tuple[str, str]:
    """(base, commit): PANIC_COMMIT alone on base_ref, in the same clone as make_history's."""
    base = _base(source_repo, dest, base_ref)
    commit = _commit(dest, base, len(COMMITS) + 1, *PANIC_COMMIT)
    _git(dest, "update-ref", f"refs/heads/{branch}", commit)
    return base, commit


def _base(source_repo: Path, dest: Path, base_ref: str) -> str:
    if not (dest / "HEAD").exists() and not (dest / ".git").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(source_repo), str(dest)], check=True)
    return _git(dest, "rev-parse", f"{base_ref}^{{commit}}")


def _commit(dest: Path, parent: str, n: int, subject: str, path: str, edit: Callable[[str], str]) -> str:
    """One commit on parent changing one file; the n-th minute of 2026 dates it (ids stay fixed)."""
    with tempfile.TemporaryDirectory() as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        old = _git(dest, "cat-file", "blob", f"{parent}:{path}") + "\n"
        blob = _git(dest, "hash-object", "-w", "--stdin", stdin=edit(old))
        _git(dest, "read-tree", parent, env=index)
        _git(dest, "update-index", "--cacheinfo", f"100644,{blob},{path}", env=index)
        tree = _git(dest, "write-tree", env=index)
    when = f"2026-01-01T00:{n:02d}:00+0000"
    who = {"GIT_AUTHOR_NAME": "snp-harness test", "GIT_AUTHOR_EMAIL": "test@snp-harness.invalid",
           "GIT_COMMITTER_NAME": "snp-harness test", "GIT_COMMITTER_EMAIL": "test@snp-harness.invalid",
           "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    return _git(dest, "commit-tree", tree, "-p", parent, "-m", subject, env=who)
