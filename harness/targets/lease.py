"""Exclusive host leases: flock on the host, held by a dedicated SSH channel.

The lock lives as long as the channel: `flock` on a file descriptor that the
remote `cat` inherits, and `cat` ends when the channel closes or the
connection drops. A killed holder therefore frees the lease; it cannot go stale.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import time
from dataclasses import dataclass

from harness.config import DEFAULT_LEASE_FILE as DEFAULT_LOCK
from harness.errors import LeaseError, TransportError
from harness.transport.ssh import RemoteProcess, SshTransport

log = logging.getLogger(__name__)

_BUSY = 75  # EX_TEMPFAIL: someone else holds it
# $1 lock file, $2 holder identity, $3 seconds to wait (0: don't).
_SCRIPT = (
    'mkdir -p "${1%/*}" && exec 9<>"$1" || exit 70; '
    'if [ "$3" -gt 0 ]; then flock -w "$3" 9; else flock -n 9; fi; rc=$?; '
    # flock says 1 for "held elsewhere" (or the wait ran out); anything else is no lease at all.
    'if [ $rc -eq 1 ]; then cat "$1"; exit 75; elif [ $rc -ne 0 ]; then echo "flock failed ($rc)"; exit 70; fi; '
    'printf "%s\\n" "$2" > "$1"; echo LEASED; exec cat >/dev/null'
)


@dataclass(frozen=True)
class Holder:
    user: str
    machine: str
    pid: int
    started: str
    run_id: str

    @classmethod
    def here(cls, run_id: str) -> Holder:
        return cls(getpass.getuser(), socket.gethostname(), os.getpid(),
                   time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), run_id)


class Lease:
    def __init__(self, proc: RemoteProcess, where: str, holder: Holder) -> None:
        self._proc, self.where, self.holder = proc, where, holder

    @property
    def held(self) -> bool:
        return self._proc.alive

    def release(self) -> None:
        self._proc.close()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(transport: SshTransport, run_id: str, *, lock_path: str = DEFAULT_LOCK,
            wait_s: int = 0, timeout: float = 60) -> Lease:
    """Take the host's lease, or raise LeaseError naming who holds it."""
    holder = Holder.here(run_id)
    proc = transport.spawn(["sh", "-c", _SCRIPT, "sh", lock_path, json.dumps(holder.__dict__), str(int(wait_s))])
    try:
        first = proc.readline(timeout=timeout + wait_s)
    except TransportError:
        proc.close()
        raise
    if first == "LEASED":
        log.info("%s: lease taken (%s)", transport.name, lock_path)
        return Lease(proc, transport.name, holder)
    rest = [first or ""]
    while (line := proc.readline(timeout=10)) is not None:
        rest.append(line)
    status = proc.exit_status(timeout=10)
    proc.close()
    if status == _BUSY:
        raise LeaseError(f"{transport.name} is leased by {_describe(' '.join(rest).strip())} "
                         f"({lock_path}); wait for it (pytest --snp-lease-wait S, snp-harness boot --wait-lease S) "
                       "or pick another host")
    raise LeaseError(f"{transport.name}: cannot take the lease on {lock_path} (exit {status}): {' '.join(rest)}")


def _describe(text: str) -> str:
    try:
        h = json.loads(text)
        return f"{h['user']}@{h['machine']} pid {h['pid']} since {h['started']} (run {h['run_id']})"
    except (ValueError, KeyError, TypeError):
        return repr(text) if text else "an unknown holder"
