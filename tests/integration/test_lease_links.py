"""Leases across dropped links and reboots, against a real sshd of the test's own.

The lease is a flock held by one channel of the run's SSH connection. These tests drop that
connection for real (SIGKILL to its sshd process) or take the whole sshd down (a reboot),
with a second run waiting, and check that two runs never both think they hold the host.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from harness.errors import LeaseError
from harness.targets.lease import acquire

from conftest import enrolled_transport

WAIT_MARK = 97  # B's flock -w seconds: how the test finds B's waiting flock among the processes


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _session_of(server, transport) -> int:
    """The per-connection sshd process that serves `transport`'s connection."""
    # $PPID is the login shell running the command; its parent is sshd's (it outlives the command).
    pid = int(transport.run(["sh", "-c", 'sed -n "s/^PPid:\\t//p" "/proc/$PPID/status"'], timeout=30).stdout)
    sessions = set(server.session_pids())
    while pid > 1 and pid not in sessions:
        pid = _ppid(pid)
    assert pid in sessions, "the command's sshd session process was not found"
    return pid


def _flock_waiting(seconds: int) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().split(b"\0")[:3] == [b"flock", b"-w", str(seconds).encode()]:
                return True
        except OSError:
            pass
    return False


def _wait_until(cond, what: str, timeout: float = 60, waiter=None) -> None:
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not cond():
            if done.wait(0.05):
                pytest.fail(f"timed out waiting until {what}")
    finally:
        deadline.cancel()


class Waiter(threading.Thread):
    """Run B: waits for the lease on its own connection."""

    def __init__(self, transport, lock: str, wait_s: int) -> None:
        super().__init__(daemon=True)
        self.transport, self.lock, self.wait_s = transport, lock, wait_s
        self.lease = self.error = None

    def run(self) -> None:
        try:
            self.lease = acquire(self.transport, "run-b", lock_path=self.lock, wait_s=self.wait_s)
        except BaseException as e:  # noqa: BLE001 (reported by the test)
            self.error = e


@pytest.fixture
def two_runs(private_sshd, tmp_path):
    """(lock path, run A's transport, run B's transport): two runs' own connections to one host."""
    a = enrolled_transport(private_sshd, tmp_path / "kh-a", name="run-a")
    b = enrolled_transport(private_sshd, tmp_path / "kh-b", name="run-b")
    yield str(tmp_path / "lease"), a, b
    a.close()
    b.close()


def test_a_lease_holder_whose_link_drops_retakes_or_breaks(private_sshd, two_runs):
    lock, a, b = two_runs
    # Nobody waiting: the link drops, the next command retakes the lease before it runs.
    lease_a = acquire(a, "run-a", lock_path=lock)
    os.kill(_session_of(private_sshd, a), signal.SIGKILL)
    _wait_until(lambda: not lease_a.held, "run A's lease channel died with its link")
    assert a.run(["cat", lock], timeout=30).stdout.count('"run_id": "run-a"') == 1
    assert lease_a.held

    # Run B waits; A's link drops; B takes the freed lock. A must then stop, not share the host.
    waiter = Waiter(b, lock, WAIT_MARK)
    waiter.start()
    _wait_until(lambda: _flock_waiting(WAIT_MARK), "run B waits in flock", waiter=waiter)
    os.kill(_session_of(private_sshd, a), signal.SIGKILL)
    waiter.join(WAIT_MARK + 30)
    assert waiter.error is None and waiter.lease is not None and waiter.lease.held
    with pytest.raises(LeaseError, match=r"lost the lease .*run run-b"):
        a.run(["true"], timeout=30)
    with pytest.raises(LeaseError, match="unusable"):  # and it stays so: no command runs on B's host
        a.run(["true"], timeout=30)
    assert '"run_id": "run-b"' in b.run(["cat", lock], timeout=30).stdout
    waiter.lease.release()


def test_a_run_waiting_for_a_lease_outlives_the_holders_reboot(private_sshd, two_runs):
    """A holder's kexec ends every SSH session on the host, the waiter's too: it reconnects and waits on."""
    lock, a, b = two_runs
    lease_a = acquire(a, "run-a", lock_path=lock)
    waiter = Waiter(b, lock, WAIT_MARK)
    waiter.start()
    _wait_until(lambda: _flock_waiting(WAIT_MARK), "run B waits in flock", waiter=waiter)
    private_sshd.restart()  # every session is killed, as a reboot does; sshd comes back
    waiter.join(WAIT_MARK + 60)
    assert waiter.error is None, f"the waiting run failed: {waiter.error!r}"
    assert waiter.lease is not None and waiter.lease.held
    assert not lease_a.held
    assert '"run_id": "run-b"' in b.run(["cat", lock], timeout=30).stdout
    waiter.lease.release()
