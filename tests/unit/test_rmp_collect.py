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
