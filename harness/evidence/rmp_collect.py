"""Fetch raw RMP entries from a target through our debugfs file (kernel-patches/instrumentation/).

Interface (see that README): `info` prints the table's extent; `dump` takes
"<start_pfn> <count>" written on an open file, then reads back count raw
16-byte entries on the same open file. Requests are bounded in size, so a
whole table is read in steps; the stream is gzipped on the target (a real
RMP is mostly zero entries) and checked for its exact length here.
"""

from __future__ import annotations

import gzip
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InfraError
from harness.transport.base import Transport

DEBUGFS_DIR = "/sys/kernel/debug/x86/sev_rmp"
ENTRY_SIZE = 16

# $1 dir, $2 output, $3 first pfn, $4 count, $5 entries per request. One open file per request.
_DUMP = r'''
end=$(($3 + $4)); pfn=$3
while [ "$pfn" -lt "$end" ]; do
  n=$((end - pfn)); [ "$n" -gt "$5" ] && n=$5
  exec 3<>"$1/dump" || exit 3
  printf '%d %d\n' "$pfn" "$n" >&3 || exit 4
  cat <&3 || exit 5
  exec 3<&-
  pfn=$((pfn + n))
done | gzip -1 > "$2"
'''

_INFO_LINE = re.compile(r"^([a-z_]+):\s*(\S+)\s*$")


@dataclass(frozen=True)
class RmpInfo:
    max_pfn: int
    entry_size: int
    max_entries: int
    segmented: bool


def parse_rmp_info(text: str) -> RmpInfo | None:
    """The `info` file; None when a field is missing or malformed."""
    fields = {m.group(1): m.group(2) for m in map(_INFO_LINE.match, text.splitlines()) if m}
    try:
        return RmpInfo(max_pfn=int(fields["rmptable_max_pfn"], 0), entry_size=int(fields["entry_size"], 0),
                       max_entries=int(fields["max_entries_per_request"], 0),
                       segmented=fields.get("segmented", "0") != "0")
    except (KeyError, ValueError):
        return None


def read_rmp_info(transport: Transport) -> tuple[RmpInfo | None, str | None]:
    """(info, None), or (None, why the RMP cannot be dumped on this target)."""
    r = transport.run(["cat", f"{DEBUGFS_DIR}/info"], timeout=60, check=False)
    if r.ok:
        info = parse_rmp_info(r.stdout)
        if info is None or info.entry_size != ENTRY_SIZE:
            return None, f"{DEBUGFS_DIR}/info is not in the expected format: {r.stdout[:200]!r}"
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


def collect_rmp_dump(transport: Transport, info: RmpInfo, local: Path, *, start_pfn: int = 0,
                     count: int | None = None, remote_tmp: str = "/tmp", timeout: float = 3600) -> Path:
    """Raw entries for [start_pfn, start_pfn + count) into `local`; the whole table by default."""
    if count is None:
        count = info.max_pfn + 1 - start_pfn
    # A fresh private directory: a fixed name in /tmp, written as root, could be a planted symlink.
    r = transport.run(["mktemp", "-d", f"{remote_tmp.rstrip('/')}/snp-harness-rmp.XXXXXX"], timeout=60)
    rdir = r.stdout.strip()
    remote = f"{rdir}/rmp.gz"
    local.parent.mkdir(parents=True, exist_ok=True)
    packed = local.with_name(local.name + ".gz")
    try:
        r = transport.run(["sh", "-c", _DUMP, "sh", DEBUGFS_DIR, remote, str(start_pfn), str(count),
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
