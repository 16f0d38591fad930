"""What the SSH transport does when the far end misbehaves, against a real sshd."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest

from harness.errors import ConfigError, HostKeyError, TransportError
from harness.testing.sshd import LoopbackSshd, keygen
from harness.transport.hostkeys import KnownHosts, fingerprint, host_id, parse_public_key
from harness.transport.ssh import SshTransport

from conftest import enrolled_transport


def _transport(server, known_hosts, **kw) -> SshTransport:
    return SshTransport("loopback", "127.0.0.1", port=server.port, user=server.user,
                        identity_file=server.client_key, known_hosts=known_hosts, connect_timeout=10, **kw)


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def test_session_killed_mid_command_raises_and_next_call_reconnects(private_sshd, tmp_path):
    t = enrolled_transport(private_sshd, tmp_path / "known_hosts")
    marker = tmp_path / "runs"
    errors: list[BaseException] = []

    def long_command():
        try:
            t.run(["sh", "-c", f"echo run >> {marker}; echo started; sleep 30"], timeout=60)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    worker = threading.Thread(target=long_command)
    worker.start()
    _wait_for(lambda: marker.exists())
    private_sshd.kill_sessions()
    worker.join(timeout=20)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], TransportError), errors
    assert "not retried" in str(errors[0])
    # The next command gets a fresh connection, and the dropped one was not re-run.
    assert t.run(["echo", "back"], timeout=30).stdout == "back\n"
    assert marker.read_text() == "run\n"
    t.close()


def test_sshd_restart_between_commands(private_sshd, tmp_path):
    t = enrolled_transport(private_sshd, tmp_path / "known_hosts")
    first = t.run(["sh", "-c", "echo $PPID"], timeout=30).stdout
    private_sshd.restart()
    assert t.run(["true"], timeout=30).ok
    assert t.run(["sh", "-c", "echo $PPID"], timeout=30).stdout != first
    t.close()


def test_unknown_host_key_is_rejected(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    t = _transport(sshd, known)
    with pytest.raises(HostKeyError) as e:
        t.run(["true"], timeout=30)
    msg = str(e.value)
    assert fingerprint(sshd.public_host_key()) in msg
    assert "snp-harness trust loopback" in msg and "--trust-new-host-key" in msg
    assert not known.exists() or known.read_text() == ""


def test_trust_new_host_key_records_it_once(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    t = _transport(sshd, known, trust_new_host_key=True)
    assert t.run(["true"], timeout=30).ok
    t.close()
    keys = KnownHosts(known).keys_for(host_id("127.0.0.1", sshd.port))
    assert keys == [sshd.public_host_key()]
    # A strict transport now accepts it.
    strict = _transport(sshd, known)
    assert strict.run(["true"], timeout=30).ok
    strict.close()


def test_changed_host_key_is_rejected_even_with_trust_new(private_sshd, tmp_path):
    known = tmp_path / "known_hosts"
    old = private_sshd.public_host_key()
    KnownHosts(known).add(host_id("127.0.0.1", private_sshd.port), old)
    private_sshd.rotate_host_key()
    new = private_sshd.public_host_key()
    for trust_new in (False, True):
        t = _transport(private_sshd, known, trust_new_host_key=trust_new)
        with pytest.raises(HostKeyError) as e:
            t.run(["true"], timeout=30)
        msg = str(e.value)
        assert "HOST KEY CHANGED" in msg
        assert fingerprint(old) in msg and fingerprint(new) in msg
        assert "snp-harness trust --replace loopback" in msg
    assert KnownHosts(known).keys_for(host_id("127.0.0.1", private_sshd.port)) == [old]


def test_host_key_change_across_reconnect_is_caught(private_sshd, tmp_path):
    t = enrolled_transport(private_sshd, tmp_path / "known_hosts")
    assert t.run(["true"], timeout=30).ok
    private_sshd.rotate_host_key()  # restarts sshd, dropping the connection
    with pytest.raises(HostKeyError):
        t.run(["true"], timeout=30)


def test_refused_key_is_a_transport_error(sshd, tmp_path):
    stranger = keygen(tmp_path / "stranger")
    known = tmp_path / "known_hosts"
    KnownHosts(known).add(host_id("127.0.0.1", sshd.port), sshd.public_host_key())
    t = SshTransport("loopback", "127.0.0.1", port=sshd.port, user=sshd.user,
                     identity_file=stranger, known_hosts=known, connect_timeout=10)
    with pytest.raises(TransportError, match="public-key authentication .* was refused"):
        t.run(["true"], timeout=30)


def test_missing_identity_file_is_a_config_error(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    KnownHosts(known).add(host_id("127.0.0.1", sshd.port), sshd.public_host_key())
    t = SshTransport("loopback", "127.0.0.1", port=sshd.port, user=sshd.user,
                     identity_file=tmp_path / "nope", known_hosts=known, connect_timeout=10)
    with pytest.raises(ConfigError, match="identity_file .*nope does not exist"):
        t.run(["true"], timeout=30)


def test_unreachable_host_is_a_transport_error(tmp_path):
    from harness.testing.sshd import free_port

    t = SshTransport("nowhere", "127.0.0.1", port=free_port(), known_hosts=tmp_path / "kh",
                     identity_file=tmp_path / "id", connect_timeout=3)
    with pytest.raises(TransportError, match=r"ssh://nowhere .*cannot connect"):
        t.run(["true"], timeout=30)


@pytest.fixture
def rsa_sshd(tmp_path):
    """An sshd with an ed25519 and an ssh-rsa host key."""
    server = LoopbackSshd(tmp_path / "rsa-sshd", rsa_host_key=True).start()
    yield server
    server.stop()


def _keyscan_rsa(server) -> str:
    """What `ssh-keyscan` records for the server's rsa key: "[127.0.0.1]:PORT ssh-rsa AAAA..."."""
    out = subprocess.run(["ssh-keyscan", "-T", "10", "-t", "rsa", "-p", str(server.port), "127.0.0.1"],
                         check=True, capture_output=True, text=True).stdout
    assert out.split()[:2] == [f"[127.0.0.1]:{server.port}", "ssh-rsa"], out
    return out


