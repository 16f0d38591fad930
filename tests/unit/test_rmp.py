"""RMP dump decoding and invariant checks, on dumps built entry by entry from the 6.12 `struct rmpentry` layout."""

from __future__ import annotations

import struct
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.evidence.rmp import (ENTRY_SIZE, INVARIANTS, STATE_NAMES, VIOLATIONS_KEPT, Expectation, RmpDump,
                                  Violation, check, decode, dump_from_bytes, encode_entry, gpa_states, load_dump)

K4, M2 = 0x1000, 0x200000
ASID = 5


def packed(**fields) -> bytes:
    """One 16-byte entry: little-endian u64 lo, u64 hi."""
    return struct.pack("<QQ", *encode_entry(**fields))


def dump_of(entries: dict[int, dict], n: int, start_pfn: int = 0) -> RmpDump:
    return dump_from_bytes(b"".join(packed(**entries.get(start_pfn + i, {})) for i in range(n)), start_pfn)


def p4k(gpa: int, asid: int = ASID, **kw) -> dict:
    return dict(assigned=True, gpa=gpa, asid=asid, validated=True) | kw


def p2m(gpa: int, asid: int = ASID, **kw) -> dict:
    return dict(assigned=True, pagesize_2m=True, gpa=gpa, asid=asid, validated=True) | kw


# A guest with four 4K private pages (PFNs 100-103 -> GPA 0-0x4000) and one 2M page (PFN 1024 -> GPA 2M),
# next to a hypervisor-owned (ASID 0, immutable) page at PFN 7.
GOOD = {7: dict(assigned=True, immutable=True), **{100 + i: p4k(i * K4) for i in range(4)}, 1024: p2m(M2)}
N = 1536
EXP = Expectation(ASID, private_gpas=((0, 4 * K4), (M2, 2 * M2)), shared_gpas=((4 * K4, M2),))


def verdict(changes: dict[int, dict], exp: Expectation = EXP, n: int = N):
    return check(dump_of(GOOD | changes, n), exp)


def counts_only(v, **expected: int) -> None:
    assert {inv: v.counts[inv] for inv in INVARIANTS if v.counts[inv]} == expected


# --- layout ---------------------------------------------------------------------------------------

def test_encode_entry_is_the_struct_rmpentry_bit_layout():
    # u64 assigned:1, pagesize:1, immutable:1, rsvd1:9, gpa:39, asid:10, vmsa:1, validated:1, rsvd2:1
    gpa, asid = 0x7_1234_5000, 0x2AB
    lo = 1 | 1 << 1 | 1 << 2 | (gpa >> 12) << 12 | asid << 51 | 1 << 61 | 1 << 62
    assert encode_entry(assigned=True, pagesize_2m=True, immutable=True, gpa=gpa, asid=asid, vmsa=True,
                        validated=True) == (lo, 0)
    assert encode_entry(assigned=True, gpa=M2, asid=5, validated=True) == (0x4028_0000_0020_0001, 0)
    assert encode_entry(gpa=(1 << 51) - K4) == (((1 << 39) - 1) << 12, 0)   # the top GFN bit is bit 50
    assert encode_entry(asid=1023) == (1023 << 51, 0)
    assert encode_entry() == (0, 0)


@pytest.mark.parametrize("kw", [dict(gpa=0x800), dict(gpa=1 << 51), dict(gpa=-K4), dict(asid=1024), dict(asid=-1)])
def test_encode_entry_rejects_what_the_fields_cannot_hold(kw):
    with pytest.raises(ValueError):
        encode_entry(**kw)


def test_decode_columns():
    d = dump_of({0x1001: p2m(M2, asid=1023, vmsa=True, immutable=True), 0x1003: dict(validated=True, asid=3)},
                4, start_pfn=0x1000)
    e = decode(d)
    assert e.pfn.tolist() == [0x1000, 0x1001, 0x1002, 0x1003]
    assert e.assigned.tolist() == [False, True, False, False]
    assert e.pagesize_2m.tolist() == [False, True, False, False]
    assert e.immutable.tolist() == [False, True, False, False]
    assert e.gpa.tolist() == [0, M2, 0, 0]
    assert e.asid.tolist() == [0, 1023, 0, 3]
    assert e.vmsa.tolist() == [False, True, False, False]
    assert e.validated.tolist() == [False, True, False, True]
    a = decode(d, only_assigned=True)
    assert (a.pfn.tolist(), a.asid.tolist(), a.gpa.tolist()) == ([0x1001], [1023], [M2])


