"""Patch series: quilt-style series directories, mbox files, b4; applied with `git am -3`.

A series that does not apply stops the run with a PatchError naming the patch
(number and subject), the file and the failing hunk; the tree is put back.
"""

from __future__ import annotations

import email.errors
import email.header
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from harness.errors import ConfigError, InfraError, PatchError

log = logging.getLogger(__name__)

# Patches are committed with a fixed committer, so a series always yields the same commits.
GIT_IDENTITY = {
    "GIT_COMMITTER_NAME": "snp-harness",
    "GIT_COMMITTER_EMAIL": "snp-harness@localhost",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
    "GIT_AUTHOR_NAME": "snp-harness",
    "GIT_AUTHOR_EMAIL": "snp-harness@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
}
_SUBJECT_PREFIX = re.compile(r"^\s*(\[[^\]]*\]\s*)+")
_PATCH_FAILED = re.compile(r"^error: patch failed: (.+):(\d+)$", re.M)
_CONFLICT = re.compile(r"^CONFLICT \([^)]*\): (?:Merge conflict in (.+)|(\S+) deleted in .*)$", re.M)
_HUNK_COUNTS = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
# The separator git mailsplit recognises: "From <sha> Mon Sep 17 00:00:00 2001".
_MBOX_FROM = re.compile(rb"^From \S+ +\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$", re.M)


@dataclass(frozen=True)
class Patch:
    index: int  # 1-based position in the series
    path: Path
    subject: str


@dataclass(frozen=True)
class Series:
    name: str
    patches: tuple[Patch, ...]

    def __len__(self) -> int:
        return len(self.patches)

    def then(self, other: Series | None) -> Series:
        """This series, then `other` on top of it (renumbered), as one."""
        if other is None:
            return self
        return Series(f"{self.name}+{other.name}", (*self.patches, *(
            dataclasses.replace(p, index=len(self) + p.index) for p in other.patches)))


@dataclass(frozen=True)
class AppliedPatch:
    index: int
    subject: str
    patch_id: str  # `git patch-id --stable`
    commit: str


# -- pure parsing ---------------------------------------------------------------

def parse_series_file(lines: Iterable[str]) -> tuple[list[str], list[str]]:
    """Quilt `series` lines -> (patch file names, problems). Comments and -pN options allowed."""
    names, problems = [], []
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, *opts = line.split()
        if any(o != "-p1" for o in opts):
            problems.append(f"line {number}: only -p1 patches are supported: {raw.strip()!r}")
        names.append(name)
    return names, problems


def patch_subject(text: str, fallback: str) -> str:
    """The Subject: header without [PATCH n/m] prefixes, or `fallback` for a bare diff."""
    header = text.split("\n\n", 1)[0]
    m = re.search(r"^Subject:[ \t]*(.*(?:\n[ \t].*)*)", header, re.M)
    if not m:
        return fallback
    raw = " ".join(part.strip() for part in m.group(1).splitlines())
    try:
        decoded = str(email.header.make_header(email.header.decode_header(raw)))
    except (LookupError, UnicodeError, email.errors.HeaderParseError):
        decoded = raw  # an unknown charset or bad bytes: keep the header as written
    return _SUBJECT_PREFIX.sub("", decoded).strip() or fallback


def has_mail_headers(text: str) -> bool:
    head = text.split("\n\n", 1)[0]
    return bool(re.search(r"^From: ", head, re.M) and re.search(r"^Subject: ", head, re.M))


def split_mbox(data: bytes) -> list[bytes]:
    """The messages of an mbox (as `git format-patch --stdout` or b4 write it)."""
    starts = [m.start() for m in _MBOX_FROM.finditer(data)]
    if not starts:
        return [data] if data.strip() else []
    bounds = starts + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def failed_hunks(apply_output: str) -> list[tuple[str, int]]:
    """(file, line) of each hunk `git apply -v` / `git am` reported as failed."""
    return [(f, int(n)) for f, n in _PATCH_FAILED.findall(apply_output)]


def conflicted_files(am_output: str) -> list[str]:
    return [merged or deleted for merged, deleted in _CONFLICT.findall(am_output)]


