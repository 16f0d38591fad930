"""RMP entries as the kernel dumps them: the two formats, dense and sparse dumps, bulk decoding.


An entry is 16 bytes (two little-endian u64 words, w0 and w1) in one of two formats; the kernel's
`info` file names the one its dump uses (kernel-patches/instrumentation/README.md):
  - "fam19h-raw": the raw in-memory entry of PPR Family 19h (6.12's `struct rmpentry`, 6.14+'s
    `struct rmpentry_raw`). w0 holds assigned (bit 0), pagesize (1: 2M), immutable, 9 reserved
    bits, a 39-bit GFN (bits 12-50), a 10-bit ASID (51-60), vmsa, validated; w1 is reserved.
  - "rmpread": RMPREAD's output (6.14+'s `struct rmpentry`, used on CPUs with RMPREAD). w0 is the
    GPA; w1 holds assigned (bit 0), pagesize (bit 8), 2M region status (bit 9), immutable
    (bit 16) and a 32-bit ASID (bits 32-63). It has no validated or VMSA bit: validated is
    taken as set (the not_validated invariant is not checked, and the verdict says so), and VMSA
    pages are recognised by KVM's INITIAL_VMSA_GPA.
An entry of all 0xff bytes is one the kernel could not read (a PFN no RMP segment covers): it is
counted as "unreadable", never as assigned.

A dense dump holds the entries of PFNs [start_pfn, start_pfn + n) in order. A sparse dump holds
(pfn, entry) records of assigned entries only, as the kernel's "assigned" and "guest" (ASID != 0)
modes return them: records_from_bytes() parses that stream, with its trailers, into an RmpDump
with a pfns column. check() only ever looks at assigned entries, so an "assigned" dump gets the
dense dump's verdict; a "guest" one lacks ASID 0's entries, which only 2m_alignment looks at.

Pure: no printing and no I/O, except load_dump's memory map or file read. Only load_dump (a dense
file size that is not whole entries, an unknown format) and encode_entry (a value the fields cannot
hold) raise; records_from_bytes() never does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

ENTRY_SIZE = 16
RECORD_SIZE = 24            # a sparse record: u64 pfn, then the entry
FAM19H_RAW, RMPREAD = "fam19h-raw", "rmpread"
FORMATS = (FAM19H_RAW, RMPREAD)
TRAILER_PFN = (1 << 64) - 1  # a sparse request's last record: PFNs scanned, PFNs unreadable
INITIAL_VMSA_GPA = 0xFFFFFFFFF000
STATE_NAMES = ("shared", "private_4k", "private_2m", "violation")
INVARIANTS = ("2m_alignment", "foreign_asid", "unexpected_gpa", "duplicate_gpa", "private_missing",
              "shared_assigned", "not_validated", "assigned_after_teardown")
PMD_PAGES = 512             # 4K pages (PFNs, GFNs) per 2M region
VIOLATIONS_KEPT = 100       # Violation records kept per invariant; counts are exact
_GFN_MASK = (1 << 39) - 1
_ASID_MASK = (1 << 10) - 1
_GFN_LIMIT = 1 << 51        # GFNs kept (GPA < 2**63): raw entries hold 39 bits, RMPREAD's GPA up to 52 in practice
_PFN_LIMIT = 1 << 62
_ALL_ONES = np.uint64((1 << 64) - 1)
_LE_U64 = np.dtype("<u8")


@dataclass(frozen=True, eq=False)
class RmpDump:
    start_pfn: int
    raw: np.ndarray         # uint64, shape (n, 2): each entry's words w0, w1; may be a np.memmap view
    format: str = FAM19H_RAW
    pfns: np.ndarray | None = None  # sparse: int64, ascending, the PFN of each row; None: dense
    scanned: int | None = None      # sparse: PFNs the kernel scanned for these records
    unreadable: int = 0             # sparse: PFNs of the scanned ones without an entry
    problems: tuple[str, ...] = ()  # what records_from_bytes found wrong in the stream

    @property
    def n(self) -> int:
        return int(self.raw.shape[0])

    @property
    def sparse(self) -> bool:
        return self.pfns is not None


def load_dump(path: str | os.PathLike[str], start_pfn: int = 0, *, fmt: str = FAM19H_RAW,
              sparse: bool = False) -> RmpDump:
    """A dense dump is mapped read-only (nothing is read until used); a sparse one is read and parsed."""
    if fmt not in FORMATS:
        raise ValueError(f"{os.fspath(path)}: unknown RMP entry format {fmt!r} (known: {', '.join(FORMATS)})")
    if sparse:
        with open(path, "rb") as f:
            return records_from_bytes(f.read(), fmt)
    size = os.stat(path).st_size
    if size % ENTRY_SIZE:
        raise ValueError(f"{os.fspath(path)}: size {size} bytes is not a multiple of the {ENTRY_SIZE}-byte "
                         f"RMP entry ({size // ENTRY_SIZE} entries and {size % ENTRY_SIZE} bytes over)")
    if size == 0:           # mmap cannot map an empty file
        return RmpDump(start_pfn, np.zeros((0, 2), _LE_U64), fmt)
    return RmpDump(start_pfn, np.memmap(path, dtype=_LE_U64, mode="r", shape=(size // ENTRY_SIZE, 2)), fmt)


def dump_from_bytes(data: bytes, start_pfn: int = 0, fmt: str = FAM19H_RAW) -> RmpDump:
    """A dense dump over `data` (no copy). A torn trailing entry (len % 16 bytes) is dropped."""
    whole = len(data) // ENTRY_SIZE
    return RmpDump(start_pfn, np.frombuffer(data, dtype=_LE_U64, count=2 * whole).reshape(whole, 2), fmt)


def records_from_bytes(data: bytes, fmt: str = FAM19H_RAW) -> RmpDump:
    """A sparse dump from the "assigned" mode's stream: one or more requests, each ended by a trailer.

    Never raises: a torn record, a request without its trailer (a truncated stream), PFNs out of
    order or repeated, and bogus PFNs are recorded in `problems` (repeats keep their first record).
    """
    problems = []
    whole, torn = divmod(len(data), RECORD_SIZE)
    if torn:
        problems.append(f"{torn} bytes after the last whole {RECORD_SIZE}-byte record")
    arr = np.frombuffer(data, dtype=_LE_U64, count=3 * whole).reshape(whole, 3)
    trailer = arr[:, 0] == np.uint64(TRAILER_PFN)
    tails = arr[trailer]
    if whole and not trailer[-1]:
        problems.append(f"the stream ends without a trailer: a request's records were cut off after "
                        f"PFN {int(arr[-1, 0]):#x}")
    rows = arr[:-1] if trailer[-1:].all() and trailer.sum() == 1 else arr[~trailer]
    bogus = rows[:, 0] >= np.uint64(_PFN_LIMIT)
    if bogus.any():
        problems.append(f"{int(bogus.sum())} records with a PFN >= 2**62 dropped")
        rows = rows[~bogus]
    pfns = rows[:, 0].astype(np.int64)
    if pfns.size > 1 and not (pfns[1:] > pfns[:-1]).all():
        order = np.argsort(pfns, kind="stable")
        keep = np.concatenate([[True], pfns[order][1:] != pfns[order][:-1]])
        problems.append(f"records out of PFN order ({int((~keep).sum())} repeated PFNs dropped)")
        rows, pfns = rows[order][keep], pfns[order][keep]
    return RmpDump(int(pfns[0]) if pfns.size else 0, np.ascontiguousarray(rows[:, 1:]), fmt, pfns,
                   int(tails[:, 1].sum(dtype=np.uint64)), int(tails[:, 2].sum(dtype=np.uint64)), tuple(problems))


@dataclass(frozen=True, eq=False)
class Entries:
    pfn: np.ndarray         # int64
    assigned: np.ndarray    # bool (False for an unreadable entry)
    pagesize_2m: np.ndarray  # bool
    immutable: np.ndarray   # bool
    gpa: np.ndarray         # int64, byte address (GFN << 12)
    asid: np.ndarray        # int64
    vmsa: np.ndarray        # bool (rmpread: GPA == INITIAL_VMSA_GPA)
    validated: np.ndarray   # bool (rmpread: always True, the format has no such bit)
    readable: np.ndarray    # bool: False for an all-0xff entry


def _fields(arr: np.ndarray, rows: np.ndarray, fmt: str) -> tuple[np.ndarray, ...]:
    """(assigned, 2M, immutable, gfn, asid, vmsa, validated) of the entries at `rows` of (n, 2) words."""
    w0 = arr[rows, 0]
    unread = _unreadable(arr, rows, w0)
    if fmt == RMPREAD:
        w1 = arr[rows, 1]
        gfn = ((w0 >> np.uint64(12)) & np.uint64(_GFN_LIMIT - 1)).astype(np.int64)
        return (~unread & (w1 & np.uint64(1)).astype(bool), ((w1 >> np.uint64(8)) & np.uint64(1)).astype(bool),
                ((w1 >> np.uint64(16)) & np.uint64(1)).astype(bool), gfn, (w1 >> np.uint64(32)).astype(np.int64),
                gfn == INITIAL_VMSA_GPA >> 12, np.ones(w0.shape, bool))

    def bit(n: int) -> np.ndarray:
        return ((w0 >> np.uint64(n)) & np.uint64(1)).astype(bool)
    return (~unread & bit(0), bit(1), bit(2), ((w0 >> np.uint64(12)) & np.uint64(_GFN_MASK)).astype(np.int64),
            ((w0 >> np.uint64(51)) & np.uint64(_ASID_MASK)).astype(np.int64), bit(61), bit(62))


def _unreadable(arr: np.ndarray, rows: np.ndarray, w0: np.ndarray) -> np.ndarray:
    """All-0xff entries among `rows` (w0: their first words); the second word is read only where needed."""
    bad = w0 == _ALL_ONES
    if bad.any():
        bad[bad] = arr[rows[bad], 1] == _ALL_ONES
    return bad


def _is_2m(arr: np.ndarray, rows: np.ndarray, fmt: str) -> np.ndarray:
    """Assigned 2M entries among `rows` (the heads of 2M regions)."""
    w0 = arr[rows, 0]
    if fmt == RMPREAD:
        big = (arr[rows, 1] & np.uint64(0x101)) == np.uint64(0x101)
    else:
        big = (w0 & np.uint64(3)) == np.uint64(3)
    return big & ~_unreadable(arr, rows, w0) if big.any() else big


def _u64(dump: RmpDump) -> np.ndarray:
    # A plain ndarray view (no copy for the usual dtype): memmap's subclass hooks cost on every slice.
    return np.asarray(dump.raw, dtype=_LE_U64).reshape(-1, 2)


def _row_pfns(dump: RmpDump, idx: np.ndarray) -> np.ndarray:
    return dump.pfns[idx] if dump.pfns is not None else idx.astype(np.int64) + dump.start_pfn


def decode(dump: RmpDump, only_assigned: bool = False) -> Entries:
    """Every entry's fields as columns (raw: 2M shadowing is not applied here)."""
    w = _u64(dump)
    idx = np.arange(w.shape[0], dtype=np.int64)
    if only_assigned:
        idx = idx[_fields(w, idx, dump.format)[0]]
    assigned, big, immutable, gfn, asid, vmsa, validated = _fields(w, idx, dump.format)
    readable = ~_unreadable(w, idx, w[idx, 0])
    return Entries(pfn=_row_pfns(dump, idx), assigned=assigned, pagesize_2m=big, immutable=immutable,
                   gpa=gfn << 12, asid=asid, vmsa=vmsa, validated=validated, readable=readable)


