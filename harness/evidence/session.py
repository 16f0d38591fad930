"""Per-test evidence on one target: dmesg slice + splats, kvm_rmp_fault events, RMP dump.

begin() before a test, end() after its body: end() returns what the kernel
said during the test as JUnit properties, the splats found, and the failure
message a splat turns into. Every piece that the target cannot provide is
recorded with the reason, never as a silent pass; without the dmesg slice,
end() raises DmesgUnavailable (an EvidenceError) after recording the rest.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import InfraError, TransportError
from harness.evidence.dmesg import DmesgSlice, KmsgFollower
from harness.evidence.rmp_collect import RmpInfo, fetch_rmp, read_rmp_info
from harness.evidence.splats import Splat, classify
from harness.evidence.shell import TargetShell
from harness.evidence.tracing import RmpFaultTrace, parse_rmp_faults

log = logging.getLogger(__name__)

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")

# Run in TargetShell, builtins only. $1: a /dev/kmsg marker or ""; $2: the trace buffer or "".
# The buffer is cleared after a test that had events, not before every test: a clear waits
# for an RCU grace period (~30 ms under TCG), and most tests have none.
_BEGIN = '[ -z "$1" ] || printf "%s\\n" "$1" > /dev/kmsg'
_END = ('e=0; if [ -n "$2" ]; then while IFS= read -r l; do case $l in "#"*) ;; *) e=1 ;; esac; '
        'printf "%s\\n" "$l"; done < "$2"; fi; '
        '{ [ "$e" = 0 ] || : > "$2"; } && { [ -z "$1" ] || printf "%s\\n" "$1" > /dev/kmsg; }')


def slug(nodeid: str) -> str:
    return _SLUG.sub("_", nodeid).strip("_")[:150] or "test"


class EvidenceError(InfraError):
    """Collecting a test's evidence failed; .evidence holds what was collected before."""

    def __init__(self, message: str, evidence: TestEvidence) -> None:
        super().__init__(message)
        self.evidence = evidence


class DmesgUnavailable(EvidenceError):
    """The target's kernel log could not be followed: nothing says the test left it quiet."""


@dataclass(frozen=True)
class Window:
    nodeid: str
    start_seq: int | None   # None: no dmesg evidence on this target
    traced: bool


@dataclass
class TestEvidence:
    properties: list[tuple[str, str]] = field(default_factory=list)
    splats: tuple[Splat, ...] = ()
    leaked_pfns: tuple[tuple[int, int], ...] = ()
    slice_path: Path | None = None
    rmp_problem: str | None = None  # the RMP verdict, when it found violations

    @property
    def failure(self) -> str | None:
        """The failure message the kernel's evidence gives this test (None: nothing bad)."""
        messages = []
        if self.splats:
            first = self.splats[0]
            more = f" (+{len(self.splats) - 1} more: " + "; ".join(s.title for s in self.splats[1:4]) + ")" \
                if len(self.splats) > 1 else ""
            where = f"; dmesg slice: {self.slice_path}" if self.slice_path else ""
            messages.append(f"kernel splat during the test: {first.title} [{first.category}], "
                            f"slice lines {first.first_line}-{first.last_line}{more}{where}")
        if self.rmp_problem:
            messages.append(f"RMP inconsistent after the test: {self.rmp_problem}")
        return "\n".join(messages) or None


