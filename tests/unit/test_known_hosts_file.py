"""harness.transport.hostkeys: parsing, matching and rewriting the harness's known_hosts file.

Keys are real (paramiko/cryptography generated); hashed names and certificates come from ssh-keygen.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import resource
import signal
import socket
import struct
import subprocess
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from harness import cli
from harness.errors import HostKeyError
from harness.transport.hostkeys import KnownHosts, fingerprint, parse_public_key

HOST = "[10.1.2.3]:2222"
OTHER = "[10.1.2.4]:2222"
WHERE = "ssh://epyc1"


def _public(key: paramiko.PKey) -> paramiko.PKey:
    return parse_public_key(f"{key.get_name()} {key.get_base64()}")


def ed25519() -> paramiko.PKey:
    # paramiko cannot generate ed25519 keys; cryptography (its own backend) can.
    pub = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    return parse_public_key(pub.decode())


def ecdsa() -> paramiko.PKey:
    return _public(paramiko.ECDSAKey.generate())


@pytest.fixture(scope="module")
def rsa() -> paramiko.PKey:
    return _public(paramiko.RSAKey.generate(2048))


def line(hosts: str, key: paramiko.PKey, sep: str = " ") -> str:
    return sep.join((hosts, key.get_name(), key.get_base64())) + "\n"


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _b64(blob: bytes) -> str:
    import base64

    return base64.b64encode(blob).decode()


def sk_ed25519_line(hosts: str) -> str:
    """An sk-ssh-ed25519@openssh.com key as OpenSSH encodes it (a FIDO token's ed25519 key)."""
    pub = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    blob = _string(b"sk-ssh-ed25519@openssh.com") + _string(pub) + _string(b"ssh:")
    return f"{hosts} sk-ssh-ed25519@openssh.com {_b64(blob)}\n"


def sk_ecdsa_line(hosts: str) -> str:
    m = paramiko.Message(ecdsa().asbytes())
    m.get_text()
    curve, point = m.get_text(), m.get_binary()
    blob = _string(b"sk-ecdsa-sha2-nistp256@openssh.com") + _string(curve.encode()) + _string(point) + _string(b"ssh:")
    return f"{hosts} sk-ecdsa-sha2-nistp256@openssh.com {_b64(blob)}\n"


def unknown_type_line(hosts: str) -> str:
    blob = _string(b"ssh-frobnicate@example.com") + _string(os.urandom(32))
    return f"{hosts} ssh-frobnicate@example.com {_b64(blob)}\n"


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def host_cert(tmp_path_factory) -> str:
    """`TYPE BASE64` of an OpenSSH host certificate, and of the CA that signed it."""
    d = tmp_path_factory.mktemp("cert")
    ca, host = _keygen(d / "ca"), _keygen(d / "host")
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "epyc1", "-h", "-n", "10.1.2.3",
                    str(host) + ".pub"], check=True)
    cert = (d / "host-cert.pub").read_text().split()
    ca_pub = (d / "ca.pub").read_text().split()
    return f"{cert[0]} {cert[1]}", f"{ca_pub[0]} {ca_pub[1]}"


def hashed(tmp_path: Path, text: str) -> str:
    """text with every host name hashed by `ssh-keygen -H` (comments are kept)."""
    f = tmp_path / "to-hash"
    f.write_text(text)
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(f)], check=True, capture_output=True)
    out = f.read_text()
    assert "|1|" in out and "10.1.2" not in out
    return out


def known(tmp_path: Path, text: str | bytes) -> KnownHosts:
    path = tmp_path / "known_hosts"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return KnownHosts(path)


# -- 1. ssh-rsa entries (what ssh-keyscan prints first) ---------------------------


def test_ssh_rsa_entry_asks_for_rsa_sha2_algorithms_paramiko_accepts(tmp_path, rsa, host_cert):
    kh = known(tmp_path, f"{HOST} {host_cert[0]}\n" + line(HOST, rsa))
    a, b = socket.socketpair()
    t = paramiko.Transport(a)
    try:
        opts = t.get_security_options()
        offered = tuple(opts.key_types)
        wanted = kh.host_key_algorithms(HOST, offered)
        opts.key_types = wanted  # raised ValueError("unknown cipher") for "ssh-rsa"
        assert list(opts.key_types)[:2] == ["rsa-sha2-512", "rsa-sha2-256"]
        assert sorted(wanted) == sorted(offered)  # reordered, nothing unsupported added (the certificate)
        assert kh.host_key_algorithms(OTHER, offered) == list(offered)
    finally:
        t.close()
        a.close()
        b.close()
    kh.verify(WHERE, HOST, rsa)