def test_decode_reads_the_raw_bytes_little_endian():
    lo = (1 << 62) | (9 << 51) | (0x123 << 12) | 1
    d = dump_from_bytes(lo.to_bytes(8, "little") + (0xFFFF).to_bytes(8, "little"), start_pfn=42)
    e = decode(d)
    assert (d.n, e.pfn[0], e.gpa[0], e.asid[0], bool(e.validated[0])) == (1, 42, 0x123000, 9, True)
    assert d.raw[0, 1] == 0xFFFF


def test_dump_from_bytes_drops_a_torn_trailing_entry():
    assert dump_from_bytes(packed(assigned=True) + b"\x01" * 5).n == 1
    assert dump_from_bytes(b"").n == 0


def test_load_dump_is_a_read_only_memmap_equal_to_bytes(tmp_path):
    blob = b"".join(packed(**(GOOD | {1300: p4k(0x9000, asid=7)}).get(i, {})) for i in range(N))
    path = tmp_path / "rmp.bin"
    path.write_bytes(blob)
    mapped, inmem = load_dump(path, start_pfn=0), dump_from_bytes(blob)
    assert isinstance(mapped.raw, np.memmap) and not mapped.raw.flags.writeable
    assert mapped.raw.dtype == np.uint64 and mapped.raw.shape == (N, 2)
    assert np.array_equal(mapped.raw, inmem.raw)
    # 256 entries = one 4K page per chunk: each chunk is dropped from RSS once read, and refaults intact
    assert check(mapped, EXP, chunk_entries=256) == check(inmem, EXP)
    assert np.array_equal(mapped.raw, inmem.raw)
    assert load_dump(path, start_pfn=512).start_pfn == 512


def test_load_dump_rejects_a_size_that_is_not_whole_entries(tmp_path):
    path = tmp_path / "torn.bin"
    path.write_bytes(b"\0" * (3 * ENTRY_SIZE + 5))
    with pytest.raises(ValueError, match=r"torn\.bin: size 53 bytes is not a multiple of the 16-byte RMP entry"):
        load_dump(path)


def test_load_dump_of_an_empty_file(tmp_path):
    (tmp_path / "empty.bin").write_bytes(b"")
    assert check(load_dump(tmp_path / "empty.bin"), EXP).counts["private_missing"] == 4 + 512


# --- verdicts -------------------------------------------------------------------------------------

def test_good_layout_is_ok():
    v = verdict({})
    assert v.ok and v.violations == ()
    assert v.summary() == "ok: 1536 entries, 5 assigned to ASID 5 (1 2M)"
    assert {k: v.counts[k] for k in ("entries", "assigned", "assigned_asid", "2m_entries", "shadowed")} == dict(
        entries=1536, assigned=6, assigned_asid=5, **{"2m_entries": 1}, shadowed=0)


def test_2m_alignment_passes_for_an_aligned_entry_and_fails_at_a_misaligned_pfn():
    assert verdict({}).ok     # PFN 1024, GPA 2M
    v = verdict({1024: {}, 1025: p2m(M2)}, Expectation(ASID, private_gpas=((0, 4 * K4), (M2, M2 + K4))))
    assert v.violations == (Violation("2m_alignment", 1025, M2, ASID, "2M entry at PFN 0x401 GPA 0x200000: PFN not "
                                                                      "2M-aligned"),)
    assert v.summary() == "1 violation: 2m_alignment x1"


def test_2m_alignment_fails_at_a_misaligned_gpa():
    # At a 2M-aligned PFN the lookup honours the entry, so it still claims 512 GPAs, from its own GPA.
    v = verdict({1024: p2m(M2 + K4)}, Expectation(ASID, private_gpas=((0, 4 * K4), (M2 + K4, 2 * M2 + K4))))
    assert v.violations == (Violation("2m_alignment", 1024, M2 + K4, ASID,
                                      "2M entry at PFN 0x400 GPA 0x201000: GPA not 2M-aligned"),)


