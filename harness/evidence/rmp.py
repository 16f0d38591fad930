"""RMP dumps checked: the invariants a test expects of the entries (formats: rmp_format.py, whose
names are re-exported here).

As in `__snp_lookup_rmpentry`, the entry of a 2M-aligned PFN decides the size of its whole 2M region.
When that entry is assigned with pagesize=1 it is authoritative for all 512 PFNs: the other 511
entries of the region are "shadowed" and ignored by check(), whatever they hold.

VMSA pages belong to the guest's ASID but are not guest memory: KVM makes every vCPU's VMSA private
at the same INITIAL_VMSA_GPA (0xFFFFFFFFF000). They count for ownership and teardown, and are left
out of the GPA invariants (unexpected_gpa, duplicate_gpa, coverage, not_validated).

Pure: no printing and no I/O, except load_dump's memory map or file read. Only load_dump (a dense
file size that is not whole entries, an unknown format) and encode_entry (a value the fields cannot
hold) raise; records_from_bytes() and check() never do.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from harness.evidence.rmp_format import (  # noqa: F401  (re-exported: callers use harness.evidence.rmp)
    ENTRY_SIZE, FAM19H_RAW, FORMATS, INITIAL_VMSA_GPA, INVARIANTS, PMD_PAGES, RECORD_SIZE, RMPREAD,
    STATE_NAMES, TRAILER_PFN, VIOLATIONS_KEPT, _ASID_MASK, _GFN_LIMIT, _PFN_LIMIT, Entries, RmpDump, _fields,
    _is_2m, _row_pfns, _u64, decode, dump_from_bytes, encode_entry, load_dump, merge_spans, records_from_bytes)

# Expectation.asid for a teardown check when the guest's ASID is unknown to userspace: every
# non-zero ASID counts as the guest's (the host ran only the test's guests during its lease).
ANY_ASID = -1


@dataclass(frozen=True)
class Expectation:
    asid: int                                        # or ANY_ASID
    private_gpas: tuple[tuple[int, int], ...] = ()   # [start, end) bytes: assigned to asid at that GPA, validated
    shared_gpas: tuple[tuple[int, int], ...] = ()    # [start, end) bytes: not assigned to asid
    torn_down: bool = False                          # nothing may stay assigned to asid ...
    leaked_pfns: tuple[tuple[int, int], ...] = ()    # ... except in these [start, end) PFN ranges
    exclusive: bool = True                           # no other non-zero ASID may own entries
    # Where the ASID's entries may point ([start, end) bytes; empty: private_gpas). A running guest's
    # RAM: private pages anywhere in it are fine, but none may claim a GPA outside it.
    allowed_gpas: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Violation:
    invariant: str          # one of INVARIANTS
    pfn: int                # -1 when no entry is involved (private_missing)
    gpa: int | None
    asid: int | None
    detail: str


@dataclass(frozen=True)
class RmpVerdict:
    ok: bool
    violations: tuple[Violation, ...]   # the first VIOLATIONS_KEPT per invariant, in INVARIANTS order
    counts: dict[str, int]              # every invariant, plus entries (PFNs covered), assigned, assigned_asid,
    #                                     2m_entries, shadowed (sub-entries of 2M entries), vmsa (the ASID's VMSA
    #                                     pages) and unreadable (PFNs without an entry)
    asid: int | None = None
    notes: tuple[str, ...] = ()         # what could not be checked, and the dump's own problems

    def summary(self) -> str:
        c = self.counts
        if self.ok:
            owner = "any guest ASID" if self.asid == ANY_ASID else f"ASID {self.asid}"
            return (f"ok: {c['entries']} entries, {c['assigned_asid']} assigned to {owner} "
                    f"({c['2m_entries']} 2M)")
        total = sum(c[inv] for inv in INVARIANTS)
        parts = ", ".join(f"{inv} x{c[inv]}" for inv in INVARIANTS if c[inv])
        return f"{total} violation{'s' * (total != 1)}: {parts}"

    def notes_text(self) -> str:
        return "; ".join(self.notes)


Intervals = tuple[np.ndarray, np.ndarray]   # sorted [start, end) page (or PFN) numbers, int64


def _ranges(pairs: Iterable[tuple[int, int]], shift: int, limit: int) -> Intervals:
    """Expectation ranges (bytes or PFNs) -> merged, disjoint units; junk clipped, never raised on."""
    unit = 1 << shift
    merged = merge_spans((max(0, int(s)) >> shift, min(limit, -(-int(e) // unit))) for s, e in pairs)
    arr = np.array(merged, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0].copy(), arr[:, 1].copy()


def _inside(r: Intervals, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """[s, e) lies wholly in one interval of r."""
    j = np.searchsorted(r[0], s, side="right") - 1
    return (j >= 0) & (e <= r[1][np.clip(j, 0, None)]) if r[0].size else np.zeros(s.shape, bool)


def _overlaps(r: Intervals, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    j = np.searchsorted(r[1], s, side="right")     # the first interval ending after s
    if not r[0].size:
        return np.zeros(s.shape, bool)
    return (j < r[0].size) & (r[0][np.clip(j, 0, r[0].size - 1)] < e)


def _overlay(a: Intervals, b: Intervals, code: int) -> Intervals:
    """Segments in a only (code 1), b only (2) or both (3); a and b each sorted and disjoint. A sweep."""
    pos = np.concatenate([a[0], a[1], b[0], b[1]])
    delta = np.concatenate([np.ones_like(a[0]), -np.ones_like(a[1]), np.full_like(b[0], 2), np.full_like(b[1], -2)])
    order = np.argsort(pos, kind="stable")
    pos, depth = pos[order], np.cumsum(delta[order])
    keep = (depth[:-1] == code) & (pos[1:] > pos[:-1])
    return pos[:-1][keep], pos[1:][keep]


def _first_pages(r: Intervals, k: int) -> np.ndarray:
    lengths = r[1] - r[0]
    m = int(np.searchsorted(np.cumsum(lengths), k)) + 1
    pages = [np.arange(s, min(e, s + k)) for s, e in zip(r[0][:m].tolist(), r[1][:m].tolist())]
    return np.concatenate(pages)[:k] if pages else np.zeros(0, np.int64)


class _Acc:
    """Violation counts (exact) and records (the first VIOLATIONS_KEPT per invariant)."""

    def __init__(self) -> None:
        extra = ("entries", "assigned", "assigned_asid", "2m_entries", "shadowed", "vmsa", "unreadable")
        self.counts = dict.fromkeys((*INVARIANTS, *extra), 0)
        self.kept: dict[str, list[Violation]] = {inv: [] for inv in INVARIANTS}

    def add(self, inv: str, pfn: np.ndarray, gpa: np.ndarray | None, asid: np.ndarray | int | None,
            detail: Callable[[int], str], count: int | None = None) -> None:
        self.counts[inv] += len(pfn) if count is None else count
        kept = self.kept[inv]
        for i in range(min(VIOLATIONS_KEPT - len(kept), len(pfn))):
            a = asid if asid is None or isinstance(asid, int) else int(asid[i])
            kept.append(Violation(inv, int(pfn[i]), None if gpa is None else int(gpa[i]), a, detail(i)))


@dataclass
class _Analysis:
    acc: _Acc
    mine: dict[str, np.ndarray]         # the ASID's authoritative entries: pfn, gfn, pages, validated, vmsa, mis, stale
    bad: dict[str, Intervals]           # per invariant, the GFN intervals it concerns (uncapped; for gpa_states)


def _dropper(raw: np.ndarray) -> Callable[[int, int], None]:
    """MADV_DONTNEED each chunk once read, so a 4 GiB dump does not stay mapped in RSS.

    Only on shared or read-only file mappings ('r', 'r+'): there pages just refault from the page
    cache. On a copy-on-write mapping ('c') it would throw away the caller's changes.
    """
    mm = raw.base
    while mm is not None and not isinstance(mm, mmap.mmap):
        mm = getattr(mm, "base", None)
    if (not isinstance(raw, np.memmap) or raw.mode not in ("r", "r+") or mm is None
            or not raw.flags.c_contiguous or raw.shape[1:] != (2,) or raw.itemsize != 8):
        return lambda a, b: None
    try:
        first = raw.ctypes.data - np.frombuffer(mm, np.uint8).ctypes.data
    except (ValueError, TypeError):     # a closed map
        return lambda a, b: None
    size, page = len(mm), mmap.PAGESIZE

    def drop(a: int, b: int) -> None:
        start = (first + a * ENTRY_SIZE) // page * page
        end = min(size, first + b * ENTRY_SIZE)
        if end > start:
            try:
                mm.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError):   # a hint only
                pass
    return drop


def _analyse(dump: RmpDump, exp: Expectation, chunk_entries: int) -> _Analysis:
    arr = _u64(dump)
    n = arr.shape[0]
    word = 1 if dump.format == RMPREAD else 0   # the word whose bit 0 is "assigned"
    # That word's low byte, strided: 1/16 of the bytes to mask, and a 0/1 byte is a valid bool for flatnonzero.
    flag = arr.view(np.uint8)[:, 8 * word] if arr.flags.c_contiguous else None
    asid_max = (1 << 32) - 1 if dump.format == RMPREAD else _ASID_MASK
    asid = exp.asid if 0 <= exp.asid <= asid_max else -1    # out of range: owns nothing
    leaked = _ranges(exp.leaked_pfns, 0, _PFN_LIMIT)
    acc, drop, step = _Acc(), _dropper(dump.raw), max(1, int(chunk_entries))
    acc.counts["entries"] = dump.scanned if dump.scanned is not None else n
    acc.counts["unreadable"] = dump.unreadable
    heads = None
    if dump.pfns is not None:           # a sparse dump's 2M heads, once: (PFNs, rows)
        aligned = np.flatnonzero(dump.pfns % PMD_PAGES == 0)
        rows = aligned[_is_2m(arr, aligned, dump.format)]
        heads = (dump.pfns[rows], rows)
    parts: list[tuple[np.ndarray, ...]] = []
    for a in range(0, n, step):
        b = min(n, a + step)
        sel = np.flatnonzero((flag[a:b] & 1).view(bool) if flag is not None else arr[a:b, word] & 1)
        if sel.size:
            parts.append(_chunk(acc, arr, sel + a, dump, exp, asid, leaked, heads))
        drop(a, b)
    names = ("pfn", "gfn", "pages", "validated", "vmsa", "mis", "stale")
    mine = {k: np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64)
            for i, k in enumerate(names)}
    for k in ("validated", "vmsa", "mis", "stale"):
        mine[k] = mine[k].astype(bool)
    end = mine["gfn"] + mine["pages"]
    bad = {"2m_alignment": (mine["gfn"][mine["mis"]], end[mine["mis"]])}
    if exp.torn_down:
        bad["assigned_after_teardown"] = (mine["gfn"][mine["stale"]], end[mine["stale"]])
    else:
        _gpa_checks(acc, mine, exp, bad)
    return _Analysis(acc, mine, bad)


def _chunk(acc: _Acc, arr: np.ndarray, idx: np.ndarray, dump: RmpDump, exp: Expectation, asid: int,
           leaked: Intervals, heads: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, ...]:
    """One chunk's entries with the assigned bit set (row indices): the per-entry invariants; returns the ASID's."""
    assigned, big, _, gfn, e_asid, vmsa, validated = _fields(arr, idx, dump.format)
    acc.counts["unreadable"] += int(idx.size - assigned.sum())     # all-0xff entries have every bit set
    idx, big, gfn, e_asid, vmsa, validated = (x[assigned] for x in (idx, big, gfn, e_asid, vmsa, validated))
    pfn = _row_pfns(dump, idx)
    # The region's head entry decides its size. A head before a dense dump's start is unknown: no
    # shadowing. In a sparse dump a missing head is unassigned (or outside the ranges: unknown too).
    head_pfn = pfn & -PMD_PAGES
    if heads is None:
        head = head_pfn - dump.start_pfn
        known = head >= 0
        head_2m = np.zeros(idx.size, bool)
        head_2m[known] = _is_2m(arr, head[known], dump.format)
    else:                               # the dump's 2M heads: (PFNs, rows), usually few
        j = np.searchsorted(heads[0], head_pfn)
        head_2m = j < heads[0].size
        head_2m[head_2m] = heads[0][j[head_2m]] == head_pfn[head_2m]
        head = np.full(idx.size, -1, np.int64)
        head[head_2m] = heads[1][j[head_2m]]
    shadowed = head_2m & (head != idx)
    acc.counts["shadowed"] += int(shadowed.sum())
    keep = ~shadowed
    pfn, big, gfn, e_asid, vmsa, validated = (x[keep] for x in (pfn, big, gfn, e_asid, vmsa, validated))
    at_head = (pfn % PMD_PAGES) == 0
    mis = big & ~(at_head & (gfn % PMD_PAGES == 0))
    acc.counts["assigned"] += pfn.size
    m = np.flatnonzero(mis)
    acc.add("2m_alignment", pfn[m], gfn[m] << 12, e_asid[m], lambda i: (
        f"2M entry at PFN {pfn[m[i]]:#x} GPA {gfn[m[i]] << 12:#x}: "
        + " and ".join(w for w, ok in (("PFN", at_head[m[i]]), ("GPA", gfn[m[i]] % PMD_PAGES == 0)) if not ok)
        + " not 2M-aligned"))
    own = (e_asid != 0) if exp.asid == ANY_ASID else (e_asid == asid)
    if exp.exclusive:
        f = np.flatnonzero((e_asid != 0) & ~own)
        acc.add("foreign_asid", pfn[f], gfn[f] << 12, e_asid[f], lambda i: (
            f"PFN {pfn[f[i]]:#x} assigned to ASID {e_asid[f[i]]}, expected only ASID {exp.asid} (or 0)"))
    o = np.flatnonzero(own)
    acc.counts["assigned_asid"] += o.size
    acc.counts["2m_entries"] += int(big[o].sum())
    pfn, gfn, vmsa, validated = pfn[o], gfn[o], vmsa[o], validated[o]
    # Only a 2M entry the lookup honours (at a 2M-aligned PFN) claims 512 GPAs; a misplaced one claims its own.
    pages = np.where(big[o] & at_head[o], PMD_PAGES, 1).astype(np.int64)
    stale = np.zeros(o.size, bool)
    if exp.torn_down:
        stale = ~_inside(leaked, pfn, pfn + pages)
        s = np.flatnonzero(stale)
        acc.add("assigned_after_teardown", pfn[s], gfn[s] << 12, exp.asid, lambda i: (
            f"PFN {pfn[s[i]]:#x} (GPA {gfn[s[i]] << 12:#x}) still assigned to ASID {exp.asid} after teardown,"
            " outside the leaked ranges"))
    acc.counts["vmsa"] += int(vmsa.sum())
    return pfn, gfn, pages, validated, vmsa, mis[o], stale


def _gpa_checks(acc: _Acc, mine: dict[str, np.ndarray], exp: Expectation, bad: dict[str, Intervals]) -> None:
    """GPA-level invariants, on the (small) set of the ASID's entries, by interval arithmetic."""
    asid, memory = exp.asid, ~mine["vmsa"]
    pfn, gfn, pages, validated = (mine[k][memory] for k in ("pfn", "gfn", "pages", "validated"))
    end = gfn + pages
    private, shared = _ranges(exp.private_gpas, 12, _GFN_LIMIT), _ranges(exp.shared_gpas, 12, _GFN_LIMIT)
    allowed = _ranges(exp.allowed_gpas, 12, _GFN_LIMIT) if exp.allowed_gpas else private

    u = np.flatnonzero(~_inside(allowed, gfn, end))
    bad["unexpected_gpa"] = (gfn[u], end[u])
    acc.add("unexpected_gpa", pfn[u], gfn[u] << 12, asid, lambda i: (
        f"ASID {asid} maps GPA {gfn[u[i]] << 12:#x}-{end[u[i]] << 12:#x} (PFN {pfn[u[i]]:#x}) outside the "
        + ("allowed ranges" if exp.allowed_gpas else "expected private ranges")))

    # Sorted by GPA, an entry overlaps an earlier one iff it starts before the furthest end so far.
    # Ties broken by PFN order; unique keys let the fast (unstable) argsort do it, where they fit in 63 bits.
    bits = max(1, int(gfn.size).bit_length())
    top = int(gfn.max()).bit_length() if gfn.size else 0     # 39 bits raw; up to 52 from RMPREAD's GPA
    order = np.argsort((gfn << bits) | np.arange(gfn.size)) if top + bits <= 63 else np.lexsort((pfn, gfn))
    s_gfn, s_end = gfn[order], end[order]
    reach = np.maximum.accumulate(s_end) if order.size else s_end
    reacher = np.maximum.accumulate(np.where(s_end == reach, np.arange(order.size), 0)) if order.size else order
    d = np.flatnonzero(s_gfn[1:] < reach[:-1]) + 1
    other = order[reacher[d - 1]]
    bad["duplicate_gpa"] = (s_gfn[d], np.minimum(s_end[d], reach[d - 1]))
    acc.add("duplicate_gpa", pfn[order[d]], s_gfn[d] << 12, asid, lambda i: (
        f"GPA {s_gfn[d[i]] << 12:#x} of PFN {pfn[order[d[i]]]:#x} also claimed by PFN {pfn[other[i]]:#x}"))

    # The union of the claims: a new run starts where an entry begins past the furthest end so far.
    starts = np.flatnonzero(np.concatenate([[True], s_gfn[1:] > reach[:-1]])) if order.size else order
    ends = np.append(starts[1:], order.size)[:starts.size] - 1
    claimed = (s_gfn[starts], reach[ends])

    gaps = _overlay(private, claimed, 1)
    bad["private_missing"] = gaps
    g = _first_pages(gaps, VIOLATIONS_KEPT)
    acc.add("private_missing", np.full(g.size, -1), g << 12, asid, lambda i: (
        f"GPA {g[i] << 12:#x} expected private to ASID {asid}, but no entry of that ASID maps it"),
        count=int((gaps[1] - gaps[0]).sum()))

    hits = _overlay(shared, claimed, 3)
    bad["shared_assigned"] = hits
    h = _first_pages(hits, VIOLATIONS_KEPT)
    by = order[reacher[np.searchsorted(s_gfn, h, side="right") - 1]] if h.size else h   # the entry reaching h
    hpfn = pfn[by] + (h - gfn[by]) if h.size else h
    acc.add("shared_assigned", hpfn, h << 12, asid, lambda i: (
        f"GPA {h[i] << 12:#x} expected shared, but PFN {hpfn[i]:#x} assigns it to ASID {asid}"),
        count=int((hits[1] - hits[0]).sum()))

    v = np.flatnonzero(~validated & _overlaps(private, gfn, end))
    bad["not_validated"] = (gfn[v], end[v])
    acc.add("not_validated", pfn[v], gfn[v] << 12, asid, lambda i: (
        f"PFN {pfn[v[i]]:#x} (GPA {gfn[v[i]] << 12:#x}) assigned to ASID {asid} but not validated"))