# -- 2. markers, spacing, bad lines -----------------------------------------------


def test_markers_comments_and_loose_spacing_are_understood(tmp_path, rsa, host_cert, caplog):
    key, revoked_elsewhere = ed25519(), ed25519()
    text = (
        f"# {HOST[1:].replace(']', '')} SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\n"
        "\n"
        f"@cert-authority *.other.example {host_cert[1]}\n"
        f"@revoked {OTHER} {revoked_elsewhere.get_name()}  {revoked_elsewhere.get_base64()}\n"
        f"{OTHER} ssh-ed25519 AAAA!!notbase64\n"
        + line(HOST, key, sep="  \t ")
        + line(HOST, rsa)
    )
    kh = known(tmp_path, text)
    with caplog.at_level(logging.WARNING):
        kh.verify(WHERE, HOST, key)
        kh.verify(WHERE, HOST, rsa)
    assert f"{kh.path} line 5: bad base64" in caplog.text
    assert kh.keys_for(HOST) == [key, rsa]


def test_revoked_key_is_refused_naming_file_and_line(tmp_path):
    key = ed25519()
    kh = known(tmp_path, line(HOST, key) + "# revoked after the 2025 incident\n" + "@revoked * " + line("", key)[1:])
    for trust_new in (False, True):
        with pytest.raises(HostKeyError, match=rf"revoked in {re.escape(str(kh.path))} line 3"):
            kh.verify(WHERE, HOST, key, trust_new=trust_new)
    # Nor can it be recorded again for another host.
    with pytest.raises(HostKeyError, match="revoked"):
        kh.verify(WHERE, OTHER, key, trust_new=True)
    with pytest.raises(HostKeyError, match="revoked"):
        kh.replace(HOST, key)


# -- 3. several keys of one type --------------------------------------------------


def test_any_recorded_key_equal_to_the_offered_one_matches(tmp_path):
    old, new, ec1, ec2 = ed25519(), ed25519(), ecdsa(), ecdsa()
    kh = known(tmp_path, line(HOST, old) + line(HOST, ec1) + line(HOST, new) + line(HOST, ec2))
    for key in (old, new, ec1, ec2):
        kh.verify(WHERE, HOST, key)
    with pytest.raises(HostKeyError, match="HOST KEY CHANGED"):
        kh.verify(WHERE, HOST, ed25519())


# -- 4. entries paramiko cannot verify with still make the host known --------------


UNUSABLE = {
    "certificate": lambda hosts, cert: f"{hosts} {cert[0]}\n",
    "cert-authority": lambda hosts, cert: f"@cert-authority {hosts} {cert[1]}\n",
    "sk-ed25519": lambda hosts, cert: sk_ed25519_line(hosts),
    "sk-ecdsa": lambda hosts, cert: sk_ecdsa_line(hosts),
    "unknown-type": lambda hosts, cert: unknown_type_line(hosts),
}


@pytest.mark.parametrize("kind", UNUSABLE)
def test_unverifiable_entry_is_never_a_new_host(tmp_path, host_cert, kind):
    text = "# lab hosts\n" + line(OTHER, ed25519()) + UNUSABLE[kind](HOST, host_cert)
    kh = known(tmp_path, text)
    offered = ed25519()
    with pytest.raises(HostKeyError) as e:
        kh.verify(WHERE, HOST, offered, trust_new=True)
    msg = str(e.value)
    assert f"{kh.path} line 3" in msg and fingerprint(offered) in msg
    assert "snp-harness trust --replace epyc1" in msg and "out of band" in msg
    assert kh.path.read_text() == text


NAME_FORMS = {
    "port-form": HOST,
    "comma-list": f"epyc1.lab,{HOST},10.9.9.9",
    "wildcard": "[10.1.2.*]:2222",
    "question-mark": "[10.1.2.?]:*",
    "hashed": None,  # the port form, hashed by ssh-keygen -H
}


@pytest.mark.parametrize("form", NAME_FORMS)
def test_host_name_forms_are_matched_as_openssh_does(tmp_path, host_cert, form):
    key = ed25519()
    text = line(NAME_FORMS[form] or HOST, key) + f"{NAME_FORMS[form] or HOST} {host_cert[0]}\n"
    if form == "hashed":
        text = hashed(tmp_path, text)
    kh = known(tmp_path, text)
    kh.verify(WHERE, HOST, key)
    with pytest.raises(HostKeyError, match=rf"{re.escape(str(kh.path))} line 1: ssh-ed25519 .*; line 2: ssh-ed25519-cert"):
        kh.verify(WHERE, HOST, ed25519(), trust_new=True)