def _sockets_to(port: int) -> int:
    """How many of this process's open sockets are connected to 127.0.0.1:port."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            mine.add(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the fd listdir itself used
            pass
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for r in rows if r.split()[2] == f"0100007F:{port:04X}" and f"socket:[{r.split()[9]}]" in mine)


def test_ssh_rsa_entry_from_keyscan_connects(rsa_sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(_keyscan_rsa(rsa_sshd))
    t = _transport(rsa_sshd, known)
    assert t.run(["true"], timeout=30).ok
    t.close()


def test_trust_reads_the_key_type_on_record(rsa_sshd, tmp_path):
    """`trust` fetches the key without a connection: it must ask for the recorded type too,
    or an ssh-rsa entry of a host that also has ed25519 reads as changed."""
    known = tmp_path / "known_hosts"
    known.write_text(_keyscan_rsa(rsa_sshd))
    offered = _transport(rsa_sshd, known).host_key()
    assert offered.get_name() == "ssh-rsa"
    assert offered == parse_public_key(_keyscan_rsa(rsa_sshd).split(None, 1)[1])


def test_changed_rsa_key_is_a_clean_error_and_leaks_no_socket(rsa_sshd, tmp_path):
    known = tmp_path / "known_hosts"
    offered = parse_public_key(_keyscan_rsa(rsa_sshd).split(None, 1)[1])
    other = paramiko.RSAKey.generate(2048)
    known.write_text(f"[127.0.0.1]:{rsa_sshd.port} ssh-rsa {other.get_base64()}\n")
    t = _transport(rsa_sshd, known, trust_new_host_key=True)
    with pytest.raises(HostKeyError) as e:
        t.run(["true"], timeout=30)
    msg = str(e.value)
    # The rsa key was asked for (not the ed25519 one), and found to differ.
    assert "HOST KEY CHANGED" in msg and fingerprint(offered) in msg and fingerprint(other) in msg
    assert f"{known} line 1" in msg
    assert _sockets_to(rsa_sshd.port) == 0
    assert known.read_text() == f"[127.0.0.1]:{rsa_sshd.port} ssh-rsa {other.get_base64()}\n"


def test_unreadable_known_hosts_is_a_clean_error_and_leaks_no_socket(private_sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.mkdir()  # read after the socket is open, before the handshake
    t = _transport(private_sshd, known)
    with pytest.raises(HostKeyError, match="cannot read known_hosts"):
        t.connect()
    assert _sockets_to(private_sshd.port) == 0
