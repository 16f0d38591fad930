"""The RMP debugfs interface's `info` text and the reasons a dump is impossible (no target)."""

from __future__ import annotations

import pytest

from harness.evidence import rmp_collect
from harness.evidence.rmp_collect import RmpInfo, parse_rmp_info, read_rmp_info
from harness.transport.local import LocalTransport

# The format kernel-patches/instrumentation/README.md documents; max_pfn as the helper's fake RMP printed it.
INFO = "rmptable_max_pfn: 0x1387\nentry_size: 16\nmax_entries_per_request: 1048576\nsegmented: 0\n"


def test_info_parsed():
    assert parse_rmp_info(INFO) == RmpInfo(max_pfn=0x1387, entry_size=16, max_entries=1 << 20, segmented=False)


@pytest.mark.parametrize("text", ["", "entry_size: 16\n", INFO.replace("0x1387", "zz"), "\x00garbage"])
def test_incomplete_info_is_none(text):
    assert parse_rmp_info(text) is None


def test_missing_interface_names_the_instrumentation(tmp_path, monkeypatch):
    monkeypatch.setattr(rmp_collect, "DEBUGFS_DIR", str(tmp_path / "x86" / "sev_rmp"))
    info, why = read_rmp_info(LocalTransport())
    assert info is None and "lacks kernel-patches/instrumentation/" in why


def test_malformed_info_is_reported(tmp_path, monkeypatch):
    (tmp_path / "info").write_text("rmptable_max_pfn: 0x10\nentry_size: 32\nmax_entries_per_request: 4\n")
    monkeypatch.setattr(rmp_collect, "DEBUGFS_DIR", str(tmp_path))
    info, why = read_rmp_info(LocalTransport())
    assert info is None and "not in the expected format" in why


# --- the second version of `info`, record requests ------------------------------------------------

import struct  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

from harness.errors import InfraError  # noqa: E402
from harness.evidence.rmp import FAM19H_RAW, RMPREAD, Expectation, check, encode_entry  # noqa: E402
from harness.evidence.rmp_collect import (fetch_rmp, plan_ranges, records_problem,  # noqa: E402
                                          collect_rmp_records)

# As kernel-patches/instrumentation/README.md documents it, on a host with a segmented RMP and RMPREAD.
INFO2 = ("format: rmpread\nentry_size: 16\nmax_pfn: 0x7ff\nmax_entries_per_request: 1048576\n"
         "record_size: 24\nmodes: all assigned guest\nsegmented: 1\n")


def test_info_v2_parsed():
    assert parse_rmp_info(INFO2) == RmpInfo(max_pfn=0x7FF, entry_size=16, max_entries=1 << 20, segmented=True,
                                            format=RMPREAD, modes=("all", "assigned", "guest"), record_size=24)
    old = parse_rmp_info(INFO)     # the first version: raw entries, dense dumps only
    assert (old.format, old.modes, old.has("assigned")) == (FAM19H_RAW, ("all",), False)


def test_unknown_format_is_a_reason_not_a_guess(tmp_path, monkeypatch):
    (tmp_path / "info").write_text(INFO2.replace("rmpread", "zen9-raw"))
    monkeypatch.setattr(rmp_collect, "DEBUGFS_DIR", str(tmp_path))
    info, why = read_rmp_info(LocalTransport())
    assert info is None and "format 'zen9-raw', which this harness cannot decode" in why


@pytest.mark.parametrize("ranges, max_requests, expected", [
    (None, 64, [(0, 0x800)]),
    ([], 64, []),
    ([(10, 20), (15, 30), (-5, 3), (0x7F0, 0x900), (50, 50)], 64, [(0, 3), (10, 20), (0x7F0, 0x10)]),
    ([(0, 1), (3, 4), (10, 11), (100, 101)], 2, [(0, 11), (100, 1)]),
    ([(0, 1), (3, 4), (10, 11), (100, 101)], 1, [(0, 101)]),
])
def test_plan_ranges(ranges, max_requests, expected):
    assert plan_ranges(ranges, 0x7FF, max_requests) == expected


def rec(*rows) -> bytes:
    return b"".join(struct.pack("<QQQ", *r) for r in rows)


TRAILER = (1 << 64) - 1


def test_records_problem():
    good = rec((5, 1, 0), (TRAILER, 10, 0), (TRAILER, 4, 1))
    assert records_problem(good, [(0, 10), (20, 4)]) is None
    assert records_problem(good[:-1], [(0, 10), (20, 4)]) == "71 bytes, not whole 24-byte records"
    assert "expected [10, 4]" in records_problem(good[:-24], [(0, 10), (20, 4)])
    assert records_problem(good + rec((30, 1, 0)), [(0, 10), (20, 4)]) == "records after the last trailer"


