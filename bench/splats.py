"""Splat classification throughput: classify() over a large dmesg against `grep -E -c -f`.

A log of --mb MB is built in a temporary directory: the benign lines of the real healthy
capture (tests/data/dmesg/qemu-tcg-healthy.log), cycled, with one splat every
--splat-every lines, taken in turn from the capture files under tests/data/dmesg/ (each
splat's exact lines, as classify() reports them in its own file). Then, rounds alternating:

  classify     `classify(f)` on the open file: the lines are read one by one from a text
               file (UTF-8, errors="replace") while classify() consumes them, as a streaming
               CLI would. File reading and decoding are inside the timed region.
  grep         `grep -E -c -f patterns.txt FILE` with the catalogue's own start patterns in
               POSIX ERE (harness.evidence.splats.grep_patterns(): the same optional prefixes,
               the same anchored starts), run with LC_ALL=C, grep's fastest mode.
  grep locale  the same command in the inherited environment (here C.UTF-8), reported only.
  in memory    `classify(path.read_text(errors="replace").splitlines())`: a whole log as a
               list first (`snp-harness splats` streams the file instead, like classify
               above), reported only.

  vs_grep      classify throughput over grep's (LC_ALL=C), medians. Goal: >= 0.5.

Both must find the same start lines: grep's count must equal the number of lines inside the
reported splats that match a catalogue start (a WARNING is printed if not), and classify()
must report exactly the splats that were inserted. The page cache is warmed before timing.
Progress goes to stderr; the last stdout line is one JSON object.

    .venv/bin/python bench/splats.py [--mb 200] [--splat-every 10000] [--rounds 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.evidence.splats import classify, grep_patterns, match_start, strip_prefix  # noqa: E402

DATA = REPO / "tests" / "data" / "dmesg"
BENIGN = DATA / "qemu-tcg-healthy.log"
GOAL = 0.5


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def splat_blocks() -> list[list[str]]:
    """Every splat of the capture files, as its own lines (timestamped dmesg formats only)."""
    blocks = []
    for path in sorted(DATA.glob("*.log")):
        if path.name.startswith(("constructed-negatives", "constructed-kmsg", "constructed-mail",
                                 "constructed-snp-misc-syslog")):
            continue
        for s in classify(path.read_text().splitlines()).splats:
            blocks.append([line.rstrip("\r") for line in s.lines])
    return blocks


def starts(lines) -> int:
    return sum(1 for line in lines if match_start(strip_prefix(line)))


def build_log(path: Path, target: int, every: int) -> dict:
    benign = [line.rstrip("\r\n") for line in BENIGN.read_text().splitlines()]
    blocks = splat_blocks()
    written = lines = inserted = start_lines = 0
    with path.open("w") as f:
        b = k = 0
        while written < target:
            chunk = benign[b % len(benign)]
            b += 1
            text = chunk + "\n"
            if every and b % every == 0:
                block = blocks[k % len(blocks)]
                k += 1
                text += "".join(line + "\n" for line in block)
                lines += len(block)
                inserted += len(classify(block).splats)
                start_lines += starts(block)
            f.write(text)
            written += len(text.encode())
            lines += 1
    return {"bytes": path.stat().st_size, "lines": lines, "splats": inserted, "start_lines": start_lines,
            "distinct": len(blocks)}


def time_classify(path: Path):
    t = time.perf_counter()
    with path.open(encoding="utf-8", errors="replace") as f:
        report = classify(f)
    return time.perf_counter() - t, report


def time_in_memory(path: Path) -> float:
    t = time.perf_counter()
    classify(path.read_text(errors="replace").splitlines())
    return time.perf_counter() - t


def time_grep(path: Path, patterns: Path, env: dict) -> tuple[float, int]:
    t = time.perf_counter()
    r = subprocess.run(["grep", "-E", "-c", "-f", str(patterns), str(path)], capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    if r.returncode not in (0, 1) or r.stderr:
        raise RuntimeError(f"grep failed (rc {r.returncode}): {r.stderr.strip()}")
    return dt, int(r.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=200, help="size of the generated log in MB (default 200)")
    ap.add_argument("--splat-every", type=int, default=10000, help="benign lines between splats (default 10000)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of each way (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    if shutil.which("grep") is None:
        note("grep not found")
        return 3
    work = Path(tempfile.mkdtemp(prefix="snp-bench-splats-"))
    try:
        log, patterns = work / "dmesg.log", work / "patterns.txt"
        patterns.write_text("".join(p + "\n" for p in grep_patterns()))
        note(f"building {args.mb:g} MB log in {work} (one splat every {args.splat_every} lines)")
        built = build_log(log, int(args.mb * 1e6), args.splat_every)
        mb = built["bytes"] / 1e6
        note(f"{mb:.1f} MB, {built['lines']} lines, {built['splats']} splats ({built['distinct']} distinct, cycled), "
             f"{built['start_lines']} start lines; {len(grep_patterns())} patterns")
        env_c = {**os.environ, "LC_ALL": "C"}
        time_grep(log, patterns, env_c)                   # warm the page cache
        ours, grep_c, grep_l, cli = [], [], [], []
        report, grep_count = None, 0
        for n in range(args.rounds):
            ways = [("classify", lambda: ours.append(time_classify(log))),
                    ("grep", lambda: grep_c.append(time_grep(log, patterns, env_c))),
                    ("grep locale", lambda: grep_l.append(time_grep(log, patterns, dict(os.environ)))),
                    ("in memory", lambda: cli.append(time_in_memory(log)))]
            for name, run in (ways if n % 2 == 0 else ways[::-1]):
                run()
            report, grep_count = ours[-1][1], grep_c[-1][1]
            note(f"round {n + 1}/{args.rounds}: classify {ours[-1][0]:.3f} s, grep {grep_c[-1][0]:.3f} s, "
                 f"grep locale {grep_l[-1][0]:.3f} s, in memory {cli[-1]:.3f} s")
    except KeyboardInterrupt:
        note("interrupted")
        return 130
    except (OSError, RuntimeError, ValueError) as e:
        note(f"failed: {e}")
        return 3
    finally:
        if args.keep:
            note(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    t_ours = statistics.median(t for t, _ in ours)
    t_grep = statistics.median(t for t, _ in grep_c)
    t_grep_l = statistics.median(t for t, _ in grep_l)
    t_cli = statistics.median(cli)
    our_starts = sum(starts(s.lines) for s in report.splats)
    if our_starts != grep_count:
        print(f"WARNING: grep counted {grep_count} start lines, classify() has {our_starts} in its splats")
    if len(report.splats) != built["splats"]:
        print(f"WARNING: {built['splats']} splats were inserted, classify() reported {len(report.splats)}")
    result = {
        "bench": "splats",
        "vs_grep": round(t_grep / t_ours, 3),
        "vs_grep_locale": round(t_grep_l / t_ours, 3),
        "mb_per_s": round(mb / t_ours, 1),
        "grep_mb_per_s": round(mb / t_grep, 1),
        "grep_locale_mb_per_s": round(mb / t_grep_l, 1),
        "in_memory_mb_per_s": round(mb / t_cli, 1),
        "mb": round(mb, 1),
        "lines": built["lines"],
        "splats": len(report.splats),
        "splats_inserted": built["splats"],
        "start_lines": our_starts,
        "grep_start_lines": grep_count,
        "counts_match": our_starts == grep_count == built["start_lines"] and len(report.splats) == built["splats"],
        "problems": len(report.problems),
        "locale": os.environ.get("LC_ALL") or os.environ.get("LANG") or "",
    }
    print(f"classify     {t_ours:7.3f} s  {result['mb_per_s']:7.1f} MB/s  (median of {len(ours)})")
    print(f"grep LC_ALL=C{t_grep:7.3f} s  {result['grep_mb_per_s']:7.1f} MB/s")
    print(f"grep {result['locale'] or 'locale':<8}{t_grep_l:7.3f} s  {result['grep_locale_mb_per_s']:7.1f} MB/s")
    print(f"in memory    {t_cli:7.3f} s  {result['in_memory_mb_per_s']:7.1f} MB/s  (read_text().splitlines())")
    print(f"vs_grep {result['vs_grep']} (goal >= {GOAL}: {'met' if result['vs_grep'] >= GOAL else 'missed'}); "
          f"{len(report.splats)} splats, {our_starts} start lines (grep: {grep_count})")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
