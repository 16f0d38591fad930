"""The splat catalogue: one Pattern per kernel report format, as data.

Every start regex is anchored (matched with `.match()` on the message after the
prefixes are stripped, see splats.py) and copied from a Linux 6.12 format string;
the comment above each entry names the file. Start regexes use only syntax that
has a POSIX ERE twin (`[0-9]`, `[^ ]`, `(?:`, `(?P<x>`), so `grep_patterns()` can
hand the very same patterns to `grep -E` for the benchmark's baseline.

Categories: warning, kvm (WARN at a KVM call site, KVM_BUG messages, gmem),
bug (kernel BUG, page fault / NULL deref), oops (an Oops with no BUG line before
it), gpf, kasan, kfence, lockdep, rcu_stall, hung_task, soft_lockup, hard_lockup,
bad_page, atomic_sleep, refcount, ubsan, panic (a panic not caused by an earlier
splat), rmp (RMP violations and unexpected RMP faults), snp (other SEV-SNP
failures: RMPUPDATE, PSMASH, leaks, firmware INIT/shutdown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEX = "[0-9a-f]+"
_INT = "-?[0-9]+"
_KVM_AMD = "(?:kvm_amd: )?"   # arch/x86/kvm/svm/sev.c: pr_fmt = KBUILD_MODNAME ": "
_SNP = "(?:SEV-SNP: )?"       # arch/x86/virt/svm/sev.c: pr_fmt = "SEV-SNP: "
_CCP = "(?:ccp [^ ]+: )?"     # drivers/crypto/ccp/sev-dev.c: dev_err(sev->dev, ...)


@dataclass(frozen=True)
class Pattern:
    """One catalogue entry. `title` is a template over {func} and the start's named groups."""

    name: str
    category: str
    start: re.Pattern[str]
    heads: tuple[str, ...]      # literal openings of `start`: the prefilter looks only for these
    title: str
    fallback: str = ""          # title when {func} cannot be found ("": the title without " in {func}")
    func: tuple[str, ...] = ()  # where {func} comes from, in order: group, rip, stack, lock
    body: str = "one"           # one: a single line | dump: register/stack dump | free: anything until `until`
    until: re.Pattern[str] | None = None
    until_closes: bool = False  # the `until` line is the last line (KASAN's rule); else a dump follows
    marker: bool = False        # normally ends with `---[ end trace ]---` (or `until`)
    absorbs: frozenset[str] = frozenset()   # patterns that continue this splat instead of starting one
    after_cut: bool = False     # printed after `------------[ cut here ]------------`
    warn_message: bool = False  # a WARN()/KVM_BUG() message: merges into the WARNING that follows it
    suffix: str = ""            # when absorbed: appended to the host splat's title, category replaces its


def _p(name: str, category: str, start: str, heads: tuple[str, ...] | str, title: str, **kw) -> Pattern:
    heads = (heads,) if isinstance(heads, str) else heads
    return Pattern(name, category, re.compile(start), heads, title, **kw)


_STACK_BT = re.compile(r"stack backtrace:$")
_RULE = re.compile(r"={10,}$")
_OOPS_FUNC = ("rip", "stack")
_LOCKDEP = dict(body="free", until=_STACK_BT)
_FAULT = dict(func=_OOPS_FUNC, body="dump", marker=True, absorbs=frozenset({"oops", "gpf", "rmp_pf"}))

