"""Source + series + config -> a cached kernel build with its selftests bundle.

A cache hit is answered from the key alone (no git am, no kconfig, no make).
A miss applies the series in the source's own worktree, configures and builds
out of tree with ccache, builds the selftests, and publishes the artifacts
atomically under the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.errors import BuildError, BuildTimeout
from harness.kernel import buildlog
from harness.kernel.cache import BuildCache, BuildKey, compiler_version, files_digest, series_digest
from harness.kernel.kconfig import ConfigRequest, make_config
from harness.kernel.patches import Series, apply_series, reset_worktree
from harness.kernel.source import KernelSource, _git, file_lock, resolve_source, worktree_for

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FRAGMENT = REPO_ROOT / "kernel-patches" / "configs" / "local-target.config"
GUESTS_DIR = REPO_ROOT / "guests"
# Our own debugfs RMP dump (kernel-patches/instrumentation/README.md), applied after the series:
# the variant that fits the tree (harness.kernel.instrumentation), or none.
INSTRUMENTATION_DIR = REPO_ROOT / "kernel-patches" / "instrumentation"
BUILD_TIMEOUT_S = 4 * 3600  # a hung build is ended, not waited on forever

# progress(phase, done, total): total is None when there is no earlier build to estimate from.
Progress = Callable[[str, int, "int | None"], None]


def default_config() -> ConfigRequest:
    return ConfigRequest(base="tinyconfig", fragments=(DEFAULT_FRAGMENT,))


@dataclass(frozen=True)
class BuildRequest:
    cache_dir: Path
    tree: Path | None = None
    base: str | None = None
    series: Series | None = None
    config: ConfigRequest = field(default_factory=default_config)
    jobs: int = os.cpu_count() or 1
    make_args: tuple[str, ...] = ()
    guests_dir: Path = GUESTS_DIR
    instrumentation: bool = True  # apply the fitting INSTRUMENTATION_DIR variant after `series`

    def tree_inputs(self) -> list[Path]:
        """Every file that decides the patched tree: the series, and each instrumentation variant
        (which one applies is decided by the tree, so all of them count)."""
        files = [p.path for p in self.series.patches] if self.series else []
        if self.instrumentation:
            files += sorted(p for p in INSTRUMENTATION_DIR.glob("*/*") if p.is_file())
        return files


@dataclass(frozen=True)
class Build:
    key: str
    dir: Path
    hit: bool
    metadata: dict
    phases: dict[str, float]

    @property
    def bzimage(self) -> Path:
        return self.dir / "bzImage"

    @property
    def selftests(self) -> Path:
        return self.dir / "selftests.tar.gz"

    @property
    def guest_module(self) -> Path | None:
        """guests/kmod's gmem_conv_workload.ko, when the kernel has module support."""
        p = self.dir / "guest-kmod" / "gmem_conv_workload.ko"
        return p if p.exists() else None

    @property
    def modules(self) -> Path | None:
        p = self.dir / "modules.tar.gz"
        return p if p.exists() else None


def cached_build(cache_dir: Path, key: str) -> Build:
    """A build from the cache by its key (or a unique prefix of it)."""
    from harness.errors import ConfigError

    cache = BuildCache(cache_dir)
    found = sorted(p.name for p in cache.builds.glob(f"{key}*") if p.is_dir() and not p.name.startswith("."))
    if len(found) != 1:
        raise ConfigError(f"build {key!r}: {'no such build' if not found else 'ambiguous: ' + ', '.join(found)} "
                          f"in {cache.builds} (`snp-harness build` prints the key)")
    meta = cache.lookup(found[0])
    if meta is None:
        raise ConfigError(f"build {found[0]} in {cache.builds} is incomplete; build it again")
    return Build(found[0], cache.entry(found[0]), True, meta, {})


def _guest_sources(guests_dir: Path) -> list[Path]:
    return (sorted(guests_dir.glob("*.c")) + sorted(guests_dir.glob("*.h"))
            + sorted(p for p in (guests_dir / "kmod").glob("*") if p.is_file()))


def build_key(request: BuildRequest, tree_id: str) -> BuildKey:
    return BuildKey(tree_id=tree_id, config_inputs=request.config.inputs_digest(),
                    compiler=compiler_version(), make_args=tuple(request.make_args),
                    guests=files_digest(_guest_sources(request.guests_dir)))


