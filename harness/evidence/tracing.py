"""The kvm:kvm_rmp_fault tracepoint, in a trace instance of our own, read per test.

A dedicated tracefs instance (instances/snp-harness) keeps the target's global
trace buffer and anyone else's tracing untouched. The event's format is
arch/x86/kvm/trace.h (6.12):
  vcpu %u gpa %016llx pfn 0x%llx error_code 0x%llx rmp_level %d psmash_ret %d
KVM traces a fault after trying to PSMASH a 2M RMP entry (rmp_level 2), or
without trying when the entry was already 4K (rmp_level 1, psmash_ret 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.transport.base import Transport

INSTANCE = "snp-harness"
EVENT = "events/kvm/kvm_rmp_fault"

# $1: the instance dir; $2: the event. Enabled once per session: toggling a tracepoint
# patches kernel text (stop_machine), far too slow to do around every test under TCG.
_ENABLE = ': > "$1/trace" && echo 1 > "$1/$2/enable" && echo 1 > "$1/tracing_on"'  # a reused instance: empty first
_DISABLE = 'echo 0 > "$1/tracing_on"; echo 0 > "$1/$2/enable"'

_FAULT = re.compile(r"kvm_rmp_fault: vcpu (\d+) gpa ([0-9a-fA-F]+) pfn 0x([0-9a-fA-F]+) "
                    r"error_code 0x([0-9a-fA-F]+) rmp_level (-?\d+) psmash_ret (-?\d+)")
_ENTRIES = re.compile(r"^# entries-in-buffer/entries-written: (\d+)/(\d+)")


@dataclass(frozen=True)
class RmpFault:
    vcpu: int
    gpa: int
    pfn: int
    error_code: int
    rmp_level: int
    psmash_ret: int


@dataclass(frozen=True)
class RmpFaultReport:
    faults: tuple[RmpFault, ...]
    lost: int                # events written but no longer in the buffer (it overflowed)
    problems: tuple[str, ...]

    @property
    def psmash_attempts(self) -> int:
        return sum(1 for f in self.faults if f.rmp_level > 1)

    @property
    def psmash_failures(self) -> int:
        return sum(1 for f in self.faults if f.psmash_ret != 0)

    def properties(self) -> dict[str, str]:
        props = {"rmp_fault_events": str(len(self.faults)), "rmp_fault_psmash": str(self.psmash_attempts),
                 "rmp_fault_psmash_failures": str(self.psmash_failures)}
        if self.lost:
            props["rmp_fault_events_lost"] = str(self.lost)
        return props


def parse_rmp_faults(text: str) -> RmpFaultReport:
    """The `trace` file of our instance; pure, never raises."""
    faults, problems, lost = [], [], 0
    for line in text.splitlines():
        m = _ENTRIES.match(line)
        if m:
            lost = max(0, int(m.group(2)) - int(m.group(1)))
            continue
        if line.startswith("#") or not line.strip():
            continue
        f = _FAULT.search(line)
        if f:
            faults.append(RmpFault(int(f.group(1)), int(f.group(2), 16), int(f.group(3), 16),
                                   int(f.group(4), 16), int(f.group(5)), int(f.group(6))))
        elif "kvm_rmp_fault" in line:
            problems.append(f"unparsed kvm_rmp_fault line: {line[:200]}")
    return RmpFaultReport(tuple(faults), lost, tuple(problems))


class RmpFaultTrace:
    """The event enabled in our instance for a session; per test, the buffer is cleared and read."""

    def __init__(self, transport: Transport, tracefs: str) -> None:
        self.transport = transport
        self.instance = f"{tracefs.rstrip('/')}/instances/{INSTANCE}"
        # mkdir in instances/ creates a full trace instance; an existing one is reused.
        transport.run(["mkdir", "-p", self.instance], timeout=60)
        transport.run(["sh", "-c", _ENABLE, "sh", self.instance, EVENT], timeout=60)

    @property
    def buffer(self) -> str:
        """The instance's `trace` file: truncating it clears the buffer, reading it does not consume."""
        return f"{self.instance}/trace"

    def close(self, shell=None) -> None:
        """Disable the event and remove the instance (buffer and settings); through an open
        TargetShell when given (no new channel), else a command of its own."""
        script, args = f'{_DISABLE}; rmdir "$1"', (self.instance, EVENT)
        if shell is not None:
            shell.run(script, *args)
        else:
            self.transport.run(["sh", "-c", script, "sh", *args], timeout=60, check=False)
