"""Host leases against a real sshd, with a second process as the other run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.errors import LeaseError
from harness.targets.lease import acquire

from conftest import enrolled_transport

HOLDER = """
import base64, sys, time
from pathlib import Path
import paramiko
from harness.targets.lease import acquire
from harness.transport.hostkeys import KnownHosts, host_id
from harness.transport.ssh import SshTransport
kind, b64 = Path({hostpub!r}).read_text().split()[:2]
KnownHosts(Path({known!r})).add(host_id("127.0.0.1", {port}), paramiko.PKey.from_type_string(kind, base64.b64decode(b64)))
t = SshTransport("loopback", "127.0.0.1", port={port}, user={user!r}, identity_file={client!r}, known_hosts={known!r})
lease = acquire(t, "holder-run", lock_path={lock!r})
print("HELD", flush=True)
time.sleep(300)
"""


@pytest.fixture
def holder(sshd, tmp_path):
    """Another process holding the lease; yields (Popen, lock path)."""
    lock = str(tmp_path / "lease")
    code = HOLDER.format(port=sshd.port, user=sshd.user, client=str(sshd.client_key),
                         hostpub=str(sshd.host_key.with_suffix(".pub")), known=str(tmp_path / "kh-holder"), lock=lock)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "HELD"
    yield proc, lock
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_second_run_is_refused_with_the_holder_named(sshd, tmp_path, holder):
    proc, lock = holder
    t = enrolled_transport(sshd, tmp_path / "kh")
    with pytest.raises(LeaseError) as e:
        acquire(t, "second-run", lock_path=lock)
    msg = str(e.value)
    assert f"pid {proc.pid}" in msg and "run holder-run" in msg and "--wait-lease" in msg
    t.close()


def test_killed_holder_frees_the_lease(sshd, tmp_path, holder):
    proc, lock = holder
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up runs in the holder
    proc.wait()
    t = enrolled_transport(sshd, tmp_path / "kh")
    deadline = time.monotonic() + 20
    while True:
        try:
            lease = acquire(t, "after-kill", lock_path=lock)
            break
        except LeaseError:
            assert time.monotonic() < deadline, "the lease of a killed holder was never freed"
            time.sleep(0.2)
    assert lease.held
    lease.release()
    t.close()


def _blocked_in_flock(lock: str) -> bool:
    """Some `flock -w` (the lease script's wait) is blocked on `lock`: a waiter is queued on it."""
    for d in Path("/proc").glob("[0-9]*"):
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"flock") and b"-w" in argv and os.readlink(d / "fd" / "9") == lock:
                return True
        except OSError:
            continue
    return False


def test_waiting_run_gets_the_lease_when_the_holder_lets_go(sshd, tmp_path, holder):
    proc, lock = holder
    t = enrolled_transport(sshd, tmp_path / "kh")
    events: list[tuple] = []

    def wait_for_it() -> None:
        with acquire(t, "waiter", lock_path=lock, wait_s=120) as lease:
            events.append(("acquired", lease.held, proc.poll() is not None))

    waiter = threading.Thread(target=wait_for_it, daemon=True)
    waiter.start()
    while not _blocked_in_flock(lock):  # pytest-timeout ends a waiter that never gets there
        assert waiter.is_alive(), f"the waiter gave up instead of waiting: {events}"
        time.sleep(0.05)
    assert events == [], "the lease was taken while the holder still held it"
    events.append(("holder lets go",))
    proc.terminate()
    waiter.join()
    # In this order: queued behind the holder, taken only once the holder was gone, and held.
    assert events == [("holder lets go",), ("acquired", True, True)]
    t.close()


def test_release_lets_the_next_run_in(sshd, tmp_path):
    lock = str(tmp_path / "lease")
    a = enrolled_transport(sshd, tmp_path / "kh-a")
    b = enrolled_transport(sshd, tmp_path / "kh-b")
    first = acquire(a, "a", lock_path=lock)
    with pytest.raises(LeaseError):
        acquire(b, "b", lock_path=lock)
    first.release()
    deadline = time.monotonic() + 10
    while True:
        try:
            acquire(b, "b", lock_path=lock).release()
            break
        except LeaseError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    a.close()
    b.close()