def test_negated_pattern_leaves_the_host_out(tmp_path, host_cert):
    kh = known(tmp_path, f"!{HOST},[10.1.2.*]:2222 {host_cert[0]}\n")
    with pytest.raises(HostKeyError, match="line 1"):
        kh.verify(WHERE, OTHER, ed25519(), trust_new=True)  # the pattern names it: not new
    key = ed25519()
    kh.verify(WHERE, HOST, key, trust_new=True)  # the negation rules the line out: new
    assert kh.keys_for(HOST) == [key]


# -- 5. malformed lines -------------------------------------------------------------


def _truncated(key):
    return key.get_name() + " " + _b64(key.asbytes()[:-8])


MALFORMED = {
    "bad-base64": (lambda k: f"{HOST} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI%%%\n", "bad base64"),
    "no-key": (lambda k: f"{HOST} ssh-ed25519\n", "no key type or no key"),
    "unknown-marker": (lambda k: f"@trusted {HOST} ssh-ed25519 {k.get_base64()}\n", "unknown marker '@trusted'"),
    "type-mismatch": (lambda k: f"{HOST} ecdsa-sha2-nistp256 {k.get_base64()}\n", "the key is a ssh-ed25519 key, but the line says ecdsa-sha2-nistp256"),
    "truncated-key": (lambda k: f"{HOST} {_truncated(ecdsa())}\n", "cannot read the ecdsa-sha2-nistp256 key"),
    # Whose line this is cannot be told: it may be this host's.
    "damaged-hash": (lambda k: f"|1|bm90IGEgc2FsdA==|AAAA {k.get_name()} {k.get_base64()}\n",
                     "damaged hashed host name"),
    "marker-alone": (lambda k: "@revoked\n", "no host names"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_line_about_the_host_is_an_error_naming_file_and_line(tmp_path, case):
    key = ed25519()
    make, problem = MALFORMED[case]
    kh = known(tmp_path, "# pinned by snp-harness trust\n" + line(HOST, key) + make(key))
    with pytest.raises(HostKeyError) as e:
        kh.verify(WHERE, HOST, key, trust_new=True)
    msg = str(e.value)
    assert f"{kh.path} has malformed entries" in msg and f"line 3: {problem}" in msg, msg
    assert "trust --replace epyc1" in msg


@pytest.mark.parametrize("case", [c for c in MALFORMED if c not in ("damaged-hash", "marker-alone")])
def test_malformed_line_about_another_host_is_only_a_warning(tmp_path, case, caplog):
    key = ed25519()
    make, problem = MALFORMED[case]
    kh = known(tmp_path, make(key).replace(HOST, OTHER) + line(HOST, key))
    with caplog.at_level(logging.WARNING):
        kh.verify(WHERE, HOST, key)
        kh.verify(WHERE, HOST, key)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"{kh.path} line 1: {problem}" in warnings[0], warnings
    with pytest.raises(HostKeyError, match=rf"{re.escape(str(kh.path))} has malformed entries .*line 1"):
        kh.verify(WHERE, OTHER, key)


# -- 6. rewriting ----------------------------------------------------------------------


def test_replace_drops_only_this_hosts_lines_and_keeps_the_rest_byte_for_byte(tmp_path, host_cert):
    old, new, theirs, shared, revoked = ed25519(), ed25519(), ed25519(), ed25519(), ed25519()
    ours_hashed = hashed(tmp_path, line(HOST, ecdsa())).encode()
    keep = [
        b"# snp-harness known_hosts \xe2\x80\x94 lab A\n",
        b"\n",
        f"@cert-authority *.lab {host_cert[1]}\r\n".encode(),
        f"@revoked\t{OTHER}\t{revoked.get_name()} {revoked.get_base64()} old\n".encode(),
        f"{OTHER} ssh-ed25519 AAAA!!notbase64\n".encode(),
        hashed(tmp_path, line(OTHER, theirs)).encode(),
    ]
    text = (keep[0] + line(HOST, old).encode() + keep[1] + keep[2] + ours_hashed + keep[3]
            + f"epyc2.lab,{HOST}  {shared.get_name()} {shared.get_base64()} shared key\n".encode()
            + keep[4] + keep[5] + f"{HOST} {host_cert[0]}".encode())  # no final newline
    kh = known(tmp_path, text)
    kh.replace(HOST, new)
    got = kh.path.read_bytes()
    assert got == (b"".join(keep[:4])
                   + f"epyc2.lab  {shared.get_name()} {shared.get_base64()} shared key\n".encode()
                   + keep[4] + keep[5] + line(HOST, new).encode())
    assert kh.keys_for(HOST) == [new]
    assert kh.keys_for("epyc2.lab") == [shared] and kh.keys_for(OTHER) == [theirs]
    assert kh.path.stat().st_mode & 0o777 == 0o600


def test_replace_refuses_to_rewrite_a_pattern_shared_with_other_hosts(tmp_path):
    text = line("[10.1.2.*]:2222", ed25519())
    kh = known(tmp_path, text)
    with pytest.raises(HostKeyError, match=r"line 1 \(\[10.1.2.\*\]:2222\).*by hand"):
        kh.replace(HOST, ed25519())
    assert kh.path.read_text() == text


def test_a_reader_never_sees_a_half_written_file(tmp_path):
    key, new = ed25519(), ed25519()
    text = "# pinned\n" + line(OTHER, ed25519()) + line(HOST, key)
    kh = known(tmp_path, text)
    with open(kh.path, "rb") as reader:  # opened before the rewrite, read after it
        kh.replace(HOST, new)
        assert reader.read() == text.encode()
    assert kh.keys_for(HOST) == [new]


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    key = ed25519()
    text = "# pinned\n" + line(OTHER, ed25519()) + line(HOST, key)
    kh = known(tmp_path, text)
    # The process may write only 20 bytes per file: the rewrite dies halfway, as in a full disk.
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20, limits[1]))
    try:
        with pytest.raises(HostKeyError, match=f"cannot write known_hosts {re.escape(str(kh.path))}"):
            kh.replace(HOST, ed25519())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert kh.path.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["known_hosts", "known_hosts.lock"]