# A title's fallback, when {func} cannot be found, is `fallback` or the title without " in {func}".
CATALOGUE: tuple[Pattern, ...] = (
    # kernel/panic.c __warn(): "WARNING: CPU: %d PID: %d at %s:%d %pS"
    _p("warning", "warning", r"WARNING: CPU: [0-9]+ PID: [0-9]+ at (?:(?P<file>[^ ]+):[0-9]+ )?(?P<sym>[^ ]+)",
       "WARNING: CPU: ", "WARNING in {func}", fallback="WARNING at {file}", func=("group", "stack"),
       body="dump", marker=True, after_cut=True),
    # mm/kasan/report.c: "BUG: KASAN: %s in %pS", report framed by "====" rules
    _p("kasan", "kasan", r"BUG: KASAN: (?P<kind>[a-z-]+)(?: in (?P<sym>[^ ]+))?", "BUG: KASAN: ",
       "BUG: KASAN: {kind} in {func}", func=("group", "stack"), body="free", until=_RULE, until_closes=True,
       marker=True),
    # mm/kfence/report.c: "BUG: KFENCE: out-of-bounds %s in %pS" and friends
    _p("kfence", "kfence", r"BUG: KFENCE: (?P<kind>[a-z -]+) in (?P<sym>[^ ]+)", "BUG: KFENCE: ",
       "BUG: KFENCE: {kind} in {func}", func=("group", "stack"), body="free", until=_RULE, until_closes=True,
       marker=True),
    # mm/page_alloc.c bad_page(): "BUG: Bad page state in process %s  pfn:%05lx";
    # mm/memory.c print_bad_pte(): "BUG: Bad page map in process %s  pte:%08llx pmd:%08llx"
    _p("bad_page", "bad_page", r"BUG: Bad page (?P<what>state|map) in process (?P<comm>.*) +(?:pfn|pte):[0-9a-f]+",
       "BUG: Bad page ", "BUG: Bad page {what} in {func}", func=("stack",), body="dump"),
    # kernel/sched/core.c __might_resched(): "BUG: sleeping function called from invalid context at %s:%d"
    _p("sleep_in_atomic", "atomic_sleep",
       r"BUG: sleeping function called from invalid context at (?P<file>[^ :]+):[0-9]+",
       "BUG: sleeping function", "BUG: sleeping function called from invalid context in {func}",
       fallback="BUG: sleeping function called from invalid context at {file}", func=("stack",), body="dump"),
    # kernel/sched/core.c __schedule_bug(): "BUG: scheduling while atomic: %s/%d/0x%08x"
    _p("sched_atomic", "atomic_sleep", r"BUG: scheduling while atomic: (?P<comm>.*)/[0-9]+/0x[0-9a-f]+",
       "BUG: scheduling while atomic", "BUG: scheduling while atomic in {func}", func=("stack",), body="dump"),
    # kernel/watchdog.c (pr_fmt "watchdog: "): "BUG: soft lockup - CPU#%d stuck for %us! [%s:%d]"
    _p("soft_lockup", "soft_lockup",
       r"(?:watchdog: )?BUG: soft lockup - CPU#[0-9]+ stuck for [0-9]+s! \[(?P<comm>.*):[0-9]+\]",
       ("watchdog: BUG: soft lockup", "BUG: soft lockup"), "BUG: soft lockup in {func}", func=_OOPS_FUNC,
       body="dump"),
    # kernel/watchdog.c: "Watchdog detected hard LOCKUP on cpu %d"
    _p("hard_lockup", "hard_lockup", r"(?:NMI watchdog: |watchdog: )?Watchdog detected hard LOCKUP on cpu [0-9]+",
       ("watchdog: Watchdog", "NMI watchdog: Watchdog", "Watchdog detected"),
       "Watchdog detected hard LOCKUP in {func}", func=_OOPS_FUNC, body="dump"),
    # kernel/workqueue.c: "BUG: workqueue lockup - pool"
    _p("workqueue_lockup", "soft_lockup", r"BUG: workqueue lockup - pool", "BUG: workqueue lockup",
       "BUG: workqueue lockup", body="dump"),
    # arch/x86/mm/fault.c show_fault_oops(); the "Oops:" and "#PF: ... RMP violation" lines are part of it
    _p("page_fault", "bug", r"BUG: unable to handle page fault for address: ", "BUG: unable to handle page fault",
       "BUG: unable to handle page fault in {func}", **_FAULT),
    _p("null_deref", "bug", r"BUG: kernel NULL pointer dereference, address: ", "BUG: kernel NULL pointer",
       "BUG: kernel NULL pointer dereference in {func}", **_FAULT),
    # lib/bug.c report_bug(): "kernel BUG at %s:%u!" (or "Kernel BUG at %pB [...]") then "Oops: invalid opcode"
    _p("kernel_bug", "bug", r"kernel BUG at (?P<file>[^ :]+):[0-9]+!", "kernel BUG at ",
       "kernel BUG in {func}", fallback="kernel BUG at {file}", func=_OOPS_FUNC,
       body="dump", marker=True, after_cut=True, absorbs=frozenset({"oops"})),
    _p("kernel_bug_nofile", "bug", r"Kernel BUG at (?P<sym>[^ ]+) \[verbose debug info unavailable\]",
       "Kernel BUG at ", "kernel BUG in {func}", func=("group", "rip"),
       body="dump", marker=True, after_cut=True, absorbs=frozenset({"oops"})),
    # arch/x86/kernel/traps.c GPFSTR via __die_header(): "Oops: %s: %04lx [#%d]..."
    _p("gpf", "gpf", r"(?:Oops: )?(?:segment-related )?general protection fault[^:]*: [0-9a-f]{4} \[#[0-9]+\]",
       ("Oops: general protection", "Oops: segment-related", "general protection", "segment-related"),
       "general protection fault in {func}", func=_OOPS_FUNC, body="dump", marker=True),
    # arch/x86/kernel/dumpstack.c __die_header(): "Oops: %s: %04lx [#%d]%s%s%s%s%s"
    _p("oops", "oops", r"Oops: (?P<kind>[^:]+): [0-9a-f]{4} \[#[0-9]+\]", "Oops: ",
       "Oops: {kind} in {func}", func=_OOPS_FUNC, body="dump", marker=True),
    # kernel/panic.c panic(): "Kernel panic - not syncing: %s"; the splat that caused it absorbs it
    _p("panic", "panic", r"Kernel panic - not syncing: (?P<msg>.*)", "Kernel panic - not syncing: ",
       "Kernel panic - not syncing: {msg}", body="dump"),
    # kernel/locking/lockdep.c: each report is "====" + "WARNING: ..." ... "stack backtrace:" + dump_stack()
    _p("lockdep_deadlock", "lockdep",
       r"WARNING: possible (?P<what>circular locking dependency|recursive locking) detected",
       ("WARNING: possible circular", "WARNING: possible recursive"), "possible deadlock in {func}",
       fallback="WARNING: possible {what} detected", func=("lock", "stack"), **_LOCKDEP),
    _p("lockdep_inconsistent", "lockdep", r"WARNING: inconsistent lock state", "WARNING: inconsistent lock",
       "inconsistent lock state in {func}", func=("lock", "stack"), **_LOCKDEP),
    _p("rcu_suspicious", "lockdep", r"WARNING: suspicious RCU usage", "WARNING: suspicious RCU",
       "WARNING: suspicious RCU usage in {func}", func=("stack",), **_LOCKDEP),
    _p("lockdep_other", "lockdep",
       r"WARNING: (?P<what>possible irq lock inversion dependency detected|bad unlock balance detected"
       r"|held lock freed|lock held when returning to user space|Nested lock was not taken"
       r"|bad contention detected|chain_key collision|[A-Za-z-]+-safe -> [A-Za-z-]+-unsafe lock order detected)",
       ("WARNING: possible irq", "WARNING: bad ", "WARNING: held lock", "WARNING: lock held",
        "WARNING: Nested lock", "WARNING: chain_key", "WARNING: HARDIRQ", "WARNING: SOFTIRQ"),
       "WARNING: {what} in {func}", func=("stack",), **_LOCKDEP),
    _p("lockdep_locks_held", "lockdep", r"WARNING: (?P<comm>[^ ]+)/[0-9]+ still has locks held!", "WARNING: ",
       "WARNING: still has locks held in {func}", func=("stack",), **_LOCKDEP),
    _p("lockdep_wait_context", "lockdep", r"\[ BUG: Invalid wait context \]", "[ BUG: Invalid wait",
       "BUG: Invalid wait context in {func}", func=("stack",), **_LOCKDEP),
    # kernel/rcu/tree_stall.h (pr_fmt "rcu: "), tree_exp.h, tasks.h
    _p("rcu_stall", "rcu_stall",
       r"(?:rcu: )?INFO: (?P<flavor>[a-z_]+) (?:self-detected stall on CPU|detected stalls on CPUs/tasks:"
       r"|detected stalls on tasks:)", ("rcu: INFO: ", "INFO: rcu"),
       "INFO: rcu detected stall in {func}", func=_OOPS_FUNC, body="dump"),
    _p("rcu_exp_stall", "rcu_stall", r"(?:rcu: )?INFO: (?P<flavor>[a-z_]+) detected expedited stalls on CPUs/tasks:",
       ("rcu: INFO: ", "INFO: rcu"), "INFO: rcu detected expedited stall in {func}", func=_OOPS_FUNC, body="dump"),
    # kernel/hung_task.c: "INFO: task %s:%d blocked for more than %ld seconds."
    _p("hung_task", "hung_task", r"INFO: task (?P<comm>.+):[0-9]+ blocked for more than [0-9]+ seconds\.",
       "INFO: task ", "INFO: task hung in {func}", func=("stack",), body="dump"),
    # lib/refcount.c REFCOUNT_WARN(): WARN_ONCE(1, "refcount_t: " str ".\n")
    _p("refcount", "refcount",
       r"refcount_t: (?P<what>saturated; leaking memory|addition on 0; use-after-free|underflow; use-after-free"
       r"|decrement hit 0; leaking memory|unknown saturation event!\?)\.", "refcount_t: ",
       "refcount_t: {what} in {func}", func=("stack",), warn_message=True),
    # lib/ubsan.c ubsan_prologue(): "UBSAN: %s in %s:%d:%d" ... "---[ end trace ]---"
    _p("ubsan", "ubsan", r"UBSAN: (?P<kind>[a-z-]+) in (?P<file>[^ :]+):[0-9]+:[0-9]+", "UBSAN: ",
       "UBSAN: {kind} in {func}", fallback="UBSAN: {kind} in {file}", func=("stack",),
       body="dump", marker=True, after_cut=True),

    # --- SEV-SNP host (arch/x86/virt/svm/sev.c), KVM SEV (arch/x86/kvm/svm/sev.c), ccp, guest_memfd ---
    # rmpupdate(): "RMPUPDATE failed for PFN %llx, pg_level: %d, ret: %d" + dump_rmpentry() + dump_stack()
    _p("rmpupdate", "snp", _SNP + rf"RMPUPDATE failed for PFN {_HEX}, pg_level: [0-9]+, ret: {_INT}",
       ("SEV-SNP: RMPUPDATE", "RMPUPDATE"), "RMPUPDATE failed for PFN ADDR (ret NUM)", body="dump"),
    # arch/x86/mm/fault.c show_fault_oops(): "#PF: error_code(0x%04lx) - %s" with "RMP violation"
    _p("rmp_pf", "rmp", r"#PF: error_code\((?P<code>0x[0-9a-f]+)\) - RMP violation", "#PF: error_code",
       "#PF: RMP violation in {func}", func=_OOPS_FUNC, body="dump", suffix=" (RMP violation)"),
    # sev_handle_rmp_fault(): four pr_warn_ratelimited("SEV: Unexpected RMP fault...") variants
    _p("rmp_fault_unexpected", "rmp",
       _KVM_AMD + rf"SEV: Unexpected RMP fault(?P<what>(?: for non-private|, non-private slot for"
       rf"|, no backing page for private|, no assigned RMP entry found for) GPA 0x{_HEX}.*)",
       ("kvm_amd: SEV: ", "SEV: Unexpected"), "SEV: Unexpected RMP fault{what}"),
    # sev_handle_rmp_fault(): "SEV: Unable to split RMP entry for GPA 0x%llx PFN 0x%llx ret %d"
    _p("rmp_split", "snp", _KVM_AMD + rf"SEV: Unable to split RMP entry for GPA 0x{_HEX} PFN 0x{_HEX} ret {_INT}",
       ("kvm_amd: SEV: ", "SEV: Unable"), "SEV: Unable to split RMP entry for GPA ADDR PFN ADDR ret NUM"),
    # sev_gmem_prepare(): pr_err_ratelimited("SEV: Failed to update RMP entry: GFN %llx PFN %llx level %d error %d")
    _p("rmp_update_err", "snp",
       _KVM_AMD + rf"SEV: Failed to update RMP entry: GFN {_HEX} PFN {_HEX} level [0-9]+ error {_INT}",
       ("kvm_amd: SEV: ", "SEV: Failed"), "SEV: Failed to update RMP entry: GFN ADDR PFN ADDR level NUM error NUM"),
    # sev_gmem_invalidate(): WARN_ONCE(rc, "SEV: Failed to PSMASH RMP entry for PFN 0x%llx error %d\n")
    # and WARN_ONCE(rc, "SEV: Failed to update RMP entry for PFN 0x%llx error %d\n")
    _p("rmp_warn", "snp", rf"SEV: Failed to (?P<op>PSMASH|update) RMP entry for PFN 0x{_HEX} error {_INT}",
       "SEV: Failed", "SEV: Failed to {op} RMP entry for PFN ADDR error NUM", warn_message=True),
    # is_pfn_range_shared() / sev_gmem_prepare(): failed RMP lookups
    _p("rmp_retrieve", "snp", _KVM_AMD + rf"SEV: Failed to retrieve RMP entry: PFN 0x{_HEX} ",
       ("kvm_amd: SEV: ", "SEV: Failed"), "SEV: Failed to retrieve RMP entry"),
    _p("rmp_lookup", "snp", _KVM_AMD + rf"SEV: Failed to look up RMP entry: GFN {_HEX} PFN {_HEX} error {_INT}",
       ("kvm_amd: SEV: ", "SEV: Failed"), "SEV: Failed to look up RMP entry: GFN ADDR PFN ADDR error NUM"),
    # snp_leak_pages(): "Leaking PFN range 0x%llx-0x%llx" + one dump_rmpentry() per page
    _p("leak", "snp", _SNP + rf"Leaking PFN range 0x(?P<a>{_HEX})-0x(?P<b>{_HEX})", ("SEV-SNP: Leaking", "Leaking PFN"),
       "Leaking PFN range ADDR-ADDR", body="dump"),
    # snp_page_reclaim(): KVM_BUG(rc, kvm, "Failed to reclaim PFN %llx, rc %d fw_err %d") -> WARN_ONCE
    _p("reclaim", "kvm", rf"Failed to reclaim PFN {_HEX}, rc {_INT} fw_err {_INT}", "Failed to ",
       "KVM_BUG: Failed to reclaim PFN ADDR, rc NUM fw_err NUM", warn_message=True),
    # virt/kvm/guest_memfd.c __kvm_gmem_prepare_folio() (no pr_fmt)
    _p("gmem_prepare", "kvm",
       rf"gmem: Failed to prepare folio for index {_HEX} GFN {_HEX} PFN {_HEX} error {_INT}", "gmem: ",
       "gmem: Failed to prepare folio for index ADDR GFN ADDR PFN ADDR error NUM"),
    # adjust_direct_map(): "Failed to split direct map for PFN 0x%llx, ret: %d"
    _p("direct_map", "snp", _SNP + rf"Failed to split direct map for PFN 0x{_HEX}, ret: {_INT}",
       ("SEV-SNP: Failed", "Failed to "), "Failed to split direct map for PFN ADDR, ret NUM"),
    # drivers/crypto/ccp/sev-dev.c _sev_platform_init_locked(): "SEV-SNP: failed to INIT rc %d, error %#x"
    _p("snp_init", "snp", _CCP + rf"SEV-SNP: failed to INIT rc {_INT}, error (?:0x{_HEX}|0)",
       ("ccp ", "SEV-SNP: failed"), "SEV-SNP: failed to INIT rc NUM, error NUM"),
    # __sev_snp_init_locked(): "SEV-SNP: %s failed rc %d, error %#x" (SNP_INIT, SNP_INIT_EX, SNP_DF_FLUSH)
    _p("snp_cmd", "snp", _CCP + rf"SEV-SNP: (?P<cmd>SNP_INIT_EX|SNP_INIT|SNP_DF_FLUSH) failed rc {_INT}, error",
       ("ccp ", "SEV-SNP: SNP_"), "SEV-SNP: {cmd} failed rc NUM, error NUM"),
    # __sev_snp_shutdown_locked()
    _p("snp_shutdown", "snp",
       _CCP + r"(?P<what>SEV-SNP DF_FLUSH failed|SEV-SNP firmware shutdown failed|SNP IOMMU shutdown failed)",
       ("ccp ", "SEV-SNP ", "SNP IOMMU"), "{what}"),
    # __sev_do_cmd_locked() / snp legacy commands: pages stuck firmware-owned
    _p("ccp_reclaim", "snp",
       _CCP + r"(?P<what>SEV: failed to reclaim buffer for legacy command"
       r"|Failed to reclaim firmware-owned pages while issuing SEV legacy command)",
       ("ccp ", "SEV: failed", "Failed to "), "{what}"),
)

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
    # Userspace "WARNING: ..." on a serial console (ld.so, modprobe, kexec-tools): not a kernel format.
    r"WARNING: (?!CPU: |possible |inconsistent |suspicious |bad |held |lock held |Nested |chain_key "
    r"|[^ ]+/[0-9]+ still |[A-Za-z-]+-safe )",
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