# The kernel's side of `dump`, over a table file: what req() returns for "start count [mode]".
EMULATOR = r'''
import sys
import numpy as np
table, fmt, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
mode = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else "all"
w = np.fromfile(table, "<u8").reshape(-1, 2)[start:start + count]
if mode == "all":
    sys.stdout.buffer.write(w.tobytes())
    sys.exit(0)
ones = np.uint64(2**64 - 1)
unread = (w[:, 0] == ones) & (w[:, 1] == ones)
keep = ((w[:, 1 if fmt == "rmpread" else 0] & np.uint64(1)) == 1) & ~unread
if mode == "guest":
    keep &= ((w[:, 1] >> np.uint64(32)) if fmt == "rmpread" else (w[:, 0] >> np.uint64(51)) & np.uint64(1023)) != 0
rows = np.column_stack([np.flatnonzero(keep).astype(np.uint64) + np.uint64(start), w[keep]]).astype("<u8")
tail = np.array([2**64 - 1, count, int(unread.sum())], "<u8")
sys.stdout.buffer.write(rows.tobytes() + (b"" if "--cut" in sys.argv else tail.tobytes()))
'''


@pytest.fixture
def emulated(tmp_path, monkeypatch):
    """A 2048-entry table on the "target" (this machine), served by EMULATOR instead of debugfs."""
    def make(fmt: str, cut: bool = False):
        entries = {7: dict(assigned=True, immutable=True), 1024: dict(assigned=True, pagesize_2m=True, gpa=0x200000,
                                                                      asid=5, validated=True)}
        entries |= {100 + i: dict(assigned=True, gpa=i << 12, asid=5, validated=True) for i in range(4)}
        words = np.array([encode_entry(**entries.get(p, {}), fmt=fmt) for p in range(2048)], "<u8")
        words[600] = 2**64 - 1      # a PFN no segment covers
        (tmp_path / "table.bin").write_bytes(words.tobytes())
        (tmp_path / "emu.py").write_text(EMULATOR)
        req = (f'req() {{ "{sys.executable}" "{tmp_path}/emu.py" "{tmp_path}/table.bin" {fmt} "$2" "$3" "$4" '
               f'{"--cut" if cut else ""} || exit 3; }}\n')
        monkeypatch.setattr(rmp_collect, "_REQUEST", req)
        return parse_rmp_info(INFO2.replace("rmpread", fmt))
    return make


EXP5 = Expectation(5, private_gpas=((0, 0x4000), (0x200000, 0x400000)))


@pytest.mark.parametrize("fmt", [FAM19H_RAW, RMPREAD])
@pytest.mark.parametrize("compress", [True, False])
def test_fetch_records_end_to_end(emulated, tmp_path, fmt, compress):
    info = emulated(fmt)
    f = fetch_rmp(LocalTransport(), info, tmp_path / "out" / "rmp.rec", mode="assigned", compress=compress)
    assert f.mode == "assigned" and f.dump.sparse and f.dump.format == fmt
    assert f.dump.pfns.tolist() == [7, 100, 101, 102, 103, 1024]
    assert (f.dump.scanned, f.dump.unreadable) == (2048, 1)
    v = check(f.dump, EXP5)
    assert v.ok and v.counts["unreadable"] == 1
    assert f.sidecar() == {"dump": "rmp.rec", "start_pfn": 7, "format": fmt, "sparse": True, "mode": "assigned"}
    g = fetch_rmp(LocalTransport(), info, tmp_path / "g.rec", ranges=[(0, 512), (1000, 1100)])
    assert g.mode == "guest" and g.dump.pfns.tolist() == [100, 101, 102, 103, 1024]
    assert g.dump.scanned == 512 + 100 and check(g.dump, EXP5).ok


def test_fetch_falls_back_to_a_dense_dump_on_the_first_version(emulated, tmp_path):
    emulated(FAM19H_RAW)
    f = fetch_rmp(LocalTransport(), parse_rmp_info(INFO.replace("0x1387", "0x7ff")), tmp_path / "rmp.bin",
                  ranges=[(1000, 1100)])
    assert f.mode == "all" and not f.dump.sparse and (f.dump.start_pfn, f.dump.n) == (1000, 100)
    assert check(f.dump, Expectation(5, private_gpas=((0x200000, 0x400000),))).ok


def test_a_cut_record_stream_is_an_infrastructure_error(emulated, tmp_path):
    info = emulated(RMPREAD, cut=True)
    with pytest.raises(InfraError, match=r"incomplete: trailers report \[\] PFNs scanned, expected \[2048\]"):
        collect_rmp_records(LocalTransport(), info, tmp_path / "rmp.rec", mode="assigned")
    with pytest.raises(ValueError, match="no record mode 'guest'"):
        collect_rmp_records(LocalTransport(), parse_rmp_info(INFO), tmp_path / "x.rec")


@pytest.mark.parametrize("mode, expected", [("guest", "16 32 guest\n"), ("all", "16 32\n")])
def test_requests_as_written_to_dump(tmp_path, monkeypatch, mode, expected):
    # A plain file stands in for `dump`: it keeps the last request written, and reads back nothing.
    (tmp_path / "dump").write_text("")
    monkeypatch.setattr(rmp_collect, "DEBUGFS_DIR", str(tmp_path))
    info = parse_rmp_info(INFO2)
    with pytest.raises(InfraError):
        if mode == "all":
            rmp_collect.collect_rmp_dump(LocalTransport(), info, tmp_path / "out.bin", start_pfn=16, count=32)
        else:
            collect_rmp_records(LocalTransport(), info, tmp_path / "out.rec", ranges=[(16, 48)], mode=mode)
    assert (tmp_path / "dump").read_text() == expected
