"""RMP analysis: check() over the RMP dump of a 1 TiB host, against numpy.sum over the same map.

A synthetic 4 GiB dump (2**28 16-byte entries, one per 4K PFN of a 1 TiB host) is written to a
temporary file, chunk by chunk (never more than 64 MiB of it in memory). Its content is mostly
unassigned entries, plus:
  - the RMP's own pages (dump size / 4K, contiguous), assigned to ASID 0 and immutable, as
    SNP_INIT leaves them, and 16 runs of 1024 plus 4096 scattered ASID-0 firmware pages;
  - a guest (ASID 5, 4 GiB, less on small hosts): half in 4K entries at random PFNs in a window
    four times its size, with GFNs in random order (GPA [0, 2 GiB)); half in 2M entries at random
    2M-aligned PFNs (GPA [4 GiB, 6 GiB)), of which every other one also has its 511 sub-entries
    filled in (assigned, same ASID, consecutive GPAs) to exercise the shadowing path;
  - 4 VMSA pages at INITIAL_VMSA_GPA.
The expectation is exactly that layout (private [0, 2G) and [4G, 6G), shared in between), so the
verdict must be ok with known counts; the run checks it (exit 3 otherwise).

The page cache is warmed by one untimed pass of each way; then rounds alternate the order:
  sum           np.memmap(path, uint64, "r").sum(): one pass over every byte of a fresh mapping,
                faults and munmap included. This is the baseline.
  check         check(load_dump(path), exp) at its default chunk of 2**22 entries (64 MiB).
  check_nodrop  the same on a copy-on-write ("c") memmap, where check() does not MADV_DONTNEED
                the chunks it has read. Informational: what dropping costs or saves.

  vs_numpy_sum        sum median / check median (= check throughput over sum's). Goal: >= 0.5.
  peak_rss_over_dump  peak RSS of one check() over the dump size. Goal: <= 1.5. Measured in a
                      child process that runs only that call, as VmHWM from /proc/self/status
                      (RssAnon + RssFile + RssShmem high-water mark), which, unlike ru_maxrss of
                      RUSAGE_CHILDREN, is per child. The same is reported for the baseline and for
                      check_nodrop, with each child's RSS after its imports (before any work).

Why the chunks are dropped: every page of a file mapping that is touched counts in RssFile until
it is unmapped, so a plain pass leaves the whole dump resident in the process (about 1.0x the
dump; see sum and check_nodrop). The pages are clean page cache, so this is accounting more than
memory, but it is what RSS limits and the goal see. check() calls madvise(MADV_DONTNEED) on each
chunk of a shared or read-only mapping once read: the PTEs go, the page cache stays, and RSS
stays near one chunk. On this VM that is no slower, since the final munmap then has little to
tear down.

    .venv/bin/python bench/rmp_analysis.py [--size-gib 4] [--rounds 5] [--keep]

The temporary file is deleted at the end, on Ctrl-C or SIGTERM too, unless --keep. Exit codes: 0
measured (even if a goal is missed), 3 the verdict or a child failed, 130 on Ctrl-C. The last
stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.evidence.rmp import (ENTRY_SIZE, PMD_PAGES, Expectation, RmpDump, check,  # noqa: E402
                                  encode_entry, load_dump)

ASID = 5
GIB = 1 << 30
GEN_CHUNK = 1 << 22
INITIAL_VMSA_GPA = 0xFFFFFFFFF000
LO_FW = encode_entry(assigned=True, immutable=True)[0]
LO_4K = encode_entry(assigned=True, asid=ASID, validated=True)[0]
LO_2M = encode_entry(assigned=True, pagesize_2m=True, asid=ASID, validated=True)[0]
LO_VMSA = encode_entry(assigned=True, immutable=True, asid=ASID, vmsa=True, validated=True,
                       gpa=INITIAL_VMSA_GPA)[0]


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def entries_for(size_gib: float) -> int:
    return int(size_gib * GIB) // ENTRY_SIZE // PMD_PAGES * PMD_PAGES


def guest_pages(n: int) -> tuple[int, int]:
    """(4K entries, 2M entries) of the guest: 4 GiB, or 1/16 of the host, half in each size."""
    half = min(4 * GIB, n * 4096 // 16) // 2
    return half // 4096, half // (2 << 20)


def expectation(n: int) -> Expectation:
    n4k, n2m = guest_pages(n)
    return Expectation(ASID, private_gpas=((0, n4k * 4096), (4 * GIB, 4 * GIB + n2m * (2 << 20))),
                       shared_gpas=((n4k * 4096, 4 * GIB),))


def layout(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n4k, n2m = guest_pages(n)
    rmp_pages = n * ENTRY_SIZE // 4096
    w4k = n // 8 + rng.choice(4 * n4k, n4k, replace=False)       # guest 4K: PFN window at n/8
    order = np.argsort(w4k)
    regions = n // 2 // PMD_PAGES + np.sort(rng.choice(4 * n2m, n2m, replace=False))   # 2M: at n/2
    runs = rng.choice(n // 16 // 1024, 16, replace=False) * 1024                     # low memory
    return {
        "fw": np.unique(np.concatenate([(runs[:, None] + np.arange(1024)).ravel(),
                                        n // 16 + rng.choice(n // 16, 4096, replace=False)])),
        "rmp": np.array([n - rmp_pages - PMD_PAGES, n - PMD_PAGES]),
        "pfn4k": w4k[order], "gfn4k": rng.permutation(n4k)[order],
        "head2m": regions * PMD_PAGES, "gfn2m": (4 * GIB >> 12) + np.arange(n2m) * PMD_PAGES,
        "vmsa": n // 4 + np.arange(4) * 7,
    }


def write_dump(path: Path, n: int, lay: dict[str, np.ndarray], shadowed: bool = True) -> None:
    """The raw table; `shadowed`: every other 2M region also holds stale 4K sub-entries."""
    def within(key: str, a: int, b: int) -> slice:     # the (sorted) PFNs of lay[key] in [a, b)
        return slice(*np.searchsorted(lay[key], [a, b]))

    with open(path, "wb") as f:
        for a in range(0, n, GEN_CHUNK):
            b = min(n, a + GEN_CHUNK)
            raw = np.zeros((b - a, 2), np.uint64)
            lo = raw[:, 0]
            r0, r1 = (int(x) for x in np.clip(lay["rmp"], a, b))
            lo[r0 - a:r1 - a] = LO_FW
            lo[lay["fw"][within("fw", a, b)] - a] = LO_FW
            lo[lay["vmsa"][within("vmsa", a, b)] - a] = LO_VMSA
            s = within("pfn4k", a, b)
            lo[lay["pfn4k"][s] - a] = LO_4K | (lay["gfn4k"][s].astype(np.uint64) << 12)
            s = within("head2m", a, b)
            heads, gfns = lay["head2m"][s] - a, lay["gfn2m"][s].astype(np.uint64)
            lo[heads] = LO_2M | (gfns << 12)
            filled = ((lay["head2m"][s] // PMD_PAGES) % 2 == 0) & shadowed  # every other region: sub-entries
            sub = np.arange(1, PMD_PAGES)
            lo[(heads[filled, None] + sub).ravel()] = (LO_4K | ((gfns[filled, None] + sub.astype(np.uint64)) << 12)
                                                       ).ravel()
            f.write(memoryview(raw).cast("B"))


def expected_counts(n: int, lay: dict[str, np.ndarray]) -> dict[str, int]:
    filled = int(((lay["head2m"] // PMD_PAGES) % 2 == 0).sum())
    asid = lay["pfn4k"].size + lay["head2m"].size + lay["vmsa"].size
    return {"entries": n, "assigned_asid": asid, "2m_entries": lay["head2m"].size, "vmsa": lay["vmsa"].size,
            "shadowed": filled * (PMD_PAGES - 1),
            "assigned": asid + lay["fw"].size + int(lay["rmp"][1] - lay["rmp"][0])}


# --- the ways -------------------------------------------------------------------------------------

def way_sum(path: Path, n: int) -> object:
    m = np.memmap(path, dtype="<u8", mode="r")
    total = m.sum()
    del m                       # munmap inside the timing, as check() does on return
    return int(total)


def way_check(path: Path, n: int) -> object:
    return check(load_dump(path), expectation(n))


def way_check_nodrop(path: Path, n: int) -> object:
    return check(RmpDump(0, np.memmap(path, dtype="<u8", mode="c", shape=(n, 2))), expectation(n))


WAYS = {"sum": way_sum, "check": way_check, "check_nodrop": way_check_nodrop}


def status_kib() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(rest.split()[0])
    return fields


def child(kind: str, path: Path, n: int) -> int:
    before = status_kib()
    start = time.perf_counter()
    WAYS[kind](path, n)
    elapsed = time.perf_counter() - start
    print(json.dumps({"before_kib": before, "after_kib": status_kib(), "elapsed_s": elapsed}))
    return 0


def child_rss(kind: str, path: Path, n: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, "--path", str(path), "--entries", str(n)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError(f"child {kind} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=4.0, help="dump size (default 4: a 1 TiB host)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds of each way (median; default 5)")
    ap.add_argument("--keep", action="store_true", help="keep the dump file")
    ap.add_argument("--child", choices=sorted(WAYS), help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--entries", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.path, args.entries)
    n = entries_for(args.size_gib)
    if n < 1 << 20 or args.rounds < 1:
        ap.error("--size-gib must be at least 1/64 and --rounds at least 1")
    signal.signal(signal.SIGTERM, _terminate)
    work = Path(tempfile.mkdtemp(prefix="snp-bench-rmp-"))
    path = work / "rmp.bin"
    dump_bytes = n * ENTRY_SIZE
    try:
        began = time.monotonic()
        lay = layout(n)
        note(f"writing {dump_bytes / GIB:.2f} GiB synthetic dump ({n} entries) to {path}")
        write_dump(path, n, lay)
        note(f"written in {time.monotonic() - began:.1f} s; warming the page cache (one untimed pass of each way)")
        want = expected_counts(n, lay)
        for kind in WAYS:
            out = WAYS[kind](path, n)
            if kind != "sum":
                got = {k: out.counts[k] for k in want}
                if not out.ok or got != want:
                    note(f"rmp_analysis: {kind}: unexpected verdict {out.summary()}; counts {got}, expected {want}")
                    return 3
        note(f"verdict: {out.summary()}")
        times: dict[str, list[float]] = {k: [] for k in WAYS}
        order = list(WAYS)
        for r in range(args.rounds):
            for kind in order if r % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                WAYS[kind](path, n)
                times[kind].append(time.perf_counter() - start)
            note(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {times[k][-1]:.3f} s" for k in WAYS))
        note("peak RSS: one child process per way (VmHWM)")
        rss = {kind: child_rss(kind, path, n) for kind in WAYS}
    except KeyboardInterrupt:
        note("rmp_analysis: interrupted; cleaned up")
        return 130
    except (OSError, RuntimeError, subprocess.SubprocessError, json.JSONDecodeError) as e:
        note(f"rmp_analysis: failed: {e}")
        return 3
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    hwm = {k: rss[k]["after_kib"]["VmHWM"] * 1024 for k in WAYS}
    result = {
        "bench": "rmp_analysis",
        "vs_numpy_sum": round(med["sum"] / med["check"], 3),
        "peak_rss_over_dump": round(hwm["check"] / dump_bytes, 3),
        "dump_gib": round(dump_bytes / GIB, 3),
        "sum_s": round(med["sum"], 3),
        "check_s": round(med["check"], 3),
        "check_nodrop_s": round(med["check_nodrop"], 3),
        "sum_gib_per_s": round(dump_bytes / GIB / med["sum"], 2),
        "check_gib_per_s": round(dump_bytes / GIB / med["check"], 2),
        "sum_peak_rss_over_dump": round(hwm["sum"] / dump_bytes, 3),
        "nodrop_peak_rss_over_dump": round(hwm["check_nodrop"] / dump_bytes, 3),
        "check_peak_rss_mib": round(hwm["check"] / 2**20, 1),
        "child_start_rss_mib": round(rss["check"]["before_kib"]["VmRSS"] / 1024, 1),
        "rss_measure": "VmHWM of a child process",
        "rounds": args.rounds,
    }
    result["goals_met"] = result["vs_numpy_sum"] >= 0.5 and result["peak_rss_over_dump"] <= 1.5
    for k in WAYS:
        print(f"{k:<13} {med[k]:7.3f} s median of {args.rounds}  ({dump_bytes / GIB / med[k]:5.2f} GiB/s)  "
              f"peak RSS {hwm[k] / 2**20:8.1f} MiB ({hwm[k] / dump_bytes:.3f}x dump)")
    print(f"check / numpy.sum throughput {result['vs_numpy_sum']} (goal >= 0.5); "
          f"check peak RSS / dump {result['peak_rss_over_dump']} (goal <= 1.5)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
