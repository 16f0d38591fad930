"""Fetch RMP entries from a target through our debugfs file (kernel-patches/instrumentation/).

Interface (see that README): `info` names the entry format and the limits; `dump` takes
"<start_pfn> <count> [all|assigned|guest]" written on an open file, then reads back, on the same
open file, either count 16-byte entries ("all") or 24-byte (pfn, entry) records of the assigned
entries only, ended by a trailer. The record modes scan any range in one request, so what comes
back follows what the guests hold, not the size of the host; their stream comes back on one
command's stdout. fetch_rmp() uses them when the kernel has them and falls back to whole-table
dumps ("all", in bounded steps, gzipped on the target and fetched as a file) for the first
version of the patch, whose `info` has no `modes` line.
"""

from __future__ import annotations

import gzip
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import InfraError
from harness.evidence import rmp
from harness.transport.base import Transport

DEBUGFS_DIR = "/sys/kernel/debug/x86/sev_rmp"
ENTRY_SIZE = 16
RECORD_SIZE = rmp.RECORD_SIZE
MAX_REQUESTS = 64           # record requests per fetch: each is an open/write/cat on the target

# One request: $1 dir, $2 start, $3 count, [$4 mode]. Its own open file, so range and position are its
# own. Without a mode, the request is the two numbers the first version of the patch understands.
_REQUEST = r'''req() {
  exec 3<>"$1/dump" || exit 3
  if [ -n "$4" ]; then printf '%d %d %s\n' "$2" "$3" "$4"; else printf '%d %d\n' "$2" "$3"; fi >&3 || exit 4
  cat <&3 || exit 5
  exec 3<&-
}
'''
# $1 dir, $2 output, $3 first pfn, $4 count, $5 entries per request.
_DUMP = r'''
end=$(($3 + $4)); pfn=$3
while [ "$pfn" -lt "$end" ]; do
  n=$((end - pfn)); [ "$n" -gt "$5" ] && n=$5
  req "$1" "$pfn" "$n"
  pfn=$((pfn + n))
done | gzip -1 > "$2"
'''
# $1 dir, $2 mode, $3 compress (gzip -1 or cat); "start count" lines on stdin; the records on stdout.
_RECORDS = r'''
while read -r s c; do req "$1" "$s" "$c" "$2"; done | $3
'''

_INFO_LINE = re.compile(r"^([a-z_]+):\s*(\S.*?)\s*$")


@dataclass(frozen=True)
class RmpInfo:
    max_pfn: int
    entry_size: int
    max_entries: int
    segmented: bool
    format: str = rmp.FAM19H_RAW
    modes: tuple[str, ...] = ("all",)
    record_size: int = RECORD_SIZE

    def has(self, mode: str) -> bool:
        return mode in self.modes


def parse_rmp_info(text: str) -> RmpInfo | None:
    """The `info` file; None when a field is missing or malformed.

    The first version of the patch (6.12 only) printed `rmptable_max_pfn` and no format or modes:
    its entries are "fam19h-raw" and it has only the "all" mode.
    """
    fields = {m.group(1): m.group(2) for m in map(_INFO_LINE.match, text.splitlines()) if m}
    try:
        return RmpInfo(max_pfn=int(fields.get("max_pfn", fields.get("rmptable_max_pfn")), 0),
                       entry_size=int(fields["entry_size"], 0),
                       max_entries=int(fields["max_entries_per_request"], 0),
                       segmented=fields.get("segmented", "0") != "0",
                       format=fields.get("format", rmp.FAM19H_RAW),
                       modes=tuple(fields.get("modes", "all").split()),
                       record_size=int(fields.get("record_size", str(RECORD_SIZE)), 0))
    except (KeyError, ValueError, TypeError):
        return None