# Dump lines. A "dump" body continues over these; anything else is a gap.
BODY = re.compile(
    r"(?:[ \t]|CPU: |Hardware name: |Workqueue: |Tainted: |Modules linked in:|RIP: |EIP: |Code: |RSP: "
    r"|R[A-Z0-9]{2}: |[EFGC]S: |DR[0-7]: |CR2: |PKRU: |Call Trace:|---\[ |irq event stamp:|hardirqs last"
    r"|softirqs last|rcu: |task:|\"echo 0 > |Showing (?:all locks|busy workqueues)|[0-9]+ locks? held by"
    r"|no locks held by|Preemption disabled at:|\[<[0-9a-f]+>\]|in_atomic\(\)|preempt_count: |RCU nest depth"
    r"|Sending NMI from CPU|NMI backtrace for cpu|PGD |P4D |PUD |PMD |PTE |#PF: |IDT: |LDTR: |TR: "
    r"|SEV-SNP: (?:PFN|Error -?[0-9]+ reading RMP|Failed to read RMP entry|Can't dump RMP entry)"
    r"|page: |page_type: |flags: |raw: |head: |memcg:|page dumped because|page_owner|KASAN: |Kernel Offset: "
    r"|Disabling lock debugging|INFO: lockdep is turned off|Future hung task reports|watchdog: CPU#"
    r"|workqueue [^ ]+: flags=|pool [0-9]+:|={10,}$|stack backtrace:|other info that might help)")