def find_hunk(patch_text: str, path: str, line: int) -> str:
    """The text of the hunk of `path` that starts at old line `line` (empty if absent)."""
    current, out, old_left, new_left = None, [], 0, 0
    for row in patch_text.splitlines():
        if out:
            if old_left <= 0 and new_left <= 0:
                break
            out.append(row)
            kind = row[:1]
            old_left -= kind in (" ", "-", "")
            new_left -= kind in (" ", "+", "")
            continue
        if row.startswith("+++ "):
            name = row[4:].split("\t", 1)[0]  # diff -u appends a timestamp after a tab
            current = name[2:] if name.startswith("b/") else name
        elif (m := _HUNK_COUNTS.match(row)) and current == path and int(m.group(1)) == line:
            out.append(row)
            old_left, new_left = int(m.group(2) or 1), int(m.group(4) or 1)
    return "\n".join(out)


# -- loading --------------------------------------------------------------------

def load_series(directory: Path) -> Series:
    """A quilt-style series directory: a `series` file naming .patch files beside it."""
    directory = Path(directory)
    series_file = directory / "series"
    if not series_file.is_file():
        raise ConfigError(f"{directory}: no `series` file (a series directory lists its patches in `series`)")
    names, problems = parse_series_file(series_file.read_text().splitlines())
    if problems:
        raise ConfigError(f"{series_file}: " + "; ".join(problems))
    if not names:
        raise ConfigError(f"{series_file}: lists no patches")
    patches = []
    for index, name in enumerate(names, 1):
        path = directory / name
        if not path.is_file():
            raise ConfigError(f"{series_file}: line for {name!r}: no such file {path}")
        patches.append(Patch(index, path, patch_subject(path.read_text(errors="replace"), name)))
    return Series(directory.name, tuple(patches))


def load_mbox(path: Path, workdir: Path) -> Series:
    """An mbox of patches, split into one file per message under workdir."""
    path = Path(path)
    try:
        messages = split_mbox(path.read_bytes())
    except OSError as e:
        raise ConfigError(f"cannot read mbox {path}: {e}") from e
    if not messages:
        raise ConfigError(f"{path}: contains no patches")
    workdir.mkdir(parents=True, exist_ok=True)
    patches = []
    for index, message in enumerate(messages, 1):
        out = workdir / f"{index:04d}.patch"
        out.write_bytes(message)
        patches.append(Patch(index, out, patch_subject(message.decode(errors="replace"), out.name)))
    return Series(path.stem, tuple(patches))


