"""Per-test dmesg from /dev/kmsg: one follower per target, marker records cut slices.

A follower streams every kmsg record of the target to `kmsg.log` as it arrives
(so a panic or a dead link loses nothing already read). Around each test a
marker record is written to /dev/kmsg; its sequence number is the cursor.
A test's slice is exactly the records between its two markers, with their
sequence numbers. Records the kernel overwrote before they were read (the
ring buffer wrapped) show up as a gap in the sequence numbers: the slice
names the lost range instead of silently missing lines.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import TransportError
from harness.transport.base import Follower, Transport, follow_lines, write_value

log = logging.getLogger(__name__)

# One open file description for the whole session: after EPIPE (records overwritten
# before they were read) cat exits, and the next cat goes on from the oldest record
# still there, on the same position. The script reports each restart. cat runs in the
# background so that a TERM to the shell (by PID: under dropbear a channel's command has
# no process group of its own) ends cat too.
FOLLOW_SCRIPT = (
    'exec 3</dev/kmsg || exit 3; trap \'kill "$c" 2>/dev/null; exit 0\' TERM HUP; n=0; '
    'while [ "$n" -lt 1000 ]; do cat <&3 & c=$!; wait "$c"; '
    'echo "snp-harness-kmsg: reader restarted after exit $?"; n=$((n+1)); done; exit 1'
)
RESTART_NOTE = "snp-harness-kmsg: reader restarted"
MARKER_PREFIX = "snp-harness:"
# Records kept in memory for slicing (each at most ~1 KiB of text). A flood beyond it is still
# written to kmsg.log whole; a slice reaching into what was let go names it as NOT KEPT.
MAX_RECORDS = 100_000

_RECORD = re.compile(r"^(\d+),(\d+),(\d+),([^;,]*)[^;]*;(.*)$")
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


@dataclass(frozen=True)
class KmsgRecord:
    seq: int
    level: int       # 0 emerg .. 7 debug
    facility: int    # 0 kernel, 1 user (our markers) ...
    ts_us: int       # microseconds since boot
    text: str        # unescaped message (kmsg writes non-printables as \\xNN)

    def line(self) -> str:
        """dmesg-style: `[   12.345678] text`."""
        return f"[{self.ts_us // 1_000_000:5d}.{self.ts_us % 1_000_000:06d}] {self.text}"


def parse_kmsg_line(line: str) -> KmsgRecord | None:
    """One /dev/kmsg record line; None for continuation (` KEY=value`) and other lines."""
    m = _RECORD.match(line)
    if not m:
        return None
    prio = int(m.group(1))
    # Control characters (a newline inside one record) stay escaped: one record, one line.
    text = _ESCAPE.sub(lambda e: chr(c) if (c := int(e.group(1), 16)) >= 0x20 else e.group(0), m.group(5))
    return KmsgRecord(seq=int(m.group(2)), level=prio & 7, facility=prio >> 3, ts_us=int(m.group(3)), text=text)


@dataclass(frozen=True)
class DmesgSlice:
    start_seq: int                       # the begin marker's seq (excluded)
    end_seq: int | None                  # the end marker's seq (excluded); None: no end marker
    records: tuple[KmsgRecord, ...]
    lost: tuple[tuple[int, int], ...]    # [first, last] seq ranges overwritten before they were read
    # [first, last] seq ranges read (they are in kmsg.log) but not kept in memory: over MAX_RECORDS
    dropped: tuple[tuple[int, int], ...] = ()

    @property
    def lost_count(self) -> int:
        return sum(b - a + 1 for a, b in self.lost)

    @property
    def dropped_count(self) -> int:
        return sum(b - a + 1 for a, b in self.dropped)

    def _header(self) -> list[str]:
        end = self.end_seq if self.end_seq is not None else "(no end marker)"
        return [f"# kmsg records between seq {self.start_seq} and {end}; the last field is the record's seq",
                *(f"# LOST {b - a + 1} record(s), seq {a}..{b}: the ring buffer wrapped before they were read"
                  for a, b in self.lost),
                *(f"# NOT KEPT {b - a + 1} record(s), seq {a}..{b}: over the in-memory limit; kmsg.log has them"
                  for a, b in self.dropped)]

    def lines(self) -> list[str]:
        """dmesg-style lines, one per line of text(): what the splat catalogue reads."""
        return [*self._header(), *(r.line() for r in self.records)]

    def text(self) -> str:
        """The slice as written to the run directory: `[ts] text  <seq N>` per record, gaps named."""
        body = [f"{r.line()}  <seq {r.seq}>" for r in self.records]
        return "\n".join([*self._header(), *body]) + "\n"


@dataclass
class KmsgFollower:
    """Follows the target's /dev/kmsg for a session; thread-safe marks and slices."""

    transport: Transport
    log_path: Path
    unavailable: str | None = None           # why there is no dmesg evidence (set by start())
    _records: list[KmsgRecord] = field(default_factory=list)
    _seqs: list[int] = field(default_factory=list)
    _lost: list[tuple[int, int]] = field(default_factory=list)
    _markers: dict[str, int] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _proc: object = None
    _thread: Follower | None = None
    _ended: str | None = None
    _dropped_upto: int | None = None  # the newest seq no longer kept in memory

    def start(self, timeout: float = 30) -> None:
        """Start following; on failure set `unavailable` (the tests still run, without dmesg)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        probe = self.transport.run(["sh", "-c", "test -r /dev/kmsg && test -w /dev/kmsg"], timeout=timeout,
                                   check=False)
        if not probe.ok:
            uid = self.transport.run(["id", "-u"], timeout=timeout, check=False).stdout.strip() or "?"
            self.unavailable = (f"/dev/kmsg is not readable and writable as uid {uid} on {self.transport.name}; "
                                "run as root (or sysctl kernel.dmesg_restrict=0 for reading)")
            return
        self._proc = self.transport.spawn(["sh", "-c", FOLLOW_SCRIPT])
        self._thread = follow_lines(self._proc, self.log_path, self.feed, lambda why: self._end(f"kmsg {why}"),
                                    f"kmsg {self.transport.name}")
        try:
            self.mark("follower started", timeout=timeout)
        except TransportError as e:
            self.unavailable = f"following /dev/kmsg on {self.transport.name} failed: {e}"
            self.close()

    def feed(self, line: str) -> None:
        """One line of /dev/kmsg output, as read (the reader thread calls this)."""
        rec = parse_kmsg_line(line)
        if rec is None:
            if line.startswith(RESTART_NOTE):
                log.info("%s: %s", self.transport.name, line)
            return
        with self._cond:
            last = self._seqs[-1] if self._seqs else None
            if last is not None and rec.seq <= last:
                return  # a reader restart never re-reads, but never double-count either
            if last is not None and rec.seq > last + 1:
                self._lost.append((last + 1, rec.seq - 1))
            self._records.append(rec)
            self._seqs.append(rec.seq)
            if len(self._records) > MAX_RECORDS:  # in batches: one memmove per quarter, not per record
                cut = MAX_RECORDS // 4
                self._dropped_upto = self._seqs[cut - 1]
                del self._records[:cut], self._seqs[:cut]
                self._lost = [(a, b) for a, b in self._lost if b > self._dropped_upto]
            words = rec.text.split(None, 2)
            if len(words) >= 2 and words[0] == MARKER_PREFIX:
                self._markers[words[1]] = rec.seq
            self._cond.notify_all()

    def _end(self, why: str) -> None:
        with self._cond:
            self._ended = why
            self._cond.notify_all()

    def new_marker(self, label: str) -> tuple[str, str]:
        """(token, record text) for a marker; the caller writes the text to /dev/kmsg."""
        if self.unavailable:
            raise TransportError(self.unavailable)
        token = uuid.uuid4().hex[:12]
        return token, f"{MARKER_PREFIX} {token} {label}"

    def wait_for(self, token: str, timeout: float = 30) -> int:
        """The seq of a written marker, once the follower has read it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._markers:
                if self._ended:
                    raise TransportError(f"{self.transport.name}: {self._ended}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TransportError(f"{self.transport.name}: marker {token} written to /dev/kmsg "
                                         f"but not read back within {timeout:g}s")
                self._cond.wait(remaining)
            return self._markers.pop(token)

    def mark(self, label: str, timeout: float = 30) -> int:
        """Write a marker record; return its seq once the follower has read it."""
        token, text = self.new_marker(label)
        write_value(self.transport, "/dev/kmsg", text, timeout=timeout)
        return self.wait_for(token, timeout)

    def slice(self, start_seq: int, end_seq: int | None = None) -> DmesgSlice:
        """Records strictly between two markers (to the newest record read when end_seq is None)."""
        with self._cond:
            lo = bisect.bisect_right(self._seqs, start_seq)
            hi = bisect.bisect_left(self._seqs, end_seq) if end_seq is not None else len(self._seqs)
            records = tuple(self._records[lo:hi])
            top = end_seq if end_seq is not None else (self._seqs[-1] if self._seqs else start_seq)
            lost = tuple((max(a, start_seq + 1), min(b, top - 1)) for a, b in self._lost
                         if b > start_seq and a < top)
            gone = self._dropped_upto
            dropped = ((start_seq + 1, min(gone, top - 1)),) if gone is not None and gone > start_seq \
                and start_seq + 1 <= min(gone, top - 1) else ()
        return DmesgSlice(start_seq, end_seq, records, lost, dropped)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self, ended: bool = False) -> None:
        """Stop following; `ended`: the reader was already signalled (wait for it to exit first).

        The reader thread is stopped and joined before its channel closes: a channel must
        never be closed while another thread reads it."""
        if self._proc is not None:
            try:
                if ended:
                    self._proc.exit_status(5)
                if self._thread is not None and not self._thread.stop(timeout=10):
                    log.warning("%s: the kmsg reader thread did not stop within 10s", self.transport.name)
                self._proc.kill()  # a no-op beyond closing when it has exited
            except TransportError as e:
                log.warning("%s: could not end the kmsg reader: %s", self.transport.name, e)
            self._proc = None
