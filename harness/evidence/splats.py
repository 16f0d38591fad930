"""Kernel splat classification: pure and table-driven (the table is splat_catalogue.py).

`classify(lines)` returns a SplatReport: no I/O, no printing, never raises (oddities go to
`problems`). Items may be str (with or without a line end), bytes (UTF-8, replaced) or
anything else (str()); one str or bytes is split into lines. Before matching, each line
loses (splat_catalogue.read_line) its line end, text before a lone CR (a terminal
overwrites it), ANSI escapes and, in this order: `> ` mail quoting, a syslog or journalctl
(short, short-precise, short-iso) `... kernel: ` or a bare `kernel: `, dmesg -x's `kern  :warn  : `,
`<4>` (dmesg -r), a /dev/kmsg header `prio,seq,ts,flags;` (seq kept, `\\xNN` decoded;
` KEY=value` lines after a record are skipped), then any run of `[  12.345678]` times, `[ T123]`
/ `[C1]` caller ids, dmesg -T and --time-format iso times and 4.x's glued `** N printk messages
dropped **`; console text glued before a printk time (`login: [  30.021137] ...`) goes too.
Lines past 4096 characters are matched on their start. Line numbers stay the input's.

Boundaries. A splat starts at a catalogue start line. It takes the `====` rule just before
(KASAN, KCSAN, KMSAN, KFENCE, SLUB, lockdep, old UBSAN) and, for WARN, kernel BUG and UBSAN,
the cut-here line and message lines up to 8 lines before: a WARN()/KVM_BUG() message the
catalogue knows and the WARNING after it are ONE splat, titled after the message. Then, by
Pattern.body: `one` is a single line; `free` (sanitizers, SLUB, lockdep) takes every line
until `until` (the closing rule, `stack backtrace:` or SLUB's `CPU:`, and then a dump); `dump`
takes lines shaped like a register/stack dump (BODY) and tolerates up to 3 other lines in a
row (interleaved console output); a dump whose `until` closes (UBSAN) ends at it. A splat
ends at `---[ end Kernel panic ...]---`, a cut-here, a start it does not absorb, a 4th
non-dump line (it ends at its last dump line) or 300 lines (a problem). After `---[ end
trace ]---` only the register re-dump, the panic, `Kernel Offset:` and the panic's end
marker belong. Absorbed, not new: the die() header (Oops) after a page fault, kernel BUG,
stack guard hit, double fault, CFI failure or UBSAN trap; a page fault's
`#PF: ... RMP violation` (title + " (RMP violation)", category rmp); a panic the open splat
caused (any panic inside a report with an end marker, i.e. panic_on_warn/oops; one that names
it: softlockup, hung_task, Hard LOCKUP, RCU Stall, BUG!; or a `panic_on_warn set` / `kasan.fault=panic`
right after a closed KASAN/KFENCE report). One bug, one splat. RMP entry dumps inside a splat
are decoded into Splat.rmp_entries (the "unassigned" header line carries no entry values).

Titles are syzkaller-style, stable across runs, hosts and patch versions. `func+0x1/0x2
[mod]` -> `func`, without .isra/.constprop/.part/.cold/.llvm clone suffixes; a symbol that
is only an address is unknown. {func} is the WARN site or RIP, else the first reliable
stack frame that is not plumbing (SKIP_FRAMES), or for lockdep deadlocks the lock being
taken (`, at: func`); without one the fallback title is used. file:line never appears
(fallbacks keep the file). In free text `0x..` and 8+ hex digits become ADDR, decimals
(PIDs, CPUs, error codes, durations) NUM; SNP titles are fixed templates (PFN/GPA ADDR,
rc/error/level NUM). KVM rule: a WARNING whose file is under kvm/ or whose symbol is in
kvm, kvm_amd or kvm_intel gets category "kvm" (title "WARNING in func"); KVM_BUG()
messages the catalogue knows are titled "KVM_BUG: ..."; KVM_BUG_ON() is a bare
WARN_ON_ONCE, which the call-site rule covers.
"""

from __future__ import annotations

import io
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterable

