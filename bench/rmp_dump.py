"""RMP dump per test: the whole-table path against the record path, for a 1 TiB host and a 4 GiB guest.

What one test's RMP check costs, end to end: fetch from the target, decode, check(). The target
is this machine (LocalTransport). The debugfs file is stood in for by rmp_collect's req() shell
function, redefined to serve a synthetic table file the way `dump` answers:
  - "all" requests ("<start> <count>"): dd of the table's bytes, exactly the kernel's output;
  - record requests ("<start> <count> assigned|guest"): EMULATOR, a small numpy program run per
    request, which scans the table's memory map for the range and writes (pfn, entry) records and
    the trailer. It stands in for the kernel's scan; its run time is reported on its own.
The table: 2**28 16-byte entries (4 GiB, the RMP of a 1 TiB host), fam19h-raw, mostly unassigned:
  - the RMP's own pages (table size / 4K) and 4096 scattered firmware pages, ASID 0, immutable;
  - a guest (ASID 5) holding 4 GiB: 2**20 4K entries at random PFNs in a window four times its
    size, GFNs in random order (--guest-2m-share moves a share of it into 2M entries);
  - 4 VMSA pages at INITIAL_VMSA_GPA.

Ways:
  whole     the old path: collect_rmp_dump() of the whole table in 2**20-entry requests, gzip -1
            on the target, gunzip, load_dump + check. The baseline. Measured in the same run on
            two smaller tables (--baseline-gib, default 0.25 and 0.5, same guest) and extrapolated
            linearly to the full table; pass --baseline-full to measure it at full size instead.
  guest     fetch_rmp() as it is by default (mode "guest"): one request for the whole table,
            records of the entries assigned to a non-zero ASID; load + check. The running guest.
  teardown  the same after the guest is gone (the emulator treats ASID 5's entries as released,
            that is unassigned): the per-test teardown check.
  assigned  fetch_rmp(mode="assigned"): ASID 0's entries too (the RMP's own pages: host-sized).
  ranged    fetch_rmp(mode="assigned", ranges=the guest's PFN window): what a caller that knows
            the guest's PFNs asks for; scans 4x the guest, not the host.
Record ways are not gzipped (fetch_rmp's default); --compress runs gzip -1 on the target for them.

Ratios are each way's median over the baseline's (extrapolated) per-test time. Each way's time is
split into the emulator's run (interpreter start + scan: the kernel's share, emulated) and the rest
(the harness: shell, transfer, parsing, check). Goal: at most 1 s per test for the record path
(guest, running and teardown). The last stdout line is one JSON object. The work
directory is removed at the end (also on Ctrl-C or SIGTERM) unless --keep. Exit codes: 0 measured
(even if the goal is missed), 3 a wrong verdict or a failed fetch, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.errors import HarnessError  # noqa: E402
from harness.evidence import rmp_collect  # noqa: E402
from harness.evidence.rmp import (ANY_ASID, ENTRY_SIZE, PMD_PAGES, Expectation, check,  # noqa: E402
                                  load_dump)
from harness.transport.local import LocalTransport  # noqa: E402

ASID = 5
GIB = 1 << 30
GUEST_BYTES = 4 * GIB
INITIAL_VMSA_GPA = 0xFFFFFFFFF000
ONES = np.uint64((1 << 64) - 1)


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- the table --------------------------------------------------------------------------------------

def layout(n: int, share_2m: float, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n2m = int(GUEST_BYTES * share_2m) // (2 << 20)
    n4k = (GUEST_BYTES - n2m * (2 << 20)) // 4096
    window = n // 8                                       # the guest's PFNs start here
    pfn4k = np.sort(window + rng.choice(4 * n4k, n4k, replace=False)) if n4k else np.zeros(0, np.int64)
    regions = np.sort(rng.choice(4 * max(n2m, 1), n2m, replace=False)) + (window + 4 * n4k) // PMD_PAGES + 1
    rmp_pages = n * ENTRY_SIZE // 4096
    return {"fw": np.unique(n // 16 + rng.choice(n // 16, 4096, replace=False)),
            "rmp": np.array([n - rmp_pages - PMD_PAGES, n - PMD_PAGES]),
            "pfn4k": pfn4k, "gfn4k": rng.permutation(n4k),
            "head2m": regions * PMD_PAGES, "gfn2m": (n4k + np.arange(n2m) * PMD_PAGES),
            "vmsa": n // 4 + np.arange(4) * 7,
            "window": np.array([window, int(regions[-1] * PMD_PAGES + PMD_PAGES) if n2m else window + 4 * n4k])}


def expectation(lay: dict[str, np.ndarray]) -> Expectation:
    return Expectation(ASID, private_gpas=((0, GUEST_BYTES),))


def write_table(path: Path, n: int, lay: dict[str, np.ndarray]) -> None:
    # rmp_analysis's table writer (same layout keys and entry values), without shadowed sub-entries
    from rmp_analysis import write_dump

    write_dump(path, n, lay, shadowed=False)


# --- the target's side ------------------------------------------------------------------------------

# The kernel's side of a record request, as its own small program: it imports only numpy, and reports
# its whole run time and its scan time (the stand-in for the kernel's) to the timing file.
EMULATOR = r'''
import time
T0 = time.perf_counter()
import sys
import numpy as np
table, start, count, mode, released, timing = sys.argv[1:7]
start, count, released = int(start), int(count), int(released)
t1 = time.perf_counter()
m = np.memmap(table, dtype="<u8", mode="r").reshape(-1, 2)
flag = np.memmap(table, dtype=np.uint8, mode="r")[::16]     # lo's low byte: the assigned bit
ones, out, unread = np.uint64(2**64 - 1), sys.stdout.buffer, 0
for a in range(start, start + count, 1 << 22):
    b = min(start + count, a + (1 << 22))
    idx = np.flatnonzero(flag[a:b] & 1) + a
    if idx.size:
        w = m[idx]
        ok = ~((w[:, 0] == ones) & (w[:, 1] == ones))
        unread += int((~ok).sum())
        asid = (w[:, 0] >> np.uint64(51)) & np.uint64(1023)
        if released >= 0:
            ok &= asid != np.uint64(released)
        if mode == "guest":
            ok &= asid != 0
        out.write(np.column_stack([idx[ok].astype(np.uint64), w[ok]]).astype("<u8").tobytes())
out.write(np.array([2**64 - 1, count, unread], "<u8").tobytes())
out.flush()
t2 = time.perf_counter()
with open(timing, "a") as f:
    f.write(f"{t2 - T0} {t2 - t1}\n")
'''


def serve(table: Path, timing: Path, released: int = -1) -> None:
    """Point rmp_collect's req() at the table: dd for "all", EMULATOR for record modes."""
    emulator = table.parent / "emulate.py"
    if not emulator.exists():
        emulator.write_text(EMULATOR)
    rmp_collect._REQUEST = (
        'req() {\n'
        '  if [ -z "$4" ]; then\n'
        f'    dd if="{table}" iflag=skip_bytes,count_bytes skip=$(($2 * 16)) count=$(($3 * 16)) bs=1M 2>/dev/null'
        ' || exit 5\n'
        '  else\n'
        f'    "{sys.executable}" "{emulator}" "{table}" "$2" "$3" "$4" {released} "{timing}" || exit 5\n'
        '  fi\n}\n')


