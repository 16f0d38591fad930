"""SshTransport(via=...): a host reached through a direct-tcpip channel of another (real sshd)."""

from __future__ import annotations

import pytest

from conftest import enrolled_transport
from harness.errors import TransportError
from harness.transport.hostkeys import KnownHosts, host_id
from harness.transport.ssh import SshTransport


def test_through_a_jump_transport(sshd, tmp_path):
    jump = enrolled_transport(sshd, tmp_path / "known_jump")
    known = tmp_path / "known_inner"
    KnownHosts(known).add(host_id("127.0.0.1", sshd.port), sshd.public_host_key())
    inner = SshTransport("inner", "127.0.0.1", port=sshd.port, user=sshd.user, identity_file=sshd.client_key,
                         known_hosts=known, connect_timeout=10, via=jump)
    try:
        assert inner.run(["echo", "through", "the jump"], timeout=30).stdout == "through the jump\n"
    finally:
        inner.close()
        jump.close()


def test_unknown_inner_key_is_refused_and_a_closed_port_is_clear(sshd, tmp_path):
    jump = enrolled_transport(sshd, tmp_path / "known_jump")
    try:
        inner = SshTransport("inner", "127.0.0.1", port=sshd.port, user=sshd.user, identity_file=sshd.client_key,
                             known_hosts=tmp_path / "empty", connect_timeout=10, via=jump)
        with pytest.raises(TransportError, match="unknown|not in"):
            inner.run(["true"], timeout=30)
        closed = SshTransport("closed", "127.0.0.1", port=1, user=sshd.user, identity_file=sshd.client_key,
                              known_hosts=tmp_path / "empty", connect_timeout=10, via=jump)
        with pytest.raises(TransportError, match="cannot connect through ssh://loopback"):
            closed.run(["true"], timeout=30)
    finally:
        jump.close()