def build(request: BuildRequest, log_path: Path, progress: Progress | None = None) -> Build:
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    cache = BuildCache(request.cache_dir)
    source = resolve_source(request.tree, request.base, request.cache_dir)
    phases["source"] = time.monotonic() - t0

    tree_id = _known_tree_id(cache, source, request)
    if tree_id:
        key = build_key(request, tree_id).digest()
        meta = cache.lookup(key)
        if meta is not None:
            phases["lookup"] = time.monotonic() - t0 - phases["source"]
            return Build(key, cache.entry(key), True, meta, phases)

    with file_lock(request.cache_dir / "work" / f"{source.repo_id}.lock"):
        return _build_locked(request, cache, source, log_path, progress, phases)


def _known_tree_id(cache: BuildCache, source: KernelSource, request: BuildRequest) -> str | None:
    inputs = request.tree_inputs()
    if not inputs:
        return source.base_tree()
    return cache.remembered_tree(series_digest(source.base, inputs))


def _instrument(worktree: Path, source: KernelSource, request: BuildRequest,
                applied: list) -> tuple[list, str | None, str]:
    """Apply the instrumentation variant that fits the patched tree: (applied, variant, note).
    Our own debugging patch never fails a build: a tree no variant fits builds without it."""
    from harness.errors import PatchError
    from harness.kernel.instrumentation import pick_variant

    if not request.instrumentation:
        return applied, None, "not requested (--no-instrumentation, or [kernel] instrumentation = false)"
    choice = pick_variant(worktree)
    if choice.variant is None:
        log.warning("building without the RMP dump instrumentation: %s", choice.reason)
        return applied, None, choice.reason
    try:
        more = apply_series(worktree, source.base, choice.variant.series(), on_top=True)
    except PatchError as e:  # apply --check passed, so this is rare; put the series back and go on
        note = f"{choice.variant.name} did not apply: {str(e).splitlines()[0]}"
        log.warning("building without the RMP dump instrumentation: %s", note)
        if request.series is not None:
            apply_series(worktree, source.base, request.series)
        return applied, None, note
    n = len(applied)
    return applied + [dataclasses.replace(a, index=n + a.index) for a in more], choice.variant.name, choice.reason