def test_2m_alignment_applies_to_hypervisor_entries_too():
    v = verdict({7: dict(assigned=True, pagesize_2m=True)})
    assert v.violations == (Violation("2m_alignment", 7, 0, 0, "2M entry at PFN 0x7 GPA 0x0: PFN not 2M-aligned"),)


def test_foreign_asid_passes_for_asid_0_and_fails_for_another_guest():
    assert verdict({8: dict(assigned=True, asid=0, gpa=0x5000)}).ok
    v = verdict({300: p4k(0x9000, asid=7)})
    assert v.violations == (Violation("foreign_asid", 300, 0x9000, 7,
                                      "PFN 0x12c assigned to ASID 7, expected only ASID 5 (or 0)"),)
    assert verdict({300: p4k(0x9000, asid=7)}, replace(EXP, exclusive=False)).ok
    assert verdict({300: p4k(0x9000, asid=7, assigned=False)}).ok     # not assigned: owns nothing


def test_unexpected_gpa_passes_inside_and_fails_outside_the_private_ranges():
    assert verdict({104: p4k(0x4000)}, Expectation(ASID, private_gpas=((0, 5 * K4), (M2, 2 * M2)))).ok
    v = verdict({104: p4k(3 * M2)})
    assert v.violations == (Violation("unexpected_gpa", 104, 3 * M2, ASID,
                                      "ASID 5 maps GPA 0x600000-0x601000 (PFN 0x68) outside the expected "
                                      "private ranges"),)


def test_unexpected_gpa_counts_the_whole_2m_range():
    v = verdict({}, Expectation(ASID, private_gpas=((0, 4 * K4), (M2, 2 * M2 - K4))))
    assert v.violations == (Violation("unexpected_gpa", 1024, M2, ASID,
                                      "ASID 5 maps GPA 0x200000-0x400000 (PFN 0x400) outside the expected "
                                      "private ranges"),)


def test_duplicate_gpa_fails_for_two_4k_entries_and_for_4k_inside_2m():
    v = verdict({104: p4k(2 * K4)})
    assert v.violations == (Violation("duplicate_gpa", 104, 2 * K4, ASID, "GPA 0x2000 of PFN 0x68 also claimed "
                                                                           "by PFN 0x66"),)
    v = verdict({104: p4k(M2 + 5 * K4)})
    assert v.violations == (Violation("duplicate_gpa", 104, M2 + 5 * K4, ASID,
                                      "GPA 0x205000 of PFN 0x68 also claimed by PFN 0x400"),)
    assert verdict({104: p4k(M2 + 5 * K4, asid=0)}).ok      # a hypervisor page's GPA field means nothing


def test_private_missing_passes_when_covered_and_fails_per_missing_page():
    assert verdict({}).ok
    v = verdict({101: {}, 1024: {}}, Expectation(ASID, private_gpas=((0, 4 * K4),)))
    assert v.violations == (Violation("private_missing", -1, K4, ASID,
                                      "GPA 0x1000 expected private to ASID 5, but no entry of that ASID maps it"),)
    v = verdict({1024: {}})
    counts_only(v, private_missing=512)
    assert [x.gpa for x in v.violations] == [M2 + i * K4 for i in range(VIOLATIONS_KEPT)]


def test_not_validated_passes_when_validated_and_fails_otherwise():
    v = verdict({102: p4k(2 * K4, validated=False)})
    assert v.violations == (Violation("not_validated", 102, 2 * K4, ASID,
                                      "PFN 0x66 (GPA 0x2000) assigned to ASID 5 but not validated"),)
    v = verdict({1024: p2m(M2, validated=False)})
    assert v.violations == (Violation("not_validated", 1024, M2, ASID,
                                      "PFN 0x400 (GPA 0x200000) assigned to ASID 5 but not validated"),)


def test_shared_assigned_passes_when_unmapped_and_names_the_covering_pfn():
    assert verdict({}).ok
    exp = Expectation(ASID, private_gpas=((0, 4 * K4), (M2, 2 * M2)), shared_gpas=((M2 + 3 * K4, M2 + 4 * K4),))
    v = verdict({}, exp)
    assert [x for x in v.violations if x.invariant == "shared_assigned"] == [
        Violation("shared_assigned", 1024 + 3, M2 + 3 * K4, ASID,
                  "GPA 0x203000 expected shared, but PFN 0x403 assigns it to ASID 5")]
    counts_only(v, shared_assigned=1)