# After `---[ end trace ]---`: the register re-dump, the panic it caused, and its end marker.
TAIL = re.compile(
    r"(?:RIP: |EIP: |Code: |RSP: |R[A-Z0-9]{2}: |[EFGC]S: |DR[0-7]: |CR2: |PKRU: |Kernel Offset: |Rebooting in "
    r"|Shutting down cpus|---\[ end Kernel panic|note: [^ ]+\[[0-9]+\] exited with|Fixing recursive fault"
    r"|Kernel panic - not syncing: )")
END_TRACE = re.compile(r"---\[ end trace(?: [0-9a-f]+)? \]---")
END_PANIC = re.compile(r"---\[ end Kernel panic - not syncing: .*\]---")
CUT_HERE = re.compile(r"-+\[ cut here \]-+$")
RULE = _RULE
RIP = re.compile(r"(?:RIP|EIP): (?:[0-9a-f]{4}:)?(?P<sym>[^ ]+)")
FRAME = re.compile(r"[ \t]+(?P<unreliable>\? )?(?P<sym>[A-Za-z_][\w.]*\+0x[0-9a-f]+/0x[0-9a-f]+)")
LOCK_AT = re.compile(r".*, at: (?P<sym>[^ ]+)")
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
    r"|lockdep_\w+|lock_acquire\w*|lock_release|lock_acquired|lock_contended|check_\w+_usage|validate_chain"
    r"|check_prevs?_add|check_noncircular|print_\w+_bug|mark_lock\w*|mark_usage|raw_\w+|do_raw_\w+|queued_\w+"
    r"|native_\w+|refcount_\w+|ubsan_\w+|bad_page|free_page_is_bad\w*|free_pages\w*|free_unref_\w+|print_bad_pte"
    r"|kthread|ret_from_fork\w*|switch_to\w*|context_switch|finish_task_switch\w*|asm_\w+|sysvec_\w+|irq_exit\w*"
    r"|handle_softirqs|do_softirq|hrtimer_interrupt|hrtimer_run_queues|run_hrtimer|tick_\w+|update_process_times"
    r"|watchdog_timer_fn)$")

