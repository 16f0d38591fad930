"""/dev/kmsg records and per-test slices (tests/data/kmsg/), without a target."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, strategies as st

from harness.evidence.dmesg import KmsgFollower, parse_kmsg_line
from harness.evidence.splats import classify


def follower(lines) -> KmsgFollower:
    f = KmsgFollower(transport=None, log_path=Path("/nonexistent"))
    for line in lines:
        f.feed(line)
    return f


def capture(data_dir) -> list[str]:
    return (data_dir / "kmsg" / "qemu-tcg-6.12-lkdtm-warning.log").read_text().splitlines()


def test_record_fields():
    r = parse_kmsg_line("4,249,2388365,-;WARNING: CPU: 1 PID: 69 at drivers/misc/lkdtm/bugs.c:112 lkdtm_WARNING+0xc/0xf")
    assert (r.seq, r.level, r.facility, r.ts_us) == (249, 4, 0, 2388365)
    assert r.line() == "[    2.388365] WARNING: CPU: 1 PID: 69 at drivers/misc/lkdtm/bugs.c:112 lkdtm_WARNING+0xc/0xf"
    marker = parse_kmsg_line("12,246,2387437,-;snp-harness: tok1 begin x")
    assert (marker.facility, marker.level) == (1, 4)


def test_escapes_and_continuation_lines():
    r = parse_kmsg_line(r"6,230,1560478,-;ACPI: \x5c_SB_.GSIF: Enabled at IRQ 21")
    assert r.text == "ACPI: \\_SB_.GSIF: Enabled at IRQ 21"
    assert parse_kmsg_line(r"6,1,2,-;two\x0alines").text == r"two\x0alines"  # one record, one line
    assert parse_kmsg_line(" SUBSYSTEM=pci") is None
    assert parse_kmsg_line("6,5,100,c,caller=T1;with caller id").text == "with caller id"


def test_slice_between_markers_of_the_real_capture(data_dir):
    f = follower(capture(data_dir))
    assert f._markers == {"3f2a9c1b7d0e": 249, "8b1c0d2e4f5a": 286}
    s = f.slice(249, 286)
    assert [r.seq for r in s.records] == list(range(250, 286)) and s.lost == ()
    assert "<seq 250>" in s.text() and "lkdtm: Performing direct entry WARNING" in s.text()
    assert len(s.lines()) == len(s.text().splitlines())
    splats = classify(s.lines()).splats
    assert [(x.category, x.title) for x in splats][0][1].startswith("WARNING in lkdtm_WARNING")


def test_a_wrapped_ring_buffer_is_named_never_silent(data_dir):
    lines = [l for l in capture(data_dir) if not l.startswith(("4,260,", "4,261,", "4,262,"))]
    s = follower(lines).slice(249, 286)
    assert s.lost == ((260, 262),) and s.lost_count == 3
    assert "# LOST 3 record(s), seq 260..262: the ring buffer wrapped" in s.text()


def test_open_slice_and_lost_ranges_clipped_to_the_window():
    f = follower([f"6,{n},{n},-;line {n}" for n in (1, 2, 10, 11, 12)])
    assert f.slice(2).lost == ((3, 9),) and [r.seq for r in f.slice(2).records] == [10, 11, 12]
    assert f.slice(10, 12).lost == () and [r.seq for r in f.slice(10, 12).records] == [11]
    f.feed("6,11,11,-;re-read after a reader restart")
    assert [r.seq for r in f.slice(0).records] == [1, 2, 10, 11, 12]


@given(st.text())
def test_parse_never_raises(text):
    parse_kmsg_line(text)
