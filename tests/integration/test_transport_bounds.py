"""Every wait of the SSH transport is bounded, and a dead channel never reads as a result.

Against a real sshd on 127.0.0.1: a hung sftp-server, a command that never stops talking,
a command killed by a signal, reader threads racing a close.
"""

from __future__ import annotations

import threading

import pytest

from harness.errors import CommandFailed, TransportError
from harness.evidence.shell import TargetShell
from harness.testing.sshd import LoopbackSshd
from harness.transport.base import follow_lines

from conftest import enrolled_transport


@pytest.fixture
def hung_sftp_sshd(tmp_path):
    """An sshd whose sftp-server never answers: it reads its input and says nothing, with its
    stdout held open (fd 3) so that the client sees no EOF either; it ends with the channel."""
    hung = tmp_path / "hung-sftp-server"
    hung.write_text("#!/bin/sh\nexec 3>&1 >/dev/null\nexec cat\n")
    hung.chmod(0o755)
    server = LoopbackSshd(tmp_path / "sshd")
    server.sftp_server = str(hung)
    server.start()
    yield server
    server.stop()


def test_put_and_get_against_a_hung_sftp_server_fail_in_bounded_time(hung_sftp_sshd, tmp_path):
    t = enrolled_transport(hung_sftp_sshd, tmp_path / "kh")
    t.sftp_request_timeout_s = 2
    local = tmp_path / "payload"
    local.write_bytes(b"x" * 4096)
    try:
        with pytest.raises(TransportError, match="no answer from the sftp server within 2s"):
            t.put(local, str(tmp_path / "remote-copy"))
        with pytest.raises(TransportError, match="no answer from the sftp server"):
            t.get(str(local), tmp_path / "back")
        assert t.run(["echo", "still", "usable"], timeout=30).stdout == "still usable\n"
    finally:
        t.close()


def test_a_transfer_past_its_deadline_fails(ssh_transport, tmp_path):
    local = tmp_path / "big"
    local.write_bytes(b"\0" * (64 * 1024 * 1024))
    with pytest.raises(TransportError, match="did not finish within 0s"):
        ssh_transport.put(local, str(tmp_path / "copy"), timeout=0)
    ssh_transport.put(local, str(tmp_path / "copy"), timeout=600)  # a fresh sftp session works
    assert (tmp_path / "copy").stat().st_size == local.stat().st_size


def test_a_command_killed_by_a_signal_is_a_failure_with_128_plus_the_signal(ssh_transport):
    """sshd reports a signal death as exit-signal, which paramiko drops (-1): that must not be
    mistaken for a dead link, nor a dead link for a result."""
    with pytest.raises(CommandFailed) as e:
        ssh_transport.run(["sh", "-c", 'kill -SEGV "$$"'], timeout=30)
    assert e.value.result.exit_status == 128 + 11


def test_the_evidence_shell_times_out_per_call_not_per_line(ssh_transport):
    shell = TargetShell(ssh_transport)
    try:
        with pytest.raises(TransportError, match="did not finish within 2s"):
            shell.run('while :; do echo tick; sleep 0.2; done', timeout=2)
    finally:
        shell.close()


def test_readers_never_give_a_channel_paramikos_event_pipe(ssh_transport, tmp_path):
    """select() on a channel creates an event pipe whose clear() can block forever in os.read
    when the channel is closed under a reader: the deadlock that once hung CI for 25 minutes."""
    proc = ssh_transport.spawn(["sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; sleep 600"])
    seen = threading.Event()
    ended: list[str] = []
    follower = follow_lines(proc, tmp_path / "out.log", lambda line: seen.set() if line == "line 1999" else None,
                            ended.append, "test follower")
    assert seen.wait(60)
    assert proc._chan._pipe is None
    assert follower.stop(timeout=10) and ended == ["reader stopped"]
    proc.kill()
    assert (tmp_path / "out.log").read_text().count("\n") == 2000


def test_closing_the_connection_under_busy_readers_returns_and_ends_them(ssh_transport, tmp_path):
    for round_ in range(10):
        procs = [ssh_transport.spawn(["sh", "-c", "while :; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done"])
                 for _ in range(3)]
        followers = [follow_lines(p, tmp_path / f"out-{round_}-{i}.log", lambda _l: None, lambda _w: None,
                                  f"reader {i}") for i, p in enumerate(procs)]
        closer = threading.Thread(target=ssh_transport.close, daemon=True)
        closer.start()
        closer.join(30)
        assert not closer.is_alive(), "closing the connection under its readers hung"
        for f in followers:
            f.join(30)
            assert not f.is_alive(), "a reader thread outlived its closed connection"