def encode_entry(*, assigned: bool = False, pagesize_2m: bool = False, immutable: bool = False, gpa: int = 0,
                 asid: int = 0, vmsa: bool = False, validated: bool = False, fmt: str = FAM19H_RAW) -> tuple[int, int]:
    """(w0, w1) of one entry; raises ValueError for a GPA or ASID the fields cannot hold.

    In "rmpread", which has no such bits, vmsa and validated are ignored.
    """
    top, asid_max = (1 << 64, (1 << 32) - 1) if fmt == RMPREAD else (1 << 51, _ASID_MASK)
    if gpa % 4096 or not 0 <= gpa < top:
        raise ValueError(f"gpa {gpa:#x} is not a 4K-aligned address below 2**{top.bit_length() - 1}")
    if not 0 <= asid <= asid_max:
        raise ValueError(f"asid {asid} does not fit in {asid_max.bit_length()} bits")
    if fmt == RMPREAD:
        return gpa, int(assigned) | int(pagesize_2m) << 8 | int(immutable) << 16 | asid << 32
    lo = (int(assigned) | int(pagesize_2m) << 1 | int(immutable) << 2 | (gpa >> 12) << 12 | asid << 51
          | int(vmsa) << 61 | int(validated) << 62)
    return lo, 0


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[list[int]]:
    """[start, end) spans -> sorted, merged, non-empty [start, end] lists."""
    merged: list[list[int]] = []
    for s, e in sorted(spans):
        if e <= s:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return merged