def check(dump: RmpDump, exp: Expectation, *, chunk_entries: int = 1 << 22) -> RmpVerdict:
    """Check the invariants, reading the dump chunk by chunk (chunk_entries * 16 bytes at a time).

    Per chunk only the assigned entries are decoded. Chunks of a read-only memory map are dropped
    from RSS once read (see _dropper). Never raises on the dump's content.
    """
    acc = _analyse(dump, exp, chunk_entries).acc
    violations = tuple(v for inv in INVARIANTS for v in acc.kept[inv])
    ok = not any(acc.counts[inv] for inv in INVARIANTS)
    notes = dump.problems
    if dump.format == RMPREAD:
        notes += ("not_validated not checked: the rmpread format has no validated bit (VMSA pages are "
                  f"recognised by GPA {INITIAL_VMSA_GPA:#x})",)
    return RmpVerdict(ok=ok, violations=violations, counts=dict(acc.counts), asid=exp.asid, notes=notes)


def gpa_states(dump: RmpDump, exp: Expectation, gpa_start: int, gpa_end: int) -> np.ndarray:
    """int8 per 4K GPA page of [gpa_start, gpa_end) (rounded out to pages): an index into STATE_NAMES."""
    first, last = max(0, gpa_start) >> 12, max(0, -(-gpa_end // 4096))
    out = np.zeros(max(0, last - first), np.int8)
    an = _analyse(dump, exp, 1 << 22)

    def paint(r: Intervals, value: int) -> None:
        s, e = np.clip(r[0] - first, 0, out.size), np.clip(r[1] - first, 0, out.size)
        cover = np.cumsum(np.bincount(s, minlength=out.size + 1) - np.bincount(e, minlength=out.size + 1))
        out[cover[:-1] > 0] = value

    memory = ~an.mine["vmsa"]
    gfn, pages = an.mine["gfn"][memory], an.mine["pages"][memory]
    end, large = gfn + pages, pages == PMD_PAGES
    paint((gfn[~large], end[~large]), 1)
    paint((gfn[large], end[large]), 2)
    for r in an.bad.values():
        paint(r, 3)
    return out