# The prefixes splats.py strips, in order. ERE-compatible so grep's baseline strips the same.
PREFIX = re.compile(
    r"(?:>+ )*"                                                      # mail quoting
    r"(?:[A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} [^ ]+ kernel: "         # syslog
    r"|[0-9]{4}-[0-9]{2}-[0-9]{2}T[^ ]+ [^ ]+ kernel: )?"            # journalctl -o short-iso
    r"(?:<[0-9]{1,3}>)?"                                             # dmesg -r, console loglevel
    r"(?:[0-9]+,(?P<seq>[0-9]+),[0-9]+,[^;]*;)?"                     # /dev/kmsg record header
    r"(?:\[ *[0-9]+\.[0-9]+\](?:\[ *[CT][0-9]+\])? "                # printk time [+ caller id]
    r"|\[ *[CT][0-9]+\] "                                            # printk caller id alone
    r"|\[[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} [0-9]{4}\] )?")  # dmesg -T


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
# timestamped messages are found after their "] ", the others at the start of a line, with
# the other prefixes spelled out (mail-quoted lines are always candidates). Every head is
# behind a one-character lookahead and in a trie, so most positions fail on one test.
# "[" lines leave in two steps: "[ BUG: Invalid wait context ]", or a timestamp PRE_TS covers.
PRE_TS = re.compile(r"\] " + _KW)
_BOL = (r"\[ BUG|(?=[^\[])(?:" + _KW + r"|(?:>+ )+|<[0-9]{1,3}>" + _KW + r"|[0-9]+,[0-9]+,[0-9]+,[^;\n]*;" + _KW
        + r"|[A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} [^ \n]+ kernel: " + _KW
        + r"|[0-9]{4}-[0-9]{2}-[0-9]{2}T[^ \n]+ [^ \n]+ kernel: " + _KW + ")")
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
