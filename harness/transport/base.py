"""The Transport protocol and the value every command returns."""

from __future__ import annotations

import re
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

from harness.errors import TransportError

# A sink receives output as it arrives: sink("stdout" | "stderr", chunk).
Sink = Callable[[str, bytes], None]

# Output kept in a result when a sink is streaming it elsewhere.
STREAM_TAIL_BYTES = 64 * 1024

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def __bool__(self) -> bool:
        return self.ok

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    def tail(self, lines: int = 10) -> str:
        """The last lines of stdout and stderr, for error messages."""
        parts = []
        for name, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            kept = text.rstrip("\n").splitlines()[-lines:]
            if kept:
                parts.append(f"--- {name} (last {len(kept)} lines) ---")
                parts.extend(kept)
        return "\n".join(parts)

    def __repr__(self) -> str:
        return f"<CommandResult cmd={self.command!r} exited={self.exit_status}>"


class Transport(Protocol):
    """Runs argv lists on one target. Implementations: local, ssh, fake."""

    name: str  # "local://", "ssh://epyc1"; also the pytest id

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        check: bool = True,
        stdin: bytes | str | None = None,
        env: Mapping[str, str] | None = None,
        sink: Sink | None = None,
    ) -> CommandResult:
        """Run argv to completion.

        With a sink, output is handed to it as it arrives and the result keeps
        only the last STREAM_TAIL_BYTES of each stream.
        Raises CommandFailed (check=True, non-zero exit), CommandTimeout
        (the process was ended) or TransportError.
        """
        ...

    def spawn(self, argv: Sequence[str]) -> Process:
        """Start a long-lived command whose stdout is read line by line (a log follower)."""
        ...

    def put(self, local: Path, remote: str, *, timeout: float = 1800) -> None:
        """Copy a file to the target; TransportError if it does not finish within timeout."""

    def get(self, remote: str, local: Path, *, timeout: float = 1800) -> None: ...

    def close(self) -> None: ...


class Process(Protocol):
    """A spawned command. kill() ends it on the target by its PID; close() only ends its stdin."""

    def readline(self, timeout: float) -> str | None: ...

    def write(self, data: str) -> None: ...

    @property
    def alive(self) -> bool: ...

    @property
    def pid(self) -> int | None: ...

    def close(self) -> None: ...

    def kill(self) -> None: ...


# A line longer than this is handed on in pieces: memory stays bounded whatever the target prints.
MAX_LINE_BYTES = 1024 * 1024


class LineReader:
    """readline() over a byte stream, for Process implementations: they say how to read.

    _read(wait) returns the bytes there are (b"" at EOF), or None when nothing came within
    `wait` seconds. Subclasses set `where` and `argv` (for the timeout message).
    Each byte is scanned for a newline once, and the buffer never holds more than one
    line (at most MAX_LINE_BYTES) plus one chunk.
    """

    where: str
    argv: tuple[str, ...]
    _eof = False

    def _read(self, wait: float) -> bytes | None:
        raise NotImplementedError

    def readline(self, timeout: float) -> str | None:
        """The next stdout line, or None at EOF; TransportError if none comes in time."""
        buf = self.__dict__.setdefault("_line_buf", bytearray())
        scanned = self.__dict__.get("_line_scanned", 0)
        deadline = time.monotonic() + timeout
        while True:
            end = buf.find(b"\n", scanned)
            if end >= 0 or len(buf) >= MAX_LINE_BYTES:
                cut = end if 0 <= end < MAX_LINE_BYTES else MAX_LINE_BYTES
                line = bytes(buf[:cut])
                del buf[:cut + 1 if cut == end else cut]
                self._line_scanned = 0
                return line.decode(errors="replace")
            scanned = len(buf)
            self._line_scanned = scanned
            if self._eof:
                if not buf:
                    return None
                line = bytes(buf)
                buf.clear()
                self._line_scanned = 0
                return line.decode(errors="replace")
            remaining = deadline - time.monotonic()
            chunk = self._read(max(0.0, min(remaining, 0.5)))
            if chunk is not None:
                buf += chunk
                self._eof = not chunk
            elif remaining <= 0:
                raise TransportError(f"{self.where}: no output from {shlex.join(self.argv)} in {timeout:g}s")