from harness.evidence.splat_catalogue import (
    ANSI, BODY, CATALOGUE, CUT_HERE, END_PANIC, END_TRACE, FRAME, LOCK_AT, LOCK_WHO, MAX_LINE, PRE_BOL, PRE_FIRST,
    PRE_TS, RIP, RMP_DUMP, RMP_ENTRY, RULE, SKIP_FRAMES, SUPPRESSIONS, TAIL, Pattern, RmpEntry, decode_rmp_entry,
    grep_patterns, match_start, read_line, strip_prefix)

__all__ = ["CATALOGUE", "SUPPRESSIONS", "Pattern", "RmpEntry", "Splat", "SplatReport", "classify",
           "decode_rmp_entry", "grep_patterns", "match_start", "strip_prefix"]

MAX_SPLAT_LINES = 300
MAX_GAP = 3
WARN_MESSAGE_LINES = 8
MAX_PROBLEMS = 100
_BATCH = 8192


@dataclass(frozen=True)
class Splat:
    title: str
    category: str
    first_line: int                  # 1-based, in the input
    last_line: int
    lines: tuple[str, ...]           # raw input lines first_line..last_line, line ends removed
    rmp_entries: tuple[RmpEntry, ...] = ()
    seq: int | None = None           # kmsg seq of the first line, when the input is /dev/kmsg records


@dataclass(frozen=True)
class SplatReport:
    splats: tuple[Splat, ...]
    leaked_pfn_ranges: tuple[tuple[int, int], ...]   # [first, end) as printed by snp_leak_pages()
    problems: tuple[str, ...]


_KMSG_DICT = re.compile(r" [A-Z][A-Z0-9_]*=")
_KMSG_RECORD = re.compile(r"[0-9]+,[0-9]+,[0-9]+,[^;]*;| [A-Z][A-Z0-9_]*=")   # what a dictionary line follows
_CLONE = re.compile(r"(?:\.(?:isra|constprop|part|cold|llvm|lto_priv)(?:\.[0-9]+)*)+$")
_MODULE_KVM = re.compile(r"\[kvm(?:_amd|_intel)?\](?:,|\(\)|\s*$)")   # 7.x "sym [kvm], CPU#", 3.x "sym [kvm]()"
_ADDR = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b")
_NUM = re.compile(r"(?<![\w-])-?[0-9]+(?:\.[0-9]+)?(?:s|ms|us|ns)?(?!\w)")


def _func(sym: str | None) -> str | None:
    name = (sym or "").split("+", 1)[0]
    if not name or name.startswith("0x") or re.fullmatch(r"[0-9a-fA-F]{8,}", name):
        return None
    return _CLONE.sub("", name) or None


def _norm(value: str) -> str:
    return re.sub(r"\s+", " ", _NUM.sub("NUM", _ADDR.sub("ADDR", value))).rstrip(" .")


@dataclass
class _Open:
    """A splat being read; becomes a Splat when the input ends."""
    pattern: Pattern
    match: re.Match[str]
    first: int
    lines: list[str]
    seq: int | None
    mode: str                                   # free | dump | tail
    msg: tuple[Pattern, re.Match[str]] | None = None
    absorbed: list[Pattern] = field(default_factory=list)
    gap: list[str] = field(default_factory=list)
    gap_n: int = 0
    entries: list[RmpEntry] = field(default_factory=list)
    ended: bool = False
    flushed: int | None = None                  # length before the last take() pulled in a gap

    @property
    def last(self) -> int:
        return self.first + len(self.lines) - 1

    def take(self, raw: str, msg: str) -> None:
        self.flushed = len(self.lines) if self.gap else None
        self.lines += self.gap
        self.lines.append(raw.rstrip("\r\n"))
        self.gap, self.gap_n = [], 0
        if (m := RMP_ENTRY.match(msg)) is not None:
            self.entries.append(decode_rmp_entry(int(m["lo"], 16), int(m["hi"], 16), int(m["pfn"], 16)))


@dataclass
class _Cut:
    first: int
    lines: list[str]
    seq: int | None
    nres: int                                   # results before the cut: later ones are WARN messages


# Panics that a report without an end marker causes (softlockup_panic, hung_task_panic, ...),
# and the ones that come right after a closed KASAN/KFENCE report (check_panic_on_warn()).
_PANIC_FROM = {"soft_lockup": "softlockup", "hard_lockup": "Hard LOCKUP", "hung_task": "hung_task",
               "rcu_stall": "RCU Stall", "bug": "BUG!"}   # asm-generic BUG(): "BUG: failure at" + panic("BUG!")