def test_assigned_after_teardown_passes_when_released_or_leaked():
    done = {100 + i: {} for i in range(4)} | {1024: {}}
    # private/shared expectations are ignored after teardown
    assert verdict(done, Expectation(ASID, private_gpas=((0, 4 * K4),), torn_down=True)).ok
    assert verdict({1024: {}}, Expectation(ASID, torn_down=True, leaked_pfns=((100, 104),))).ok
    assert verdict({}, Expectation(ASID, torn_down=True, leaked_pfns=((100, 104), (1024, 1536)))).ok


def test_assigned_after_teardown_fails_for_a_remaining_entry():
    v = verdict({1024: {}}, Expectation(ASID, torn_down=True, leaked_pfns=((100, 103),)))
    assert v.violations == (Violation("assigned_after_teardown", 103, 3 * K4, ASID,
                                      "PFN 0x67 (GPA 0x3000) still assigned to ASID 5 after teardown, outside the "
                                      "leaked ranges"),)
    # a 2M entry is excused only when all its 512 PFNs were leaked
    v = verdict({}, Expectation(ASID, torn_down=True, leaked_pfns=((100, 104), (1024, 1535))))
    counts_only(v, assigned_after_teardown=1)
    assert v.violations[0].pfn == 1024


def test_entries_shadowed_by_a_2m_entry_are_ignored():
    # The 2M head is authoritative for its region: sub-entries, whatever they hold, are not claims.
    v = verdict({1025: p4k(M2 + K4), 1030: p4k(0x9000, asid=7)})
    assert v.ok and v.counts["shadowed"] == 2
    # Under an unassigned head, the 4K entries are authoritative.
    v = verdict({520: p4k(0x9000, asid=7)})
    counts_only(v, foreign_asid=1)


INITIAL_VMSA_GPA = 0xFFFFFFFFF000   # arch/x86/kvm/svm/sev.c: every vCPU's VMSA is made private at this GPA


def test_vmsa_pages_are_owned_but_not_guest_memory():
    vmsas = {500 + i: p4k(INITIAL_VMSA_GPA, immutable=True, vmsa=True) for i in range(2)}
    v = verdict(vmsas)
    assert v.ok and (v.counts["vmsa"], v.counts["assigned_asid"]) == (2, 7)
    v = verdict(vmsas, Expectation(ASID, torn_down=True, leaked_pfns=((100, 104), (1024, 1536), (500, 501))))
    assert v.violations == (Violation("assigned_after_teardown", 501, INITIAL_VMSA_GPA, ASID,
                                      "PFN 0x1f5 (GPA 0xfffffffff000) still assigned to ASID 5 after teardown, "
                                      "outside the leaked ranges"),)
    counts_only(verdict({500: p4k(INITIAL_VMSA_GPA, asid=6, vmsa=True)}), foreign_asid=1)


def test_violation_records_are_capped_but_counts_are_exact():
    v = verdict({200 + i: p4k(K4 * (10 + i), asid=9) for i in range(150)})
    counts_only(v, foreign_asid=150)
    assert len(v.violations) == VIOLATIONS_KEPT and v.violations[-1].pfn == 200 + VIOLATIONS_KEPT - 1
    assert v.summary() == "150 violations: foreign_asid x150"


def test_out_of_range_asid_owns_nothing():
    v = verdict({}, Expectation(4096, private_gpas=((0, K4),), exclusive=False))
    assert v.violations == (Violation("private_missing", -1, 0, 4096, "GPA 0x0 expected private to ASID 4096, but "
                                                                     "no entry of that ASID maps it"),)


# Violations on both sides of 2M boundaries; 1025, 1100 and 1600 are shadowed by the 2M heads at 1024 and 1536.
MIXED = GOOD | {104: p4k(2 * K4), 300: p4k(0x9000, asid=7), 400: p4k(0x5000), 1025: p4k(7 * K4), 1100: p4k(K4),
                1536: p2m(6 * M2, validated=False), 1600: p2m(8 * M2), 515: dict(assigned=True, pagesize_2m=True),
                600: p2m(8 * M2), 1010: p4k(M2 + 3 * K4, asid=9), 1020: p4k(6 * M2 + K4)}