class Follower:
    """A thread reading a spawned command's lines; stop() ends and joins it, bounded."""

    def __init__(self, proc: Process, run: Callable[[threading.Event], None], name: str) -> None:
        self.proc = proc
        self._stop = threading.Event()
        self.thread = threading.Thread(target=run, args=(self._stop,), name=name, daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10) -> bool:
        """Ask the reader to stop and wait for it: call before its channel or connection closes,
        so nothing is read from a channel while it is being closed. False if it did not stop."""
        self._stop.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def is_alive(self) -> bool:
        return self.thread.is_alive()


def follow_lines(proc: Process, log_path: Path, on_line: Callable[[str], None],
                 on_end: Callable[[str], None], name: str) -> Follower:
    """Read a spawned command's stdout on a thread: every line goes to log_path as it arrives
    (flushed: nothing read is lost if the harness dies) and then to on_line; on_end(reason)
    is called once, at EOF, when the channel dies with the target, or when stopped."""
    def run(stop: threading.Event) -> None:
        with open(log_path, "a", encoding="utf-8", errors="replace") as out:
            while True:
                stopping = stop.is_set()
                try:  # once stopping, only what has arrived already is read, then the end
                    line = proc.readline(timeout=0.0 if stopping else 1.0)
                except TransportError:
                    if stopping:
                        on_end("reader stopped")
                        return
                    continue  # quiet; look at the stop flag again
                except Exception as e:  # the channel died (target rebooted, link lost)
                    on_end(f"reader failed: {e}")
                    return
                if line is None:
                    on_end("reader ended (EOF)")
                    return
                try:
                    out.write(line + "\n")
                    out.flush()
                    on_line(line)
                except Exception as e:  # a full disk, a bug in on_line: say so, never die silently
                    on_end(f"handling a line failed: {e}")
                    return

    return Follower(proc, run, name)


def check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """Refuse anything that is not a non-empty list of strings."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a list of strings, not a shell string")
    out = tuple(argv)
    if not out or not all(isinstance(a, str) for a in out):
        raise TypeError(f"argv must be a non-empty list of strings: {argv!r}")
    return out


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(env or {})
    for k, v in env.items():
        if not _ENV_NAME.match(k) or not isinstance(v, str):
            raise ValueError(f"invalid environment entry {k!r}={v!r}")
    return env


def write_value(transport: Transport, path: str, value: str, timeout: float = 60) -> None:
    """Write `value` and a newline to a file on the target (a sysfs or procfs knob, say).

    The path and value travel as arguments of a fixed script, never inside a shell string.
    """
    transport.run(["sh", "-c", 'printf "%s\\n" "$2" > "$1"', "sh", path, value], timeout=timeout)


def boot_id(transport: Transport, timeout: float = 30) -> str:
    """The target's boot_id; it changes on every boot, which is how reboots are detected."""
    r = transport.run(["cat", "/proc/sys/kernel/random/boot_id"], timeout=timeout)
    return r.stdout.strip()


class OutputBuffer:
    """Collects stdout/stderr bytes; with a sink, forwards them and keeps a tail."""

    def __init__(self, sink: Sink | None = None) -> None:
        self._sink = sink
        self._data = {"stdout": bytearray(), "stderr": bytearray()}

    def feed(self, stream: str, chunk: bytes) -> None:
        if not chunk:
            return
        buf = self._data[stream]
        buf += chunk
        if self._sink is not None:
            self._sink(stream, chunk)
            if len(buf) > 2 * STREAM_TAIL_BYTES:
                del buf[: len(buf) - STREAM_TAIL_BYTES]

    def text(self, stream: str) -> str:
        buf = self._data[stream]
        if self._sink is not None and len(buf) > STREAM_TAIL_BYTES:
            buf = buf[-STREAM_TAIL_BYTES:]
        return buf.decode("utf-8", errors="replace")

    def result(self, argv: tuple[str, ...], exit_status: int, duration_s: float) -> CommandResult:
        return CommandResult(argv, exit_status, self.text("stdout"), self.text("stderr"), duration_s)