class TargetEvidence:
    """One per target and session; not thread-safe (pytest runs a target's tests in sequence)."""

    def __init__(self, target, run_dir: Path) -> None:
        self.target = target
        self.dir = Path(run_dir)
        self.kmsg = KmsgFollower(target.transport, self.dir / "kmsg.log")
        self.trace: RmpFaultTrace | None = None
        self.trace_skip: str | None = None
        self.rmp: RmpInfo | None = None
        self.rmp_skip: str | None = None
        self.shell: TargetShell | None = None
        self.leaked: list[tuple[int, int]] = []  # every PFN range the kernel logged as leaked, this session

    def start(self) -> None:
        self.shell = TargetShell(self.target.transport)
        self.kmsg.start()
        if self.kmsg.unavailable:  # every test's end() then raises: an error, never a silent pass
            log.error("%s: no per-test dmesg: %s", self.target.name, self.kmsg.unavailable)
        caps = self.target.capabilities()
        self.trace_skip = caps.missing("kvm_rmp_fault")
        if self.trace_skip is None:
            try:
                self.trace = RmpFaultTrace(self.target.transport, caps.facts.tracefs_path)
            except TransportError as e:
                self.trace_skip = f"could not create a trace instance: {e}"
        # RMP dumps need an SNP host and our debugfs file (kernel-patches/instrumentation/).
        self.rmp_skip = caps.missing("snp")
        if self.rmp_skip is None:
            self.rmp, self.rmp_skip = read_rmp_info(self.target.transport)

    def begin(self, nodeid: str) -> Window:
        token = text = None
        if not self.kmsg.unavailable:
            token, text = self.kmsg.new_marker(f"begin {nodeid}")
        self._boundary(_BEGIN, text)
        start = self.kmsg.wait_for(token) if token else None
        return Window(nodeid, start, self.trace is not None)

    def _boundary(self, script: str, marker: str | None) -> str:
        """Write the marker and clear/read the trace buffer, in one shell round trip."""
        status, out = self.shell.run(script, marker or "", self.trace.buffer if self.trace else "")
        if status:
            raise TransportError(f"{self.target.name}: evidence command failed (exit {status}): {out[-500:]}")
        return out

    def end(self, window: Window) -> TestEvidence:
        ev = TestEvidence()
        props = ev.properties
        token = text = None
        if window.start_seq is not None:
            token, text = self.kmsg.new_marker(f"end {window.nodeid}")
        problem = None
        try:
            out = self._boundary(_END, text)
        except TransportError as e:  # the target died mid-test: keep what arrived
            problem, out = str(e), None
        if window.traced and out is not None:
            report = parse_rmp_faults(out)
            props += [*report.properties().items(), ("rmp_fault_tracing", "armed")]
        elif not window.traced:
            props.append(("rmp_fault_tracing", f"skipped: {self.trace_skip}"))
        end_seq = None
        if window.start_seq is None:
            props.append(("dmesg_evidence", f"unavailable: {self.kmsg.unavailable}"))
        else:
            if problem is None:
                try:
                    end_seq = self.kmsg.wait_for(token)
                except TransportError as e:
                    problem = str(e)
            dslice = self.kmsg.slice(window.start_seq, end_seq)
            if dslice.dropped and problem is None:  # unchecked records: no verdict can call them quiet
                problem = (f"{dslice.dropped_count} kmsg record(s) of this test were over the in-memory limit "
                           "and were not checked for splats (kmsg.log has every one)")
            self._record_slice(ev, window.nodeid, dslice, problem)
        if problem is not None:  # what arrived is kept; the collection failure itself is an error
            raise EvidenceError(f"{self.target.name}: collecting the evidence of {window.nodeid} failed: "
                                f"{problem}", ev)
        self._check_rmp(ev, window.nodeid)
        if window.start_seq is None:  # the kernel's log went unchecked: no verdict can say it was quiet
            raise DmesgUnavailable(f"{self.target.name}: no dmesg evidence for {window.nodeid}, so a kernel "
                                   f"splat would go unseen: {self.kmsg.unavailable} (or run with --snp-no-evidence "
                                   "to accept tests without it)", ev)
        return ev

    def _check_rmp(self, ev: TestEvidence, nodeid: str) -> None:
        """After the test's guests are gone, no RMP entry may stay guest-owned unless logged as leaked."""
        if self.rmp is None:
            ev.properties.append(("rmp_verdict", f"skipped: {self.rmp_skip}"))
            return
        from harness.evidence.rmp import ANY_ASID, Expectation

        # Leaked pages stay assigned for good: a leak logged in any earlier test excuses them too.
        self.leaked += ev.leaked_pfns
        props, verdict = self.rmp_check(nodeid, "teardown",
                                        Expectation(asid=ANY_ASID, torn_down=True, leaked_pfns=tuple(self.leaked)))
        ev.properties += props
        if not verdict.ok:
            ev.rmp_problem = verdict.summary()

    def rmp_check(self, nodeid: str, phase: str, exp, gpa_window: tuple[int, int] | None = None):
        """Dump the RMP's guest-owned entries now and check them against `exp` (an Expectation).

        The kernel returns only entries assigned to a guest ASID (record mode; a kernel with the old
        whole-table interface gets a whole-table dump), so the cost follows guest memory, not host
        RAM. Returns (JUnit properties, RmpVerdict); the dump and its sidecar stay in the run
        directory (rmp/<test>/<phase>.bin/.json), where the report draws gpa_window as an RMP map.
        """
        from harness.evidence.rmp import check

        if self.rmp is None:
            raise ValueError(f"no RMP dumps on {self.target.name}: {self.rmp_skip}")
        folder = self.dir / "rmp" / slug(nodeid)
        fetched = fetch_rmp(self.target.transport, self.rmp, folder / f"{phase}.bin")
        verdict = check(fetched.dump, exp)
        sidecar = folder / f"{phase}.json"
        sidecar.write_text(json.dumps({
            **fetched.sidecar(), "phase": phase, "nodeid": nodeid, "target": self.target.name,
            "expectation": {"asid": exp.asid, "private_gpas": [list(r) for r in exp.private_gpas],
                            "shared_gpas": [list(r) for r in exp.shared_gpas], "torn_down": exp.torn_down,
                            "leaked_pfns": [list(r) for r in exp.leaked_pfns], "exclusive": exp.exclusive,
                            "allowed_gpas": [list(r) for r in exp.allowed_gpas]},
            "gpa_window": list(gpa_window) if gpa_window else None, "verdict": verdict.summary()}, indent=2))
        if verdict.ok and not fetched.dump.sparse and fetched.path.with_name(fetched.path.name + ".gz").exists():
            fetched.path.unlink()  # a whole-table dump is 16 bytes per 4K of host RAM: its gzip stays
        suffix = "" if phase == "teardown" else f"_{phase}"
        props = [(f"rmp_verdict{suffix}", verdict.summary()), ("rmp_dump", str(sidecar))]
        props += [(f"rmp_note{suffix}", note) for note in getattr(verdict, "notes", ())]
        return props, verdict

    def _record_slice(self, ev: TestEvidence, nodeid: str, dslice: DmesgSlice, problem: str | None) -> None:
        path = self.dir / "dmesg" / f"{slug(nodeid)}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dslice.text())
        ev.slice_path = path
        report = classify(dslice.lines())
        ev.splats, ev.leaked_pfns = report.splats, report.leaked_pfn_ranges
        props = ev.properties
        props += [("dmesg", str(path)), ("dmesg_records", str(len(dslice.records))),
                  ("dmesg_evidence", "ok" if problem is None else f"partial: {problem}")]
        if dslice.lost:
            props.append(("dmesg_lost", f"{dslice.lost_count} record(s) lost, the ring buffer wrapped: "
                                        + ", ".join(f"seq {a}..{b}" for a, b in dslice.lost)))
        props.append(("splat_count", str(len(report.splats))))
        props += [("splat", f"{s.category}: {s.title}") for s in report.splats]

    def close(self) -> None:
        ended = traced = False
        if self.shell is not None:  # end the follower and the tracing through the open shell
            try:
                if self.kmsg.pid:
                    self.shell.end_group(self.kmsg.pid)
                    ended = True
                if self.trace is not None:
                    self.trace.close(self.shell)
                    traced = True
            except TransportError as e:
                log.warning("%s: ending the evidence collection: %s", self.target.name, e)
            self.shell.close()
        self.kmsg.close(ended=ended)
        if self.trace is not None and not traced:  # the shell was gone: a command of its own
            self.trace.close()