def read_rmp_info(transport: Transport) -> tuple[RmpInfo | None, str | None]:
    """(info, None), or (None, why the RMP cannot be dumped on this target)."""
    r = transport.run(["cat", f"{DEBUGFS_DIR}/info"], timeout=60, check=False)
    if r.ok:
        info = parse_rmp_info(r.stdout)
        if info is None or info.entry_size != ENTRY_SIZE or info.record_size != RECORD_SIZE:
            return None, f"{DEBUGFS_DIR}/info is not in the expected format: {r.stdout[:200]!r}"
        if info.format not in rmp.FORMATS:
            return None, (f"{DEBUGFS_DIR} dumps entries in format {info.format!r}, which this harness cannot "
                          f"decode (known: {', '.join(rmp.FORMATS)})")
        return info, None
    err = r.stderr.strip()
    if "No such device" in err:
        return None, (f"{DEBUGFS_DIR} answers ENODEV: SEV-SNP is not enabled on this host "
                      "(`snp-harness check` says what is missing)")
    if "No such file" in err or "not found" in err.lower():
        return None, (f"no {DEBUGFS_DIR}: the running kernel lacks kernel-patches/instrumentation/ "
                      "(build with [kernel] instrumentation = true and install it) or debugfs is not mounted")
    if "Permission denied" in err:
        return None, f"{DEBUGFS_DIR} is root-only; connect to the host as root"
    return None, f"cannot read {DEBUGFS_DIR}/info: {err or f'exit {r.exit_status}'}"


def _remote_dir(transport: Transport, remote_tmp: str) -> str:
    # A fresh private directory: a fixed name in /tmp, written as root, could be a planted symlink.
    r = transport.run(["mktemp", "-d", f"{remote_tmp.rstrip('/')}/snp-harness-rmp.XXXXXX"], timeout=60)
    return r.stdout.strip()


def collect_rmp_dump(transport: Transport, info: RmpInfo, local: Path, *, start_pfn: int = 0,
                     count: int | None = None, remote_tmp: str = "/tmp", timeout: float = 3600) -> Path:
    """Every entry of [start_pfn, start_pfn + count) into `local` ("all" mode); the whole table by default."""
    if count is None:
        count = info.max_pfn + 1 - start_pfn
    rdir = _remote_dir(transport, remote_tmp)
    remote = f"{rdir}/rmp.gz"
    local.parent.mkdir(parents=True, exist_ok=True)
    packed = local.with_name(local.name + ".gz")
    try:
        r = transport.run(["sh", "-c", _REQUEST + _DUMP, "sh", DEBUGFS_DIR, remote, str(start_pfn), str(count),
                           str(info.max_entries)], timeout=timeout, check=False)
        transport.get(remote, packed)
    finally:
        transport.run(["rm", "-rf", rdir], timeout=60, check=False)
    with gzip.open(packed, "rb") as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    got = local.stat().st_size
    if got != count * ENTRY_SIZE:
        raise InfraError(f"{transport.name}: RMP dump of PFNs {start_pfn:#x}+{count:#x} came back with "
                         f"{got} bytes, expected {count * ENTRY_SIZE}: {r.stderr.strip()[-500:] or 'no error text'}")
    return local


def plan_ranges(ranges: Iterable[tuple[int, int]] | None, max_pfn: int,
                max_requests: int = MAX_REQUESTS) -> list[tuple[int, int]]:
    """[start, end) PFN ranges -> at most max_requests (start, count) requests inside [0, max_pfn].

    Clipped, sorted and merged; then the smallest gaps are closed until few enough remain (the
    kernel scans a gap's PFNs too, but only assigned entries come back). None: the whole table.
    """
    if ranges is None:
        return [(0, max_pfn + 1)]
    merged = rmp.merge_spans((max(0, int(s)), min(max_pfn + 1, int(e))) for s, e in ranges)
    while len(merged) > max(1, max_requests):
        i = min(range(len(merged) - 1), key=lambda k: merged[k + 1][0] - merged[k][1])
        merged[i:i + 2] = [[merged[i][0], merged[i + 1][1]]]
    return [(s, e - s) for s, e in merged]