@pytest.mark.parametrize("chunk", [1, 7, 100, 511, 512, 513, 1 << 22])
@pytest.mark.parametrize("start_pfn", [0, 1000])
def test_chunked_check_equals_unchunked(chunk, start_pfn):
    d = dump_of(MIXED, 2048 - start_pfn, start_pfn=start_pfn)
    exp = Expectation(ASID, private_gpas=((0, 4 * K4), (M2, 2 * M2), (6 * M2, 7 * M2)), shared_gpas=((0x5000, M2),))
    whole = check(d, exp, chunk_entries=1 << 30)
    if start_pfn == 0:
        counts_only(whole, **{"2m_alignment": 2}, foreign_asid=2, unexpected_gpa=2, duplicate_gpa=2,
                    shared_assigned=1, not_validated=1)
    else:
        counts_only(whole, foreign_asid=1, duplicate_gpa=1, private_missing=4, not_validated=1)
    assert check(d, exp, chunk_entries=chunk) == whole


def test_gpa_states_small_layout():
    assert STATE_NAMES == ("shared", "private_4k", "private_2m", "violation")
    st_ = gpa_states(dump_of(GOOD, N), EXP, 0, 2 * M2 + 2 * K4)
    assert st_.dtype == np.int8 and st_.size == 1026
    assert st_.tolist() == [1] * 4 + [0] * 508 + [2] * 512 + [0, 0]
    # duplicate 4K over the 2M entry, a page expected private but missing, a shared page that is mapped
    exp = Expectation(ASID, private_gpas=((0, 5 * K4), (M2, 2 * M2)), shared_gpas=((K4, 2 * K4),))
    st_ = gpa_states(dump_of(GOOD | {104: p4k(M2 + 2 * K4)}, N), exp, 0, 2 * M2 + 2 * K4)
    assert st_.tolist() == [1, 3, 1, 1, 3] + [0] * 507 + [2, 2, 3] + [2] * 509 + [0, 0]
    # a window that starts inside the range, unaligned
    assert gpa_states(dump_of(GOOD, N), EXP, 3 * K4 + 5, 5 * K4).tolist() == [1, 0]
    assert gpa_states(dump_of(GOOD, N), EXP, 5 * K4, K4).size == 0


def test_gpa_states_after_teardown_marks_what_is_left():
    exp = Expectation(ASID, torn_down=True, leaked_pfns=((100, 104),))
    st_ = gpa_states(dump_of(GOOD, N), exp, 0, 2 * M2)
    assert st_.tolist() == [1] * 4 + [0] * 508 + [3] * 512


ranges = st.lists(st.tuples(st.integers(-(1 << 53), 1 << 53), st.integers(-(1 << 53), 1 << 53)), max_size=4)
small_ranges = st.lists(st.tuples(st.integers(0, 4 * M2), st.integers(0, 4 * M2)), max_size=4)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=ENTRY_SIZE * 1100), start_pfn=st.sampled_from([0, 512, 7, 1 << 30]),
       asid=st.integers(-2, 1100), private=st.one_of(ranges, small_ranges), shared=st.one_of(ranges, small_ranges),
       torn_down=st.booleans(), leaked=ranges, exclusive=st.booleans(), chunk=st.integers(1, 600),
       fmt=st.sampled_from(["fam19h-raw", "rmpread"]))