def test_readers_share_and_writers_hold_a_separate_lock_file(tmp_path, monkeypatch):
    kh = known(tmp_path, line(OTHER, ed25519()))
    calls = []
    real = fcntl.flock

    def flock(fd, op):
        calls.append((Path(os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}")).name, op))
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    kh.keys_for(HOST)
    assert calls == [("known_hosts.lock", fcntl.LOCK_SH)]
    calls.clear()
    kh.add(HOST, ed25519())
    assert calls == [("known_hosts.lock", fcntl.LOCK_EX)]


def test_add_records_a_key_once(tmp_path):
    key = ed25519()
    kh = KnownHosts(tmp_path / "new-dir" / "known_hosts")
    kh.add(HOST, key)
    kh.add(HOST, key)
    kh.verify(WHERE, HOST, key)
    assert kh.path.read_text() == line(HOST, key)


# -- snp-harness trust ----------------------------------------------------------------


@pytest.fixture
def inventory(tmp_path, monkeypatch):
    """An inventory for host epyc1 at HOST, and the key its (faked) sshd offers."""
    path = tmp_path / "snp-harness.toml"
    kh = tmp_path / "known_hosts"
    path.write_text(f'[harness]\nknown_hosts = "{kh}"\n\n'
                    f'[hosts.epyc1]\naddress = "10.1.2.3"\nport = 2222\nidentity_file = "{tmp_path / "id"}"\n')
    offered = ed25519()
    monkeypatch.setattr("harness.transport.ssh.SshTransport.host_key", lambda self: offered)
    return path, KnownHosts(kh), offered


def test_trust_refuses_a_host_that_has_an_unverifiable_entry(inventory, host_cert, capsys):
    path, kh, offered = inventory
    kh.path.write_text(f"{HOST} {host_cert[0]}\n")
    argv = ["--config", str(path), "trust", "epyc1", "--fingerprint", fingerprint(offered)]
    assert cli.main(argv) == cli.EXIT_INFRA
    err = capsys.readouterr().err
    assert f"{kh.path} line 1: ssh-ed25519-cert-v01@openssh.com" in err and "trust --replace epyc1" in err
    assert kh.keys_for(HOST) == []


def test_trust_replace_repairs_a_malformed_entry(inventory, capsys):
    path, kh, offered = inventory
    other = line(OTHER, ed25519())
    kh.path.write_text(f"@cert-authority *.lab {ed25519().get_name()}  AAAA%%\n" + other + f"{HOST} ssh-ed25519 AAA\n")
    argv = ["--config", str(path), "trust", "epyc1", "--fingerprint", fingerprint(offered)]
    assert cli.main(argv) == cli.EXIT_INFRA
    assert "line 3: bad base64" in capsys.readouterr().err
    assert cli.main(argv[:2] + ["trust", "--replace", *argv[3:]]) == cli.EXIT_OK
    assert kh.path.read_text().splitlines(keepends=True)[1:] == [other, line(HOST, offered)]
    assert cli.main(argv) == cli.EXIT_OK
    assert "already trusted" in capsys.readouterr().out