_AFTER_CLOSE = re.compile(r"panic_on_warn set|kasan\.fault=panic")


def _caused(cur: _Open, panic_line: str, closed: bool = False) -> bool:
    """Whether a panic while `cur` is open (or just after it closed) is its consequence."""
    return (not closed and (cur.pattern.marker or cur.msg is not None)) \
        or _PANIC_FROM.get(cur.pattern.category, "\0") in panic_line


class _Scanner:
    def __init__(self) -> None:
        self.results: list[_Open] = []
        self.leaks: list[tuple[int, int]] = []
        self.problems: list[str] = []
        self.cur: _Open | None = None
        self.cut: _Cut | None = None
        self.last_raw: str | None = None

    @property
    def busy(self) -> bool:
        return self.cur is not None or self.cut is not None

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        elif len(self.problems) == MAX_PROBLEMS:
            self.problems.append("more problems not recorded")

    def feed(self, raw: str, n: int, prev: str | None) -> None:
        if _KMSG_DICT.match(raw) and prev is not None and _KMSG_RECORD.match(prev):   # kmsg dictionary: not text
            if self.cur is not None:
                (self.cur.gap if self.cur.gap else self.cur.lines).append(raw.rstrip("\r\n"))
            elif self.cut is not None:
                self.cut.lines.append(raw.rstrip("\r\n"))
            return
        msg, seq, clipped = read_line(raw)
        if clipped:
            self.problem(f"line {n}: longer than {MAX_LINE} characters; matched on its start")
        if self.cur is not None and self._continue(self.cur, msg, raw, n):
            return
        self._idle(msg, raw, n, seq, prev)

    def _continue(self, cur: _Open, msg: str, raw: str, n: int) -> bool:
        """Offer a line to the open splat; False if it closed and the line is for _idle."""
        if cur.mode == "tail":
            if TAIL.match(msg):
                cur.take(raw, msg)
                if END_PANIC.match(msg):
                    self._close()
                return True
            self._close()
            return False
        if cur.pattern.until and (cur.mode == "free" or cur.pattern.until_closes) and cur.pattern.until.match(msg):
            cur.take(raw, msg)
            cur.mode = "dump"
            if cur.pattern.until_closes:
                cur.ended = True
                self._close()
            return True
        if cur.mode == "dump" and END_TRACE.match(msg):
            cur.take(raw, msg)
            cur.ended, cur.mode = True, "tail"
            return True
        if END_PANIC.match(msg):
            cur.take(raw, msg)
            cur.ended = True
            self._close()
            return True
        if CUT_HERE.match(msg):
            self._close()
            return False
        if found := match_start(msg):
            if found[0].name in cur.pattern.absorbs or (found[0].name == "panic" and _caused(cur, msg)):
                cur.take(raw, msg)
                cur.absorbed.append(found[0])
                return True
            self._close()
            return False
        if cur.mode == "free" or BODY.match(msg):
            cur.take(raw, msg)
        else:
            cur.gap.append(raw.rstrip("\r\n"))
            cur.gap_n += 1
            if cur.gap_n > MAX_GAP:
                self._close()
            return True
        if len(cur.lines) >= MAX_SPLAT_LINES:
            self.problem(f"line {cur.first}: splat cut at {MAX_SPLAT_LINES} lines")
            self._close()
        return True

    def _idle(self, msg: str, raw: str, n: int, seq: int | None, prev: str | None) -> None:
        found = match_start(msg)
        cut = self.cut
        if cut is not None and (n - cut.first > WARN_MESSAGE_LINES
                                or (found and not found[0].after_cut and found[0].body != "one")):
            self.cut = cut = None                   # expired, or another kind of report: an orphan cut
        if cut is not None and found and found[0].after_cut:
            self.cut = None
            self._start(*found, raw, n, seq, prev, cut)
            return
        if cut is not None and not CUT_HERE.match(msg):
            cut.lines.append(raw.rstrip("\r\n"))   # a WARN message line (maybe a one-line splat too)
        last = self.results[-1] if self.results else None
        if found and found[0].name == "panic" and last is not None and last.last == n - 1 \
                and (_AFTER_CLOSE.search(msg) or _caused(last, msg, closed=True)):
            self.cur = self.results.pop()           # KASAN/KFENCE's panic_on_warn comes after their closing rule
            self.cur.mode = "dump"
            self.cur.take(raw, msg)
            self.cur.absorbed.append(found[0])
        elif found:
            self._start(*found, raw, n, seq, prev, None)
        elif CUT_HERE.match(msg):
            self.cut = _Cut(n, [raw.rstrip("\r\n")], seq, len(self.results))
        elif RMP_DUMP.match(msg):
            self.problem(f"line {n}: RMP entry dump outside any splat")

    def _start(self, p: Pattern, m: re.Match[str], raw: str, n: int, seq: int | None,
               prev: str | None, cut: _Cut | None) -> None:
        o = _Open(p, m, n, [raw.rstrip("\r\n")], seq, "free" if p.body == "free" else "dump")
        merged: list[_Open] = []
        if cut is not None:
            merged, self.results[cut.nres:] = self.results[cut.nres:], []
            o.first, o.lines, o.seq = cut.first, cut.lines + o.lines, cut.seq
        elif (p.body == "free" or p.until is RULE) and prev is not None and RULE.match(read_line(prev)[0]):
            o.first, o.lines = n - 1, [prev.rstrip("\r\n"), *o.lines]
            o.seq = read_line(prev)[1]
            last = self.results[-1] if self.results else None
            if last is not None and last.last == n - 1:      # the rule was read as the previous dump's:
                del last.lines[last.flushed if last.flushed is not None else -1:]   # give it back
        elif p.warn and self.results and self.results[-1].last == n - 1 \
                and self.results[-1].pattern.warn_message:
            merged = [self.results.pop()]
            o.first, o.lines, o.seq = merged[0].first, merged[0].lines + o.lines, merged[0].seq
        for w in merged:
            o.entries += w.entries
            if o.msg is None and w.pattern.warn_message:
                o.msg = (w.pattern, w.match)
        if p.name == "leak":
            self.leaks.append((int(m["a"], 16), int(m["b"], 16)))
        if p.body == "one":
            self.results.append(o)
        else:
            self.cur = o

    def _close(self) -> None:
        cur, self.cur = self.cur, None
        if cur is None:
            return
        if cur.pattern.marker and not cur.ended:
            self.problem(f"line {cur.first}: {cur.pattern.name} splat ended without its end marker")
        self.results.append(cur)

    def report(self) -> SplatReport:
        self._close()
        out = []
        for o in self.results:
            try:
                out.append(_splat(o))
            except Exception as e:      # keep the splat with a plain title rather than raise
                self.problem(f"line {o.first}: no title ({type(e).__name__}: {e})")
                out.append(Splat(o.pattern.name, o.pattern.category, o.first, o.last, tuple(o.lines)))
        return SplatReport(tuple(out), tuple(self.leaks), tuple(self.problems))