def fetch_b4(msgid: str, workdir: Path, timeout: float = 300) -> Series:
    """`b4 am` a series by Message-ID (needs the network)."""
    # The venv's bin/ first: b4 is installed there, and it need not be on PATH.
    b4 = shutil.which("b4", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if b4 is None:
        raise ConfigError("--series-msgid needs b4: `pip install b4` (or use --series/--mbox with local files)")
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run([b4, "am", "-o", str(workdir), "-n", "series", msgid],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise InfraError(f"b4 am {msgid}: no answer after {timeout:g}s; is the network reachable?") from e
    mbox = workdir / "series.mbx"
    if r.returncode != 0 or not mbox.is_file():
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
        raise InfraError(f"b4 could not fetch {msgid} (offline, or an unknown Message-ID?):\n{tail}")
    return load_mbox(mbox, workdir / "split")


# -- applying -------------------------------------------------------------------

def _git(worktree: Path, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(["git", "-C", str(worktree), *args], input=stdin, capture_output=True, text=True,
                       env={**os.environ, **GIT_IDENTITY})
    if check and r.returncode != 0:
        raise InfraError(f"git {' '.join(args)} failed in {worktree}: {(r.stderr or r.stdout).strip()}")
    return r


def reset_worktree(worktree: Path, base: str) -> None:
    """Put the worktree at `base` exactly; build directories (.snp-build-*) survive."""
    rebase = _git(worktree, "rev-parse", "--path-format=absolute", "--git-path", "rebase-apply").stdout.strip()
    if Path(rebase).exists():  # a git am left half-way by a killed run
        _git(worktree, "am", "--abort", check=False)
    _git(worktree, "checkout", "-q", "-f", "--detach", base)
    _git(worktree, "clean", "-q", "-f", "-d", "-x", "-e", "/.snp-build-*")


def patch_id(diff: bytes, what: str) -> str:
    r = subprocess.run(["git", "patch-id", "--stable"], input=diff, capture_output=True)
    fields = r.stdout.split()
    if r.returncode != 0 or not fields:
        raise ConfigError(f"{what}: git patch-id found no diff in it (is it a patch?)")
    return fields[0].decode()


def commit_patch_id(worktree: Path, commit: str) -> str:
    """The patch-id of the change as committed: the same for a mail patch and a re-made bare diff."""
    diff = subprocess.run(["git", "-C", str(worktree), "show", "--format=", commit], capture_output=True).stdout
    return patch_id(diff, commit)


def apply_series(worktree: Path, base: str, series: Series, *, on_top: bool = False) -> list[AppliedPatch]:
    """Reset to base (unless `on_top`: onto HEAD as it is), then apply every patch as its own commit.
    On failure the tree is reset to base and a PatchError names the patch, file and hunk."""
    if not on_top:
        reset_worktree(worktree, base)
    applied = []
    for patch in series.patches:
        text = patch.path.read_text(errors="replace")
        if has_mail_headers(text) and _apply_mail_fast(worktree, patch.path):
            r = subprocess.CompletedProcess([], 0, "", "")
        elif has_mail_headers(text):
            r = _git(worktree, "am", "-3", "--keep-non-patch", str(patch.path), check=False)
        else:
            r = _git(worktree, "apply", "--3way", "--index", str(patch.path), check=False)
            if r.returncode == 0:
                _commit_index(worktree, patch.subject)
        if r.returncode != 0:
            raise _patch_error(worktree, base, series, patch, text, r.stdout + r.stderr)
        head = _git(worktree, "rev-parse", "HEAD").stdout.strip()
        applied.append(AppliedPatch(patch.index, patch.subject, commit_patch_id(worktree, head), head))
        log.info("applied %d/%d %s", patch.index, len(series), patch.subject)
    return applied


def _commit_index(worktree: Path, subject: str, author: dict[str, str] | None = None) -> None:
    """Commit the index on the detached HEAD (plumbing: no hooks, no index refresh)."""
    tree = _git(worktree, "write-tree").stdout.strip()
    r = subprocess.run(["git", "-C", str(worktree), "commit-tree", tree, "-p", "HEAD", "-F", "-"], input=subject,
                       capture_output=True, text=True, env={**os.environ, **GIT_IDENTITY, **(author or {})})
    if r.returncode != 0:
        raise InfraError(f"git commit-tree failed in {worktree}: {r.stderr.strip()}")
    _git(worktree, "update-ref", "--no-deref", "HEAD", r.stdout.strip())


def _apply_mail_fast(worktree: Path, path: Path) -> bool:
    """A mail patch that applies cleanly, committed as `git am --keep-non-patch` would (author,
    date, message), without am's full index refresh (~0.3 s of an incremental build's ~1 s).
    False: nothing was changed; `git am -3` then does the 3-way merge and names what failed."""
    with tempfile.TemporaryDirectory(prefix="snp-mailinfo-") as tmp:
        msg, diff = Path(tmp) / "msg", Path(tmp) / "patch"
        with open(path, "rb") as f:
            info = subprocess.run(["git", "mailinfo", "-b", str(msg), str(diff)], stdin=f, capture_output=True,
                                  text=True, errors="replace")
        if info.returncode != 0 or not diff.stat().st_size:
            return False
        fields = dict(line.split(": ", 1) for line in info.stdout.splitlines() if ": " in line)
        if _git(worktree, "apply", "--index", str(diff), check=False).returncode != 0:
            return False
        body = msg.read_text(errors="replace").strip()
        message = fields.get("Subject", path.stem) + (f"\n\n{body}" if body else "") + "\n"
    author = {k: v for k, v in (("GIT_AUTHOR_NAME", fields.get("Author")), ("GIT_AUTHOR_EMAIL", fields.get("Email")),
                                ("GIT_AUTHOR_DATE", fields.get("Date"))) if v}
    _commit_index(worktree, message, author)
    return True


def _patch_error(worktree: Path, base: str, series: Series, patch: Patch, text: str, output: str) -> PatchError:
    _git(worktree, "am", "--abort", check=False)
    _git(worktree, "reset", "-q", "--hard", check=False)
    # Without -3, git names the first hunk that fails to apply on the tree as it now is.
    with tempfile.NamedTemporaryFile("w", suffix=".patch") as f:
        f.write(text)
        f.flush()
        check = _git(worktree, "apply", "--check", "-v", f.name, check=False)
    hunks = failed_hunks(check.stderr + check.stdout) or failed_hunks(output)
    where = "; ".join(f"{path}: hunk at line {line}" for path, line in hunks)
    if not where:
        where = ", ".join(conflicted_files(output)) or "(git named no file)"
    body = f"patch {patch.index}/{len(series)} \"{patch.subject}\" ({patch.path.name}) does not apply: {where}"
    if hunks:
        hunk = find_hunk(text, *hunks[0])
        if hunk:
            body += "\nfailing hunk:\n" + hunk
    reset_worktree(worktree, base)
    return PatchError(body + f"\nthe tree was reset to {base[:12]}")
