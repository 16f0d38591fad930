"""Our RMP debugfs patch (kernel-patches/instrumentation/): which variant fits a tree, and its compile check.

A variant is chosen from what the tree's arch/x86/virt/svm/sev.c contains, never from a version
number: every variant lists the definitions its code uses (markers), and it fits a tree when all
of them are there and `git apply --check` accepts its series. The series under test is applied
first, so the tree to ask about is the worktree with that series on it. A tree no variant fits
builds without the instrumentation; `Choice.reason` says why, for the build metadata and for the
RMP checks' skip reason.

compile_check() proves a variant compiles: a hard-link copy of the tree (never written to: the
files the series touches are copied before it is applied), x86_64_defconfig plus
configs/snp-host.config, then `make O=... W=1 arch/x86/virt/svm/sev.o` only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness.errors import ConfigError
from harness.kernel import buildlog
from harness.kernel.kconfig import ConfigRequest, KconfigError, make_config
from harness.kernel.patches import Series, load_series

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTRUMENTATION_DIR = REPO_ROOT / "kernel-patches" / "instrumentation"
SNP_HOST_FRAGMENT = REPO_ROOT / "kernel-patches" / "configs" / "snp-host.config"
SEV_C = "arch/x86/virt/svm/sev.c"
SEV_O = "arch/x86/virt/svm/sev.o"
GIT_TIMEOUT_S = 120
MAKE_TIMEOUT_S = 3600
_PATCHED_PATH = re.compile(r"^(?:---|\+\+\+) [ab]/(\S+)", re.M)


@dataclass(frozen=True)
class Variant:
    name: str                           # the directory under kernel-patches/instrumentation/
    layout: str                         # the RMP layout it is written for
    markers: tuple[tuple[str, str], ...]  # (what, regex): every one must match sev.c

    @property
    def dir(self) -> Path:
        return INSTRUMENTATION_DIR / self.name

    def series(self) -> Series:
        return load_series(self.dir)

    def missing(self, sev_c: str) -> list[str]:
        """The markers `sev_c` (the file's text) lacks."""
        return [what for what, rx in self.markers if not re.search(rx, sev_c, re.M)]


# What each variant's C code uses from sev.c. Kept in step with the patches: a definition the
# code needs and the list lacks shows up as a compile error in compile_check, not here.
CONTIGUOUS = Variant("rmp-contiguous", "contiguous RMP, raw struct rmpentry (6.12 LTS)", (
    ("struct rmpentry with u64 lo", r"^struct rmpentry \{(?s:(?:(?!^\}).)*?)\bu64 lo;"),
    ("rmptable_max_pfn", r"^static u64 rmptable_max_pfn\b"),
    ("static struct rmpentry *rmptable", r"^static struct rmpentry \*rmptable\b"),
    ("struct rmpentry *get_rmpentry(u64 pfn)", r"^static struct rmpentry \*get_rmpentry\(u64 pfn\)"),
    ("CC_ATTR_HOST_SEV_SNP", r"\bCC_ATTR_HOST_SEV_SNP\b"),
))
SEGMENTED = Variant("rmp-segmented", "segmented RMP and RMPREAD (6.14+)", (
    ("struct rmpentry_raw", r"^struct rmpentry_raw \{"),
    ("struct rmpentry (RMPREAD format) with u32 asid", r"^struct rmpentry \{(?s:(?:(?!^\}).)*?)\bu32 asid;"),
    ("struct rmpentry_raw *get_raw_rmpentry(u64 pfn)", r"^static struct rmpentry_raw \*get_raw_rmpentry\(u64 pfn\)"),
    ("int get_rmpentry(u64 pfn, struct rmpentry *)", r"^static int get_rmpentry\(u64 pfn, struct rmpentry \*\w+\)"),
    ("rmp_segment_table", r"^static struct rmp_segment_desc \*\*rmp_segment_table\b"),
    ("struct rmp_segment_desc.max_index", r"^struct rmp_segment_desc \{(?s:(?:(?!^\}).)*?)\bu64 max_index;"),
    ("rst_max_index", r"^static unsigned int rst_max_index\b"),
    ("rmp_segment_shift", r"^static unsigned int rmp_segment_shift\b"),
    ("rmp_cfg & MSR_AMD64_SEG_RMP_ENABLED", r"\brmp_cfg & MSR_AMD64_SEG_RMP_ENABLED\b"),
    ("X86_FEATURE_RMPREAD", r"\bX86_FEATURE_RMPREAD\b"),
    ("CC_ATTR_HOST_SEV_SNP", r"\bCC_ATTR_HOST_SEV_SNP\b"),
))
VARIANTS = (CONTIGUOUS, SEGMENTED)
# The patches' own debugfs directory: a tree that has it already (a series carrying it) gets no second copy.
_ALREADY = re.compile(r'debugfs_create_dir\("sev_rmp"')


@dataclass(frozen=True)
class Choice:
    variant: Variant | None             # None: no variant fits; build without the instrumentation
    reason: str                         # why this variant, or why none

    def __bool__(self) -> bool:
        return self.variant is not None


def match_source(sev_c: str) -> Choice:
    """The variant whose markers all match sev.c's text (pure; no apply check)."""
    if _ALREADY.search(sev_c):
        return Choice(None, f"{SEV_C} already creates the sev_rmp debugfs directory "
                            "(the series under test carries an RMP dump): not applied twice")
    fits = [v for v in VARIANTS if not v.missing(sev_c)]
    if len(fits) > 1:
        return Choice(None, f"{SEV_C} matches every variant ({', '.join(v.name for v in fits)}): "
                            "the markers no longer tell the layouts apart")
    if fits:
        v = fits[0]
        return Choice(v, f"{v.name} ({v.layout}): {SEV_C} defines " + ", ".join(w for w, _ in v.markers))
    why = "; ".join(f"{v.name} ({v.layout}) lacks " + ", ".join(v.missing(sev_c)) for v in VARIANTS)
    return Choice(None, f"no instrumentation variant fits {SEV_C}: {why}")


def _git_env(tree: Path) -> dict[str, str]:
    # Stop git's repository discovery at the tree itself: a tree that is not a repository but sits
    # inside one would otherwise take that repository's root as its own and skip our paths.
    return {**os.environ, "GIT_CEILING_DIRECTORIES": str(Path(tree).absolute().parent)}


def apply_check(tree: Path, series: Series) -> str | None:
    """None when `git apply --check` accepts the whole series on the tree's files; else git's complaint.

    Read-only: neither the files nor an index are touched.
    """
    argv = ["git", "apply", "--check", *(str(p.path) for p in series.patches)]
    try:
        r = subprocess.run(argv, cwd=tree, env=_git_env(tree), capture_output=True, text=True,
                           errors="replace", timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"git apply --check could not run: {e}"
    if r.returncode == 0:
        return None
    lines = [line for line in (r.stderr + r.stdout).splitlines() if line.strip()]
    return "; ".join(lines[:3]) or f"git apply --check exited {r.returncode}"


def pick_variant(worktree: Path, *, check_apply: bool = True) -> Choice:
    """The variant that fits the tree at `worktree` (with the series under test applied), or why none does."""
    try:
        text = (Path(worktree) / SEV_C).read_text(errors="replace")
    except OSError as e:
        return Choice(None, f"cannot read {SEV_C} in {worktree}: {e.strerror or e}")
    choice = match_source(text)
    if choice.variant is None or not check_apply:
        return choice
    try:
        series = choice.variant.series()
    except (ConfigError, OSError) as e:  # a broken checkout of ours: say so instead of failing the build
        return Choice(None, f"{choice.variant.name}: cannot load its series: {e}")
    problem = apply_check(Path(worktree), series)
    if problem:
        return Choice(None, f"{choice.variant.name} fits {SEV_C}'s definitions but does not apply: {problem}")
    return Choice(choice.variant, choice.reason + "; git apply --check passed")


# --- compile check ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompileResult:
    variant: str
    ok: bool
    object: Path | None         # sev.o when built
    warnings: tuple[str, ...]   # compiler warnings about sev.c (W=1)
    errors: tuple[str, ...]     # the first errors of a failed step
    log: Path
    duration_s: float


def _link_copy(tree: Path, dest: Path) -> None:
    """dest: the tree's files as hard links (a full copy across filesystems), without .git and
    without the harness's own build directories (.snp-build-*, kept inside its worktrees)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    entries = [str(p) for p in sorted(tree.iterdir()) if p.name != ".git" and not p.name.startswith(".snp-")]
    if not entries:
        return
    r = subprocess.run(["cp", "-al", *entries, str(dest)], capture_output=True, text=True, check=False)
    if r.returncode != 0:       # EXDEV: no hard links across filesystems
        shutil.rmtree(dest)
        dest.mkdir(parents=True)
        subprocess.run(["cp", "-a", *entries, str(dest)], check=True)


def _unshare(root: Path, series: Series) -> None:
    """Give each file the series touches its own inode, so patching the copy never writes the tree."""
    for patch in series.patches:
        for rel in set(_PATCHED_PATH.findall(patch.path.read_text(errors="replace"))):
            p = root / rel
            if p.is_file() and p.stat().st_nlink > 1:
                tmp = p.with_name(p.name + ".snp-unshare")
                shutil.copy2(p, tmp)
                os.replace(tmp, p)


def _step(argv: list[str], cwd: Path, log: IO[bytes], timeout: float, env: dict[str, str] | None = None) -> int:
    log.write(f"$ {' '.join(argv)}\n".encode())
    log.flush()
    try:
        return subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        log.write(f"error: timed out after {timeout:g}s\n".encode())
        return 124


def sev_c_warnings(lines: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(line.rstrip() for line in lines
                               if re.search(re.escape(SEV_C) + r":\d+:\d+: warning: ", line)))


def compile_check(tree: Path, build_dir: Path, variant: Variant, log: Path, *, jobs: int = 2,
                  fragment: Path = SNP_HOST_FRAGMENT) -> CompileResult:
    """Apply `variant` to a copy of `tree` and build sev.o only; the tree itself is never written.

    build_dir/src is the patched hard-link copy, build_dir/obj the O= directory (reused, so a
    second run only recompiles sev.o). Each step's output goes to `log`.
    """
    t0 = time.monotonic()
    tree, build_dir, log = Path(tree).absolute(), Path(build_dir).absolute(), Path(log)
    src, obj = build_dir / "src", build_dir / "obj"
    log.parent.mkdir(parents=True, exist_ok=True)

    def done(ok: bool, errors=(), obj_file: Path | None = None) -> CompileResult:
        lines = log.read_text(errors="replace").splitlines()
        return CompileResult(variant.name, ok, obj_file, sev_c_warnings(lines),
                             tuple(errors) or (() if ok else tuple(buildlog.first_errors(lines))), log,
                             time.monotonic() - t0)

    series = variant.series()
    with open(log, "wb") as f:
        f.write(f"# compile check of {variant.name} on {tree}\n".encode())
        _link_copy(tree, src)
        _unshare(src, series)
        if _step(["git", "apply", *(str(p.path) for p in series.patches)], src, f, GIT_TIMEOUT_S,
                 _git_env(src)):
            f.flush()
            return done(False, [f"{variant.name} does not apply on {tree}"])
        f.write(b"$ make_config x86_64_defconfig + " + str(fragment).encode() + b"\n")
        f.flush()
        try:
            make_config(src, obj, ConfigRequest("x86_64_defconfig", (fragment,)))
        except KconfigError as e:
            f.write(f"error: {e}\n".encode())
            f.flush()
            return done(False, [str(e).splitlines()[0]])
        rc = _step(["make", "-C", str(src), f"O={obj}", f"-j{jobs}", "W=1", SEV_O], src, f, MAKE_TIMEOUT_S)
    built = obj / SEV_O
    return done(rc == 0 and built.is_file(), obj_file=built if rc == 0 else None)