def info_for(n: int) -> rmp_collect.RmpInfo:
    return rmp_collect.RmpInfo(max_pfn=n - 1, entry_size=16, max_entries=1 << 20, segmented=False,
                               modes=("all", "assigned", "guest"))


# --- the ways ---------------------------------------------------------------------------------------

RECORD_WAYS = ("guest", "teardown", "assigned", "ranged")


def run_way(kind: str, work: Path, n: int, lay, compress: bool) -> dict:
    """One test's fetch + decode + check: wall time, the emulator's share, verdict, bytes fetched."""
    timing = work / f"timing-{kind}"
    timing.write_text("")
    serve(work / f"table-{n}.bin", timing, released=ASID if kind == "teardown" else -1)
    info, t = info_for(n), LocalTransport()
    out = work / "out" / f"{kind}.dat"
    shutil.rmtree(out.parent, ignore_errors=True)
    start = time.perf_counter()
    if kind == "whole":
        path = rmp_collect.collect_rmp_dump(t, info, out, remote_tmp=str(work))
        verdict = check(load_dump(path), expectation(lay))
        fetched = path.with_name(path.name + ".gz")
    else:
        ranges = [tuple(int(x) for x in lay["window"])] if kind == "ranged" else None
        mode = "assigned" if kind in ("assigned", "ranged") else "guest"
        f = rmp_collect.fetch_rmp(t, info, out, ranges=ranges, mode=mode, compress=compress, remote_tmp=str(work))
        exp = Expectation(ANY_ASID, torn_down=True) if kind == "teardown" else expectation(lay)
        if kind == "ranged":        # only the guest's window was asked for: nothing outside it to check
            exp = Expectation(ASID, private_gpas=exp.private_gpas, exclusive=False)
        verdict = check(f.dump, exp)
        fetched = out.with_name(out.name + ".gz") if compress else out
    wall = time.perf_counter() - start
    runs = [[float(x) for x in line.split()] for line in timing.read_text().splitlines()]
    return {"wall": wall, "emulator": sum(r[0] for r in runs), "scan": sum(r[1] for r in runs),
            "verdict": verdict, "bytes": fetched.stat().st_size}


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=4.0, help="RMP size (default 4: a 1 TiB host)")
    ap.add_argument("--baseline-gib", type=float, nargs=2, default=(0.25, 0.5),
                    help="the two table sizes the whole-table baseline is measured on (default 0.25 0.5)")
    ap.add_argument("--baseline-full", action="store_true", help="measure the baseline on the full table")
    ap.add_argument("--guest-2m-share", type=float, default=0.0, help="share of the guest in 2M entries")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of each way (median; default 3)")
    ap.add_argument("--compress", action="store_true", help="record ways with gzip -1 on the target too")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)

    def entries(gib: float) -> int:
        return int(gib * GIB) // ENTRY_SIZE // PMD_PAGES * PMD_PAGES

    n = entries(args.size_gib)
    sizes = [n] if args.baseline_full else sorted({entries(g) for g in args.baseline_gib})
    if min([n, *sizes]) < 1 << 24 or args.rounds < 1 or len(sizes) not in (1, 2):
        ap.error("table sizes must be at least 0.25 GiB (the guest must fit) and distinct, --rounds at least 1")
    signal.signal(signal.SIGTERM, _terminate)
    work = Path(tempfile.mkdtemp(prefix="snp-bench-rmpdump-"))
    runs: dict[str, list[dict]] = {k: [] for k in RECORD_WAYS}
    base: dict[int, list[float]] = {s: [] for s in sizes}
    warm: dict[str, dict] = {}
    try:
        lays = {}
        for size in sorted({n, *sizes}):
            lays[size] = layout(size, args.guest_2m_share)
            note(f"writing a {size * ENTRY_SIZE / GIB:.2f} GiB table ({size} entries)")
            write_table(work / f"table-{size}.bin", size, lays[size])
        note("warm-up: one untimed run of each way")
        for kind in RECORD_WAYS:
            warm[kind] = run_way(kind, work, n, lays[n], args.compress)
        for size in sizes:
            warm[f"whole-{size}"] = run_way("whole", work, size, lays[size], True)
        for kind, r in warm.items():
            if not r["verdict"].ok:
                note(f"rmp_dump: {kind}: unexpected verdict {r['verdict'].summary()}")
                return 3
            note(f"{kind}: {r['verdict'].summary()}")
        for r in range(args.rounds):
            for kind in RECORD_WAYS if r % 2 == 0 else RECORD_WAYS[::-1]:
                runs[kind].append(run_way(kind, work, n, lays[n], args.compress))
            for size in sizes:
                base[size].append(run_way("whole", work, size, lays[size], True)["wall"])
            note(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {runs[k][-1]['wall']:.3f} s" for k in RECORD_WAYS)
                 + ", whole " + ", ".join(f"{s * ENTRY_SIZE / GIB:g} GiB {base[s][-1]:.2f} s" for s in sizes))
    except KeyboardInterrupt:
        note("rmp_dump: interrupted; cleaned up")
        return 130
    except (OSError, RuntimeError, ValueError, HarnessError) as e:
        note(f"rmp_dump: failed: {type(e).__name__}: {e}")
        return 3
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    bmed = {s: statistics.median(v) for s, v in base.items()}
    if len(sizes) == 2:     # a + b * size through the two points, at the full size
        s0, s1 = sizes
        baseline = bmed[s0] + (bmed[s1] - bmed[s0]) / (s1 - s0) * (n - s0)
    else:
        baseline = bmed[sizes[0]]
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("wall", "emulator", "scan")} for k, v in runs.items()}
    harness = {k: statistics.median(r["wall"] - r["emulator"] for r in v) for k, v in runs.items()}
    result = {
        "bench": "rmp_dump",
        "rmp_gib": round(n * ENTRY_SIZE / GIB, 3),
        "guest_gib": GUEST_BYTES / GIB,
        "guest_4k_entries": int(lays[n]["pfn4k"].size),
        "guest_2m_entries": int(lays[n]["head2m"].size),
        "baseline_whole_s": round(baseline, 3),
        "baseline": "measured" if len(sizes) == 1 else
        "extrapolated from " + " and ".join(f"{s * ENTRY_SIZE / GIB:g} GiB ({bmed[s]:.3f} s)" for s in sizes),
        **{f"{k}_s": round(med[k]["wall"], 3) for k in RECORD_WAYS},
        **{f"{k}_vs_whole": round(med[k]["wall"] / baseline, 4) for k in RECORD_WAYS},
        **{f"{k}_harness_s": round(harness[k], 3) for k in RECORD_WAYS},
        **{f"{k}_emulated_scan_s": round(med[k]["scan"], 3) for k in RECORD_WAYS},
        **{f"{k}_fetched_mib": round(warm[k]["bytes"] / 2**20, 2) for k in RECORD_WAYS},
        "compress": args.compress,
        "rounds": args.rounds,
    }
    result["goal_met"] = max(result["guest_s"], result["teardown_s"]) <= 1.0
    result["goal_met_harness_side"] = max(harness["guest"], harness["teardown"]) <= 1.0
    print(f"{'whole (baseline)':<17} {baseline:8.3f} s per test ({result['baseline']})")
    for k in RECORD_WAYS:
        m = med[k]
        print(f"{k:<17} {m['wall']:8.3f} s per test = {harness[k]:.3f} s harness + {m['emulator']:.3f} s emulator "
              f"(of it {m['scan']:.3f} s scan); {m['wall'] / baseline:.4f}x baseline; "
              f"{warm[k]['bytes'] / 2**20:.1f} MiB fetched")
    print(f"record path per test (guest: running / teardown) {result['guest_s']:.3f} / {result['teardown_s']:.3f} s "
          f"(goal <= 1 s; harness side {harness['guest']:.3f} / {harness['teardown']:.3f} s)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
