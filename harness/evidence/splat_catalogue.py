"""The splat catalogue: the kernel's report formats (splat_patterns.py), SEV-SNP's, the
lines that only look alarming, and how one line is read and prefiltered.

Every start regex is anchored (matched with `.match()` on the message after the prefixes
are stripped, see splats.py) and names the format strings it stands for (Pattern.fmts,
checked against each supported tree by format_drift.py). Start regexes use only syntax that
has a POSIX ERE twin (`[0-9]`, `[^ ]`, `(?:`, `(?P<x>`), so `grep_patterns()` can hand the
very same patterns to `grep -E` for the benchmark's baseline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.evidence.splat_patterns import _CCP, _HEX, _INT, _KVM_AMD, _RULE, _SNP, KERNEL, F, Pattern, pattern

_KVM = "arch/x86/kvm/svm/sev.c"
_HOST = "arch/x86/virt/svm/sev.c"
_CCP_C = "drivers/crypto/ccp/sev-dev.c"
_KP = "kvm_amd: "
_SP = "SEV-SNP: "
_CP = "ccp 0000:01:00.5: "

# --- SEV-SNP host (arch/x86/virt/svm/sev.c), KVM SEV (arch/x86/kvm/svm/sev.c), ccp, guest_memfd ---
SNP: tuple[Pattern, ...] = (
    # rmpupdate(): "RMPUPDATE failed for PFN %llx, pg_level: %d, ret: %d" + dump_rmpentry() + dump_stack()
    pattern("rmpupdate", "snp", _SNP + rf"RMPUPDATE failed for PFN {_HEX}, pg_level: [0-9]+, ret: {_INT}",
            ("SEV-SNP: RMPUPDATE", "RMPUPDATE"), "RMPUPDATE failed for PFN ADDR (ret NUM)", body="dump",
            fmts=(F(_HOST, "RMPUPDATE failed for PFN %llx, pg_level: %d, ret: %d", prefix=_SP),)),
    # arch/x86/mm/fault.c show_fault_oops(): "#PF: error_code(0x%04lx) - %s" with "RMP violation"
    pattern("rmp_pf", "rmp", r"#PF: error_code\((?P<code>0x[0-9a-f]+)\) - RMP violation", "#PF: error_code",
            "#PF: RMP violation in {func}", func=("rip", "stack"), body="dump", suffix=" (RMP violation)",
            fmts=(F("arch/x86/mm/fault.c", "RMP violation", sample="#PF: error_code(0x%04lx) - RMP violation"),)),
    # sev_handle_rmp_fault(): four pr_warn_ratelimited("SEV: Unexpected RMP fault...") variants
    pattern("rmp_fault_unexpected", "rmp",
            _KVM_AMD + rf"SEV: Unexpected RMP fault(?P<what>(?: for non-private|, non-private slot for"
            rf"|, no backing page for private|, no assigned RMP entry found for) GPA 0x{_HEX}.*)",
            ("kvm_amd: SEV: ", "SEV: Unexpected"), "SEV: Unexpected RMP fault{what}",
            fmts=tuple(F(_KVM, "SEV: Unexpected RMP fault" + t, prefix=_KP) for t in (
                " for non-private GPA 0x%llx", ", non-private slot for GPA 0x%llx",
                ", no backing page for private GPA 0x%llx",
                ", no assigned RMP entry found for GPA 0x%llx PFN 0x%llx error %d"))),
    pattern("rmp_split", "snp",
            _KVM_AMD + rf"SEV: Unable to split RMP entry for GPA 0x{_HEX} PFN 0x{_HEX} ret {_INT}",
            ("kvm_amd: SEV: ", "SEV: Unable"), "SEV: Unable to split RMP entry for GPA ADDR PFN ADDR ret NUM",
            fmts=(F(_KVM, "SEV: Unable to split RMP entry for GPA 0x%llx PFN 0x%llx ret %d", prefix=_KP),)),
    # sev_gmem_prepare() (6.12) / sev_gmem_make_private() (7.x): pr_err_ratelimited()
    pattern("rmp_update_err", "snp",
            _KVM_AMD + rf"SEV: Failed to update RMP entry: GFN {_HEX} PFN {_HEX} level [0-9]+ error {_INT}",
            ("kvm_amd: SEV: ", "SEV: Failed"),
            "SEV: Failed to update RMP entry: GFN ADDR PFN ADDR level NUM error NUM",
            fmts=(F(_KVM, "SEV: Failed to update RMP entry: GFN %llx PFN %llx level %d error %d", prefix=_KP),)),
    # sev_gmem_invalidate(): WARN_ONCE(rc, "SEV: Failed to PSMASH RMP entry for PFN 0x%llx error %d\n")
    # and WARN_ONCE(rc, "SEV: Failed to update RMP entry for PFN 0x%llx error %d\n")
    pattern("rmp_warn", "snp", rf"SEV: Failed to (?P<op>PSMASH|update) RMP entry for PFN 0x{_HEX} error {_INT}",
            "SEV: Failed", "SEV: Failed to {op} RMP entry for PFN ADDR error NUM", warn_message=True,
            fmts=(F(_KVM, "SEV: Failed to PSMASH RMP entry for PFN 0x%llx error %d"),
                  F(_KVM, "SEV: Failed to update RMP entry for PFN 0x%llx error %d"))),
    # is_pfn_range_shared(), sev_gmem_prepare() / sev_gmem_make_private(): failed RMP lookups
    pattern("rmp_retrieve", "snp", _KVM_AMD + rf"SEV: Failed to retrieve RMP entry: PFN 0x{_HEX} ",
            ("kvm_amd: SEV: ", "SEV: Failed"), "SEV: Failed to retrieve RMP entry",
            fmts=(F(_KVM, "SEV: Failed to retrieve RMP entry: PFN 0x%llx GFN start 0x%llx GFN end 0x%llx "
                          "RMP level %d error %d", prefix=_KP),)),
    pattern("rmp_lookup", "snp",
            _KVM_AMD + rf"SEV: Failed to look up RMP entry: GFN {_HEX} PFN {_HEX} error {_INT}",
            ("kvm_amd: SEV: ", "SEV: Failed"), "SEV: Failed to look up RMP entry: GFN ADDR PFN ADDR error NUM",
            fmts=(F(_KVM, "SEV: Failed to look up RMP entry: GFN %llx PFN %llx error %d", prefix=_KP),)),
    # snp_leak_pages(): "Leaking PFN range 0x%llx-0x%llx" + one dump_rmpentry() per page
    pattern("leak", "snp", _SNP + rf"Leaking PFN range 0x(?P<a>{_HEX})-0x(?P<b>{_HEX})",
            ("SEV-SNP: Leaking", "Leaking PFN"), "Leaking PFN range ADDR-ADDR", body="dump",
            fmts=(F(_HOST, "Leaking PFN range 0x%llx-0x%llx", prefix=_SP),)),
    # snp_page_reclaim(): KVM_BUG(rc, kvm, "Failed to reclaim PFN %llx, rc %d fw_err %d") -> WARN_ONCE
    pattern("reclaim", "kvm", rf"Failed to reclaim PFN {_HEX}, rc {_INT} fw_err {_INT}", "Failed to ",
            "KVM_BUG: Failed to reclaim PFN ADDR, rc NUM fw_err NUM", warn_message=True,
            fmts=(F(_KVM, "Failed to reclaim PFN %llx, rc %d fw_err %d"),)),
    # virt/kvm/guest_memfd.c __kvm_gmem_prepare_folio() (no pr_fmt); 7.x prepares in sev_gmem_make_private()
    pattern("gmem_prepare", "kvm",
            rf"gmem: Failed to prepare folio for index {_HEX} GFN {_HEX} PFN {_HEX} error {_INT}", "gmem: ",
            "gmem: Failed to prepare folio for index ADDR GFN ADDR PFN ADDR error NUM",
            fmts=(F("virt/kvm/guest_memfd.c", "gmem: Failed to prepare folio for index %lx GFN %llx PFN %llx error %d",
                    when=r"\b__kvm_gmem_prepare_folio\("),)),
    # adjust_direct_map(): "Failed to split direct map for PFN 0x%llx, ret: %d"
    pattern("direct_map", "snp", _SNP + rf"Failed to split direct map for PFN 0x{_HEX}, ret: {_INT}",
            ("SEV-SNP: Failed", "Failed to "), "Failed to split direct map for PFN ADDR, ret NUM",
            fmts=(F(_HOST, "Failed to split direct map for PFN 0x%llx, ret: %d", prefix=_SP),)),
    # drivers/crypto/ccp/sev-dev.c _sev_platform_init_locked() in 6.12; 7.x returns the error silently
    pattern("snp_init", "snp", _CCP + rf"SEV-SNP: failed to INIT rc {_INT}, error (?:0x{_HEX}|0)",
            ("ccp ", "SEV-SNP: failed"), "SEV-SNP: failed to INIT rc NUM, error NUM",
            fmts=(F(_CCP_C, "SEV-SNP: failed to INIT rc %d, error %#x", prefix=_CP, old=True),)),
    # sev_pci_init() of the SNP host series before its merge, in vendor and distro kernels: no rc
    pattern("snp_init_no_rc", "snp", _CCP + rf"SEV-SNP: failed to INIT error (?:0x{_HEX}|0)",
            ("ccp ", "SEV-SNP: failed"), "SEV-SNP: failed to INIT error NUM",
            fmts=(F(_CCP_C, "SEV-SNP: failed to INIT error %#x", prefix=_CP, old=True),)),
    # __sev_snp_init_locked(): "SEV-SNP: %s failed rc %d, error %#x" (SNP_INIT, SNP_INIT_EX, SNP_DF_FLUSH)
    pattern("snp_cmd", "snp",
            _CCP + rf"SEV-SNP: (?P<cmd>SNP_INIT_EX|SNP_INIT|SNP_DF_FLUSH) failed rc {_INT}, error",
            ("ccp ", "SEV-SNP: SNP_"), "SEV-SNP: {cmd} failed rc NUM, error NUM",
            fmts=(F(_CCP_C, "SEV-SNP: %s failed rc %d, error %#x", prefix=_CP, args=("SNP_INIT_EX",)),
                  F(_CCP_C, "SEV-SNP: SNP_DF_FLUSH failed rc %d, error %#x", prefix=_CP))),
    # __sev_snp_shutdown_locked()
    pattern("snp_shutdown", "snp",
            _CCP + r"(?P<what>SEV-SNP DF_FLUSH failed|SEV-SNP firmware shutdown failed|SNP IOMMU shutdown failed)",
            ("ccp ", "SEV-SNP ", "SNP IOMMU"), "{what}",
            fmts=(F(_CCP_C, "SEV-SNP DF_FLUSH failed, ret = %d, error = %#x", prefix=_CP),
                  F(_CCP_C, "SEV-SNP firmware shutdown failed, rc %d, error %#x", prefix=_CP),
                  F(_CCP_C, "SNP IOMMU shutdown failed", prefix=_CP))),
    # __sev_do_cmd_locked() / snp legacy commands: pages stuck firmware-owned
    pattern("ccp_reclaim", "snp",
            _CCP + r"(?P<what>SEV: failed to reclaim buffer for legacy command"
            r"|Failed to reclaim firmware-owned pages while issuing SEV legacy command)",
            ("ccp ", "SEV: failed", "Failed to "), "{what}",
            fmts=(F(_CCP_C, "SEV: failed to reclaim buffer for legacy command %#x. Error: %d", prefix=_CP),
                  F(_CCP_C, "Failed to reclaim firmware-owned pages while issuing SEV legacy command."))),
)

# Any other "BUG: " line the kernel prints (kernel/fork.c, mm/mempool.c, entry_fred.c, fs, drivers): last,
# so every specific pattern wins. The title keeps the words up to the first ':' or '!'.
BUG_OTHER = pattern(
    "bug_other", "bug", r"BUG: (?P<msg>[^:!]*)", "BUG: ", "BUG: {msg} in {func}", fallback="BUG: {msg}",
    func=("stack",), body="dump",
    fmts=(F("kernel/fork.c", "BUG: Bad rss-counter state mm:%p type:%s val:%ld"),
          F("kernel/fork.c", "BUG: non-zero pgtables_bytes on freeing mm: %ld"),
          F("mm/mempool.c", "BUG: mempool element poison mismatch")))

CATALOGUE: tuple[Pattern, ...] = (*KERNEL, *SNP, BUG_OTHER)

# Lines that only look alarming. Checked before the catalogue: a suppressed line never
# starts a splat. tests/unit/test_splats.py pins that no positive example matches one.
SUPPRESSIONS: tuple[re.Pattern[str], ...] = tuple(re.compile(s) for s in (
    # SRSO mitigation advice at boot, in both real captures.
    r"Speculative Return Stack Overflow: WARNING: ",
    # Boot arguments: "panic=-1 oops=panic softlockup_panic=1" are settings, not events.
    r"(?:Kernel )?[Cc]ommand line: ",
    # drivers/acpi/pci_root.c advice, in both real captures ("... and report a bug").
    r'PCI: Using host bridge windows from ACPI; if necessary, use "pci=nocrs" and report a bug',
    # CONFIG_DEBUG_STACK_USAGE high-water marks ("mount (79) used greatest stack depth: ..."); info only.
    r"[^ ]+ \([0-9]+\) used greatest stack depth: [0-9]+ bytes left",
    # RAS correctable-error collector and EDAC driver banners on EPYC hosts.
    r"(?:RAS: Correctable Errors collector initialized|EDAC [^ ]+: )",
    # ACPICA complaints about firmware tables: firmware bugs, not kernel splats.
    r"ACPI (?:BIOS )?(?:Error|Warning)(?: \(bug\))?: ",
    # PCI resource assignment noise ("BAR 6: failed to assign [mem size 0x00020000 pref]").
    r"pci [0-9a-f:.]+: BAR [0-9]+(?: \[[^]]*\])?: (?:failed to assign|can't assign|no space for)",
    # Missing firmware files (both real captures: regulatory.db).
    r"(?:[^ ]+ [^ ]+: )?(?:Direct firmware load for [^ ]+ failed with error|firmware: failed to load )"
    r"|cfg80211: failed to load regulatory\.db",
    # KTAP from selftests echoed to the console: "# WARNING: ...", "ok 1 warning_test", "not ok 2 ...".
    r"# |(?:not )?ok [0-9]+ ",
    # kernel/sched/topology.c: a VM's odd -smp topology, reported at boot; not a kernel bug.
    r"BUG: arch topology borken",
    # mm/page_alloc.c, mm/memory.c ratelimit notices: the reports themselves are caught.
    r"BUG: Bad page (?:state|map): [0-9]+ messages suppressed",
    # SNP host banners that mention the RMP/firmware but report success.
    r"SEV-SNP: (?:RMP table physical range|Reserving start/end of RMP table)|ccp [^ ]+: SEV(?:-SNP)? API:"
    r"|kvm_amd: SEV(?:-ES|-SNP)? (?:enabled|disabled|supported)",
    # Our own /dev/kmsg markers: test ids may contain "bug" or "warning".
    r"snp-harness: ",
    # audit records quote arbitrary command lines.
    r"audit: type=[0-9]+ ",
    # Split-lock mode banner ("... and warning on user-space split_locks").
    r"x86/split lock detection: ",
    # Timing noise under TCG / nested virtualisation.
    r"(?:hrtimer: interrupt took [0-9]+ ns|perf: interrupt took too long|sched: RT throttling activated)",
    # Ratelimit notices after rate-limited messages: the messages themselves are caught.
    r"(?:[^ ]+: )?[0-9]+ callbacks suppressed",
    # Status lines reporting success with error=0 and no failure word.
    r"(?!.*[Ff]ail).*\b(?:error|err|status)=0\b(?!x)",
))

# Dump lines. A "dump" body continues over these; anything else is a gap. x86 (also 4.x: "IP:",
# "Stack:"), arm64 ("pc : ", "x29: ", "Call trace:", abort info), SLUB/page dumps, lockdep, RCU.
BODY = re.compile(
    r"(?:[ \t]|CPU: |Hardware name: |Workqueue: |Tainted: |Modules linked in:|RIP: |EIP: |IP: |Code: |RSP: "
    r"|R[A-Z0-9]{2}: |[EFGC]S: |DR[0-7]: |CR2: |PKRU: |Call [Tt]race:|---\[ |irq event stamp:|hardirqs last"
    r"|softirqs last|rcu: |task:|\"echo 0 > |Showing (?:all locks|busy workqueues)|[0-9]+ locks? held by"
    r"|no locks held by|Preemption disabled at:|\[<[0-9a-f]+>\]|in_atomic\(\)|preempt_count: |RCU nest depth"
    r"|Sending NMI from CPU|NMI backtrace for cpu|PGD |P4D |PUD |PMD |PTE |#PF: |IDT: |LDTR: |TR: |Stack:"
    r"|SEV-SNP: (?:PFN|Error -?[0-9]+ reading RMP|Failed to read RMP entry|Can't dump RMP entry)"
    r"|page: |page_type: |flags: |raw: |head: |memcg:|page dumped because|page_owner|KASAN: |Kernel Offset: "
    r"|Disabling lock debugging|INFO: lockdep is turned off|Future hung task reports|watchdog: CPU#"
    r"|INFO: task .* blocked on |kmemleak:  |Task dump for CPU|Pid: |Process |pc : |lr : |sp : |x[0-9]+ *: |pstate: "
    r"|epc : |ra : |PC is at |LR is at |Backtrace:|Mem abort info:|Data abort info:|[a-z]+ pgtable: "
    r"|\[[0-9a-f]{16}\] |Internal error|Kernel panic"
    r"|workqueue [^ ]+: flags=|pool [0-9]+:|={10,}$|stack backtrace:|other info that might help)")
# After `---[ end trace ]---`: the register re-dump, the panic it caused, and its end marker.
TAIL = re.compile(
    r"(?:RIP: |EIP: |Code: |RSP: |R[A-Z0-9]{2}: |[EFGC]S: |DR[0-7]: |CR2: |PKRU: |Kernel Offset: |Rebooting in "
    r"|Shutting down cpus|---\[ end Kernel panic|note: [^ ]+\[[0-9]+\] exited with|Fixing recursive fault"
    r"|SMP: stopping secondary CPUs|PHYS_OFFSET: |CPU features: |Memory Limit: |Kernel panic - not syncing: )")
END_TRACE = re.compile(r"---\[ end trace(?: [0-9a-f]+)? \]---")
END_PANIC = re.compile(r"---\[ end Kernel panic - not syncing: .*\]---")
CUT_HERE = re.compile(r"-+\[ cut here \]-+$")
RULE = _RULE
# x86 "RIP: 0010:sym" (3.x: "RIP: 0010:[<addr>]  [<addr>] sym"), 4.x "IP: sym", arm64 "pc : sym" (4.x "PC is at
# sym"), riscv "epc : sym"
RIP = re.compile(r"(?:(?:RIP|EIP|IP|pc|epc) *: (?:[0-9a-f]{4}:)?(?:\[<[0-9a-f]+>\] *)*|PC is at )(?P<sym>[^ ]+)")
# " func+0x1/0x2", " ? func+...", 4.x " [<addr>] func+...", kmemleak's "kmemleak:     [<addr>] func+..."
FRAME = re.compile(r"(?:kmemleak: )?[ \t]+(?:\[<[0-9a-f]+>\] )?(?P<unreliable>\? )?"
                   r"(?P<sym>[A-Za-z_][\w.]*\+0x[0-9a-f]+/0x[0-9a-f]+)")
LOCK_AT = re.compile(r".*, at: (?:\[<[0-9a-f]+>\] )?(?P<sym>[^ ]+)")   # 4.x: "at: [<addr>] sym"
LOCK_WHO = re.compile(r".*(?:is trying to acquire lock:|is trying to lock:| takes:)$")
# arch/x86/virt/svm/sev.c dump_rmpentry()
RMP_ENTRY = re.compile(rf"{_SNP}PFN:? 0x(?P<pfn>{_HEX}),(?: RMP entry:)? \[0x(?P<lo>{_HEX}) - 0x(?P<hi>{_HEX})\]")
RMP_DUMP = re.compile(rf"{_SNP}(?:PFN:? 0x{_HEX}[, ]|Error -?[0-9]+ reading RMP|Failed to read RMP entry)")
# Frames that say how we got here, not where: skipped when {func} comes from the stack.
# Matched on the name without its leading underscores.
SKIP_FRAMES = re.compile(
    r"(?:dump_stack\w*|show_stack\w*|show_regs|warn\w*|report_bug|handle_bug|\w*exc_\w+|do_int3\w*|panic|nmi_panic"
    r"|check_panic_on_warn|might_\w+|schedule\w*|preempt_schedule\w*|io_schedule\w*|mutex_\w+|rwsem_\w+|down\w*"
    r"|up_\w+|percpu_\w+|rt_mutex\w*|\w*wait_for_completion\w*|wait_for_common\w*|do_wait_for_common|wait_event\w*"
    r"|wait_on_\w+|out_of_line_wait_on_\w+|bit_wait\w*|folio_wait\w*|folio_lock\w*|flush_work\w*|synchronize_\w+"
    r"|wait_rcu_gp|kasan_\w+|asan_\w+|print_report|print_address_description\w*|check_region_inline|kfence_\w+"
    r"|kmsan_\w+|msan_\w+|kcsan_\w+|tsan_\w+|kmemleak_\w+|kmalloc\w*|kmem_cache_alloc\w*|slab_\w+|alloc_pages\w*"
    r"|lockdep_\w+|lock_acquire\w*|lock_release|lock_acquired|lock_contended|check_\w+_usage|validate_chain"
    r"|check_prevs?_add|check_noncircular|print_\w+_bug|mark_lock\w*|mark_usage|raw_\w+|do_raw_\w+|queued_\w+"
    r"|native_\w+|refcount_\w+|ubsan_\w+|bad_page|free_page_is_bad\w*|free_pages\w*|free_unref_\w+|print_bad_p\w+"
    r"|kthread|ret_from_fork\w*|switch_to\w*|context_switch|finish_task_switch\w*|asm_\w+|sysvec_\w+|irq_exit\w*"
    r"|handle_softirqs|do_softirq|hrtimer_interrupt|hrtimer_run_queues|run_hrtimer|tick_\w+|update_process_times"
    r"|watchdog_timer_fn|debug_check_no_locks_\w+|spin_dump|spin_bug|do_raw_spin_\w+|rwlock_bug"
    r"|check_preemption_disabled|debug_smp_processor_id|stack_trace_save\w*|register_lock_class|look_up_lock_class"
    r"|cant_\w+"
    r"|check_bytes_and_report|check_object|\w+_debug_processing|print_trailer|object_err|slab_err)$")

# The prefixes splats.py strips, in order. ERE-compatible so grep's baseline strips the same.
PREFIX = re.compile(
    r"(?:>+ ?)*"                                                     # mail quoting
    r"(?:[A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8}(?:\.[0-9]+)? [^ ]+ kernel: "  # syslog, journalctl (-o short-precise)
    r"|[0-9]{4}-[0-9]{2}-[0-9]{2}T[^ ]+ [^ ]+ kernel: "            # journalctl -o short-iso, RFC 3339 syslog
    r"|kernel: )?"
    r"(?:[a-z]+ *:[a-z]+ *: )?"                                      # dmesg -x: "kern  :warn  : "
    r"(?:<[0-9]{1,3}>)?"                                             # dmesg -r, console loglevel
    r"(?:[0-9]+,(?P<seq>[0-9]+),[0-9]+,[^;]*;)?"                     # /dev/kmsg record header
    r"(?:(?:\[ *[0-9]+\.[0-9]+\]"                                   # printk time
    r"|\[ *[CT][0-9]+\]"                                             # printk caller id
    r"|\[[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} [0-9]{4}\]"  # dmesg -T
    r"|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.,]+[+-][0-9:]+"            # dmesg --time-format iso
    r"|\*\* [0-9]+ printk messages dropped \*\*)+ )*")                # 4.x glued this to the next line


def _ere(py: str) -> str:
    """A start regex in POSIX ERE: groups lose their (?: / (?P<n> openers, stray escapes go."""
    out = re.sub(r"\(\?P<\w+>|\(\?:", "(", py)
    return re.sub(r"\\([\]\-#:!/])", r"\1", out)


def grep_patterns() -> list[str]:
    """One `grep -E` pattern per catalogue entry, each with the same optional prefixes."""
    prefix = _ere(PREFIX.pattern)
    return [f"^{prefix}{_ere(p.start.pattern)}" for p in CATALOGUE]


# --- reading one line --------------------------------------------------------------

MAX_LINE = 4096
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b\n]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_KMSG_ESC = re.compile(r"\\x([0-9a-f]{2})")
_MIDLINE_TS = re.compile(r"\[ *[0-9]+\.[0-9]{6}\](?:\[ *[CT][0-9]+\])? ?")   # printk's own "%5lu.%06lu"


def strip_prefix(line: str) -> str:
    """The message text of one input line (see splats.py for what is stripped)."""
    return read_line(line)[0]


def read_line(raw: str) -> tuple[str, int | None, bool]:
    """(message, kmsg seq, clipped): line end, text before a lone CR, ANSI and PREFIX removed."""
    s = raw.rstrip("\r\n")
    if "\r" in s:
        s = s[s.rfind("\r") + 1:]
    if "\x1b" in s:
        s = ANSI.sub("", s)
    clipped = len(s) > MAX_LINE
    if clipped:
        s = s[:MAX_LINE]
    m = PREFIX.match(s)
    msg, seq = s[m.end():], m.group("seq")
    if "[" in msg and (t := _MIDLINE_TS.search(msg)):
        msg = msg[t.end():]     # console text glued before a kernel line ("login: [  30.0] ...")
    if seq is not None and "\\x" in msg:
        msg = _KMSG_ESC.sub(lambda e: chr(int(e.group(1), 16)), msg)
    return msg, int(seq) if seq is not None else None, clipped


HEADS = tuple({h for p in CATALOGUE for h in p.heads} | {"------------[ cut here", "SEV-SNP: "})
_STARTS = re.compile(re.sub(r"\(\?P<\w+>", "(?:", "|".join(f"(?:{p.start.pattern})" for p in CATALOGUE)))


def match_start(message: str) -> tuple[Pattern, re.Match[str]] | None:
    """The catalogue entry whose start matches a stripped message, unless a suppression does."""
    if not message.startswith(HEADS) or not _STARTS.match(message):
        return None
    if any(s.match(message) for s in SUPPRESSIONS):
        return None
    for p in CATALOGUE:
        if m := p.start.match(message):
            return p, m
    return None


def _trie(words: list[str]) -> str:
    """A regex matching any of `words` (prefix-free), factored so each branch fails on one char."""
    groups: dict[str, list[str]] = {}
    for w in sorted(set(words)):
        groups.setdefault(w[0], []).append(w[1:])
    alts = [re.escape(c + tails[0]) if len(tails) == 1 else re.escape(c) + _trie(tails)
            for c, tails in groups.items()]
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


_FREE = [h for h in set(HEADS) if not any(h != k and h.startswith(k) for k in HEADS)]   # prefix-free
_KW = "(?=[" + re.escape("".join(sorted({h[0] for h in _FREE}))) + "])" + _trie(_FREE)
# Prefilter over a whole batch joined into one string, so benign lines cost a C-level scan:
# messages after a "] " (time, caller id, dmesg -T) are found after it, the others at the start
# of a line, with the other prefixes spelled out (mail-quoted lines are always candidates).
# Every head is behind a one-character lookahead and in a trie, so most positions fail on one
# test. "[" lines leave in two steps: "[ BUG: ...", "[ INFO: ..." (old lockdep), or PRE_TS.
PRE_TS = re.compile(r"\] " + _KW)
_PFX = (r"(?:[A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8}(?:\.[0-9]+)? [^ \n]+ kernel: "
        r"|[0-9]{4}-[0-9]{2}-[0-9]{2}T[^ \n]+ (?:[^ \n]+ kernel: )?|kernel: |[a-z]+ *:[a-z]+ *: |<[0-9]{1,3}>"
        r"|[0-9]+,[0-9]+,[0-9]+,[^;\n]*;|\*\* [0-9]+ printk messages dropped \*\* ?)")
_BOL = r"\[ (?:BUG|INFO)|(?=[^\[])(?:" + _KW + r"|(?:>+ ?)+|" + _PFX + "+" + _KW + ")"
PRE_BOL = re.compile(r"\n(?:" + _BOL + ")")
PRE_FIRST = re.compile(_BOL)


# --- RMP entries (arch/x86/virt/svm/sev.c struct rmpentry) ---------------------------

@dataclass(frozen=True)
class RmpEntry:
    pfn: int | None
    lo: int
    hi: int
    assigned: bool
    pagesize_2m: bool
    immutable: bool
    gpa: int
    asid: int
    vmsa: bool
    validated: bool


def decode_rmp_entry(lo: int, hi: int, pfn: int | None = None) -> RmpEntry:
    """6.12 lo word: assigned:1 pagesize:1 immutable:1 rsvd:9 gpa:39 asid:10 vmsa:1 validated:1 rsvd:1."""
    return RmpEntry(pfn, lo, hi, bool(lo & 1), bool(lo >> 1 & 1), bool(lo >> 2 & 1),
                    (lo >> 12 & (1 << 39) - 1) << 12, lo >> 51 & 0x3FF, bool(lo >> 61 & 1), bool(lo >> 62 & 1))
