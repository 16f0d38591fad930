"""A real OpenSSH sshd on 127.0.0.1, for the harness's own tests and benchmarks.

It runs `sshd -D -e -f <config>` on a free loopback port with throw-away host
and client keys. Only processes it started are ever signalled, by PID.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import paramiko

from harness.transport.hostkeys import parse_public_key
from harness.transport.local import stop_process

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, kind: str = "ed25519") -> Path:
    """A new key pair (ed25519 unless kind says otherwise) at path / path.pub (replaces any old one)."""
    for p in (path, path.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "snp-harness-test", "-f", str(path)],
                   check=True, stdout=subprocess.DEVNULL)
    return path


class LoopbackSshd:
    def __init__(self, workdir: Path, user: str | None = None, *, rsa_host_key: bool = False) -> None:
        self.workdir = Path(workdir)
        self.user = user or getpass.getuser()
        self.port = free_port()
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        # A second host key, for clients that ask for ssh-rsa (what ssh-keyscan records first).
        self.rsa_host_key = self.workdir / "ssh_host_rsa_key" if rsa_host_key else None
        self.client_key = self.workdir / "id_ed25519"
        self.config = self.workdir / "sshd_config"
        self.log = self.workdir / "sshd.log"
        self.proc: subprocess.Popen | None = None
        self.sftp_server = SFTP_SERVER  # a test may point it elsewhere (a hung server)

    @staticmethod
    def available() -> str | None:
        """None if sshd can run here, else why not."""
        if not os.access(SSHD, os.X_OK):
            return f"{SSHD} not found: install openssh-server (ci/bootstrap does)"
        if shutil.which("ssh-keygen") is None:
            return "ssh-keygen not found: install openssh-client (ci/bootstrap does)"
        return None

    def start(self) -> LoopbackSshd:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            keygen(self.host_key)
        if self.rsa_host_key is not None and not self.rsa_host_key.exists():
            keygen(self.rsa_host_key, "rsa")
        if not self.client_key.exists():
            keygen(self.client_key)
        authorized = self.workdir / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        self.config.write_text(_CONFIG.format(
            port=self.port, authorized=authorized, user=self.user, sftp=self.sftp_server,
            host_keys="\n".join(f"HostKey {k}" for k in (self.host_key, self.rsa_host_key) if k is not None),
        ))
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd on 127.0.0.1:{self.port} not ready after {timeout}s")

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes this listener forked."""
        return _children(self.proc.pid) if self.proc else []

    def kill_sessions(self) -> None:
        """SIGKILL every connection's sshd process: the client sees the link drop."""
        for pid in self.session_pids():
            _signal(pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is None:
            return
        sessions = self.session_pids()
        stop_process(self.proc)
        for pid in sessions:
            _signal(pid, signal.SIGKILL)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def rotate_host_key(self) -> None:
        """Give the server a new host key, as a reinstalled host would have."""
        keygen(self.host_key)
        if self.proc is not None:
            self.restart()

    def ssh_argv(self, *extra: str) -> list[str]:
        """An OpenSSH client command line for this server (for baselines)."""
        return ["ssh", "-F", "/dev/null", "-i", str(self.client_key), "-p", str(self.port),
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts_file()}", *extra,
                f"{self.user}@127.0.0.1"]

    def public_host_key(self) -> paramiko.PKey:
        return parse_public_key(self.host_key.with_suffix(".pub").read_text())

    def known_hosts_file(self) -> Path:
        """A known_hosts file with this server's key, for the OpenSSH client."""
        path = self.workdir / "known_hosts.openssh"
        key = self.host_key.with_suffix(".pub").read_text().split()
        path.write_text(f"[127.0.0.1]:{self.port} {key[0]} {key[1]}\n")
        return path


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(p) for p in task.read_text().split()]
        except OSError:
            pass
    return out


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


_CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
{host_keys}
PidFile none
AuthorizedKeysFile {authorized}
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowAgentForwarding no
AllowTcpForwarding local
X11Forwarding no
MaxSessions 64
MaxStartups 64
LogLevel INFO
Subsystem sftp {sftp}
"""
