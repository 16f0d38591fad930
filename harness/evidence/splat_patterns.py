"""The splat catalogue's data: one Pattern per kernel report format, each with its sources.

Every start regex is anchored (matched with `.match()` on the message after the prefixes
are stripped, see splats.py) and copied from the kernel's format strings; each Pattern's
`fmts` name them (file, literal) for format_drift.py, which checks them against every
supported tree. Start regexes use only syntax that has a POSIX ERE twin (`[0-9]`, `[^ ]`,
`(?:`, `(?P<x>`), so `grep_patterns()` can hand the same patterns to `grep -E`.

Where kernels print one report in different words, each form has its own Pattern (or
alternative): the 6.12 WARNING line and 7.x's, the 4.x page-fault and die lines, lockdep's
old `[ INFO: ... ]` banners. A form no supported tree prints is marked `old=True`; forms that
replace each other share an `alt` family, of which every supported tree must print one.

Categories: warning, kvm (WARN at a KVM call site, KVM_BUG messages, gmem), bug (kernel BUG,
page fault / NULL deref, other `BUG:` lines), oops (an Oops with no BUG line before it), gpf,
kasan, kcsan, kmsan, kfence, memory_leak (kmemleak), lockdep, rcu_stall, hung_task,
soft_lockup, hard_lockup, bad_page, atomic_sleep, refcount, ubsan, panic (a panic not caused
by an earlier splat), rmp (RMP violations and unexpected RMP faults), snp (other SEV-SNP
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
_OLD_LOCKDEP = r"(?:WARNING: |\[ (?:INFO|BUG): )"   # before 4.10 lockdep said "[ INFO: ... ]"


@dataclass(frozen=True)
class Fmt:
    """A kernel format string a pattern stands for: `text` is a literal of `path`'s C source.

    The pattern must match `prefix` + `sample` (default: `text`) rendered with `args` for its
    %s conversions. format_drift.py requires `text` in every supported tree, unless `old`
    (only older kernels print it), `when` (a regex over the file: only trees it finds claim
    the format) or `alt` (a family of alternatives: a tree must print at least one)."""

    path: str
    text: str
    sample: str = ""
    prefix: str = ""
    args: tuple[str, ...] = ()
    alt: str = ""
    when: str = ""
    old: bool = False


def F(path: str, text: str, **kw) -> Fmt:   # noqa: N802 - short, it is written 100 times
    return Fmt(path, text, **kw)


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
    warn: bool = False          # a WARN() report line: WARN messages merge into it, the KVM rule applies
    fmts: tuple[Fmt, ...] = ()  # the format strings it stands for


def pattern(name: str, category: str, start: str, heads: tuple[str, ...] | str, title: str, **kw) -> Pattern:
    heads = (heads,) if isinstance(heads, str) else heads
    return Pattern(name, category, re.compile(start), heads, title, **kw)


_STACK_BT = re.compile(r"stack backtrace:$")
_RULE = re.compile(r"={10,}$")
_OOPS_FUNC = ("rip", "stack")
_DIES = frozenset({"oops", "oops_legacy", "gpf", "arm64_die"})   # die() headers
_LOCKDEP = dict(body="free", until=_STACK_BT)
_FAULT = dict(func=_OOPS_FUNC, body="dump", marker=True, absorbs=_DIES | {"rmp_pf"})
_WARN = dict(func=("group", "stack"), body="dump", marker=True, after_cut=True, warn=True)
_SAN = dict(func=("group", "stack"), body="free", until=_RULE, until_closes=True, marker=True)
# 6.x: cut-here ... end trace; 4.x/5.x framed the report with "====" rules like KASAN
_UBSAN = dict(func=("stack",), body="dump", marker=True, after_cut=True, until=_RULE, until_closes=True)
# die() strings as __die_header() printed them before "Oops: " led (6.1 still did): x86 traps.c and
# fault.c; riscv's "Kernel BUG"
_DIE_KINDS = ("Oops", "divide error", "overflow", "bounds", "invalid opcode", "coprocessor segment overrun",
              "invalid TSS", "segment not present", "stack segment", "alignment check", "double fault", "int3",
              "iret exception", "stack guard page", "Bad pagetable", "kernel stack overflow (double-fault)",
              "unexpected #NM exception", "Kernel BUG")
_DIE_RX = "|".join(k.replace("(", r"\(").replace(")", r"\)") for k in _DIE_KINDS)   # ERE: escape only ()
_WARNING = "kernel/panic.c"
_LOCKDEP_C = "kernel/locking/lockdep.c"
_DUMPSTACK = "arch/x86/kernel/dumpstack.c"
_GPF = "general protection fault, probably for non-canonical address 0xdffffc0000000001"

# The kernel's own reports, in match order (the catalogue adds SEV-SNP's and a catch-all).
KERNEL: tuple[Pattern, ...] = (
    # kernel/panic.c __warn(), 6.12 and older
    pattern("warning", "warning", r"WARNING: CPU: [0-9]+ PID: [0-9]+ at (?:(?P<file>[^ ]+):[0-9]+ )?(?P<sym>[^ ]+)",
            "WARNING: CPU: ", "WARNING in {func}", fallback="WARNING at {file}", **_WARN,
            fmts=(F(_WARNING, "WARNING: CPU: %d PID: %d at %s:%d %pS", alt="warn"),
                  F(_WARNING, "WARNING: CPU: %d PID: %d at %pS", alt="warn_nofile"),
                  F(_WARNING, "WARNING: CPU: %d PID: %d at %s:%d %pS()", old=True))),   # 3.10-4.x
    # kernel/panic.c __warn(), 7.x: the module tag of %pS comes before the comma
    pattern("warning_7x", "warning",
            r"WARNING: (?:(?P<file>[^ ]+):[0-9]+ )?at (?P<sym>[^ ,]+)(?: \[[^]]+\])?, CPU#[0-9]+: ",
            "WARNING: ", "WARNING in {func}", fallback="WARNING at {file}", **_WARN,
            fmts=(F(_WARNING, "WARNING: %s:%d at %pS, CPU#%d: %s/%d", alt="warn"),
                  F(_WARNING, "WARNING: at %pS, CPU#%d: %s/%d", alt="warn_nofile"))),
    # kernel/panic.c before 3.10: "WARNING: at %s:%d %pS()"
    pattern("warning_legacy", "warning", r"WARNING: at (?P<file>[^ ]+):[0-9]+ (?P<sym>[^ ]+)", "WARNING: at ",
            "WARNING in {func}", fallback="WARNING at {file}", **_WARN,
            fmts=(F(_WARNING, "WARNING: at %s:%d %pS()", old=True),)),
    # mm/kasan/report.c: "BUG: KASAN: %s in %pS", report framed by "====" rules
    pattern("kasan", "kasan", r"BUG: KASAN: (?P<kind>[a-z-]+(?: or [a-z-]+)?)(?: in (?P<sym>[^ ]+))?", "BUG: KASAN: ",
            "BUG: KASAN: {kind} in {func}", **_SAN,
            fmts=(F("mm/kasan/report.c", "BUG: KASAN: %s in %pS", args=("slab-use-after-free",)),
                  F("mm/kasan/report.c", "BUG: KASAN: invalid-access"))),
    # kernel/kcsan/report.c
    pattern("kcsan", "kcsan", r"BUG: KCSAN: (?P<kind>[a-z-]+) in (?P<sym>[^ ]+)", "BUG: KCSAN: ",
            "BUG: KCSAN: {kind} in {func}", **_SAN,
            fmts=(F("kernel/kcsan/report.c", "BUG: KCSAN: %s in %ps / %ps", args=("data-race",)),
                  F("kernel/kcsan/report.c", "BUG: KCSAN: %s in %pS", args=("data-race",)))),
    # mm/kmsan/report.c
    pattern("kmsan", "kmsan", r"BUG: KMSAN: (?P<kind>[a-z-]+)(?: in (?P<sym>[^ ]+))?", "BUG: KMSAN: ",
            "BUG: KMSAN: {kind} in {func}", **_SAN,
            fmts=(F("mm/kmsan/report.c", "BUG: KMSAN: %s in %pSb", args=("uninit-value",)),)),
    # mm/kfence/report.c
    pattern("kfence", "kfence", r"BUG: KFENCE: (?P<kind>[a-z -]+) in (?P<sym>[^ ]+)", "BUG: KFENCE: ",
            "BUG: KFENCE: {kind} in {func}", **_SAN,
            fmts=tuple(F("mm/kfence/report.c", t, args=("read",)) for t in (
                "BUG: KFENCE: out-of-bounds %s in %pS", "BUG: KFENCE: use-after-free %s in %pS",
                "BUG: KFENCE: memory corruption in %pS", "BUG: KFENCE: invalid %s in %pS",
                "BUG: KFENCE: invalid free in %pS"))),
    # mm/slub.c slab_bug(): "BUG %s (%s): %pV" between "====" rules, then object dumps and dump_stack()
    pattern("slub", "bug", r"BUG (?P<cache>[^ ]+) \((?:Not tainted|Tainted: [^)]*)\): (?P<what>.+)", "BUG ",
            "SLUB: {what} in {func}", func=("stack",), body="free", until=re.compile(r"CPU: [0-9]+ "),
            fmts=(F("mm/slub.c", "BUG %s (%s): %pV", args=("kmalloc-64", "Not tainted")),)),
    # mm/page_alloc.c bad_page(), mm/memory.c print_bad_pte()/print_bad_page_map(), mm/filemap.c
    pattern("bad_page", "bad_page", r"(?:BUG: )?Bad page (?P<what>state|map|cache) in process ",
            ("BUG: Bad page ", "Bad page "),
            "BUG: Bad page {what} in {func}", func=("stack",), body="dump",
            fmts=(F("mm/page_alloc.c", "BUG: Bad page state in process %s  pfn:%05lx"),
                  F("mm/memory.c", "BUG: Bad page map in process %s  pte:%08llx pmd:%08llx", alt="bad_map"),
                  F("mm/memory.c", "BUG: Bad page map in process %s  %s:%s", alt="bad_map"),
                  F("mm/filemap.c", "BUG: Bad page cache in process %s  pfn:%05lx"),
                  F("mm/page_alloc.c", "Bad page state in process '%s'", old=True))),   # 2.6
    # kernel/sched/core.c
    pattern("sleep_in_atomic", "atomic_sleep",
            r"BUG: sleeping function called from invalid context at (?P<file>[^ :]+):[0-9]+",
            "BUG: sleeping function", "BUG: sleeping function called from invalid context in {func}",
            fallback="BUG: sleeping function called from invalid context at {file}", func=("stack",), body="dump",
            fmts=(F("kernel/sched/core.c", "BUG: sleeping function called from invalid context at %s:%d"),)),
    pattern("sched_atomic", "atomic_sleep",
            r"BUG: scheduling (?P<what>while atomic|in a non-blocking section): (?P<comm>.*)/-?[0-9]+/"
            r"-?(?:0x)?[0-9a-f]+",
            "BUG: scheduling ", "BUG: scheduling {what} in {func}", func=("stack",), body="dump",
            fmts=(F("kernel/sched/core.c", "BUG: scheduling while atomic: %s/%d/0x%08x"),
                  F("kernel/sched/core.c", "BUG: scheduling in a non-blocking section: %s/%d/%i"))),
    pattern("assume_context", "atomic_sleep",
            r"BUG: assuming (?P<what>atomic|non migratable) context at (?P<file>[^ :]+):[0-9]+", "BUG: assuming ",
            "BUG: assuming {what} context in {func}", fallback="BUG: assuming {what} context at {file}",
            func=("stack",), body="dump",
            fmts=(F("kernel/sched/core.c", "BUG: assuming atomic context at %s:%d"),
                  F("kernel/sched/core.c", "BUG: assuming non migratable context at %s:%d"))),
    # lib/smp_processor_id.c check_preemption_disabled()
    pattern("preemptible", "atomic_sleep", r"BUG: using (?P<what>[A-Za-z_]+)\(\) in preemptible \[[0-9a-f]+\] code: ",
            "BUG: using ", "BUG: using {what}() in preemptible code in {func}", func=("stack",), body="dump",
            fmts=(F("lib/smp_processor_id.c", "BUG: using %s%s() in preemptible [%08x] code: %s/%d",
                    args=("__this_cpu_", "read")),)),
    # kernel/watchdog.c (pr_fmt "watchdog: "; "NMI watchdog: " before 4.16)
    pattern("soft_lockup", "soft_lockup",
            r"(?:NMI watchdog: |watchdog: )?BUG: soft lockup - CPU#[0-9]+ stuck for [0-9]+s! \[(?P<comm>.*):[0-9]+\]",
            ("watchdog: BUG: soft lockup", "NMI watchdog: BUG: soft", "BUG: soft lockup"), "BUG: soft lockup in {func}",
            func=_OOPS_FUNC, body="dump",
            fmts=(F("kernel/watchdog.c", "BUG: soft lockup - CPU#%d stuck for %us! [%s:%d]", prefix="watchdog: "),)),
    pattern("hard_lockup", "hard_lockup",
            r"(?:NMI watchdog: |watchdog: )?(?:CPU[0-9]+: )?Watchdog detected hard LOCKUP on cpu [0-9]+",
            ("watchdog: Watchdog", "watchdog: CPU", "NMI watchdog: Watchdog", "Watchdog detected"),
            "Watchdog detected hard LOCKUP in {func}", func=_OOPS_FUNC, body="dump",
            fmts=(F("kernel/watchdog.c", "Watchdog detected hard LOCKUP on cpu %d", prefix="watchdog: ",
                    alt="hardlockup"),
                  F("kernel/watchdog.c", "CPU%u: Watchdog detected hard LOCKUP on cpu %u", prefix="watchdog: ",
                    alt="hardlockup"))),
    # kernel/workqueue.c
    pattern("workqueue_lockup", "soft_lockup", r"BUG: workqueue lockup - pool", "BUG: workqueue lockup",
            "BUG: workqueue lockup", body="dump", fmts=(F("kernel/workqueue.c", "BUG: workqueue lockup - pool"),)),
    pattern("workqueue_leak", "bug", r"BUG: workqueue leaked (?:lock or atomic|atomic, lock or RCU): ",
            "BUG: workqueue leaked", "BUG: workqueue leaked lock or atomic in {func}", func=("stack",), body="dump",
            fmts=(F("kernel/workqueue.c", "BUG: workqueue leaked atomic, lock or RCU: %s[%d]"),
                  F("kernel/workqueue.c", "BUG: workqueue leaked lock or atomic: %s/0x%08x/%d", old=True))),
    # arch/x86/mm/fault.c show_fault_oops(); the "Oops:" and "#PF: ... RMP violation" lines are part of it
    pattern("page_fault", "bug", r"BUG: unable to handle (?:page fault for address: |kernel paging request at )",
            "BUG: unable to handle ", "BUG: unable to handle page fault in {func}", **_FAULT,
            fmts=(F("arch/x86/mm/fault.c", "BUG: unable to handle page fault for address: %px"),
                  F("arch/x86/mm/fault.c", "BUG: unable to handle kernel %s at %px", args=("paging request",),
                    old=True),
                  F("arch/x86/mm/fault.c", "BUG: unable to handle kernel paging request at %p", old=True))),
    pattern("null_deref", "bug",
            r"BUG: (?:kernel NULL pointer dereference, address: |unable to handle kernel NULL pointer dereference at )",
            ("BUG: kernel NULL pointer", "BUG: unable to handle "), "BUG: kernel NULL pointer dereference in {func}",
            **_FAULT,
            fmts=(F("arch/x86/mm/fault.c", "BUG: kernel NULL pointer dereference, address: %px"),
                  F("arch/x86/mm/fault.c", "BUG: unable to handle kernel %s at %px", args=("NULL pointer dereference",),
                    old=True),
                  F("arch/x86/mm/fault.c", "BUG: unable to handle kernel NULL pointer dereference at %p", old=True))),
    # arch/arm64/mm/fault.c die_kernel_fault() (riscv the same; s390: "... in virtual kernel address space")
    pattern("arm64_fault", "bug",
            r"Unable to handle kernel (?P<what>[A-Za-z -]+?) (?:(?:at|in) virtual (?:kernel |user )?address"
            r"|for data at address|for instruction fetch)",
            "Unable to handle kernel ", "Unable to handle kernel {what} in {func}", **_FAULT,
            fmts=(F("arch/arm64/mm/fault.c", "Unable to handle kernel %s at virtual address %016lx",
                    args=("NULL pointer dereference",)),
                  F("arch/s390/mm/fault.c",
                    "Unable to handle kernel pointer dereference in virtual kernel address space"),
                  F("arch/powerpc/mm/fault.c", "Unable to handle kernel paging request for data at address 0x%08lx",
                    old=True))),
    # lib/bug.c report_bug(): "kernel BUG at %s:%u!" then "Oops: invalid opcode"
    pattern("kernel_bug", "bug", r"kernel BUG at (?P<file>[^ :]+):[0-9]+!", "kernel BUG at ",
            "kernel BUG in {func}", fallback="kernel BUG at {file}", func=_OOPS_FUNC,
            body="dump", marker=True, after_cut=True, absorbs=_DIES, fmts=(F("lib/bug.c", "kernel BUG at %s:%u!"),)),
    pattern("kernel_bug_nofile", "bug",
            r"[Kk]ernel BUG at (?P<sym>[^ ]+)(?: \[[^]]+\])? \[verbose debug info unavailable\]",
            ("Kernel BUG at ", "kernel BUG at "), "kernel BUG in {func}", func=("group", "rip"),
            body="dump", marker=True, after_cut=True, absorbs=_DIES,
            fmts=(F("lib/bug.c", "Kernel BUG at %pB [verbose debug info unavailable]", alt="bug_nofile"),
                  F("lib/bug.c", "kernel BUG at %pB [verbose debug info unavailable]", alt="bug_nofile"))),
    # include/asm-generic/bug.h: BUG() where the arch has no trap for it
    pattern("bug_failure", "bug", r"BUG: failure at (?P<file>[^ :]+):[0-9]+/(?P<sym>[^ ]+)\(\)!", "BUG: failure at ",
            "kernel BUG in {func}", fallback="kernel BUG at {file}", func=("group",), body="dump",
            fmts=(F("include/asm-generic/bug.h", "BUG: failure at %s:%d/%s()!"),)),
    # arch/x86/kernel/traps.c handle_stack_overflow(), exc_double_fault(), entry_fred.c: then die();
    # extable.c's early exception (early_printk: console logs only) halts
    pattern("stack_guard", "bug", r"BUG: (?:[A-Za-z]+ )?stack guard page was hit at ", "BUG: ",
            "BUG: stack guard page was hit in {func}", func=_OOPS_FUNC, body="dump", absorbs=_DIES,
            fmts=(F("arch/x86/kernel/traps.c", "BUG: %s stack guard page was hit at ", args=("TASK",),   # %p, 7.x %px
                    sample="BUG: %s stack guard page was hit at %px (stack is %px..%px)"),
                  F("arch/x86/kernel/traps.c", "BUG: stack guard page was hit at %p (stack is %p..%p)", old=True))),
    pattern("x86_panic", "bug", r"PANIC: (?P<what>double fault|invalid or fatal FRED event|early exception)",
            "PANIC: ", "PANIC: {what} in {func}", func=_OOPS_FUNC, body="dump", absorbs=_DIES,
            fmts=(F("arch/x86/kernel/traps.c", "PANIC: double fault, error_code: 0x%lx"),
                  F("arch/x86/entry/entry_fred.c", "PANIC: invalid or fatal FRED event; event type %u "),
                  F("arch/x86/mm/extable.c", "PANIC: early exception 0x%02x IP %lx:%lx error %lx cr2 0x%lx"))),
    # kernel/cfi.c report_cfi_failure(): then a BUG (die) or, permissive, a WARNING
    pattern("cfi", "bug", r"CFI failure at (?P<sym>[^ ]+)(?: \[[^]]+\])? \(", "CFI failure at ",
            "CFI failure in {func}", func=("group",), body="dump", warn_message=True, absorbs=_DIES,
            fmts=(F("kernel/cfi.c", "CFI failure at %pS (target: %pS; expected type: 0x%08x)"),
                  F("kernel/cfi.c", "CFI failure at %pS (no target information)"))),
    # arch/x86/kernel/traps.c GPFSTR via __die_header(): "Oops: %s: %04lx [#%d]..." (6.1: "%s: ...")
    pattern("gpf", "gpf", r"(?:Oops: )?(?:segment-related )?general protection fault[^:]*: [0-9a-f]{4} \[#[0-9]+\]",
            ("Oops: general protection", "Oops: segment-related", "general protection", "segment-related"),
            "general protection fault in {func}", func=_OOPS_FUNC, body="dump", marker=True,
            fmts=(F("arch/x86/kernel/traps.c", "general protection fault", sample="Oops: %s: %04lx [#%d]",
                    args=(_GPF,)),
                  F(_DUMPSTACK, "%s: %04lx [#%d]", args=(_GPF,), old=True))),
    # 6.1 and older x86 printed it without "Oops: " (riscv: "Oops [#1]", s390: "Oops: 0004 ilc:2 [#1]")
    pattern("oops_legacy", "oops", rf"(?P<kind>{_DIE_RX})(?:: [0-9a-f]{{4,16}}(?: ilc:[0-9]+)?)? \[#[0-9]+\]",
            _DIE_KINDS,
       "Oops: {kind} in {func}", func=_OOPS_FUNC, body="dump", marker=True,
       fmts=(F(_DUMPSTACK, "%s: %04lx [#%d]", args=("invalid opcode",), old=True),
             F(_DUMPSTACK, "%s: %04lx [#%d]", args=("Oops",), old=True),
             F("arch/s390/kernel/dumpstack.c", "%s: %04x ilc:%d [#%d]", args=("Oops",)))),
    # arch/x86/kernel/dumpstack.c __die_header(); powerpc "Oops: %s, sig: %ld", riscv "Oops - %s [#%d]"
    pattern("oops", "oops", r"Oops(?:: | - )(?P<kind>[^:[]+?)(?:: [0-9a-f]{4,16}|, sig: [0-9]+)? \[#[0-9]+\]",
            "Oops", "Oops: {kind} in {func}", func=_OOPS_FUNC, body="dump", marker=True,
            fmts=(F(_DUMPSTACK, "Oops: %s: %04lx [#%d]", args=("invalid opcode",)),
                  F("arch/powerpc/kernel/traps.c", "Oops: %s, sig: %ld [#%d]", args=("Kernel access of bad area",)),
                  F("arch/riscv/kernel/traps.c", "Oops - ", sample="%s [#%d]", args=("Oops - illegal instruction",)))),
    # arch/arm64/kernel/traps.c __die()
    pattern("arm64_die", "oops", r"Internal error: (?P<kind>.+?): [0-9a-f]+ \[#[0-9]+\]", "Internal error: ",
            "Internal error: {kind} in {func}", func=_OOPS_FUNC, body="dump", marker=True,
            fmts=(F("arch/arm64/kernel/traps.c", "Internal error: %s: %016lx [#%d]", args=("Oops",)),
                  F("arch/arm/kernel/traps.c", "Internal error: %s: %x [#%d]", args=("Oops",)))),
    # kernel/panic.c panic(): "Kernel panic - not syncing: %s"; the splat that caused it absorbs it
    pattern("panic", "panic", r"Kernel panic - not syncing: (?P<msg>.*)", "Kernel panic - not syncing: ",
            "Kernel panic - not syncing: {msg}", body="dump",
            fmts=(F(_WARNING, "Kernel panic - not syncing: %s", args=("Fatal exception",)),)),
    # kernel/locking/lockdep.c: each report is "====" + "WARNING: ..." ... "stack backtrace:" + dump_stack()
    pattern("lockdep_deadlock", "lockdep",
            _OLD_LOCKDEP + r"possible (?P<what>circular locking dependency|recursive locking) detected",
            ("WARNING: possible circular", "WARNING: possible recursive", "[ INFO: possible"),
            "possible deadlock in {func}", fallback="WARNING: possible {what} detected", func=("lock", "stack"),
            **_LOCKDEP, fmts=(F(_LOCKDEP_C, "WARNING: possible circular locking dependency detected"),
                              F(_LOCKDEP_C, "WARNING: possible recursive locking detected"),
                              F(_LOCKDEP_C, "[ INFO: possible circular locking dependency detected ]", old=True))),
    pattern("lockdep_inconsistent", "lockdep", _OLD_LOCKDEP + r"inconsistent lock state",
            ("WARNING: inconsistent lock", "[ INFO: inconsistent"), "inconsistent lock state in {func}",
            func=("lock", "stack"), **_LOCKDEP, fmts=(F(_LOCKDEP_C, "WARNING: inconsistent lock state"),)),
    pattern("rcu_suspicious", "lockdep", _OLD_LOCKDEP + r"suspicious RCU usage",
            ("WARNING: suspicious RCU", "[ INFO: suspicious RCU"), "WARNING: suspicious RCU usage in {func}",
            func=("stack",), **_LOCKDEP, fmts=(F(_LOCKDEP_C, "WARNING: suspicious RCU usage"),)),
    pattern("lockdep_other", "lockdep",
            _OLD_LOCKDEP + r"(?P<what>possible irq lock inversion dependency detected|bad unlock balance detected"
            r"|held lock freed|lock held when returning to user space|Nested lock was not taken"
            r"|bad contention detected|chain_key collision|[A-Za-z-]+-safe -> [A-Za-z-]+-unsafe lock order detected)",
            ("WARNING: possible irq", "WARNING: bad ", "WARNING: held lock", "WARNING: lock held",
             "WARNING: Nested lock", "WARNING: chain_key", "WARNING: ", "[ INFO: ", "[ BUG: "),
            "WARNING: {what} in {func}", func=("stack",), **_LOCKDEP,
            fmts=tuple(F(_LOCKDEP_C, "WARNING: " + t) for t in (
                "possible irq lock inversion dependency detected", "bad unlock balance detected!", "held lock freed!",
                "lock held when returning to user space!", "Nested lock was not taken", "bad contention detected!",
                "chain_key collision", "%s-safe -> %s-unsafe lock order detected"))),
    pattern("lockdep_locks_held", "lockdep", _OLD_LOCKDEP + r"(?P<comm>[^ ]+)/[0-9]+ still has locks held!",
            ("WARNING: ", "[ BUG: "), "WARNING: still has locks held in {func}", func=("stack",), **_LOCKDEP,
            fmts=(F(_LOCKDEP_C, "WARNING: %s/%d still has locks held!"),)),
    pattern("lockdep_wait_context", "lockdep", r"\[ BUG: Invalid wait context \]", "[ BUG: Invalid wait",
            "BUG: Invalid wait context in {func}", func=("stack",), **_LOCKDEP,
            fmts=(F(_LOCKDEP_C, "[ BUG: Invalid wait context ]"),)),
    # lockdep turning itself off: a limit, a bad class, a lock without a static key (then dump_stack())
    pattern("lockdep_bug", "lockdep",
            r"BUG: (?P<what>MAX_[A-Z_]+ too low|looking up invalid subclass|key [0-9a-f]+ has not been registered)",
            ("BUG: MAX_", "BUG: looking up", "BUG: key "), "BUG: {what} in {func}", fallback="BUG: {what}",
            func=("stack",), body="dump",
            fmts=(F(_LOCKDEP_C, "BUG: MAX_LOCKDEP_KEYS too low!"), F(_LOCKDEP_C, "BUG: MAX_LOCKDEP_CHAINS too low!"),
                  F(_LOCKDEP_C, "BUG: MAX_STACK_TRACE_ENTRIES too low!"),
                  F(_LOCKDEP_C, "BUG: looking up invalid subclass: %u"),
                  F(_LOCKDEP_C, "BUG: key %px has not been registered!"))),
    pattern("lockdep_nonstatic", "lockdep", r"INFO: trying to register non-static key", "INFO: trying",
            "INFO: trying to register non-static key in {func}", func=("stack",), body="dump",
            fmts=(F(_LOCKDEP_C, "INFO: trying to register non-static key."),)),
    # kernel/locking/spinlock_debug.c spin_dump()/rwlock_bug()
    pattern("spinlock", "lockdep", r"BUG: (?P<lock>spinlock|rwlock) (?P<what>[a-z ]+?) on CPU#[0-9]+, ",
            ("BUG: spinlock ", "BUG: rwlock "), "BUG: {lock} {what} in {func}", func=("stack",), body="dump",
            fmts=(F("kernel/locking/spinlock_debug.c", "BUG: spinlock %s on CPU#%d, %s/%d", args=("bad magic",)),
                  F("kernel/locking/spinlock_debug.c", "BUG: rwlock %s on CPU#%d, %s/%d, %p", args=("recursion",)))),
    # kernel/rcu/tree_stall.h (pr_fmt "rcu: "), tree_exp.h, tasks.h
    pattern("rcu_stall", "rcu_stall",
            r"(?:rcu: )?INFO: (?P<flavor>[a-z_]+) (?:self-detected stall on CPU|detected stalls? on "
            r"(?:CPUs/tasks:|tasks:|CPU)|detected stall, but suppressed)", ("rcu: INFO: ", "INFO: rcu"),
            "INFO: rcu detected stall in {func}", func=_OOPS_FUNC, body="dump",
            fmts=(F("kernel/rcu/tree_stall.h", "INFO: %s self-detected stall on CPU", prefix="rcu: ",
                    args=("rcu_preempt",)),
                  F("kernel/rcu/tree_stall.h", "INFO: %s detected stalls on CPUs/tasks:", prefix="rcu: ",
                    args=("rcu_sched",)),
                  F("kernel/rcu/tree_stall.h", "INFO: %s detected stall, but suppressed full report due to a stuck "
                    "CSD-lock.", prefix="rcu: ", args=("rcu_preempt",)),
                  F("kernel/rcu/tasks.h", "INFO: rcu_tasks detected stalls on tasks:"))),
    pattern("rcu_exp_stall", "rcu_stall",
            r"(?:rcu: )?INFO: (?P<flavor>[a-z_]+) detected expedited stalls(?: on CPUs/tasks:|, but suppressed)",
            ("rcu: INFO: ", "INFO: rcu"), "INFO: rcu detected expedited stall in {func}", func=_OOPS_FUNC, body="dump",
            fmts=(F("kernel/rcu/tree_exp.h", "INFO: %s detected expedited stalls on CPUs/tasks: {", prefix="rcu: ",
                    args=("rcu_preempt",)),)),
    # kernel/hung_task.c
    pattern("hung_task", "hung_task",
            r"INFO: task (?P<comm>.+):[0-9]+ blocked(?: in I/O wait)? for more than [0-9]+ seconds\.", "INFO: task ",
            "INFO: task hung in {func}", func=("stack",), body="dump",
            fmts=(F("kernel/hung_task.c", "INFO: task %s:%d blocked for more than %ld seconds.", alt="hung",
                    args=("kworker/u8:3",)),
                  F("kernel/hung_task.c", "INFO: task %s:%d blocked%s for more than %ld seconds.", alt="hung",
                    args=("kworker/u8:3", " in I/O wait")))),
    # lib/refcount.c REFCOUNT_WARN(): WARN_ONCE(1, "refcount_t: " str ".\n")
    pattern("refcount", "refcount",
            r"refcount_t: (?P<what>saturated; leaking memory|addition on 0; use-after-free|underflow; use-after-free"
            r"|decrement hit 0; leaking memory|unknown saturation event!\?)\.", "refcount_t: ",
            "refcount_t: {what} in {func}", func=("stack",), warn_message=True,
            fmts=tuple(F("lib/refcount.c", t, sample=f"refcount_t: {t}.") for t in (
                "saturated; leaking memory", "addition on 0; use-after-free", "underflow; use-after-free",
                "decrement hit 0; leaking memory"))),
    # fs/dcache.c umount_check(): a WARN() message in 7.x, a printk before WARN_ON() earlier
    pattern("dentry_busy", "bug", r"BUG: Dentry [0-9a-f]+\{i=[0-9a-f]+,n=[^}]*\} +still in use", "BUG: Dentry ",
            "BUG: Dentry still in use", warn_message=True,
            fmts=(F("fs/dcache.c", "BUG: Dentry %p{i=", sample="BUG: Dentry %p{i=%llx,n=%pd}  still in use (%d)"),)),
    # lib/ubsan.c ubsan_prologue(): "UBSAN: %s in %s:%d:%d" ... "---[ end trace ]---"
    pattern("ubsan", "ubsan", r"UBSAN: (?P<kind>[a-z-]+) in (?P<file>[^ :]+):[0-9]+:[0-9]+", "UBSAN: ",
            "UBSAN: {kind} in {func}", fallback="UBSAN: {kind} in {file}", **_UBSAN,
            fmts=(F("lib/ubsan.c", "UBSAN: %s in %s:%d:%d", args=("shift-out-of-bounds", "mm/x.c")),)),
    pattern("ubsan_legacy", "ubsan", r"UBSAN: Undefined behaviour in (?P<file>[^ :]+):[0-9]+:[0-9]+", "UBSAN: ",
            "UBSAN: Undefined behaviour in {func}", fallback="UBSAN: Undefined behaviour in {file}", **_UBSAN,
            fmts=(F("lib/ubsan.c", "UBSAN: Undefined behaviour in %s:%d:%d", old=True),)),
    # CONFIG_UBSAN_TRAP: arch/x86/kernel/traps.c handle_bug() "%s at %pS" with lib/ubsan.c's text, then die()
    pattern("ubsan_trap", "ubsan", r"UBSAN: (?P<kind>[a-z /]+) at (?P<sym>[^ ]+)", "UBSAN: ",
            "UBSAN: {kind} in {func}", func=("group", "stack"), body="dump", absorbs=_DIES,
            fmts=(F("lib/ubsan.c", "UBSAN: array index out of bounds", sample="%s at %pS",
                    args=("UBSAN: array index out of bounds",)),)),
    # mm/kmemleak.c (pr_fmt "kmemleak: "): each leak, and the scan's summary
    pattern("kmemleak", "memory_leak",
            r"(?:kmemleak: )?unreferenced object(?: \([a-z]+\))? 0x[0-9a-f]+ \(size [0-9]+\):",
            ("kmemleak: unreferenced", "unreferenced object"), "memory leak in {func}", fallback="memory leak",
            func=("stack",), body="dump",
            fmts=(F("mm/kmemleak.c", "unreferenced object 0x%08lx (size %zu):", prefix="kmemleak: ", alt="leak"),
                  F("mm/kmemleak.c", "unreferenced object%s 0x%08lx (size %zu):", prefix="kmemleak: ", alt="leak",
                    args=("",)))),
    pattern("kmemleak_scan", "memory_leak", r"kmemleak: [0-9]+ new suspected memory leaks", "kmemleak: ",
            "kmemleak: new suspected memory leaks",
            fmts=(F("mm/kmemleak.c", "%d new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
                    prefix="kmemleak: "),)),
)