_CALL_TRACE = re.compile(r"Call [Tt]race:|stack backtrace:")   # arm64: "Call trace:"
_BACKTRACE = re.compile(r"stack backtrace:")


def _find_func(o: _Open, p: Pattern, m: re.Match[str]) -> str | None:
    msgs = [read_line(raw)[0] for raw in o.lines]

    def after(rx: re.Pattern[str]) -> list[str]:     # the messages after the first `rx` line, else all
        return msgs[next((i for i, msg in enumerate(msgs) if rx.match(msg)), -1) + 1:]
    for source in p.func:
        if source == "group":
            found = _func(m.groupdict().get("sym"))
        elif source == "rip":
            found = next((_func(r["sym"]) for msg in msgs if (r := RIP.match(msg))), None)
        elif source == "lock":
            found = next((_func(a["sym"]) for msg in after(LOCK_WHO) if (a := LOCK_AT.match(msg))), None)
        else:   # stack: the first reliable frame that is not plumbing
            found = next((f for msg in after(_BACKTRACE if p.body == "free" else _CALL_TRACE)
                          if (fm := FRAME.match(msg)) and not fm["unreliable"] and (f := _func(fm["sym"]))
                          and not SKIP_FRAMES.match(f.lstrip("_"))), None)
        if found:
            return found
    return None