def _build_locked(request, cache, source, log_path, progress, phases) -> Build:
    t = time.monotonic()
    worktree = worktree_for(source, request.cache_dir)
    applied = []
    if request.series is not None:
        applied = apply_series(worktree, source.base, request.series)
    else:
        reset_worktree(worktree, source.base)
    applied, variant, note = _instrument(worktree, source, request, applied)
    tree_id = _git(worktree, "rev-parse", "HEAD^{tree}").strip()
    if request.tree_inputs():
        cache.remember_tree(series_digest(source.base, request.tree_inputs()), tree_id)
    key_parts = build_key(request, tree_id)
    key = key_parts.digest()
    phases["patch"] = time.monotonic() - t

    with file_lock(cache.lock_path(key)):
        meta = cache.lookup(key)
        if meta is not None:  # built by another run while we waited
            return Build(key, cache.entry(key), True, meta, phases)
        obj = worktree / f".snp-build-{request.config.inputs_digest()[:12]}"
        env = _make_env(request.cache_dir, worktree)
        make_args = [f"-j{request.jobs}", "CC=ccache gcc", *request.make_args]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab", buffering=0) as logf:
            t = time.monotonic()
            final = _configure(worktree, obj, request.config, make_args)
            phases["config"] = time.monotonic() - t

            targets = ["bzImage"] + (["modules"] if final.get("MODULES") == "y" else [])
            t = time.monotonic()
            _run_make(worktree, obj, [*make_args, *targets], env, logf, progress, "kernel", log_path)
            phases["kernel"] = time.monotonic() - t

            staging = cache.staging(key)
            try:
                t = time.monotonic()
                manifest = _selftests(worktree, obj, request, key_parts, logf, staging)
                phases["selftests"] = time.monotonic() - t
                if "modules" in targets:
                    _modules_tarball(worktree, obj, make_args, env, logf, staging, log_path)
                    _guest_module(worktree, obj, request, make_args, env, logf, staging, log_path)
                meta = _stage(staging, obj, key_parts, source, request, applied, phases, manifest, worktree,
                              {"instrumentation": variant, "instrumentation_note": note})
                entry = cache.commit(key, staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    return Build(key, entry, False, meta, phases)


# What decides the final .config besides our inputs: the tree's Kconfig files and config targets.
_KCONFIG_PATHS = (":(glob)**/Kconfig*", "arch/x86/configs/*", "kernel/configs/*", "scripts/kconfig/*")


def _configure(worktree: Path, obj: Path, config: ConfigRequest, make_args: list[str]) -> dict[str, str]:
    """make_config, skipped (~5 s) when neither our inputs nor the tree's Kconfig changed since last time."""
    from harness.kernel.kconfig import parse_config

    kconfig = _git(worktree, "ls-files", "-s", "--", *_KCONFIG_PATHS)
    args = [a for a in make_args if not a.startswith("-j")]  # parallelism does not change the config
    state = hashlib.sha256("\0".join([config.inputs_digest(), kconfig, *args]).encode()).hexdigest()
    stamp = obj / ".snp-harness-config-state"
    if (obj / ".config").exists() and stamp.exists() and stamp.read_text() == state:
        return parse_config((obj / ".config").read_text(errors="replace"))
    stamp.unlink(missing_ok=True)
    final = make_config(worktree, obj, config, make_args=make_args)
    stamp.write_text(state)
    return final


# What the selftests bundle is made from, besides guests/: the tools tree and the UAPI headers.
_SELFTEST_PATHS = ("tools/", "include/uapi/", "arch/x86/include/uapi/", "scripts/headers_install.sh",
                   "scripts/unifdef.c", "usr/")


def _selftests(worktree: Path, obj: Path, request: BuildRequest, key: BuildKey, logf, staging: Path) -> dict:
    """Build and bundle the selftests, or reuse the last bundle when none of their inputs changed.

    A patch to KVM itself (the common case) leaves them alone, so an incremental build
    costs what make costs.
    """
    from harness.kernel.selftests_build import build_selftests

    work = obj / "selftests"
    tarball, manifest_file, stamp = work / "selftests.tar.gz", work / "manifest.json", work / ".snp-harness-state"
    inputs = _git(worktree, "ls-files", "-s", "--", *_SELFTEST_PATHS)
    state = hashlib.sha256("\0".join([inputs, key.guests, key.compiler, *key.make_args]).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == state and tarball.exists() and manifest_file.exists():
        manifest = json.loads(manifest_file.read_text())
    else:
        stamp.unlink(missing_ok=True)
        result = build_selftests(worktree, obj, work, request.guests_dir, jobs=request.jobs, log=logf,
                                 dest_tar=tarball)
        manifest = result.manifest.to_dict()
        manifest_file.write_text(json.dumps(manifest))
        stamp.write_text(state)
    shutil.copy2(tarball, staging / "selftests.tar.gz")
    return manifest


def _make_env(cache_dir: Path, worktree: Path) -> dict[str, str]:
    return {
        "CCACHE_DIR": str(cache_dir / "ccache"),
        # The build dir sits directly in the worktree, so kbuild uses srctree=".." and
        # compile commands are the same in every worktree; basedir covers the rest.
        "CCACHE_BASEDIR": str(worktree),
        "CCACHE_NOHASHDIR": "1",
        "KBUILD_BUILD_USER": "snp-harness",
        "KBUILD_BUILD_HOST": "snp-harness",
    }


def _run_make(worktree, obj, args, env, logf, progress, phase, log_path) -> None:
    from harness.errors import CommandTimeout
    from harness.transport.local import LocalTransport

    steps_file = obj / f".snp-harness-steps-{phase}"
    try:
        expected = int(steps_file.read_text())
    except (OSError, ValueError):
        expected = None
    counter = _StepCounter(progress, phase, expected)

    def sink(_stream: str, chunk: bytes) -> None:
        logf.write(chunk)
        counter.feed(chunk)

    argv = ["make", "-C", str(worktree), f"O={obj}", *args]
    logf.write(f"$ {' '.join(argv)}\n".encode())
    try:
        r = LocalTransport().run(argv, timeout=BUILD_TIMEOUT_S, check=False, env=env, sink=sink)
    except CommandTimeout as e:
        raise BuildTimeout(f"make {' '.join(args)} timed out after {BUILD_TIMEOUT_S}s", log_path) from e
    if r.exit_status != 0:
        errors = buildlog.first_errors(log_path.read_text(errors="replace").splitlines())
        raise BuildError(f"make {' '.join(args)} failed (exit {r.exit_status})", log_path, errors)
    steps_file.write_text(str(counter.done))


class _StepCounter:
    def __init__(self, progress: Progress | None, phase: str, expected: int | None) -> None:
        self.progress, self.phase, self.expected = progress, phase, expected
        self.done, self._partial = 0, b""

    def feed(self, chunk: bytes) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        n = sum(1 for line in lines if buildlog.is_step(line.decode(errors="replace")))
        if n:
            self.done += n
            if self.progress:
                self.progress(self.phase, self.done, self.expected)


def _reuse(stamp: Path, state: str, outputs: list[Path]) -> bool:
    """True when the last run of a step had these inputs and left these outputs."""
    return stamp.exists() and stamp.read_text() == state and all(p.exists() for p in outputs)


def _modules_state(obj: Path) -> str:
    """What modules_install's output depends on: the module list and each module's file."""
    h = hashlib.sha256((obj / "include/config/kernel.release").read_bytes())
    order = obj / "modules.order"
    text = order.read_text() if order.exists() else ""
    h.update(text.encode())
    for line in text.split():
        ko = obj / (line.removesuffix(".o") + ".ko")
        st = ko.stat() if ko.exists() else None
        h.update(f"{line} {st.st_size if st else -1} {st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()


def _modules_tarball(worktree, obj, make_args, env, logf, staging, log_path) -> None:
    """modules_install into a tarball; reused when no module changed (a KVM patch relinks only
    the kernel), so an incremental build costs what make costs."""
    import tarfile

    tarball, stamp, state = obj / "modules.tar.gz", obj / ".snp-harness-modules-state", _modules_state(obj)
    if not _reuse(stamp, state, [tarball]):
        stamp.unlink(missing_ok=True)
        root = obj / "modules-install"
        shutil.rmtree(root, ignore_errors=True)
        _run_make(worktree, obj, [*make_args, "modules_install", f"INSTALL_MOD_PATH={root}", "INSTALL_MOD_STRIP=1"],
                  env, logf, None, "modules", log_path)
        with tarfile.open(tarball, "w:gz") as tar:
            tar.add(root, arcname=".")
        stamp.write_text(state)
    shutil.copy2(tarball, staging / "modules.tar.gz")


def _guest_module(worktree, obj, request, make_args, env, logf, staging, log_path) -> None:
    """guests/kmod/ (the guest workload's module), built out of tree against this build."""
    src = request.guests_dir / "kmod"
    if not (src / "Kbuild").is_file():
        return
    mdir = obj / "snp-kmod"  # kbuild writes its objects into M=: a copy, never the repository
    # The module depends on its sources and on the kernel's exported symbols, release and config.
    h = hashlib.sha256(files_digest(sorted(p for p in src.iterdir() if p.is_file())).encode())
    for name in ("Module.symvers", "include/config/kernel.release", ".config"):
        h.update((obj / name).read_bytes() if (obj / name).exists() else b"-")
    h.update("\0".join(make_args).encode())
    stamp, state = obj / ".snp-harness-kmod-state", h.hexdigest()
    if not _reuse(stamp, state, list(mdir.glob("*.ko")) or [mdir / "none.ko"]):
        stamp.unlink(missing_ok=True)
        shutil.rmtree(mdir, ignore_errors=True)
        shutil.copytree(src, mdir)
        _run_make(worktree, obj, [*make_args, f"M={mdir}", "modules"], env, logf, None, "guest-kmod", log_path)
        stamp.write_text(state)
    dest = staging / "guest-kmod"
    dest.mkdir()
    for ko in sorted(mdir.glob("*.ko")):
        shutil.copy2(ko, dest / ko.name)


def _stage(staging, obj, key, source, request, applied, phases, manifest, worktree, extra: dict) -> dict:
    for name, src in (("bzImage", obj / "arch/x86/boot/bzImage"), ("System.map", obj / "System.map"),
                      ("config", obj / ".config")):
        shutil.copy2(src, staging / name)
    release = (obj / "include/config/kernel.release").read_text().strip()
    meta = {
        "key": key.digest(),
        "key_parts": {**key.__dict__, "make_args": list(key.make_args)},
        "kernel_release": release,
        "source": source.description,
        "package": source.package,  # the Debian source package and version, for debian:X.Y trees
        "base": source.base,
        "worktree": str(worktree),
        "series": request.series.name if request.series else None,
        "patches": [{"index": a.index, "subject": a.subject, "patch_id": a.patch_id} for a in applied],
        "config_sha256": hashlib.sha256((obj / ".config").read_bytes()).hexdigest(),
        "config_base": request.config.base,
        "fragments": [str(f) for f in request.config.fragments],
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "selftests": manifest,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta.update(extra)  # e.g. which instrumentation variant was applied, or why none
    (staging / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return meta
