"""A target that prints without end costs bounded memory: lines, kmsg records, console tails."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.evidence import dmesg
from harness.evidence.dmesg import KmsgFollower
from harness.targets.guest import CONSOLE_TAIL_LINES, GUEST_READY, Guest
from harness.transport.base import MAX_LINE_BYTES, LineReader


class Stream(LineReader):
    """`total` bytes of `pattern`, 64 KiB a read; records the largest buffer readline kept."""

    where, argv = "test://", ("yes",)

    def __init__(self, pattern: bytes, total: int) -> None:
        self.data = (pattern * (total // len(pattern) + 1))[:total]
        self.pos = 0
        self.peak = 0

    def _read(self, wait: float) -> bytes:
        self.peak = max(self.peak, len(self.__dict__.get("_line_buf", b"")))
        chunk = self.data[self.pos:self.pos + 65536]
        self.pos += len(chunk)
        return chunk


def test_a_line_without_end_comes_in_bounded_pieces():
    s = Stream(b"x", 5 * MAX_LINE_BYTES + 7)
    pieces = []
    while (line := s.readline(timeout=5)) is not None:
        pieces.append(len(line))
    assert pieces == [MAX_LINE_BYTES] * 5 + [7]
    assert s.peak <= MAX_LINE_BYTES + 65536


def test_many_short_lines_are_all_read_once_each():
    s = Stream(b"0123456789abcde\n", 16 * 100_000)
    count = 0
    while (line := s.readline(timeout=5)) is not None:
        assert line == "0123456789abcde"
        count += 1
    assert count == 100_000 and s.peak <= 2 * 65536


def _record(seq: int, text: str = "flood") -> str:
    return f"6,{seq},{seq * 10},-;{text}"


def test_kmsg_records_kept_are_bounded_and_a_slice_names_what_was_let_go(monkeypatch):
    monkeypatch.setattr(dmesg, "MAX_RECORDS", 1000)
    f = KmsgFollower(transport=None, log_path=Path("/nonexistent"))
    f.feed(_record(1, "snp-harness: begin00000 begin t"))
    for seq in range(2, 5002):
        f.feed(_record(seq))
    assert len(f._records) <= 1000
    s = f.slice(1)
    assert s.dropped and s.dropped[0][0] == 2 and s.dropped_count + len(s.records) == 5000
    assert "NOT KEPT" in s.text()
    later = f.slice(4900)  # a window that is all in memory loses nothing
    assert not later.dropped and len(later.records) == 101


def test_the_guest_console_keeps_a_tail_and_still_sees_ready_and_panics(tmp_path):
    g = Guest(host=None, workdir=tmp_path)
    for i in range(50_000):
        g._line(f"line {i}")
    g._line(GUEST_READY)
    assert len(g._lines) == CONSOLE_TAIL_LINES and g._ready
    assert g.console_tail(2).splitlines() == ["line 49999", GUEST_READY]


@pytest.mark.parametrize("line", ["Kernel panic - not syncing: Fatal exception", "---[ end Kernel panic - x ]---"])
def test_a_console_panic_is_seen_however_long_ago(tmp_path, line):
    g = Guest(host=None, workdir=tmp_path)
    g._line(line)
    for i in range(CONSOLE_TAIL_LINES * 3):
        g._line(f"noise {i}")
    assert g._panic == line