def collect_rmp_records(transport: Transport, info: RmpInfo, local: Path, *,
                        ranges: Iterable[tuple[int, int]] | None = None, mode: str = "guest",
                        compress: bool = False, timeout: float = 3600) -> Path:
    """The records of `mode` ("assigned" or "guest") for PFN `ranges` ([start, end); None: all) into `local`.

    One command: the records stream back on its stdout, straight into the file. The stream is
    complete when every request's trailer came back with its count scanned. Not gzipped by
    default: records are few already, and gzip -1 costs more than it saves on a LAN
    (bench/rmp_dump.py); compress=True for slow links.
    """
    if not info.has(mode) or mode == "all":
        raise ValueError(f"the kernel's RMP dump has no record mode {mode!r} (it has: {', '.join(info.modes)})")
    requests = plan_ranges(ranges, info.max_pfn)
    local.parent.mkdir(parents=True, exist_ok=True)
    fetched = local.with_name(local.name + ".gz") if compress else local
    with open(fetched, "wb") as f:
        def sink(stream: str, chunk: bytes) -> None:
            if stream == "stdout":
                f.write(chunk)
        r = transport.run(["sh", "-c", _REQUEST + _RECORDS, "sh", DEBUGFS_DIR, mode, "gzip -1" if compress else "cat"],
                          stdin="".join(f"{s} {c}\n" for s, c in requests), timeout=timeout, check=False, sink=sink)
    if compress:
        with gzip.open(fetched, "rb") as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    problem = records_problem(local.read_bytes(), requests)
    if problem:
        raise InfraError(f"{transport.name}: RMP records ({mode}) of {len(requests)} PFN range(s) are incomplete: "
                         f"{problem}: {r.stderr.strip()[-500:] or f'exit {r.exit_status}, no error text'}")
    return local


def records_problem(data: bytes, requests: Sequence[tuple[int, int]]) -> str | None:
    """Why a record stream is not the complete answer to `requests`, or None."""
    if len(data) % RECORD_SIZE:
        return f"{len(data)} bytes, not whole {RECORD_SIZE}-byte records"
    words = np.frombuffer(data, dtype="<u8").reshape(-1, 3)
    tails = words[words[:, 0] == np.uint64(rmp.TRAILER_PFN)]
    got = [int(x) for x in tails[:, 1]]
    want = [c for _, c in requests]
    if got != want:
        return f"trailers report {got[:4]}{'...' if len(got) > 4 else ''} PFNs scanned, expected {want[:4]}"
    if words.shape[0] and words[-1, 0] != np.uint64(rmp.TRAILER_PFN):
        return "records after the last trailer"
    return None


@dataclass(frozen=True)
class Fetched:
    path: Path                  # the file as stored in the run directory
    dump: rmp.RmpDump
    mode: str                   # "all", "assigned" or "guest"

    def sidecar(self) -> dict:
        """What a reader needs to load the file again: load_dump(path, start_pfn, fmt=..., sparse=...)."""
        return {"dump": self.path.name, "start_pfn": self.dump.start_pfn, "format": self.dump.format,
                "sparse": self.dump.sparse, "mode": self.mode}


def fetch_rmp(transport: Transport, info: RmpInfo, local: Path, *,
              ranges: Iterable[tuple[int, int]] | None = None, mode: str = "guest", compress: bool = False,
              remote_tmp: str = "/tmp", timeout: float = 3600) -> Fetched:
    """The RMP for PFN `ranges` (None: all of it), decoded in the format the kernel names.

    `mode` "guest" (the default) returns the entries assigned to guest ASIDs: what a test's guests
    leave, whatever the host's size. "assigned" adds ASID 0's (firmware and hypervisor pages, the
    RMP's own among them: host-sized), which only the 2m_alignment invariant looks at. A kernel
    without record modes gets a whole-table dump of the span of `ranges` ("all", gzipped on the
    target through remote_tmp).
    """
    if info.has(mode) and mode != "all":
        path = collect_rmp_records(transport, info, local, ranges=ranges, mode=mode, compress=compress,
                                   timeout=timeout)
        return Fetched(path, rmp.load_dump(path, fmt=info.format, sparse=True), mode)
    plan = plan_ranges(ranges, info.max_pfn, 1)
    if not plan:                # nothing asked for: an empty dump, without asking the target
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(b"")
        return Fetched(local, rmp.load_dump(local, fmt=info.format), "all")
    start, count = plan[0]
    path = collect_rmp_dump(transport, info, local, start_pfn=start, count=count, remote_tmp=remote_tmp,
                            timeout=timeout)
    return Fetched(path, rmp.load_dump(path, start, fmt=info.format), "all")
