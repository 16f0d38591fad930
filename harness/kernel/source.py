"""Kernel sources: a git checkout + base ref, or a tarball / unpacked tree imported into git once.

Everything downstream is git: patches apply with `git am`, each source gets one
harness-owned worktree under the cache (so rebuilds stay incremental), and
bisect works on the same history.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness.errors import ConfigError, InfraError
from harness.kernel.patches import GIT_IDENTITY

log = logging.getLogger(__name__)

# The default tree: the newest mainline Debian carries, which is what KVM developers patch.
DEFAULT_TREE = "debian:7.3"
IMPORT_TAG = "snp-harness-import"


@dataclass(frozen=True)
class KernelSource:
    repo: Path  # a git repository (its git dir or work tree)
    base: str  # full commit id
    description: str
    package: str | None = None  # a Debian source package and version ("linux-source-7.3 7.3.4-1~bpo13+1")

    @property
    def repo_id(self) -> str:
        """Short stable name for this repository, for cache paths."""
        common = _git(self.repo, "rev-parse", "--path-format=absolute", "--git-common-dir").strip()
        return hashlib.sha256(common.encode()).hexdigest()[:12]

    def base_tree(self) -> str:
        return _git(self.repo, "rev-parse", f"{self.base}^{{tree}}").strip()


def _git(repo: Path, *args: str, env: dict | None = None, timeout: float = 3600) -> str:
    try:
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as e:
        raise InfraError(f"git {' '.join(args)} in {repo}: no result after {timeout:g}s") from e
    if r.returncode != 0:
        raise InfraError(f"git {' '.join(args)} failed in {repo}: {(r.stderr or r.stdout).strip()}")
    return r.stdout


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock; a second process waits for the first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def open_git_tree(path: Path, ref: str = "HEAD") -> KernelSource:
    path = Path(path).expanduser().resolve()
    r = subprocess.run(["git", "-C", str(path), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ConfigError(f"{path}: {ref!r} is not a commit in this git repository")
    return KernelSource(path, r.stdout.strip(), f"git:{path}@{ref}")


def import_tree(origin: Path, cache_dir: Path) -> KernelSource:
    """Import a tarball or an unpacked tree into a one-commit git repository, once."""
    origin = Path(origin).expanduser().resolve()
    if not origin.exists():
        raise ConfigError(f"kernel tree {origin} does not exist")
    dest = import_dest(origin, cache_dir)
    with file_lock(cache_dir / "src" / f"{dest.name}.lock"):
        if not imported(dest):
            _import(origin, dest)
    base = _git(dest, "rev-parse", f"{IMPORT_TAG}^{{commit}}").strip()
    return KernelSource(dest, base, f"{origin.name} (imported)")


def import_dest(origin: Path, cache_dir: Path) -> Path:
    """Where import_tree keeps the git repository made from `origin`."""
    name = origin.name.removesuffix(".xz").removesuffix(".gz").removesuffix(".tar")
    return cache_dir / "src" / f"{name}-{_origin_digest(origin)[:12]}"


def import_commands(origin: Path, dest: Path) -> list[list[str]]:
    """What an import runs, for --dry-run (the real one works in a temporary directory)."""
    tarball = origin.is_file() or (not origin.exists() and ".tar" in origin.name)  # one to be fetched
    unpack = (["tar", "-xf", str(origin), "-C", str(dest), "--strip-components=1"] if tarball
              else ["cp", "-a", f"{origin}/.", str(dest)])
    git = ["git", "-C", str(dest)]
    return [unpack, [*git, "init", "-q"], [*git, "add", "-A", "-f"],
            [*git, "commit", "-q", "--no-verify", "-m", f"Import {origin.name}"], [*git, "tag", IMPORT_TAG]]


def _origin_digest(origin: Path) -> str:
    # A tarball is identified by its size and mtime (hashing 150 MB on every run
    # would cost seconds); an unpacked tree by its path and top-level Makefile.
    st = origin.stat() if origin.is_file() else (origin / "Makefile").stat()
    return hashlib.sha256(f"{origin}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()


def imported(dest: Path) -> bool:
    if not (dest / ".git").exists():
        return False
    r = subprocess.run(["git", "-C", str(dest), "rev-parse", "--verify", "--quiet", IMPORT_TAG],
                       capture_output=True)
    return r.returncode == 0


def _import(origin: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("importing %s into %s (once per machine)", origin, dest)
    try:
        if origin.is_file():
            subprocess.run(["tar", "-xf", str(origin), "-C", str(tmp), "--strip-components=1"], check=True)
        else:
            subprocess.run(["cp", "-a", f"{origin}/.", str(tmp)], check=True)
        _git(tmp, "init", "-q")
        _git(tmp, "config", "gc.auto", "0")
        # A reset before every build walks ~90k files: the untracked cache saves `git clean` a rescan.
        _git(tmp, "config", "core.untrackedCache", "true")
        _git(tmp, "add", "-A", "-f")
        _git(tmp, "commit", "-q", "--no-verify", "-m", f"Import {origin.name}", env=GIT_IDENTITY)
        _git(tmp, "tag", IMPORT_TAG)
    except subprocess.CalledProcessError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InfraError(f"unpacking {origin} failed: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def resolve_source(tree: Path | str | None, base: str | None, cache_dir: Path) -> KernelSource:
    """--tree/--base → a KernelSource: a git checkout, a tarball, an unpacked tree, or a Debian
    source package by name (`debian:7.3`). No tree: DEFAULT_TREE."""
    from harness.kernel import debian

    tree = DEFAULT_TREE if tree is None else tree
    if debian.is_debian_spec(tree):
        if base:
            raise ConfigError(f"--base {base} needs a git checkout, and {tree} is a Debian source package")
        pkg = debian.fetch(str(tree), cache_dir)
        src = import_tree(pkg.tarball, cache_dir)
        return KernelSource(src.repo, src.base, f"{tree} ({pkg.describe()})", pkg.describe())
    tree = Path(tree).expanduser()
    if (tree / ".git").exists() or tree.suffix == ".git":
        return open_git_tree(tree, base or "HEAD")
    if base:
        raise ConfigError(f"--base {base} needs a git checkout, and {tree} is not one")
    return import_tree(tree, cache_dir)


def tree_arg(value: str | Path | None) -> Path | str | None:
    """A --tree value as given: `debian:...` stays a name, anything else is a path."""
    if value is None or (isinstance(value, str) and value.startswith("debian:")):
        return value
    return Path(value).expanduser()


def worktree_for(source: KernelSource, cache_dir: Path) -> Path:
    """The harness's own worktree of this source's repository (created once, then reused)."""
    path = cache_dir / "work" / source.repo_id
    if (cache_dir / "src") in Path(source.repo).parents:
        # our own import (older ones predate this in _import): `git clean` before each build
        # rescans ~90k files without git's untracked cache
        _git(source.repo, "config", "core.untrackedCache", "true")
    if not (path / ".git").exists():
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("creating worktree %s", path)
        _git(source.repo, "worktree", "prune")
        _git(source.repo, "worktree", "add", "--detach", "-f", str(path), source.base)
    return path
