"""Exclusive host leases: flock on the host, held by a dedicated SSH channel.

The lock lives as long as the channel: `flock` on a file descriptor that the
remote `cat` inherits, and `cat` ends when the channel closes or the
connection drops. A killed holder therefore frees the lease; it cannot go stale.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass

from harness.config import DEFAULT_LEASE_FILE as DEFAULT_LOCK
from harness.errors import HostKeyError, LeaseError, TransportError
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
    """A held lease. After the connection is replaced (a dropped link, a reboot), the flock
    that the old connection held is gone: ensure() takes it again before anything else runs
    on the host, and fails (so the target breaks) if another run took it meanwhile."""

    def __init__(self, proc: RemoteProcess, transport: SshTransport, holder: Holder, lock_path: str,
                 relock_wait_s: int = 60) -> None:
        self._proc, self.transport, self.holder = proc, transport, holder
        self.where, self.lock_path, self.relock_wait_s = transport.name, lock_path, relock_wait_s
        self._released = False

    @property
    def held(self) -> bool:
        return not self._released and self._proc.alive

    def ensure(self) -> None:
        """Hold the lease again if the channel that held it died; LeaseError if someone else has it."""
        if self._released or self._proc.alive:
            return
        log.warning("%s: the lease's SSH channel is gone (link dropped or host rebooted); retaking it", self.where)
        try:
            self._retake(0)
        except LeaseBusy as e:
            if e.holder != self.holder.__dict__:
                raise LeaseError(f"{self.where}: lost the lease on {self.lock_path} while the link was down: "
                                 f"{_describe_holder(e.holder, e.text)} holds it now. This run stops using "
                                 "the host.") from None
            # Our own old holder: the host has not yet noticed that its connection died.
            try:
                self._retake(self.relock_wait_s)
            except LeaseBusy as e2:
                raise LeaseError(f"{self.where}: could not retake the lease on {self.lock_path} within "
                                 f"{self.relock_wait_s}s: {_describe_holder(e2.holder, e2.text)} holds it") from None
        log.info("%s: lease retaken", self.where)

    def _retake(self, wait_s: int) -> None:
        self._proc = _take(self.transport, self.holder, self.lock_path, wait_s, 60)._proc

    def release(self) -> None:
        self._released = True
        if self.ensure in self.transport.reconnect_hooks:
            self.transport.reconnect_hooks.remove(self.ensure)
        self._proc.close()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class LeaseBusy(LeaseError):
    """Someone holds the lease (holder: their record, or None if unreadable)."""

    def __init__(self, message: str, holder: dict | None, text: str) -> None:
        super().__init__(message)
        self.holder, self.text = holder, text


def acquire(transport: SshTransport, run_id: str, *, lock_path: str = DEFAULT_LOCK,
            wait_s: int = 0, timeout: float = 60) -> Lease:
    """Take the host's lease, or raise LeaseError naming who holds it.

    With wait_s, a waiting session that dies (the holder rebooted the host, which ends every
    SSH session there) or a host that is down is waited out until the deadline. The lease is
    then verified again after any reconnect of `transport` (Lease.ensure).
    """
    lease = _take(transport, Holder.here(run_id), lock_path, wait_s, timeout)
    transport.reconnect_hooks.append(lease.ensure)
    return lease


def _take(transport: SshTransport, holder: Holder, lock_path: str, wait_s: int, timeout: float) -> Lease:
    deadline = time.monotonic() + wait_s
    rebooting = False  # the waiting session died: the host is going down or coming back
    while True:
        left = max(0, math.ceil(deadline - time.monotonic()))
        try:
            return _take_once(transport, holder, lock_path, left, timeout)
        except _SessionLost as e:
            rebooting = True
            if time.monotonic() + 2 >= deadline:
                raise LeaseError(str(e)) from None
            log.info("%s: still waiting for the lease: %s", transport.name, e)
        except HostKeyError:
            raise  # never waited out
        except TransportError as e:
            # A host unreachable from the start is an error at once; one that dropped our
            # waiting session is waited for until the deadline.
            if not rebooting or time.monotonic() + 2 >= deadline:
                raise
            log.info("%s: still waiting for the lease (host not back yet): %s", transport.name, e)
        time.sleep(2)


class _SessionLost(Exception):
    """The session running the lease script ended without an exit status."""


def _take_once(transport: SshTransport, holder: Holder, lock_path: str, wait_s: int, timeout: float) -> Lease:
    proc = transport.spawn(["sh", "-c", _SCRIPT, "sh", lock_path, json.dumps(holder.__dict__), str(int(wait_s))])
    try:
        first = proc.readline(timeout=timeout + wait_s)
    except TransportError:
        proc.close()
        raise
    if first == "LEASED":
        log.info("%s: lease taken (%s)", transport.name, lock_path)
        return Lease(proc, transport, holder, lock_path)
    rest = [first or ""]
    try:
        while (line := proc.readline(timeout=10)) is not None:
            rest.append(line)
    except TransportError:
        pass
    status = proc.exit_status(timeout=10)
    proc.close()
    text = " ".join(rest).strip()
    if status == _BUSY:
        raise LeaseBusy(f"{transport.name} is leased by {_describe(text)} ({lock_path}); wait for it "
                        "(pytest --snp-lease-wait S, snp-harness boot --wait-lease S) or pick another host",
                        _parse(text), text)
    if status is None or status < 0:
        raise _SessionLost(f"{transport.name}: the session taking the lease on {lock_path} ended without an "
                           f"exit status (host rebooting or link lost): {text}")
    raise LeaseError(f"{transport.name}: cannot take the lease on {lock_path} (exit {status}): {text}")


def _parse(text: str) -> dict | None:
    try:
        h = json.loads(text)
    except ValueError:
        return None
    return h if isinstance(h, dict) else None


def _describe_holder(holder: dict | None, text: str) -> str:
    try:
        return f"{holder['user']}@{holder['machine']} pid {holder['pid']} since {holder['started']} " \
               f"(run {holder['run_id']})"
    except (KeyError, TypeError):
        return repr(text) if text else "an unknown holder"


def _describe(text: str) -> str:
    return _describe_holder(_parse(text), text)
