"""Splat catalogue (harness.evidence.splats) on real and constructed kernel logs (tests/data/dmesg)."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.evidence import splats
from harness.evidence.splat_catalogue import CUT_HERE, PREFIX
from harness.evidence.splats import (CATALOGUE, SUPPRESSIONS, RmpEntry, SplatReport, classify, decode_rmp_entry,
                                     grep_patterns, match_start, strip_prefix)

DMESG = Path(__file__).parents[1] / "data" / "dmesg"

EXPECTED: dict[str, list[tuple[str, str, int, int]]] = {
    "qemu-tcg-healthy.log": [],
    "qemu-tcg-console-oops-int3.log": [("Oops: int3 in __schedule", "oops", 406, 451)],
    "constructed-negatives.log": [],
    "constructed-gmem-warn.log": [("WARNING in kvm_gmem_prepare_folio", "kvm", 3, 51)],
    "constructed-rmpupdate-fail.log": [
        ("RMPUPDATE failed for PFN ADDR (ret NUM)", "snp", 2, 18),
        ("SEV: Failed to update RMP entry: GFN ADDR PFN ADDR level NUM error NUM", "snp", 19, 19),
        ("gmem: Failed to prepare folio for index ADDR GFN ADDR PFN ADDR error NUM", "kvm", 20, 20),
        ("RMPUPDATE failed for PFN ADDR (ret NUM)", "snp", 23, 37),
        ("SEV: Failed to update RMP entry: GFN ADDR PFN ADDR level NUM error NUM", "snp", 38, 38),
    ],
    "constructed-kasan.log": [("BUG: KASAN: slab-use-after-free in kvm_gmem_release", "kasan", 2, 57)],
    "constructed-lockdep.log": [
        ("possible deadlock in kvm_gmem_bind", "lockdep", 3, 63),
        ("WARNING: suspicious RCU usage in kvm_mmu_notifier_invalidate_range_start", "lockdep", 66, 87),
    ],
    "constructed-rcu-stall.log": [
        ("INFO: rcu detected stall in sev_gmem_invalidate", "rcu_stall", 2, 49),
        ("INFO: rcu detected stall in sev_gmem_invalidate", "rcu_stall", 50, 61),
    ],
    "constructed-hung-task.log": [
        ("INFO: task hung in kvm_gmem_unbind", "hung_task", 2, 22),
        ("INFO: task hung in kvm_irqfd_release", "hung_task", 23, 46),
    ],
    "constructed-kvm-bug.log": [
        ("KVM_BUG: Failed to reclaim PFN ADDR, rc NUM fw_err NUM", "kvm", 2, 38),
        ("Leaking PFN range ADDR-ADDR", "snp", 39, 40),
        ("SEV: Failed to PSMASH RMP entry for PFN ADDR error NUM", "snp", 44, 60),
        ("SEV: Failed to update RMP entry for PFN ADDR error NUM", "snp", 61, 71),
        ("WARNING in kvm_arch_post_set_memory_attributes", "kvm", 72, 82),
    ],
    "constructed-rmp-fault.log": [
        ("SEV: Unexpected RMP fault for non-private GPA ADDR", "rmp", 2, 2),
        ("SEV: Unexpected RMP fault, non-private slot for GPA ADDR", "rmp", 3, 3),
        ("SEV: Unexpected RMP fault, no backing page for private GPA ADDR", "rmp", 4, 4),
        ("SEV: Unexpected RMP fault, no assigned RMP entry found for GPA ADDR PFN ADDR error NUM", "rmp", 5, 5),
        ("SEV: Unable to split RMP entry for GPA ADDR PFN ADDR ret NUM", "snp", 6, 6),
        ("BUG: unable to handle page fault in memcpy_orig (RMP violation)", "rmp", 8, 53),
    ],
    "constructed-generic.log": [
        ("refcount_t: underflow; use-after-free in kvm_gmem_release", "refcount", 2, 15),
        ("UBSAN: shift-out-of-bounds in is_large_rmp_possible", "ubsan", 16, 28),
        ("BUG: sleeping function called from invalid context in sev_gmem_invalidate", "atomic_sleep", 29, 42),
        ("BUG: scheduling while atomic in kvm_vcpu_block", "atomic_sleep", 43, 55),
        ("BUG: soft lockup in snp_lookup_rmpentry", "soft_lockup", 56, 66),
        ("BUG: Bad page state in kvm_gmem_free_folio", "bad_page", 67, 81),
        ("BUG: Bad page map in zap_pte_range", "bad_page", 82, 90),
        ("general protection fault in kvm_gmem_get_pfn", "gpf", 91, 102),
        ("kernel BUG in __split_huge_page_tail", "bug", 103, 112),
        ("kernel BUG in snp_rmptable_init", "bug", 113, 117),
        ("BUG: kernel NULL pointer dereference in sev_gmem_max_mapping_level", "bug", 118, 128),
        ("BUG: KFENCE: use-after-free read in kvm_gmem_get_folio", "kfence", 129, 138),
        ("possible deadlock in kvm_gmem_populate", "lockdep", 140, 155),
        ("inconsistent lock state in kvm_gmem_invalidate_begin", "lockdep", 157, 168),
        ("WARNING: bad unlock balance detected in kvm_gmem_bind", "lockdep", 169, 181),
        ("WARNING: still has locks held in do_exit", "lockdep", 182, 191),
        ("BUG: Invalid wait context in sev_gmem_invalidate", "lockdep", 192, 203),
        ("Watchdog detected hard LOCKUP in native_queued_spin_lock_slowpath", "hard_lockup", 204, 214),
        ("BUG: workqueue lockup", "soft_lockup", 215, 219),
        ("INFO: rcu detected expedited stall in snp_lookup_rmpentry", "rcu_stall", 220, 224),
        ("Kernel panic - not syncing: hung_task: blocked tasks", "panic", 225, 233),
    ],
    "constructed-snp-misc-syslog.log": [
        ("SEV-SNP: SNP_INIT failed rc NUM, error NUM", "snp", 2, 2),
        ("SEV-SNP: failed to INIT rc NUM, error NUM", "snp", 3, 3),
        ("Failed to split direct map for PFN ADDR, ret NUM", "snp", 6, 6),
        ("SEV: Failed to retrieve RMP entry", "snp", 7, 7),
        ("SEV: Failed to look up RMP entry: GFN ADDR PFN ADDR error NUM", "snp", 8, 8),
        ("SEV: failed to reclaim buffer for legacy command", "snp", 10, 10),
        ("Failed to reclaim firmware-owned pages while issuing SEV legacy command", "snp", 11, 11),
        ("SEV-SNP DF_FLUSH failed", "snp", 12, 12),
        ("SEV-SNP firmware shutdown failed", "snp", 13, 13),
        ("SNP IOMMU shutdown failed", "snp", 14, 14),
    ],
    "constructed-mail-quoted-warn.log": [
        ("SEV: Failed to PSMASH RMP entry for PFN ADDR error NUM", "snp", 6, 16),
        ("Leaking PFN range ADDR-ADDR", "snp", 17, 17),
    ],
    # the SNP host series' sev_pci_init() (no rc) and 6.12's _sev_platform_init_locked() (README.md)
    "constructed-snp-init-wordings.log": [
        ("SEV-SNP: failed to INIT error NUM", "snp", 3, 3),
        ("SEV-SNP: failed to INIT rc NUM, error NUM", "snp", 7, 7),
    ],
    "constructed-kmsg-warn.log": [
        ("WARNING in kvm_arch_post_set_memory_attributes", "kvm", 5, 20),
        ("SEV-SNP: failed to INIT rc NUM, error NUM", "snp", 21, 21),
    ],
    # constructed from the 6.1, 6.12 and 7.3 trees' format strings and older kernels' (README.md)
    "constructed-7x-reports.log": [
        ("WARNING in sev_gmem_make_private", "kvm", 2, 21),
        ("SEV: Failed to look up RMP entry: GFN ADDR PFN ADDR error NUM", "snp", 22, 22),
        ("SEV: Failed to update RMP entry: GFN ADDR PFN ADDR level NUM error NUM", "snp", 23, 23),
        ("WARNING in kvm_mmu_zap_collapsible_spte", "kvm", 24, 36),
        ("kernel BUG in __split_folio_to_order", "bug", 37, 48),
        ("Watchdog detected hard LOCKUP in native_queued_spin_lock_slowpath", "hard_lockup", 49, 57),
        ("INFO: task hung in kvm_gmem_punch_hole", "hung_task", 58, 75),
        ("INFO: rcu detected stall", "rcu_stall", 76, 76),
        ("BUG: Bad page map in zap_pte_range", "bad_page", 77, 87),
        ("BUG: KCSAN: data-race in kvm_gmem_get_pfn", "kcsan", 88, 101),
        ("BUG: KMSAN: uninit-value in sev_gmem_post_populate", "kmsan", 102, 111),
        ("BUG: Dentry still in use", "bug", 112, 121),
        ("UBSAN: array index out of bounds in snp_lookup_rmpentry_raw", "ubsan", 122, 130),
        ("CFI failure in kvm_x86_call_handle_exit", "bug", 131, 139),
        ("BUG: stack guard page was hit in __kvm_gmem_get_pfn", "bug", 140, 148),
    ],
    "constructed-legacy-reports.log": [
        ("BUG: kernel NULL pointer dereference in kvm_mmu_page_fault", "bug", 2, 18),
        ("BUG: unable to handle page fault in __split_huge_page_tail", "bug", 19, 28),
        ("general protection fault in kvm_gmem_bind", "gpf", 29, 34),
        ("kernel BUG in split_huge_page_to_list", "bug", 35, 42),
        ("UBSAN: Undefined behaviour in kvm_mmu_reset_context", "ubsan", 43, 52),
        ("possible deadlock in kvm_set_memory_region", "lockdep", 53, 73),
        ("WARNING in emulator_read_write", "kvm", 74, 82),
        ("WARNING in __split_huge_pmd", "warning", 83, 92),
        ("BUG: soft lockup in kvm_mmu_slot_remove_write_access", "soft_lockup", 93, 98),
        ("BUG: using __this_cpu_read() in preemptible code in svm_vcpu_load", "atomic_sleep", 99, 105),
        ("BUG: using smp_processor_id() in preemptible code in kvm_arch_vcpu_load", "atomic_sleep", 106, 112),
        ("BUG: workqueue leaked lock or atomic in process_one_work", "bug", 113, 118),
        ("BUG: stack guard page was hit in kvm_mmu_get_page", "bug", 119, 125),
        ("BUG: KASAN: use-after-free in kvm_io_bus_unregister_dev", "kasan", 126, 134),
    ],
    "constructed-6.1-reports.log": [
        ("general protection fault in kvm_gmem_get_file", "gpf", 2, 12),
        ("BUG: kernel NULL pointer dereference in svm_vcpu_free", "bug", 13, 25),
        ("kernel BUG in handle_removed_pt", "bug", 26, 35),
        ("Watchdog detected hard LOCKUP in native_queued_spin_lock_slowpath", "hard_lockup", 36, 44),
        ("BUG: spinlock bad magic in kvm_set_msi_irq", "lockdep", 45, 53),
        ("BUG: sleeping function called from invalid context in kvm_vm_ioctl_set_memory_region", "atomic_sleep",
         54, 65),
        ("BUG: Bad rss-counter state mm", "bug", 66, 66),
        ("memory leak in kvm_vm_ioctl_create_vcpu", "memory_leak", 68, 75),
        ("kmemleak: new suspected memory leaks", "memory_leak", 76, 76),
        ("SLUB: Poison overwritten in kvm_arch_vcpu_create", "bug", 77, 96),
        ("INFO: trying to register non-static key in kvm_irqfd_assign", "lockdep", 99, 112),
        ("BUG: KCSAN: data-race in kvm_vcpu_on_spin", "kcsan", 113, 124),
    ],
    "constructed-arm64.log": [
        ("Unable to handle kernel NULL pointer dereference in kvm_gmem_get_folio", "bug", 2, 30),
        ("kernel BUG in __split_huge_page", "bug", 31, 49),
    ],
    "constructed-prefixes.log": [
        ("WARNING in kvm_mmu_zap_all", "kvm", 2, 6),
        ("BUG: soft lockup", "soft_lockup", 7, 7),
        ("kernel BUG at mm/huge_memory.c", "bug", 9, 9),
        ("WARNING in sev_gmem_invalidate", "kvm", 11, 11),
        ("INFO: task hung", "hung_task", 12, 12),
        ("refcount_t: underflow; use-after-free", "refcount", 13, 13),
        ("UBSAN: shift-out-of-bounds in arch/x86/kvm/svm/sev.c", "ubsan", 15, 15),
        ("BUG: sleeping function called from invalid context at mm/slab.h", "atomic_sleep", 16, 16),
        ("BUG: KASAN: slab-use-after-free in kvm_gmem_release", "kasan", 17, 18),
        ("general protection fault in kvm_gmem_bind", "gpf", 19, 21),
        ("INFO: rcu detected stall", "rcu_stall", 22, 22),
        ("Kernel panic - not syncing: softlockup: hung tasks", "panic", 23, 23),
    ],
    "constructed-misc-bugs.log": [
        ("BUG: MAX_LOCKDEP_KEYS too low in kvm_gmem_create", "lockdep", 2, 12),
        ("BUG: assuming atomic context in sev_handle_rmp_fault", "atomic_sleep", 13, 21),
        ("PANIC: double fault in kvm_mmu_page_fault", "bug", 22, 32),
        ("kernel BUG in sev_snp_init", "bug", 34, 35),
        ("BUG: mempool element poison mismatch in check_element", "bug", 36, 42),
        ("BUG: non-zero pgtables_bytes on freeing mm", "bug", 43, 43),
        ("Oops: Kernel access of bad area", "oops", 44, 46),
        ("Unable to handle kernel NULL pointer dereference in kvm_riscv_gstage_map", "bug", 47, 50),
        ("Unable to handle kernel pointer dereference", "bug", 51, 54),
    ],
}


# Files whose splats lack their end marker on purpose (one-line reports under odd prefixes).
EXPECTED_PROBLEMS = {"constructed-prefixes.log": (
    "line 9: kernel_bug splat ended without its end marker", "line 11: warning splat ended without its end marker",
    "line 15: ubsan splat ended without its end marker")}


def lines_of(name: str) -> list[str]:
    return (DMESG / name).read_text().splitlines()


def summary(report: SplatReport) -> list[tuple[str, str, int, int]]:
    return [(s.title, s.category, s.first_line, s.last_line) for s in report.splats]


def check_invariants(report: SplatReport) -> None:
    last = 0
    for s in report.splats:
        assert last < s.first_line <= s.last_line
        assert len(s.lines) == s.last_line - s.first_line + 1
        last = s.last_line


def test_every_data_file_has_expectations():
    assert sorted(p.name for p in DMESG.glob("*.log")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_data_file(name):
    report = classify(lines_of(name))
    assert summary(report) == EXPECTED[name]
    assert report.problems == EXPECTED_PROBLEMS.get(name, ())
    check_invariants(report)
    raw = lines_of(name)
    for s in report.splats:
        assert list(s.lines) == [line.rstrip("\r") for line in raw[s.first_line - 1:s.last_line]]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_streaming_a_file_gives_the_same_splats(name):
    with (DMESG / name).open(encoding="utf-8", errors="replace", newline="") as f:   # keep "\r\n"
        assert summary(classify(f)) == EXPECTED[name]


def test_real_console_oops_keeps_register_redump_and_panic():
    oops = classify(lines_of("qemu-tcg-console-oops-int3.log")).splats[0]
    assert "end trace" in oops.lines[437 - 406]
    assert oops.lines[-2].endswith("Kernel panic - not syncing: Fatal exception in interrupt")
    assert oops.lines[-1].startswith("[    6.745706] Kernel Offset:")


def all_lines():
    for name in sorted(EXPECTED):
        yield from lines_of(name)


def test_every_catalogue_entry_is_reached_and_opens_with_a_head():
    reached = set()
    for line in all_lines():
        msg = strip_prefix(line)
        for p in CATALOGUE:
            if p.start.match(msg):
                reached.add(p.name)
                assert msg.startswith(p.heads), (p.name, msg)
    assert reached == {p.name for p in CATALOGUE}
    assert len({p.name for p in CATALOGUE}) == len(CATALOGUE)


def test_suppressions_are_exemplified_and_never_hide_a_known_start():
    negatives = [strip_prefix(line) for line in lines_of("constructed-negatives.log")]
    for s in SUPPRESSIONS:
        assert any(s.match(msg) for msg in negatives), s.pattern
    for name, expected in EXPECTED.items():
        if not expected:
            continue
        for line in lines_of(name):
            msg = strip_prefix(line)
            if any(p.start.match(msg) for p in CATALOGUE):
                assert not any(s.match(msg) for s in SUPPRESSIONS), msg


def test_negatives_only_look_alarming():
    assert re.search(r"WARNING|BUG|Oops|panic|RMP|Failed", (DMESG / "constructed-negatives.log").read_text())
    assert classify(lines_of("constructed-negatives.log")).splats == ()


def test_prefilter_finds_every_line_the_scanner_would_act_on():
    for name in sorted(EXPECTED):
        batch = (DMESG / name).read_text().splitlines(keepends=True)
        found = set(splats._candidates(splats._chunk(batch, True), batch))
        for i, line in enumerate(batch):
            msg = strip_prefix(line)
            if match_start(msg) or CUT_HERE.match(msg):
                assert i in found, (name, i + 1, line)


PREFIXES = ["", "[  312.004215] ", "[  312.004215][ T4711] ", "[    T4711] ", "<4>", "<4>[  312.004215] ",
            "4,1202,312004215,-;", "4,1202,312004215,-,caller=T4711;", "> ", "> > [  312.004215] ",
            "Nov 25 02:14:22 epyc1 kernel: ", "Nov 25 02:14:22 epyc1 kernel: [  312.004215] ",
            "2026-11-25T02:14:22+0000 epyc1 kernel: ", "[Tue Nov 25 02:14:22 2026] ",
            # caller ids alone or after a space; a glued dropped-messages note (4.x); dmesg -x; dmesg
            # --time-format iso; journalctl -o short-precise; console text before a kernel line
            "[T4711] ", "[    C1] ", "[  312.004215] [ T4711] ",
            "** 3 printk messages dropped ** ", "** 3 printk messages dropped ** [  312.004215] ",
            "<4>** 3 printk messages dropped ** [  312.004215][ T4711] ", "kern  :warn  : [  312.004215] ",
            "kern  :err   : ", "2026-11-25T02:14:22,123456+00:00 ", "Nov  5 02:14:22.123456 epyc1 kernel: ",
            "kernel: ", ">> ", "login: [  312.004215][ T4711] "]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_prefixes_do_not_change_the_result(prefix):
    body = [line.split("] ", 1)[1] for line in lines_of("constructed-kvm-bug.log")]
    report = classify([prefix + line for line in body])
    assert summary(report) == EXPECTED["constructed-kvm-bug.log"]
    assert report.leaked_pfn_ranges == ((0x1F2E40, 0x1F2E41),)


def test_kmsg_records_dictionary_lines_and_escapes():
    report = classify(lines_of("constructed-kmsg-warn.log"))
    warn, init = report.splats
    assert (warn.seq, init.seq) == (1201, 1215)
    assert " SUBSYSTEM=nvme" in warn.lines and init.last_line == 21
    assert strip_prefix("6,1216,312100100,-;rcu: \\x09Max phase") == "rcu: \tMax phase"
    lone = classify(["4,7,1,-;WARNING: CPU: 0 PID: 1 at mm/x.c:1 f+0x1/0x2", " SUBSYSTEM=pci", " DEVICE=+pci:0"])
    assert summary(lone) == [("WARNING in f", "warning", 1, 3)]


def test_crlf_ansi_and_carriage_return_overwrites():
    plain = lines_of("constructed-gmem-warn.log")
    dressed = [f"\x1b[0;33m{line}\x1b[0m\r\n" if i % 3 else line + "\r\n" for i, line in enumerate(plain)]
    assert summary(classify(dressed)) == EXPECTED["constructed-gmem-warn.log"]
    assert summary(classify(line.encode() for line in dressed)) == EXPECTED["constructed-gmem-warn.log"]
    dressed[3] = "progress 37%\r" + dressed[3]          # a terminal shows only what follows the "\r"
    assert summary(classify(dressed)) == EXPECTED["constructed-gmem-warn.log"]


def test_one_string_is_split_into_lines():
    text = (DMESG / "constructed-kasan.log").read_text()
    assert summary(classify(text)) == summary(classify(text.splitlines())) == EXPECTED["constructed-kasan.log"]


def test_rmp_entry_decoding_bit_by_bit():
    gpa, asid = 0x7FF3E000, 0x2A5
    lo = 1 | 1 << 1 | 1 << 2 | (gpa >> 12) << 12 | asid << 51 | 1 << 61 | 1 << 62
    assert decode_rmp_entry(lo, 0x1234, pfn=7) == RmpEntry(7, lo, 0x1234, True, True, True, gpa, asid, True, True)
    for bit, field in [(0, "assigned"), (1, "pagesize_2m"), (2, "immutable"), (61, "vmsa"), (62, "validated")]:
        e = decode_rmp_entry(1 << bit, 0)
        assert [f for f in ("assigned", "pagesize_2m", "immutable", "vmsa", "validated") if getattr(e, f)] == [field]
        assert (e.gpa, e.asid) == (0, 0)
    for reserved in (3, 11, 63):
        assert decode_rmp_entry(1 << reserved, 0) == RmpEntry(None, 1 << reserved, 0, *[False] * 3, 0, 0, False, False)
    assert decode_rmp_entry((1 << 39) - 1 << 12, 0).gpa == ((1 << 39) - 1) << 12
    assert decode_rmp_entry(0x3FF << 51, 0).asid == 0x3FF


def test_rmp_dumps_belong_to_their_splat():
    fail, _, _, unassigned, _ = classify(lines_of("constructed-rmpupdate-fail.log")).splats
    (e,) = fail.rmp_entries
    assert (e.pfn, e.assigned, e.pagesize_2m, e.gpa, e.asid, e.validated) == (0x12A4C0, True, True, 0x80200000, 1, True)
    assert [(x.pfn, x.lo) for x in unassigned.rmp_entries] == [(0x12A4C0, 0x5), (0x12A4C2, 0x601800007FF3E001)]
    assert unassigned.rmp_entries[0].immutable and unassigned.rmp_entries[1].vmsa
    fault = classify(lines_of("constructed-rmp-fault.log")).splats[-1]
    assert [x.pfn for x in fault.rmp_entries] == [0x1A2C00]
    orphan = classify(["[ 1.0] SEV-SNP: PFN 0x10, RMP entry: [0x0000000000000001 - 0x0000000000000000]"])
    assert orphan.splats == () and orphan.problems == ("line 1: RMP entry dump outside any splat",)


def test_leaked_pfn_ranges():
    assert classify(lines_of("constructed-kvm-bug.log")).leaked_pfn_ranges == ((0x1F2E40, 0x1F2E41),)
    assert classify(lines_of("constructed-mail-quoted-warn.log")).leaked_pfn_ranges == ((0x12A400, 0x12A600),)
    two = classify(["Leaking PFN range 0x10-0x12", "x", "[ 9.1] SEV-SNP: Leaking PFN range 0xabc000-0xabc200"])
    assert two.leaked_pfn_ranges == ((0x10, 0x12), (0xABC000, 0xABC200))


def mutate(line: str, rng: random.Random) -> str:
    """Another run of the same bug: other timestamps, PIDs, CPUs, addresses, offsets and line numbers."""
    def digits(m):
        return "".join(rng.choice("0123456789") for _ in m.group(0))

    def hexes(m):
        return m.group(1) + "".join(rng.choice("0123456789abcdef") for _ in m.group(2))
    line = re.sub(r"(0x)([0-9a-f]+)|()\b((?=[0-9a-f]*[a-f])[0-9a-f]{8,})\b", lambda m: hexes(m) if m.group(1) else
                  "".join(rng.choice("0123456789abcdef") for _ in m.group(4)), line)
    return re.sub(r"(?<![\w.#-])[0-9]+(?![\w])", digits, line)


@pytest.mark.parametrize("name", sorted(n for n, e in EXPECTED.items() if e))
def test_titles_are_stable_across_runs(name):
    rng = random.Random(name)
    for _ in range(3):
        again = classify([mutate(line, rng) for line in lines_of(name)])
        assert summary(again) == EXPECTED[name]


def test_warn_message_merging_and_orphan_cut_here():
    msg = ["[ 1.0] ------------[ cut here ]------------", "[ 1.0] refcount_t: saturated; leaking memory.",
           "[ 1.0] WARNING: CPU: 0 PID: 1 at lib/refcount.c:22 refcount_warn_saturate+0x1/0x2",
           "[ 1.0] Call Trace:", "[ 1.0]  kvm_put_kvm+0x1/0x2 [kvm]", "[ 1.0] ---[ end trace 0000000000000000 ]---"]
    assert summary(classify(msg)) == [("refcount_t: saturated; leaking memory in kvm_put_kvm", "refcount", 1, 6)]
    assert summary(classify(msg[1:])) == [("refcount_t: saturated; leaking memory in kvm_put_kvm", "refcount", 1, 5)]
    standalone = classify(msg[1:2] + ["[ 1.1] unrelated"] * 9)
    assert summary(standalone) == [("refcount_t: saturated; leaking memory", "refcount", 1, 1)]
    assert classify(msg[:1] + ["[ 1.1] unrelated"] * 9).splats == ()


def test_gap_tolerance_and_the_line_limit():
    warn = lines_of("constructed-gmem-warn.log")[2:51]
    interleaved = warn[:20] + ["INIT: dropbear started"] * 3 + warn[20:]
    assert summary(classify(interleaved)) == [("WARNING in kvm_gmem_prepare_folio", "kvm", 1, 52)]
    split = classify(warn[:20] + ["INIT: dropbear started"] * 4 + warn[20:])
    assert summary(split)[0] == ("WARNING in kvm_gmem_prepare_folio", "kvm", 1, 20)
    assert any("without its end marker" in p for p in split.problems)
    long = classify(warn[:5] + ["[ 1.0]  frame+0x1/0x2"] * 400)
    assert long.splats[0].last_line - long.splats[0].first_line + 1 == splats.MAX_SPLAT_LINES
    assert any(f"cut at {splats.MAX_SPLAT_LINES} lines" in p for p in long.problems)


def test_kvm_rule_uses_file_or_module():
    def title(at: str):
        return summary(classify([f"WARNING: CPU: 0 PID: 1 at {at}"]))[0][:2]
    assert title("arch/x86/kvm/svm/sev.c:9 sev_foo+0x1/0x2 [kvm_amd]") == ("WARNING in sev_foo", "kvm")
    assert title("mm/huge_memory.c:9 split_foo+0x1/0x2") == ("WARNING in split_foo", "warning")
    assert title("include/linux/x.h:9 inlined_into+0x1/0x2 [kvm]") == ("WARNING in inlined_into", "kvm")
    assert title("mm/x.c:9 0xffffffffc0a1b2c4") == ("WARNING at mm/x.c", "warning")
    assert title("mm/x.c:9 foo.isra.0+0x1/0x2") == ("WARNING in foo", "warning")


@pytest.mark.skipif(shutil.which("grep") is None, reason="needs grep")
def test_grep_patterns_match_the_same_lines(tmp_path):
    pattern_file = tmp_path / "patterns.txt"
    pattern_file.write_text("".join(p + "\n" for p in grep_patterns()))
    assert len(grep_patterns()) == len(CATALOGUE)
    for name in sorted(EXPECTED):
        r = subprocess.run(["grep", "-E", "-c", "-f", str(pattern_file), str(DMESG / name)],
                           capture_output=True, text=True, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
        assert r.stderr == ""
        want = sum(1 for line in lines_of(name)
                   if (m := PREFIX.match(line)) and any(p.start.match(line[m.end():]) for p in CATALOGUE))
        assert int(r.stdout) == want, name


junk = st.one_of(st.text(max_size=300), st.binary(max_size=200), st.none(), st.integers(),
                 st.sampled_from(list(all_lines())), st.sampled_from(PREFIXES).map(lambda p: p + "WARNING: CPU: 0"))


@settings(max_examples=300, deadline=None)
@given(st.lists(junk, max_size=60))
def test_never_raises_on_garbage(items):
    report = classify(items)
    assert isinstance(report, SplatReport)
    check_invariants(report)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(PREFIXES), st.sampled_from(sorted(n for n, e in EXPECTED.items() if e)),
       st.sampled_from(["\n", "\r\n", ""]))
def test_any_prefix_and_line_end_on_a_real_splat(prefix, name, end):
    _, _, first, last = EXPECTED[name][0]
    msg = next(m for line in lines_of(name)[first - 1:last] if match_start(m := strip_prefix(line)))
    report = classify(["noise"] * 3 + [prefix + msg + end] + ["noise"] * 5)
    assert [s.first_line for s in report.splats][:1] == [4]


def test_huge_lines_and_odd_items_are_recorded_not_raised():
    report = classify(["x" * 5_000_000, "WARNING: CPU: 0 PID: 1 at a.c:1 f+0x1/0x2" + " y" * 5000, b"\xff\xfe", None])
    assert [s.title for s in report.splats] == ["WARNING in f"]
    assert any("longer than" in p for p in report.problems)
    assert any("not str" in p for p in report.problems)

    def broken():
        yield "[ 1.0] BUG: KASAN: use-after-free in f+0x1/0x2"
        raise OSError("read failed")
    report = classify(broken())
    assert report.splats == () and "OSError: read failed" in report.problems[-1]


def test_panic_on_warn_panics_belong_to_their_splat():
    warn = lines_of("constructed-gmem-warn.log")[2:20]       # cut-here .. registers, before the stack
    panic = ["[ 312.1] Kernel panic - not syncing: kernel: panic_on_warn set ...", "[ 312.1] CPU: 3 UID: 0 PID: 4711",
             "[ 312.1] Call Trace:", "[ 312.1]  panic+0x326/0x350", "[ 312.1] Kernel Offset: disabled",
             "[ 312.1] ---[ end Kernel panic - not syncing: kernel: panic_on_warn set ... ]---", "[ 313.0] later"]
    report = classify(warn + panic)
    assert summary(report) == [("WARNING in kvm_gmem_prepare_folio", "kvm", 1, 24)] and report.problems == ()
    kasan = lines_of("constructed-kasan.log")[1:57]
    report = classify(kasan + ["[ 101.3] Kernel panic - not syncing: KASAN: panic_on_warn set ..."] + panic[1:])
    assert summary(report) == [("BUG: KASAN: slab-use-after-free in kvm_gmem_release", "kasan", 1, 62)]
    unrelated = classify(kasan + ["[ 101.3] Kernel panic - not syncing: hung_task: blocked tasks"])
    assert [s.category for s in unrelated.splats] == ["kasan", "panic"]


def test_mixed_line_ends_miss_nothing():
    lines = lines_of("constructed-generic.log")
    mixed = [line + ("\n" if i % 3 else "") for i, line in enumerate(lines)]
    assert summary(classify(mixed)) == EXPECTED["constructed-generic.log"]
    untimestamped = [strip_prefix(line) + ("\n" if i % 2 else "") for i, line in enumerate(lines)]
    assert summary(classify(untimestamped)) == EXPECTED["constructed-generic.log"]


def test_prefilter_never_changes_the_result(monkeypatch):
    """The batch prefilter is only a shortcut: reading every line must give the same report."""
    pool, rng = list(all_lines()), random.Random(2026)
    for _ in range(300):
        start, items = rng.randrange(len(pool)), []
        for i in range(rng.randint(0, 120)):
            line = pool[(start + i) % len(pool)] if rng.random() < 0.8 else rng.choice(pool)
            dressed = rng.choice(PREFIXES + ["\x1b[31m", "x\r"]) + strip_prefix(line)
            items.append(dressed if rng.random() < 0.3 else line)
        ends = rng.choice(["", "\n", "\r\n", "mixed"])
        items = [x + (rng.choice(["", "\n"]) if ends == "mixed" else ends) for x in items]
        monkeypatch.setattr(splats, "_BATCH", rng.choice([7, 64, 8192]))
        fast = classify(items)
        with monkeypatch.context() as m:
            m.setattr(splats, "_candidates", lambda s, batch: None)
            slow = classify(items)
        assert fast.splats == slow.splats and fast.leaked_pfn_ranges == slow.leaked_pfn_ranges


@pytest.mark.parametrize("line, title, category", [
    # 7.x kernel/panic.c __warn(): file:line first, then the symbol, its module tag, CPU and task
    ("WARNING: arch/x86/kvm/svm/sev.c:5180 at sev_foo+0x1/0x2 [kvm_amd], CPU#3: gmem/4711", "WARNING in sev_foo",
     "kvm"),
    ("WARNING: mm/huge_memory.c:9 at split_foo.isra.0+0x1/0x2, CPU#0: x/1", "WARNING in split_foo", "warning"),
    ("WARNING: at inlined_into+0x1/0x2 [kvm], CPU#1: kvm-nx-lpage-re/88", "WARNING in inlined_into", "kvm"),
    # before 3.10, and 3.10-4.x with "()" after the symbol
    ("WARNING: at arch/x86/kvm/x86.c:5612 emulator_read_write+0x1d3/0x1e0 [kvm]()", "WARNING in emulator_read_write",
     "kvm"),
    ("WARNING: CPU: 1 PID: 7 at mm/slub.c:9 kfree+0x1/0x2()", "WARNING in kfree", "warning"),
    # older spellings of today's reports get today's titles
    ("BUG: unable to handle kernel NULL pointer dereference at 0000000000000010",
     "BUG: kernel NULL pointer dereference", "bug"),
    ("BUG: unable to handle kernel paging request at ffffea0002c4d000", "BUG: unable to handle page fault", "bug"),
    ("UBSAN: Undefined behaviour in arch/x86/kvm/mmu.c:4721:30", "UBSAN: Undefined behaviour in arch/x86/kvm/mmu.c",
     "ubsan"),
    ("[ INFO: possible recursive locking detected ]", "WARNING: possible recursive locking detected", "lockdep"),
    ("[ BUG: bad unlock balance detected! ]", "WARNING: bad unlock balance detected", "lockdep"),
    ("general protection fault: 0000 [#1] SMP KASAN", "general protection fault", "gpf"),
    ("invalid opcode: 0000 [#1] PREEMPT SMP", "Oops: invalid opcode", "oops"),
    ("Oops: 0002 [#1] SMP PTI", "Oops", "oops"),
    ("NMI watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [qemu:1]", "BUG: soft lockup", "soft_lockup"),
    ("BUG: using __this_cpu_read() in preemptible [00000000] code: qemu/1",
     "BUG: using __this_cpu_read() in preemptible code", "atomic_sleep"),
    ("BUG: using smp_processor_id() in preemptible [00000000] code: qemu/1",
     "BUG: using smp_processor_id() in preemptible code", "atomic_sleep"),
    ("BUG: KMSAN: uninit-value in kvm_foo+0x1/0x2 [kvm]", "BUG: KMSAN: uninit-value in kvm_foo", "kmsan"),
    ("INFO: rcu_sched detected stall on CPU 0 (t=6000 jiffies)", "INFO: rcu detected stall", "rcu_stall"),
    ("BUG: spinlock lockup suspected on CPU#1, qemu/7", "BUG: spinlock lockup suspected", "lockdep"),
    # any other "BUG:" line the kernel prints is a splat too
    ("BUG: Bad rss-counter state mm:00000000b7a3c1d2 type:MM_ANONPAGES val:1 Comm:qemu Pid:7",
     "BUG: Bad rss-counter state mm", "bug"),
    ("BUG: Kernel NULL pointer dereference on read at 0x00000000",   # powerpc
     "BUG: Kernel NULL pointer dereference on read at ADDR", "bug"),
    # SNP INIT failing: "%#x" of 0 is "0"; the SNP host series before its merge printed no rc
    ("ccp 0000:46:00.1: SEV-SNP: failed to INIT error 0", "SEV-SNP: failed to INIT error NUM", "snp"),
    ("ccp 0000:46:00.1: SEV-SNP: failed to INIT error 0x3", "SEV-SNP: failed to INIT error NUM", "snp"),
    ("ccp 0000:22:00.1: SEV-SNP: failed to INIT rc -95, error 0", "SEV-SNP: failed to INIT rc NUM, error NUM", "snp"),
])
def test_report_lines_of_every_era(line, title, category):
    for prefix in ("", "[  101.220301][ T3301] "):
        (splat,) = classify([prefix + line]).splats
        assert (splat.title, splat.category) == (title, category)


@pytest.mark.parametrize("line", [
    # benign kernel lines that start like a report (format strings of the 6.1/6.12/7.3 trees)
    "WARNING: The mand mount option has been deprecated and",
    "WARNING: Ancient bootloader, some functionality may be limited!",
    "WARNING: polling idle and HT enabled, performance may degrade",
    "WARNING: Flushing system-wide workqueues will be prohibited in near future.",
    "x86/fpu: WARNING: at least one CPU lacks the feature",
    "WARNING: at least one CPU lacks SNP support",
    "WARNING: foo.c:12 at something odd",
    "INFO: NMI handler (perf_event_nmi_handler) took too long to run: 1.234 msecs",
    "INFO: Stall ended before state dump start",
    "BUG: arch topology borken",
    "BUG: Bad page map: 7 messages suppressed",
    "kmemleak: Automatic memory scanning thread started",
    "traps: a.out[1234] general protection fault ip:401136 sp:7ffd4a3c1e00 error:0 in a.out[401000+1000]",
    "** replaying previous printk message **",
    "watchdog: CPU3: Watchdog detected nothing odd",
    "Internal error handling enabled",
    "overflow-uid is 65534",
    "int3 emulation self-test passed",
    "Unable to handle kernel command line option foo",
])
def test_lookalikes_stay_clean(line):
    assert classify([line, "[    5.000000] " + line]).splats == ()


def test_console_text_glued_before_a_kernel_line():
    assert strip_prefix("syzkaller login: [   30.021137][   T81] BUG: x") == "BUG: x"
    assert strip_prefix("INIT: started[   30.021137] WARNING: x") == "WARNING: x"
    assert strip_prefix("[    1.000000] range [ 1.5] stays") == "range [ 1.5] stays"   # not printk's %5lu.%06lu
    report = classify(["** 3 printk messages dropped ** [  402.000000] kernel BUG at mm/x.c:9!",
                       "snp-guest login: [  501.000000][ T2301] BUG: MAX_LOCKDEP_KEYS too low!"])
    assert [s.title for s in report.splats] == ["kernel BUG at mm/x.c", "BUG: MAX_LOCKDEP_KEYS too low"]


def test_ubsan_before_6_x_is_closed_by_its_rule():
    rule = "=" * 88
    lines = [rule, "UBSAN: shift-out-of-bounds in mm/x.c:1:2", "shift exponent 64 is too large", "CPU: 0 PID: 1",
             "Call Trace:", " kvm_mmu_reset_context+0x2f5/0x380 [kvm]", rule, "unrelated", "unrelated"]
    report = classify(lines)
    assert summary(report) == [("UBSAN: shift-out-of-bounds in kvm_mmu_reset_context", "ubsan", 1, 7)]
    assert report.problems == ()