def test_check_never_raises_on_arbitrary_bytes(data, start_pfn, asid, private, shared, torn_down, leaked, exclusive,
                                               chunk, fmt):
    d = dump_from_bytes(data[: len(data) // ENTRY_SIZE * ENTRY_SIZE], start_pfn, fmt)
    exp = Expectation(asid, tuple(private), tuple(shared), torn_down, tuple(leaked), exclusive)
    v = check(d, exp, chunk_entries=chunk)
    assert v.ok == (not v.violations) == (sum(v.counts[i] for i in INVARIANTS) == 0)
    assert all(sum(x.invariant == inv for x in v.violations) == min(v.counts[inv], VIOLATIONS_KEPT)
               for inv in INVARIANTS)
    assert check(d, exp) == v
    assert isinstance(v.summary(), str)
    assert gpa_states(d, exp, 0, 4 * M2).size == 2048


def test_teardown_with_an_unknown_asid_finds_every_guest_entry_left():
    from harness.evidence.rmp import ANY_ASID

    entries = [encode_entry(), encode_entry(assigned=True, asid=0, gpa=0x1000),  # hypervisor page: fine
               encode_entry(assigned=True, asid=7, gpa=0x2000, validated=True),
               encode_entry(assigned=True, asid=9, gpa=0x3000)]
    data = b"".join(lo.to_bytes(8, "little") + hi.to_bytes(8, "little") for lo, hi in entries)
    dump = dump_from_bytes(data, start_pfn=0x100)
    v = check(dump, Expectation(asid=ANY_ASID, torn_down=True, leaked_pfns=((0x103, 0x104),)))
    assert not v.ok
    assert [(x.invariant, x.pfn) for x in v.violations] == [("assigned_after_teardown", 0x102)]
    clean = check(dump_from_bytes(data[:32], start_pfn=0x100), Expectation(asid=ANY_ASID, torn_down=True))
    assert clean.ok and clean.summary() == "ok: 2 entries, 0 assigned to any guest ASID (0 2M)"


def test_a_running_guest_may_keep_private_pages_anywhere_in_its_ram_but_not_outside():
    from harness.evidence.rmp import ANY_ASID

    entries = [encode_entry(assigned=True, asid=3, gpa=0x5000, validated=True),
               encode_entry(assigned=True, asid=3, gpa=0x7000, validated=True),
               encode_entry(assigned=True, asid=3, gpa=0x2_0000_0000, validated=True)]  # 8 GiB: not RAM
    data = b"".join(lo.to_bytes(8, "little") + hi.to_bytes(8, "little") for lo, hi in entries)
    dump = dump_from_bytes(data, start_pfn=0x200)
    ram = ((0, 1 << 30),)
    v = check(dump, Expectation(asid=ANY_ASID, allowed_gpas=ram))
    assert [(x.invariant, x.pfn) for x in v.violations] == [("unexpected_gpa", 0x202)]
    assert "outside the allowed ranges" in v.violations[0].detail
    assert check(dump_from_bytes(data[:32], start_pfn=0x200), Expectation(asid=ANY_ASID, allowed_gpas=ram)).ok


# --- formats, unreadable entries, sparse records ---------------------------------------------------

from harness.evidence.rmp import (FAM19H_RAW, INITIAL_VMSA_GPA, RECORD_SIZE, RMPREAD,  # noqa: E402
                                  TRAILER_PFN, records_from_bytes)

UNREADABLE = b"\xff" * ENTRY_SIZE


def dump_in(fmt: str, entries: dict[int, dict], n: int, start_pfn: int = 0, holes=()) -> RmpDump:
    """A dense dump in `fmt`; PFNs in `holes` are unreadable (all 0xff), as the kernel returns them."""
    out = []
    for pfn in range(start_pfn, start_pfn + n):
        if pfn in holes:
            out.append(UNREADABLE)
        else:
            out.append(struct.pack("<QQ", *encode_entry(**entries.get(pfn, {}), fmt=fmt)))
    return dump_from_bytes(b"".join(out), start_pfn, fmt)


def as_records(dense: RmpDump, guest: bool = False, split: int | None = None) -> bytes:
    """What the kernel's "assigned" ("guest") mode returns for the dense dump's range, in one request
    or two (split: the first request's count)."""
    e = decode(dense)
    parts, cuts = [], [0, split, dense.n] if split is not None else [0, dense.n]
    for a, b in zip(cuts, cuts[1:]):
        rows = [i for i in range(a, b) if e.readable[i] and e.assigned[i] and (not guest or e.asid[i])]
        parts += [struct.pack("<Q", int(e.pfn[i])) + dense.raw[i].astype("<u8").tobytes() for i in rows]
        parts.append(struct.pack("<QQQ", TRAILER_PFN, b - a, int((~e.readable[a:b]).sum())))
    return b"".join(parts)


def test_rmpread_layout_is_struct_rmpentry_of_6_14():
    # u64 gpa; u8 assigned:1; u8 pagesize:1, hpage_region_status:1; u8 immutable:1; u8 rsvd; u32 asid
    w0, w1 = encode_entry(assigned=True, pagesize_2m=True, immutable=True, gpa=0x7_1234_5000, asid=0x1_0000,
                          validated=True, vmsa=True, fmt=RMPREAD)
    assert (w0, w1) == (0x7_1234_5000, 1 | 1 << 8 | 1 << 16 | 0x1_0000 << 32)
    e = decode(dump_from_bytes(struct.pack("<QQ", w0, w1 | 1 << 9), 3, RMPREAD))
    assert (e.pfn[0], e.gpa[0], e.asid[0]) == (3, 0x7_1234_5000, 0x1_0000)
    assert e.assigned[0] and e.pagesize_2m[0] and e.immutable[0] and e.validated[0] and not e.vmsa[0]
    assert decode(dump_from_bytes(struct.pack("<QQ", INITIAL_VMSA_GPA, 1), 0, RMPREAD)).vmsa.tolist() == [True]
    with pytest.raises(ValueError):
        encode_entry(asid=1 << 32, fmt=RMPREAD)


@pytest.mark.parametrize("fmt", [FAM19H_RAW, RMPREAD])
def test_both_formats_give_the_same_verdicts(fmt):
    layouts = [{}, {104: p4k(2 * K4)}, {300: p4k(0x9000, asid=7)}, {1024: {}, 1025: p2m(M2)}, {1025: p4k(M2 + K4)}]
    for changes in layouts:
        raw = check(dump_in(FAM19H_RAW, GOOD | changes, N), EXP)
        v = check(dump_in(fmt, GOOD | changes, N), EXP)
        assert (v.ok, v.violations, v.counts) == (raw.ok, raw.violations, raw.counts)
    assert check(dump_in(fmt, GOOD, N), EXP).notes == (() if fmt == FAM19H_RAW else (
        "not_validated not checked: the rmpread format has no validated bit (VMSA pages are recognised by "
        "GPA 0xfffffffff000)",))


def test_rmpread_cannot_see_validation_but_sees_vmsa_pages_by_gpa():
    v = check(dump_in(RMPREAD, GOOD | {102: p4k(2 * K4, validated=False)}, N), EXP)
    assert v.ok and "not_validated not checked" in v.notes_text()
    vmsas = {500 + i: p4k(INITIAL_VMSA_GPA, immutable=True, vmsa=True) for i in range(2)}
    v = check(dump_in(RMPREAD, GOOD | vmsas, N), EXP)
    assert v.ok and v.counts["vmsa"] == 2


def test_rmpread_asids_wider_than_10_bits():
    v = check(dump_in(RMPREAD, {100: p4k(0, asid=5000)}, 8, start_pfn=100), Expectation(5000, ((0, K4),)))
    assert v.ok and v.counts["assigned_asid"] == 1
    gpa = 1 << 60       # beyond what the raw 39-bit GFN holds
    v = check(dump_in(RMPREAD, {0: p4k(gpa), 1: p4k(gpa)}, 2), Expectation(ASID, ((gpa, gpa + K4),)))
    counts_only(v, duplicate_gpa=1)


@pytest.mark.parametrize("fmt", [FAM19H_RAW, RMPREAD])
def test_unreadable_entries_are_counted_not_assigned(fmt):
    holes = {100, 101, 600, 1024}       # 1024: the 2M head is unreadable, so its region is not shadowed
    d = dump_in(fmt, GOOD | {1025: p4k(M2 + K4)}, N, holes=holes)
    v = check(d, Expectation(ASID, private_gpas=((2 * K4, 4 * K4), (M2 + K4, M2 + 2 * K4)), shared_gpas=()))
    assert v.ok and v.counts["unreadable"] == 4 and v.counts["assigned"] == 4
    assert decode(d, only_assigned=True).pfn.tolist() == [7, 102, 103, 1025]
    assert not decode(d).readable[100] and not decode(d).assigned[100]


@pytest.mark.parametrize("fmt", [FAM19H_RAW, RMPREAD])
@pytest.mark.parametrize("split", [None, 700, 1024])
def test_sparse_records_give_the_dense_verdict(fmt, split):
    dense = dump_in(fmt, MIXED, 2048, holes={5, 1300})
    sparse = records_from_bytes(as_records(dense, split=split), fmt)
    assert sparse.sparse and sparse.problems == () and (sparse.scanned, sparse.unreadable) == (2048, 2)
    assert sparse.n == int(decode(dense).assigned.sum())
    exp = Expectation(ASID, private_gpas=((0, 4 * K4), (M2, 2 * M2), (6 * M2, 7 * M2)), shared_gpas=((0x5000, M2),))
    for e in (exp, Expectation(ASID, torn_down=True, leaked_pfns=((100, 104),)), replace(exp, asid=7)):
        for chunk in (1, 100, 1 << 22):
            assert check(sparse, e, chunk_entries=chunk) == check(dense, e)
        assert gpa_states(sparse, e, 0, 8 * M2).tolist() == gpa_states(dense, e, 0, 8 * M2).tolist()
    a = decode(sparse)
    assert a.pfn.tolist() == decode(dense, only_assigned=True).pfn.tolist()


def test_guest_records_leave_out_asid_0():
    dense = dump_in(FAM19H_RAW, GOOD, N)
    sparse = records_from_bytes(as_records(dense, guest=True))
    assert decode(sparse).pfn.tolist() == [100, 101, 102, 103, 1024]
    assert check(sparse, EXP).ok and check(sparse, EXP).counts["entries"] == N


def test_records_problems_are_recorded_not_raised():
    dense = dump_in(FAM19H_RAW, GOOD, N)
    data = as_records(dense)
    assert records_from_bytes(data[:-RECORD_SIZE]).problems == (
        "the stream ends without a trailer: a request's records were cut off after PFN 0x400",)
    assert records_from_bytes(data + b"\0" * 5).problems == ("5 bytes after the last whole 24-byte record",)
    rec = data[:-RECORD_SIZE]
    swapped = rec[RECORD_SIZE:2 * RECORD_SIZE] + rec[:RECORD_SIZE] + rec[RECORD_SIZE:] + data[-RECORD_SIZE:]
    d = records_from_bytes(swapped)
    assert d.problems == ("records out of PFN order (1 repeated PFNs dropped)",)
    assert decode(d).pfn.tolist() == [7, 100, 101, 102, 103, 1024]
    bogus = struct.pack("<QQQ", 1 << 63, 1, 0) + data
    assert records_from_bytes(bogus).problems == ("1 records with a PFN >= 2**62 dropped",)
    empty = records_from_bytes(b"")
    assert (empty.n, empty.scanned, empty.problems) == (0, 0, ())
    assert check(records_from_bytes(data[:-RECORD_SIZE]), EXP).notes[0].startswith("the stream ends without")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=RECORD_SIZE * 40), fmt=st.sampled_from([FAM19H_RAW, RMPREAD]),
       asid=st.integers(-2, 1100), torn_down=st.booleans())
def test_records_from_arbitrary_bytes_never_raise(data, fmt, asid, torn_down):
    d = records_from_bytes(data, fmt)
    assert d.pfns is not None and d.pfns.size == d.n and (d.n < 2 or (d.pfns[1:] > d.pfns[:-1]).all())
    v = check(d, Expectation(asid, ((0, 4 * M2),), torn_down=torn_down))
    assert isinstance(v.summary(), str)


def test_load_dump_sparse_and_formats(tmp_path):
    dense = dump_in(RMPREAD, GOOD, N)
    (tmp_path / "r.rec").write_bytes(as_records(dense))
    d = load_dump(tmp_path / "r.rec", fmt=RMPREAD, sparse=True)
    assert d.sparse and d.format == RMPREAD and check(d, EXP) == check(dense, EXP)
    (tmp_path / "r.bin").write_bytes(dense.raw.tobytes())
    assert load_dump(tmp_path / "r.bin", fmt=RMPREAD).format == RMPREAD
    with pytest.raises(ValueError, match="unknown RMP entry format 'zen9'"):
        load_dump(tmp_path / "r.bin", fmt="zen9")
