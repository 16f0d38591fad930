"""A long-lived `sh` on the target for the per-test evidence commands.

At each test boundary the harness writes a /dev/kmsg marker and clears or
reads the trace buffer: shell builtins only. Through one shell kept open for
the session that costs an SSH round trip, instead of a channel, a fork and an
exec per command (15-40 ms each on the TCG target, per test twice).

Scripts are fixed strings; their inputs travel as positional parameters,
set with `set --` and quoted with shlex, never spliced into the script.
"""

from __future__ import annotations

import shlex
import time
import uuid

from harness.errors import TransportError
from harness.transport.base import Transport


class TargetShell:
    def __init__(self, transport: Transport) -> None:
        self.where = transport.name
        self._proc = transport.spawn(["sh"])
        self._broken: str | None = None  # why it was closed after an error

    def run(self, script: str, *args: str, timeout: float = 60) -> tuple[int, str]:
        """(exit status, stdout+stderr) of `script` with $1.. = args, in the shell."""
        if self._proc is None:
            raise TransportError(f"{self.where}: the evidence shell is closed"
                                 + (f" after an earlier failure: {self._broken}" if self._broken else ""))
        end = uuid.uuid4().hex
        # The newline before the sentinel keeps it on a line of its own after output without one.
        self._proc.write(f"set -- {shlex.join(args)}\n{{ {script}\n}} 2>&1; printf '\\n%s %d\\n' {end} $?\n")
        lines: list[str] = []
        deadline = time.monotonic() + timeout  # for the whole call, not per line
        try:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0:
                        raise TransportError("deadline passed")
                    line = self._proc.readline(remaining)
                except TransportError as e:
                    if time.monotonic() < deadline:
                        raise  # the shell ended or its channel died
                    raise TransportError(f"{self.where}: evidence script did not finish within {timeout:g}s") from e
                if line is None:
                    raise TransportError(f"{self.where}: the evidence shell ended")
                if line.startswith(end + " "):
                    break
                lines.append(line)
        except TransportError as e:
            self._broken = str(e)
            self.close()
            raise
        if lines and lines[-1] == "":
            lines.pop()
        return int(line.split()[1]), "".join(f"{x}\n" for x in lines)

    def end_group(self, pid: int) -> None:
        """TERM a process group the harness started on the target (kill is a builtin: no fork)."""
        self.run('kill -TERM "-$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null; true', str(pid))

    def close(self) -> None:
        """Let the shell exit and wait for its exit status, then close the channel.

        A close the target finished is the safe order for dropbear: closing a channel
        while its command is still exiting raced with the next channel open there.
        """
        if self._proc is not None:
            proc, self._proc = self._proc, None
            try:
                proc.write("exit 0\n")
                if proc.exit_status(5) is None:
                    proc.kill()
            except TransportError:
                proc.kill()
            proc.close()
