"""From user choices (CLI flags, inventory) to a BuildRequest, and the commands it implies."""

from __future__ import annotations

import tempfile
from pathlib import Path

from harness.config import HarnessConfig
from harness.errors import ConfigError
from harness.kernel.build import REPO_ROOT, BuildRequest, default_config
from harness.kernel.kconfig import ConfigRequest, config_commands
from harness.kernel.patches import Series, fetch_b4, load_mbox, load_series
from harness.kernel import debian
from harness.kernel.source import (DEFAULT_TREE, IMPORT_TAG, KernelSource, imported, import_commands, import_dest,
                                   open_git_tree, tree_arg)

SERIES_DIR = REPO_ROOT / "kernel-patches" / "series"
CONFIGS_DIR = REPO_ROOT / "kernel-patches" / "configs"


def find_series(name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    path = SERIES_DIR / name
    if path.is_dir():
        return path
    known = sorted(p.name for p in SERIES_DIR.iterdir() if p.is_dir()) if SERIES_DIR.is_dir() else []
    raise ConfigError(f"no patch series {name!r}: not a directory, and not in {SERIES_DIR} "
                      f"(known: {', '.join(known) or 'none'})")


def find_fragment(name: str) -> Path:
    for path in (Path(name).expanduser(), CONFIGS_DIR / name, CONFIGS_DIR / f"{name}.config"):
        if path.is_file():
            return path
    known = sorted(p.name for p in CONFIGS_DIR.glob("*.config"))
    raise ConfigError(f"no config fragment {name!r} (known in {CONFIGS_DIR}: {', '.join(known)})")


def build_request(config: HarnessConfig, *, series: Series | None = None, series_name: str | None = None,
                  tree: Path | str | None = None, base: str | None = None, fragments: tuple[str, ...] = (),
                  config_base: str | None = None, jobs: int | None = None,
                  instrumentation: bool | None = None) -> BuildRequest:
    """A BuildRequest from explicit choices, the inventory's [kernel] filling what is not given."""
    name = series_name or config.kernel.series
    if series is None and name:
        series = load_series(find_series(name))
    paths = tuple(find_fragment(f) for f in (fragments or config.kernel.fragments))
    cfg = default_config()
    if paths or config_base:
        cfg = ConfigRequest(base=config_base or "tinyconfig", fragments=paths or cfg.fragments)
    kwargs = {"jobs": jobs} if jobs else {}
    if instrumentation is None:
        instrumentation = config.kernel.instrumentation
    return BuildRequest(cache_dir=config.cache_dir, tree=tree_arg(tree) if tree else config.kernel.tree,
                        base=base,
                        series=series, config=cfg, instrumentation=instrumentation, **kwargs)


def build_request_from_args(args, config: HarnessConfig, workdir: Path | None) -> BuildRequest:
    """args: the `build` subcommand's namespace."""
    scratch = workdir or Path(tempfile.mkdtemp(prefix="snp-harness-"))
    series: Series | None = None
    if args.mbox:
        series = load_mbox(Path(args.mbox), scratch / "patches")
    elif args.series_msgid:
        series = fetch_b4(args.series_msgid, scratch / "b4")
    return build_request(config, series=series, series_name=args.series, tree=args.tree, base=args.base,
                         fragments=tuple(args.fragment), config_base=args.config_base, jobs=args.jobs,
                         instrumentation=False if args.no_instrumentation else None)


def _instrumentation_for(repo: Path, base: str) -> list[Path | str]:
    import subprocess

    from harness.kernel.instrumentation import SEV_C, match_source

    r = subprocess.run(["git", "-C", str(repo), "show", f"{base}:{SEV_C}"], capture_output=True, text=True,
                       errors="replace")
    choice = match_source(r.stdout if r.returncode == 0 else "")
    return [p.path for p in choice.variant.series().patches] if choice.variant else [f"<none: {choice.reason}>"]


def plan_commands(request: BuildRequest) -> list[list[str]]:
    """Every command a build of `request` runs on a cache miss; nothing is run or written."""
    from harness.kernel.selftests_build import selftest_commands

    cmds: list[list[str]] = []
    tree = DEFAULT_TREE if request.tree is None else request.tree
    if debian.is_debian_spec(tree):
        origin, fetch = debian.planned_tarball(str(tree), request.cache_dir)
        cmds += fetch
        tree = origin
    if not (Path(tree) / ".git").exists():
        origin = Path(tree)
        # a tarball not fetched yet has no identity to name its import by
        repo = (import_dest(origin, request.cache_dir) if origin.exists()
                else request.cache_dir / "src" / f"{origin.name.split('.tar')[0]}-<digest>")
        if not imported(repo):
            cmds += import_commands(origin, repo)
        base = IMPORT_TAG
    else:
        src = open_git_tree(Path(tree), request.base or "HEAD")
        repo, base = src.repo, src.base
    exists = (Path(repo) / ".git").exists()
    repo_id = KernelSource(Path(repo), base, "").repo_id if exists else "<repo-id>"
    worktree = request.cache_dir / "work" / repo_id
    if not (worktree / ".git").exists():
        cmds.append(["git", "-C", str(repo), "worktree", "add", "--detach", "-f", str(worktree), base])
    cmds.append(["git", "-C", str(worktree), "checkout", "-q", "-f", "--detach", base])
    patches = [p.path for p in request.series.patches] if request.series else []
    if request.instrumentation:  # the variant that fits the base (the series under test may change that)
        patches += _instrumentation_for(Path(repo), base) if exists else ["<the instrumentation variant that fits>"]
    for patch in patches:
        cmds.append(["git", "-C", str(worktree), "am", "-3", "--keep-non-patch", str(patch)])
    obj = worktree / f".snp-build-{request.config.inputs_digest()[:12]}"
    make_args = [f"-j{request.jobs}", "CC=ccache gcc", *request.make_args]
    cmds += config_commands(worktree, obj, request.config, make_args=make_args)
    cmds.append(["make", "-C", str(worktree), f"O={obj}", *make_args, "bzImage"])
    cmds += selftest_commands(worktree, obj, obj / "selftests" / "headers", obj / "selftests" / "kvm",
                              request.guests_dir, request.jobs)
    return cmds
