"""`snp-harness bisect` (and `bisect-step`, what `git bisect run` calls for each commit)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_INFRA = 0, 1, 3
ABORT = 128  # git bisect run: 128 or more stops the bisect without marking the commit


def register(sub) -> None:
    b = sub.add_parser("bisect", help="find the commit that broke a test: git bisect run over build, boot, tests",
                       description="Exit: 0 culprit found and confirmed; 1 refused (endpoints don't reproduce) or "
                                   "inconclusive; 2 usage; 3 infrastructure error (resume with --resume).")
    b.add_argument("--good", metavar="REF", help="a commit where the selection passes")
    b.add_argument("--bad", metavar="REF", help="a later commit where it fails")
    b.add_argument("--tree", metavar="PATH", help="the kernel git tree (default: the inventory's [kernel] tree); debian:X.Y means "
                        "the harness's import of that package, with the commits made on top of it")
    b.add_argument("--series", metavar="NAME", help="a patch series applied on every commit tested")
    b.add_argument("--snp-host", dest="hosts", metavar="NAME", action="append", default=[],
                   help="inventory host to test on (default: the local QEMU target)")
    b.add_argument("--install", action="store_true", help="install and boot each build on the hosts")
    b.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run the selection N times per commit; any failure makes the commit bad (flaky tests)")
    b.add_argument("--verify-revert", action="store_true",
                   help="also check that --bad with the culprit reverted passes")
    b.add_argument("--no-instrumentation", action="store_true",
                   help="build without kernel-patches/instrumentation/ (for commits it does not apply to)")
    b.add_argument("--resume", nargs="?", const="latest", metavar="DIR",
                   help="continue an interrupted bisect (default: the newest unfinished one); "
                        "its plan is in DIR/bisect.json, so no other option is taken")
    b.add_argument("selection", nargs=argparse.REMAINDER, help="after --: the pytest selection")
    b.set_defaults(func=cmd_bisect)

    s = sub.add_parser("bisect-step")  # internal: git bisect run's command
    s.add_argument("bisect_dir")
    s.set_defaults(func=cmd_bisect_step)


def cmd_bisect(args) -> int:
    from harness.artifacts import new_run_dir
    from harness.bisect.driver import bisect, new_plan
    from harness.bisect.step import read_plan, write_plan
    from harness.cli import _config, _progress
    from harness.errors import ConfigError

    config = _config(args)
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in ("good", "bad", "tree", "series", "install",
                                                       "verify_revert", "no_instrumentation")
                 if getattr(args, k)] + (["--snp-host"] if args.hosts else []) + (
                 ["--repeat"] if args.repeat != 1 else []) + (
                 ["a selection"] if [a for a in args.selection if a != "--"] else [])
        if given:
            raise ConfigError(f"--resume continues the bisect as planned; drop {', '.join(given)}")
        bisect_dir = _unfinished(config.artifacts.root) if args.resume == "latest" else Path(args.resume).resolve()
        status = read_plan(bisect_dir).get("result", {}).get("status")
        if status not in ("running", "aborted"):
            raise ConfigError(f"{bisect_dir}: this bisect is finished ({status}); see its bisect.md")
    else:
        if not (args.good and args.bad):
            raise ConfigError("give --good REF and --bad REF (or --resume DIR)")
        tree = args.tree or config.kernel.tree
        if tree is None:
            raise ConfigError("bisect needs a kernel git tree: --tree PATH, or [kernel] tree in the inventory")
        if str(tree).startswith("debian:"):  # its imported repository: bisect commits made on top of it
            from harness.kernel.source import resolve_source
            tree = resolve_source(str(tree), None, config.cache_dir).repo
        for h in args.hosts:
            config.host(h)
        selection = [a for a in args.selection if a != "--"]
        plan = new_plan(Path(tree), args.good, args.bad, selection, repeat=args.repeat, hosts=args.hosts,
                        install=args.install, series=args.series, verify_revert=args.verify_revert,
                        config=config.path, reproducer=shlex.join(["snp-harness", *sys.argv[1:]]),
                        instrumentation=False if args.no_instrumentation else None)
        bisect_dir = new_run_dir(config.artifacts.root, "bisect")
        write_plan(bisect_dir, plan)
    print(f"bisect directory: {bisect_dir}", flush=True)
    with _progress() as progress:
        result = bisect(bisect_dir, lambda line: print(line, flush=True), progress)
    status = result["status"]
    print(f"\nbisect {status}" + (f": {result['culprit'][:12]} {result.get('culprit_subject', '')}"
                                  if result.get("culprit") else ""))
    if result.get("message"):
        print(result["message"])
    print(f"{result.get('bisect_steps', 0)} bisect step(s), {result.get('skipped_steps', 0)} skipped, "
          f"{result.get('wall_s', 0):.0f} s; report: {bisect_dir / 'bisect.md'}")
    if status == "aborted":
        return EXIT_INFRA
    return EXIT_OK if status == "found" and result.get("confirmed") else EXIT_FAIL


def _unfinished(root: Path) -> Path:
    from harness.bisect.step import read_plan
    from harness.errors import ConfigError

    for d in sorted(Path(root).glob("*-bisect*"), reverse=True):
        if (d / "bisect.json").exists() and read_plan(d).get("result", {}).get("status") in ("running", "aborted"):
            return d
    raise ConfigError(f"no unfinished bisect under {root}; give its directory: --resume DIR")


def cmd_bisect_step(args) -> int:
    """Never exits 1..127 by accident: any failure of the harness itself aborts the bisect (128)."""
    try:
        from harness.bisect.outcome import STEP_EXIT
        from harness.bisect.step import read_plan, run_step
        from harness.cli import _progress
        from harness.kernel.source import _git

        plan = read_plan(Path(args.bisect_dir))
        wt = Path(plan["worktree"])
        # git's marks so far, saved before each step: a lost worktree replays to at most one step back.
        (Path(args.bisect_dir) / "git-bisect.log").write_text(_git(wt, "bisect", "log"))
        commit = _git(wt, "rev-parse", "BISECT_HEAD").strip()
        with _progress() as progress:
            return STEP_EXIT[run_step(Path(args.bisect_dir), commit, "bisect", progress=progress)["outcome"]]
    except BaseException as e:  # noqa: BLE001 - git must see 128+, never "bad"
        print(f"bisect-step: {type(e).__name__}: {e}", file=sys.stderr)
        return ABORT
