"""Build the tree's KVM selftests plus our guests/*.c, and bundle them for a target.

Nothing is written into the kernel tree. The UAPI headers go to a directory of
our own (`headers_install` with `O=`), and the selftests are built with
`OUTPUT=`. Our programs are added to the tree's Makefile without editing it:
`--eval` runs before the Makefile is read, so it can seed TEST_GEN_PROGS (the
Makefile only appends to it, then lib.mk prefixes every entry with $(OUTPUT)/)
and add a `vpath` that finds guests/<name>.c outside the tree. The Makefile
creates $(OUTPUT)/guests itself. TMPOUT is set because Build.include's
try-run (the Makefile's -no-pie probe) otherwise creates and removes a
.tmp_<pid> directory in the tree's kvm directory, i.e. in make's cwd.

Rebuilds stay incremental: headers whose content did not change keep their
mtime (see _restore_mtimes), and the bundle lists only the programs the
Makefile asks for (see _built_programs), so nothing has to be deleted first.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shlex
import stat
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from harness.errors import BuildError, BuildTimeout, CommandTimeout, ConfigError
from harness.kernel import buildlog
from harness.kernel.selftest_api import SelftestApi, detect
from harness.transport.local import LocalTransport

log = logging.getLogger(__name__)

KVM_SELFTESTS = "tools/testing/selftests/kvm"
GUESTS = "guests"  # our programs' directory name, in the source repo and in the bundle
MANIFEST_NAME = "manifest.json"
GUEST_CC = "gcc"
# guests/guest_*.c run inside a guest, not on a KVM host. They use none of the KVM library, and
# they must not link it: its constructor opens /dev/kvm in newer trees and skips without it.
GUEST_SIDE_PREFIX = "guest_"
MANIFEST_FORMAT = 2  # 2: + selftest_api (format 1 manifests load with None)
MAKE_TIMEOUT_S = 3600
STRIP_TIMEOUT_S = 120

# Characters make cannot take in a path used in a variable, a vpath or a pattern rule.
_MAKE_UNSAFE = re.compile(r"[\s$#:%\\'\"*?\[\]]")
_GUEST_CFLAG = re.compile(r"^-D[A-Za-z_]\w*=-?\d+$")
GUEST_FLAGS_STAMP = ".snph-cflags"  # in OUTPUT/guests: the flags its objects were compiled with

# Where build output is streamed: a callable taking text, or a text or binary file object.
LogSink = Callable[[str], None] | Any


def find_program(paths: Sequence[str], name: str) -> list[str]:
    """Bundle paths that `name` may mean: itself if listed, else every program with that file name.
    Trees put the x86 programs under x86_64/ (before 6.13) or x86/: never hard-code either."""
    if name in paths:
        return [name]
    return [p for p in paths if p.rsplit("/", 1)[-1] == name]


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # relative to the bundle root, e.g. "x86_64/private_mem_conversions_test"
    sha256: str  # of the stripped file, as stored in the bundle
    size: int


@dataclass(frozen=True)
class Manifest:
    source_tree: str | None
    files: tuple[ManifestEntry, ...]  # sorted by path
    selftest_api: SelftestApi | None = None  # what guests/ were compiled against

    @property
    def guest_programs(self) -> int:
        return sum(1 for f in self.files if f.path.startswith(GUESTS + "/"))

    def locate(self, name: str) -> str | None:
        """The bundle path of the program called `name` (e.g. "x86/sev_smoke_test" for
        "sev_smoke_test"), wherever this tree's Makefile put it; None if absent or ambiguous."""
        found = find_program([f.path for f in self.files], name)
        return found[0] if len(found) == 1 else None

    @property
    def tree_programs(self) -> int:
        return len(self.files) - self.guest_programs

    def to_dict(self) -> dict:
        return {
            "format": MANIFEST_FORMAT,
            "source_tree": self.source_tree,
            "counts": {"total": len(self.files), "tree": self.tree_programs, "guests": self.guest_programs},
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
            "selftest_api": self.selftest_api.to_dict() if self.selftest_api is not None else None,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        files = tuple(ManifestEntry(str(f["path"]), str(f["sha256"]), int(f["size"])) for f in data["files"])
        api = data.get("selftest_api")
        return cls(data.get("source_tree"), files, SelftestApi.from_dict(api) if api else None)


@dataclass(frozen=True)
class SelftestsBuild:
    out_dir: Path  # make's OUTPUT: unstripped programs, objects
    hdr_dir: Path  # headers_install output
    tarball: Path
    manifest: Manifest
    log_path: Path
    commands: tuple[tuple[str, ...], ...]
    durations_s: dict[str, float]  # headers_install, selftests, bundle


def guest_programs(guests_dir: Path) -> list[str]:
    """Our program names: one per guests/*.c, sorted."""
    return sorted(p.stem for p in Path(guests_dir).glob("*.c") if p.is_file())


def selftest_commands(srctree: Path, build_dir: Path, hdr_dir: Path, out_dir: Path,
                      guests_dir: Path, jobs: int, guest_cflags: Sequence[str] = ()) -> list[list[str]]:
    """The argv lists that build headers, the tree's KVM selftests and our guests. Pure.

    guest_cflags (-DNAME=INT only) are added to the compile commands of our objects alone.
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"selftests: jobs must be a positive integer, not {jobs!r}")
    src, obj, hdr, out, guests = (_make_path(p) for p in (srctree, build_dir, hdr_dir, out_dir, guests_dir))
    if os.path.basename(guests) != GUESTS:
        raise ConfigError(f"selftests: the guest programs directory must be named {GUESTS!r}: {guests}")
    bad = [f for f in guest_cflags if not _GUEST_CFLAG.match(f)]
    if bad:
        raise ConfigError(f"selftests: guest flags must be -DNAME=INT: {bad}")
    flags = [f"--eval={out}/{GUESTS}/%.o: private CPPFLAGS += {' '.join(guest_cflags)}"] if guest_cflags else []
    return [
        ["make", "-C", src, f"O={obj}", "headers_install", f"INSTALL_HDR_PATH={hdr}"],
        ["make", "-C", f"{src}/{KVM_SELFTESTS}",
         f"--eval=TEST_GEN_PROGS := $(filter-out {GUESTS}/{GUEST_SIDE_PREFIX}%,"
         f"$(patsubst {guests}/%.c,{GUESTS}/%,$(wildcard {guests}/*.c)))",
         f"--eval=vpath {GUESTS}/%.c {os.path.dirname(guests)}", *flags,
         f"-j{jobs}", f"KHDR_INCLUDES=-isystem {hdr}/include", f"OUTPUT={out}",
         f"TMPOUT={out}/.tmp_$$$$"],
        *([GUEST_CC, "-O2", "-Wall", f"-I{src}/tools/testing/selftests", f"-isystem{hdr}/include",
           f"{guests}/{name}.c", "-o", f"{out}/{GUESTS}/{name}"]
          for name in guest_side_programs(Path(guests))),
    ]


def guest_side_programs(guests_dir: Path) -> list[str]:
    """Our programs that run inside a guest (built without the KVM library)."""
    return [name for name in guest_programs(guests_dir) if name.startswith(GUEST_SIDE_PREFIX)]


def _make_path(p: Path) -> str:
    text = os.path.abspath(os.fspath(p))
    if _MAKE_UNSAFE.search(text):
        raise ConfigError(f"selftests: make cannot handle this path (whitespace or one of $#:%\\'\"*?[]): {text!r}")
    return text


def build_selftests(srctree: Path, build_dir: Path, work_dir: Path, guests_dir: Path, *, jobs: int,
                    log: LogSink, env: Mapping[str, str] | None = None,
                    dest_tar: Path | None = None) -> SelftestsBuild:
    """headers_install + selftests make + bundle, streaming make's output to `log`.

    Layout under work_dir: headers/, kvm/ (OUTPUT), selftests-build.log and,
    unless dest_tar says otherwise, selftests.tar.gz. `env` holds variables
    added to the inherited environment. Raises BuildError on failure.
    """
    srctree, work_dir = Path(srctree), Path(work_dir)
    if not (srctree / KVM_SELFTESTS / "Makefile").is_file():
        raise ConfigError(f"selftests: {srctree} has no {KVM_SELFTESTS}/Makefile")
    hdr_dir, out_dir = work_dir / "headers", work_dir / "kvm"
    tarball = Path(dest_tar) if dest_tar is not None else work_dir / "selftests.tar.gz"
    api = detect(srctree)
    commands = selftest_commands(srctree, build_dir, hdr_dir, out_dir, guests_dir, jobs, api.cflags())
    work_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(exist_ok=True)
    _forget_objects_of_other_flags(out_dir / GUESTS, api.cflags())
    log_path = work_dir / "selftests-build.log"
    durations: dict[str, float] = {}
    with open(log_path, "wb", buffering=0) as logf:
        tee = _Tee(logf, log)
        try:
            before = _snapshot(hdr_dir)
            durations["headers_install"] = _run_step("headers_install", commands[0], env, tee, logf, log_path)
            _restore_mtimes(before)
            for problem in api.problems:
                tee.note(f"# selftest library: {problem}\n")
            durations["selftests"] = _run_step("selftests", commands[1], env, tee, logf, log_path)
            (out_dir / GUESTS).mkdir(parents=True, exist_ok=True)
            for argv in commands[2:]:
                durations["guest-side"] = durations.get("guest-side", 0) + _run_step(
                    "guest-side programs", argv, env, tee, logf, log_path)
        finally:
            tee.flush()
    t = time.monotonic()
    programs = _built_programs(commands[1], out_dir, env, log_path) + [Path(c[-1]) for c in commands[2:]]
    manifest = bundle_selftests(out_dir, tarball, source_tree=srctree, programs=programs, selftest_api=api)
    durations["bundle"] = time.monotonic() - t
    logging.getLogger(__name__).info("selftests: bundled %d programs (%d ours) into %s in %.1fs",
                                     len(manifest.files), manifest.guest_programs, tarball, durations["bundle"])
    return SelftestsBuild(out_dir, hdr_dir, tarball, manifest, log_path,
                          tuple(tuple(c) for c in commands), durations)


def _forget_objects_of_other_flags(guests_out: Path, flags: Sequence[str]) -> None:
    """make does not track flags: when ours changed, delete our objects so that they are rebuilt."""
    stamp, text = guests_out / GUEST_FLAGS_STAMP, " ".join(flags) + "\n"
    if stamp.is_file() and stamp.read_text() == text:
        return
    for obj in guests_out.glob("*.o"):
        obj.unlink()
    guests_out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(text)


def _snapshot(root: Path) -> dict[Path, tuple[bytes, int]]:
    return {p: (hashlib.sha256(p.read_bytes()).digest(), p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def _restore_mtimes(before: dict[Path, tuple[bytes, int]]) -> None:
    """headers_install's rsync rewrites every header; give unchanged ones back their mtime.

    Otherwise every selftest object (they depend on the headers through -MD)
    is recompiled on each build: ~12 s instead of well under a second.
    """
    for path, (digest, mtime_ns) in before.items():
        try:
            if hashlib.sha256(path.read_bytes()).digest() == digest:
                os.utime(path, ns=(mtime_ns, mtime_ns))
        except FileNotFoundError:
            continue


def _built_programs(selftests_argv: list[str], out_dir: Path, env, log_path: Path) -> list[Path]:
    """The programs this build's Makefile asked for, so that stale ones in out_dir stay out of the bundle.

    Asks make itself (same variables, one extra rule), because deleting old
    programs up front would force every program to be relinked (~8 s).
    """
    argv = [a for a in selftests_argv if not a.startswith("-j")]
    argv[3:3] = ["-s", "--no-print-directory",
                 "--eval=snp-harness-programs: ; @echo $(TEST_GEN_PROGS) $(TEST_GEN_PROGS_EXTENDED)"]
    argv.append("snp-harness-programs")
    try:
        r = LocalTransport().run(argv, timeout=MAKE_TIMEOUT_S, check=False, env=_make_env(env))
    except CommandTimeout as e:
        raise BuildTimeout(f"selftests: listing programs timed out: {shlex.join(argv)}", log_path) from e
    prefix = f"{os.path.abspath(out_dir)}/"
    paths = [Path(line) for line in r.stdout.split() if line.startswith(prefix)]
    if r.exit_status != 0 or not paths:
        raise BuildError(f"selftests: listing programs failed (exit {r.exit_status}): {shlex.join(argv)}\n"
                         f"{r.tail()}", log_path)
    return paths


def _make_env(env: Mapping[str, str] | None) -> dict[str, str]:
    return {**(env or {}), "LC_ALL": "C"}  # English messages, for buildlog.first_errors


def _run_step(step: str, argv: list[str], env, tee: _Tee, logf, log_path: Path) -> float:
    tee.note(f"$ {shlex.join(argv)}\n")
    start_offset = logf.tell()
    t = time.monotonic()
    try:
        result = LocalTransport().run(argv, timeout=MAKE_TIMEOUT_S, check=False, env=_make_env(env), sink=tee.feed)
    except CommandTimeout as e:
        raise BuildTimeout(f"selftests: {step} timed out after {MAKE_TIMEOUT_S}s", log_path) from e
    elapsed = time.monotonic() - t
    tee.flush()
    if result.exit_status != 0:
        with open(log_path, "rb") as f:
            f.seek(start_offset)
            lines = f.read().decode("utf-8", errors="replace").splitlines()
        errors = buildlog.first_errors(lines) or lines[-5:]
        raise BuildError(f"selftests: {step} failed (exit {result.exit_status}): {shlex.join(argv)}",
                         log_path, errors)
    log.info("selftests: %s done in %.1fs", step, elapsed)
    return elapsed


class _Tee:
    """Writes make's output to our log file and, as it arrives, to the caller's log."""

    def __init__(self, logf, target: LogSink) -> None:
        self._logf, self._target = logf, target
        self._write = getattr(target, "write", target)
        if target is not None and not callable(self._write):
            raise TypeError(f"log must be a callable or a file object, not {type(target).__name__}")
        self._text = isinstance(target, io.TextIOBase) or not hasattr(target, "write")
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in ("stdout", "stderr")}

    def feed(self, stream: str, chunk: bytes) -> None:
        self._logf.write(chunk)
        if self._target is None:
            return
        if not self._text:
            self._write(chunk)
        elif text := self._decoders[stream].decode(chunk):
            self._write(text)

    def note(self, text: str) -> None:
        self.feed("stdout", text.encode())

    def flush(self) -> None:
        if callable(flush := getattr(self._target, "flush", None)):
            flush()


def _executables(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def bundle_selftests(out_dir: Path, dest_tar: Path, *, source_tree: Path | None = None,
                     programs: Sequence[Path] | None = None,
                     selftest_api: SelftestApi | None = None) -> Manifest:
    """A deterministic .tar.gz of the programs under out_dir, debug info stripped, with manifest.json.

    `programs` (paths under out_dir) defaults to every executable file there.
    The originals are never modified: `strip -o` writes the stripped copy
    into a staging directory. Non-ELF executables are bundled as they are.
    """
    out_dir, dest_tar = Path(out_dir).absolute(), Path(dest_tar)
    if programs is None:
        programs = _executables(out_dir)
    else:
        programs = sorted((Path(p).absolute() for p in programs), key=lambda p: p.relative_to(out_dir).as_posix())
        missing = [str(p) for p in programs if not p.is_file()]
        if missing:
            raise BuildError(f"selftests: make reported programs that do not exist: {', '.join(missing[:5])}")
    if not programs:
        raise BuildError(f"selftests: no programs to bundle in {out_dir}")
    dest_tar.parent.mkdir(parents=True, exist_ok=True)
    entries: list[tuple[ManifestEntry, Path]] = []
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=dest_tar.parent) as staging:
        for src in programs:
            rel = src.relative_to(out_dir).as_posix()
            copy = Path(staging, rel)
            copy.parent.mkdir(parents=True, exist_ok=True)
            _stripped_copy(src, copy)
            data = copy.read_bytes()
            entries.append((ManifestEntry(rel, hashlib.sha256(data).hexdigest(), len(data)), copy))
        manifest = Manifest(str(source_tree) if source_tree is not None else None,
                            tuple(e for e, _ in entries), selftest_api)
        tmp = dest_tar.with_name(dest_tar.name + ".tmp")
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            _add_bytes(tar, MANIFEST_NAME, manifest.to_json().encode(), 0o644)
            for entry, copy in entries:
                _add_bytes(tar, entry.path, copy.read_bytes(), 0o755)
        os.replace(tmp, dest_tar)
    return manifest


def _stripped_copy(src: Path, dest: Path) -> None:
    with open(src, "rb") as f:
        is_elf = f.read(4) == b"\x7fELF"
    if not is_elf:
        dest.write_bytes(src.read_bytes())
        return
    argv = ["strip", "--strip-debug", "-o", str(dest), str(src)]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=STRIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BuildError(f"selftests: {shlex.join(argv)}: {e}") from e
    if r.returncode != 0:
        raise BuildError(f"selftests: {shlex.join(argv)} exited {r.returncode}: {r.stderr.strip()}")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))
