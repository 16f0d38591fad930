"""Build cache: what a hit costs, and what the harness adds to an incremental build.

Two ratios, each against a baseline measured in the same run on the same build dir:

  speedup_vs_make_noop  `make O=... bzImage` with nothing to do, over a cache hit of
                        `snp-harness build` (CLI start-up included). Goal: >= 20.
  incremental_vs_make   `snp-harness build` of a one-patch series that edits
                        arch/x86/kvm/svm/sev.c (a miss: patch, config check, make,
                        selftests, publish), over raw make of the same targets (`bzImage
                        modules` when the config has modules, as local-target does) after
                        the same kind of edit in the same worktree. Goal: <= 1.1.

It uses the harness cache under ~/.cache/snp-harness (the default build is made first
if missing: ~6 min cold on 2 cores). The last stdout line is one JSON object.

    .venv/bin/python bench/build_cache.py [--hits 10] [--tree debian:6.12]
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.config import load_config  # noqa: E402
from harness.kernel.build import BuildRequest, _make_env, build  # noqa: E402
from harness.kernel.patches import reset_worktree  # noqa: E402
from harness.kernel.source import resolve_source, tree_arg, worktree_for  # noqa: E402

SEV_C = "arch/x86/kvm/svm/sev.c"
CLI = [str(REPO / ".venv" / "bin" / "snp-harness")]


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(argv: list[str], **kw) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.monotonic() - start


def comment_series(directory: Path, original: str, tag: str) -> Path:
    """A one-patch series (a bare diff) that appends a comment to sev.c."""
    edited = original + f"/* snp-harness bench {tag} */\n"
    diff = difflib.unified_diff(original.splitlines(True), edited.splitlines(True),
                                f"a/{SEV_C}", f"b/{SEV_C}")
    directory.mkdir(parents=True)
    (directory / "0001-bench.patch").write_text("".join(diff))
    (directory / "series").write_text("0001-bench.patch\n")
    return directory


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hits", type=int, default=10, help="cache hits to time (median)")
    ap.add_argument("--noops", type=int, default=3, help="no-op makes to time (median)")
    ap.add_argument("--rounds", type=int, default=5, help="incremental builds of each kind (median)")
    ap.add_argument("--tree", default=None, help="kernel tree (debian:7.3, debian:6.12, a path; default: the "
                                                 "default tree)")
    args = ap.parse_args()

    cache = load_config(None).cache_dir
    note(f"cache: {cache}; making sure the default build exists (cold: several minutes)")
    tree = tree_arg(args.tree)
    tree_flag = ["--tree", str(args.tree)] if args.tree else []
    default = build(BuildRequest(cache_dir=cache, tree=tree), Path(tempfile.mkdtemp()) / "build.log")
    source = resolve_source(tree, None, cache)
    worktree = worktree_for(source, cache)
    obj = worktree / f".snp-build-{BuildRequest(cache_dir=cache).config.inputs_digest()[:12]}"
    env = {**_make_env(cache, worktree)}
    make = ["make", "-C", str(worktree), f"O={obj}", "-j2", "CC=ccache gcc", "bzImage"]
    # The incremental baseline makes what the harness makes: a config with modules (local-target
    # has them, for the guest workload's .ko) builds `bzImage modules`, as a developer would.
    targets = ["bzImage", *(["modules"] if "CONFIG_MODULES=y" in (obj / ".config").read_text().splitlines() else [])]
    make_same = [*make[:-1], *targets]
    menv = {**os.environ, **env}

    note("timing cache hits through the CLI")
    hits = [timed([*CLI, "build", *tree_flag]) for _ in range(args.hits)]

    note("timing no-op make on the same build dir (after one make to settle it)")
    reset_worktree(worktree, source.base)
    timed(make, env=menv)
    noops = [timed(make, env=menv) for _ in range(args.noops)]

    original = subprocess.run(["git", "-C", str(source.repo), "show", f"{source.base}:{SEV_C}"],
                              check=True, capture_output=True, text=True).stdout
    work = Path(tempfile.mkdtemp(prefix="snp-bench-"))
    note("warming the incremental path with one series build")
    timed([*CLI, "build", *tree_flag, "--series", str(comment_series(work / "warm", original, uuid.uuid4().hex))])
    sev = worktree / SEV_C
    harness_runs, make_runs = [], []
    for n in range(args.rounds):
        note(f"round {n + 1}/{args.rounds}: incremental harness build, then raw make, one edited file each")
        tag = uuid.uuid4().hex
        harness_runs.append(timed([*CLI, "build", *tree_flag, "--series",
                                   str(comment_series(work / tag, original, tag))]))
        sev.write_text(sev.read_text() + f"/* snp-harness bench raw {tag} */\n")
        make_runs.append(timed(make_same, env=menv))
    reset_worktree(worktree, source.base)
    t_harness, t_make = statistics.median(harness_runs), statistics.median(make_runs)

    hit, noop = statistics.median(hits), statistics.median(noops)
    result = {
        "bench": "build_cache",
        "speedup_vs_make_noop": round(noop / hit, 1),
        "incremental_vs_make": round(t_harness / t_make, 3),
        "hit_s": round(hit, 3),
        "make_noop_s": round(noop, 2),
        "incremental_harness_s": round(t_harness, 2),
        "incremental_make_s": round(t_make, 2),
        "incremental_make_targets": targets,
        "default_key": default.key,
        "tree": args.tree or "default",
        "package": default.metadata.get("package"),
    }
    print(f"cache hit (CLI)        {hit:8.3f} s  (median of {len(hits)})")
    print(f"make no-op             {noop:8.2f} s  (median of {len(noops)})  -> {result['speedup_vs_make_noop']}x "
          f"faster (goal >= 20x)")
    print(f"incremental, harness   {t_harness:8.1f} s  (median of {len(harness_runs)})")
    print(f"incremental, raw make  {t_make:8.1f} s  (median of {len(make_runs)})  -> {result['incremental_vs_make']}x (goal <= 1.1x)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
