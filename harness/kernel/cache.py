"""The build cache: artifacts stored under a key of everything that decides them.

The key is computed from the inputs (tree id after patching, config inputs by
content, compiler, make arguments, our own selftest sources, recipe version)
without running make or kconfig, so a hit costs milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

# Bump when the way artifacts are produced changes: old entries stop matching.
RECIPE_VERSION = 1

ARTIFACTS = ("bzImage", "System.map", "config", "selftests.tar.gz", "metadata.json")


@dataclass(frozen=True)
class BuildKey:
    tree_id: str  # git tree of the source after patching
    config_inputs: str  # ConfigRequest.inputs_digest()
    compiler: str  # first line of `gcc --version`
    make_args: tuple[str, ...]
    guests: str  # digest of guests/*.c
    recipe: int = RECIPE_VERSION

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]


def compiler_version(cc: str = "gcc") -> str:
    r = subprocess.run([cc, "--version"], capture_output=True, text=True)
    return r.stdout.splitlines()[0].strip() if r.returncode == 0 and r.stdout else f"{cc}: unknown"


def files_digest(paths: Sequence[Path]) -> str:
    """Content digest of files, in the given order, names included."""
    h = hashlib.sha256()
    for p in paths:
        name, data = p.name.encode(), p.read_bytes()
        h.update(b"%d:%s%d:%s" % (len(name), name, len(data), data))  # length-framed: no collisions
    return h.hexdigest()


def series_digest(base: str, patch_files: Sequence[Path]) -> str:
    """Identity of (base commit, patch contents): the memo key for the post-patch tree id."""
    return hashlib.sha256(base.encode() + b"\0" + files_digest(patch_files).encode()).hexdigest()


class BuildCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.builds = self.root / "builds"
        self.memo = self.root / "tree-ids"

    # The tree id after patching is known only once a series has been applied;
    # remembering it per (base, patches) lets the next run skip git entirely.
    def remembered_tree(self, series_key: str) -> str | None:
        try:
            return (self.memo / series_key).read_text().strip() or None
        except OSError:
            return None

    def remember_tree(self, series_key: str, tree_id: str) -> None:
        self.memo.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.memo / series_key, tree_id)

    def entry(self, key: str) -> Path:
        return self.builds / key

    def lookup(self, key: str) -> dict | None:
        """The stored metadata for key, or None (also for a half-written entry)."""
        try:
            return json.loads((self.entry(key) / "metadata.json").read_text())
        except (OSError, ValueError):
            return None

    def lock_path(self, key: str) -> Path:
        return self.builds / f"{key}.lock"

    def staging(self, key: str) -> Path:
        tmp = self.builds / f".tmp-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, key: str, staging: Path) -> Path:
        """Publish a filled staging directory as the entry for key (atomic rename)."""
        dest = self.entry(key)
        if dest.exists():  # an older, broken entry (no metadata) is replaced
            shutil.rmtree(dest)
        staging.rename(dest)
        return dest


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.rename(path)