def _splat(o: _Open) -> Splat:
    p, m = o.msg if o.msg is not None else (o.pattern, o.match)
    fields: defaultdict[str, str] = defaultdict(lambda: "?")
    for key, value in m.groupdict().items():
        if value is not None:
            fields[key] = posixpath.normpath(value) if key == "file" else _norm(value)
    func = _find_func(o, p, m)
    if func:
        fields["func"] = func
        title = p.title.format_map(fields)
    else:
        title = (p.fallback or p.title.replace(" in {func}", "")).format_map(fields)
    category = p.category
    if o.msg is None and p.warn and (
            "kvm/" in fields.get("file", "") or _MODULE_KVM.search(m.string)):
        category = "kvm"
    for a in o.absorbed:
        if a.suffix and not title.endswith(a.suffix):
            title, category = title + a.suffix, a.category
    title = title.replace("Oops: Oops in ", "Oops in ").replace("Oops: Oops", "Oops")
    return Splat(title, category, o.first, o.last, tuple(o.lines), tuple(o.entries), o.seq)


def _as_text(item: object) -> str:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item).decode("utf-8", "replace")
    return item if isinstance(item, str) else "" if item is None else str(item)


def _chunk(batch: list[str], from_file: bool) -> str | None:
    """The batch as one string with one "\\n" per line boundary, or None if that cannot be had.
    Lines that end in "\\n" are joined as they are (a text file's lines always do, so only other
    iterables pay for the count), lines without (splitlines()) with "\\n"."""
    if not batch[0].endswith("\n"):
        return "\n".join(batch)                 # stray newlines inside items: _candidates() notices
    s = "".join(batch)
    return s if from_file or s.count("\n") == len(batch) - (not batch[-1].endswith("\n")) else None


def _candidates(s: str, batch: list[str]) -> list[int] | None:
    """Indices of the lines that may start something; None if the batch and the string disagree."""
    ansi = "\x1b" in s
    if ansi:
        s = ANSI.sub("", s)                              # keeps newlines, so line counts hold
    scan = s.replace("\r", "\n") if "\r" in s else s     # same length: positions still map
    hits = {m.start() + 1 for m in PRE_BOL.finditer(scan)} | {m.start() for m in PRE_TS.finditer(scan)}
    if PRE_FIRST.match(scan):
        hits.add(0)
    out: list[int] = []
    line, pos = 0, 0
    for h in sorted(hits):
        line += s.count("\n", pos, h)
        pos = h
        if line >= len(batch):
            return None
        start, end = s.rfind("\n", 0, h) + 1, s.find("\n", h)
        if not (ANSI.sub("", batch[line]) if ansi else batch[line]).startswith(s[start:] if end < 0 else s[start:end]):
            return None                                   # the hit is not on the line we counted to
        if not out or out[-1] != line:
            out.append(line)
    return out


def _scan_batch(scan: _Scanner, batch: list, base: int, from_file: bool) -> None:
    try:
        text = _chunk(batch, from_file)
    except (TypeError, AttributeError):
        scan.problem(f"lines {base + 1}-{base + len(batch)}: items that are not str were converted")
        batch = [_as_text(item) for item in batch]
        text = _chunk(batch, False)
    candidates = _candidates(text, batch) if text is not None else None
    if candidates is None:                                # mixed or stray newlines: read every line
        candidates = range(len(batch))
    i, k = 0, 0
    while i < len(batch):
        if not scan.busy:
            while k < len(candidates) and candidates[k] < i:
                k += 1
            if k == len(candidates):
                break
            i = candidates[k]
        scan.feed(batch[i], base + i + 1, batch[i - 1] if i else scan.last_raw)
        i += 1
    scan.last_raw = batch[-1]


def classify(lines: Iterable[str]) -> SplatReport:
    """Find the kernel splats in `lines`; pure, and never raises."""
    scan = _Scanner()
    base = 0
    try:
        if isinstance(lines, (str, bytes, bytearray)):
            lines = _as_text(lines).splitlines()
        it, from_file = iter(lines), isinstance(lines, io.TextIOBase)
        while batch := list(islice(it, _BATCH)):
            _scan_batch(scan, batch, base, from_file)
            base += len(batch)
    except Exception as e:      # a parser records, it does not raise (DESIGN.md)
        scan.problem(f"stopped after line {base}: {type(e).__name__}: {e}")
    return scan.report()
