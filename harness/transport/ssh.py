"""SSH transport: one persistent paramiko connection, one channel per command.

Commands are argv lists, quoted with shlex.join for the remote login shell.
The remote shell first reports its PID on stderr (stripped again here), so a
timed-out command's whole process group can be ended on the target.
"""

from __future__ import annotations

import logging
import re
import shlex
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import paramiko

from harness.errors import CommandFailed, CommandTimeout, ConfigError, HarnessError, TransportError
from harness.transport.base import CommandResult, LineReader, OutputBuffer, Sink, check_argv, check_env
from harness.transport.hostkeys import KnownHosts, host_id

log = logging.getLogger(__name__)

_PID_LINE = re.compile(rb"(?m)^snp-harness-pid:(\d+)\n")
# Ends the process group of a timed-out command: TERM, then KILL if it is still there.
# `kill -SIG -PGID` is the one negative-PID form dash, bash and busybox all accept.
# TERM the group, wait up to ~1 s for its leader to go (not a fixed second: ending a
# session's followers must not cost a second each), then KILL whatever is left.
_KILL_SCRIPT = (
    'kill -TERM "-$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null; i=0; '
    'while [ "$i" -lt 10 ] && kill -0 "$1" 2>/dev/null; do sleep 0.1; i=$((i+1)); done; '
    'kill -KILL "-$1" 2>/dev/null || kill -KILL "$1" 2>/dev/null; true'
)
_PID_MARK = re.compile(rb"(?:^|\n)snp-harness-pid:(\d+)\n")  # a login script may print before it
_WINDOW = 16 * 1024 * 1024  # large window: bulk output and sftp are not throttled
_POLL_S = 0.05  # how late stderr-only output may be seen while stdout is quiet
_CLOSE_WAIT_S = 10.0
# sftp: one request unanswered this long means a hung sftp-server or a dead link.
SFTP_REQUEST_TIMEOUT_S = 60.0


def remote_command(argv: Sequence[str], env: Mapping[str, str] | None = None, *, replace: bool = True) -> str:
    """The string the remote login shell runs for argv (every word quoted).

    replace=False keeps the shell as the command's parent, so a command killed by a signal
    exits 128+N. sshd would report it as an exit-signal, which paramiko drops: the status
    would read -1, the same as a channel that died with its connection.
    """
    words = list(argv)
    if env:
        words = ["env", "--", *(f"{k}={v}" for k, v in env.items()), *words]
    if replace:
        return f"printf 'snp-harness-pid:%d\\n' $$ >&2; exec {shlex.join(words)}"
    # The trailing `exit` keeps bash and dash from exec'ing the last command themselves.
    return f"printf 'snp-harness-pid:%d\\n' $$ >&2; {shlex.join(words)}; exit $?"


class SshTransport:
    def __init__(
        self,
        name: str,
        address: str,
        *,
        port: int = 22,
        user: str = "root",
        identity_file: Path | None = None,
        known_hosts: Path,
        connect_timeout: float = 15.0,
        keepalive_s: int = 15,
        trust_new_host_key: bool = False,
        via: SshTransport | None = None,
    ) -> None:
        self.name = f"ssh://{name}"
        # via: reach address:port from that host (a direct-tcpip channel), e.g. a guest's sshd
        # forwarded to the target's loopback only: no port is ever bound on an external address.
        self.via = via
        self.address = address
        self.port = port
        self.user = user
        self.identity_file = Path(identity_file) if identity_file else None
        self.known_hosts = KnownHosts(known_hosts)
        self.connect_timeout = connect_timeout
        self.keepalive_s = keepalive_s
        self.trust_new_host_key = trust_new_host_key
        self._lock = threading.Lock()
        self._t: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._connected = False  # a connection was made once: the next one is a reconnect
        # Run after every reconnect, before the command that needed it (a lease is retaken).
        # One that raises leaves the transport unusable: `broken` holds why.
        self.reconnect_hooks: list[Callable[[], None]] = []
        self.broken: HarnessError | None = None
        self._hooks_running = threading.local()
        self.sftp_request_timeout_s = SFTP_REQUEST_TIMEOUT_S

    @classmethod
    def from_host(cls, host, *, trust_new_host_key: bool = False) -> SshTransport:
        """Build from a config.HostConfig."""
        return cls(
            host.name,
            host.address,
            port=host.port,
            user=host.user,
            identity_file=host.identity_file,
            known_hosts=host.known_hosts,
            connect_timeout=host.connect_timeout,
            trust_new_host_key=trust_new_host_key,
        )

    @property
    def hostid(self) -> str:
        return host_id(self.address, self.port)

    # -- connection -------------------------------------------------------

    def _open_transport(self) -> paramiko.Transport:
        where = f"{self.name} ({self.user}@{self.address}:{self.port})"
        sock = self._socket(where)
        t = None
        try:
            t = paramiko.Transport(sock, default_window_size=_WINDOW)
            t.banner_timeout = t.handshake_timeout = t.auth_timeout = self.connect_timeout
            opts = t.get_security_options()
            # The recorded key types first, as OpenSSH does (ssh-rsa is negotiated as rsa-sha2-*).
            opts.key_types = self.known_hosts.host_key_algorithms(self.hostid, opts.key_types)
            t.start_client(timeout=self.connect_timeout)
            self.known_hosts.verify(self.name, self.hostid, t.get_remote_server_key(),
                                    trust_new=self.trust_new_host_key)
            self._authenticate(t, where)
        except BaseException as e:
            if t is not None:
                t.close()
            sock.close()  # t.close() leaves it open if the handshake never started
            if isinstance(e, (paramiko.SSHException, OSError, EOFError)):
                raise TransportError(f"{where}: SSH handshake failed: {e}") from e
            raise
        t.set_keepalive(self.keepalive_s)
        log.debug("%s: connected", where)
        return t

    def _socket(self, where: str):
        if self.via is not None:
            try:
                return self.via._transport().open_channel(
                    "direct-tcpip", (self.address, self.port), ("127.0.0.1", 0), timeout=self.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as e:
                raise TransportError(f"{where}: cannot connect through {self.via.name}: {e}. "
                                     "Is the guest up and its sshd listening?") from e
        try:
            sock = socket.create_connection((self.address, self.port), timeout=self.connect_timeout)
        except OSError as e:
            raise TransportError(f"{where}: cannot connect: {e}. Is the host up and sshd listening?") from e
        # Nagle would add ~40 ms to every small request/response turn.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _dead_peer_detection(sock, self.keepalive_s)
        return sock

    def _authenticate(self, t: paramiko.Transport, where: str) -> None:
        if self.identity_file is not None:
            try:
                keys = [paramiko.PKey.from_path(self.identity_file)]
            except FileNotFoundError as e:
                raise ConfigError(f"{where}: identity_file {self.identity_file} does not exist") from e
            except paramiko.PasswordRequiredException as e:
                raise ConfigError(
                    f"{where}: identity_file {self.identity_file} is passphrase-protected; "
                    "load it into ssh-agent and drop identity_file from the inventory"
                ) from e
            except (OSError, paramiko.SSHException, ValueError) as e:
                raise ConfigError(f"{where}: cannot load identity_file {self.identity_file}: {e}") from e
        else:
            keys = list(paramiko.Agent().get_keys())
            if not keys:
                raise ConfigError(f"{where}: no identity_file configured and no keys in ssh-agent")
        for key in keys:
            try:
                t.auth_publickey(self.user, key)
                return
            except paramiko.AuthenticationException:
                continue
        raise TransportError(
            f"{where}: public-key authentication as {self.user!r} was refused "
            f"(tried {len(keys)} key(s)); check authorized_keys on the host"
        )

    def _transport(self) -> paramiko.Transport:
        """The live connection; reconnects if the previous one is gone.

        Safe only before a command starts: nothing in flight is re-run. After a reconnect the
        reconnect hooks run before the caller's command, so what the old connection held (the
        host's lease) is verified or retaken first.
        """
        reconnected = False
        with self._lock:
            if self.broken is not None:
                raise type(self.broken)(f"{self.name} is unusable: {self.broken}")
            if self._t is None or not self._t.is_active():
                if self._t is not None:
                    log.info("%s: connection lost, reconnecting", self.name)
                self._drop()
                self._t = self._open_transport()
                reconnected, self._connected = self._connected, True
            t = self._t
        if reconnected and self.reconnect_hooks and not getattr(self._hooks_running, "on", False):
            self._hooks_running.on = True
            try:
                for hook in list(self.reconnect_hooks):
                    hook()
            except HarnessError as e:
                self.broken = e
                self.close()
                raise
            finally:
                self._hooks_running.on = False
        return t

    def _drop(self) -> None:
        """Close the connection, bounded: a transport thread that does not stop is left behind."""
        sftp, t, self._sftp, self._t = self._sftp, self._t, None, None
        if sftp is None and t is None:
            return
        closer = threading.Thread(target=_close_quietly, args=(sftp, t), name=f"close {self.name}", daemon=True)
        closer.start()
        closer.join(_CLOSE_WAIT_S)
        if closer.is_alive():
            log.warning("%s: the SSH connection did not close within %gs; left to close in the background",
                        self.name, _CLOSE_WAIT_S)

    def _open_channel(self) -> tuple[paramiko.Transport, paramiko.Channel]:
        """A session channel. A link found dead here is replaced once: nothing was sent yet."""
        t = self._transport()
        try:
            return t, t.open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            if t.is_active():
                raise TransportError(f"{self.name}: cannot open a session channel: {e}") from e
        t = self._transport()
        try:
            return t, t.open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise TransportError(f"{self.name}: cannot open a session channel: {e}") from e

    def connect(self) -> None:
        self._transport()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def host_key(self) -> paramiko.PKey:
        """The key the host offers, fetched without authenticating or trusting it."""
        try:
            sock = socket.create_connection((self.address, self.port), timeout=self.connect_timeout)
        except OSError as e:
            raise TransportError(f"{self.name}: cannot connect to {self.address}:{self.port}: {e}") from e
        t = None
        try:
            t = paramiko.Transport(sock)
            t.banner_timeout = t.handshake_timeout = self.connect_timeout
            # The recorded key types first, as a connection asks: `trust` compares like with like.
            opts = t.get_security_options()
            opts.key_types = self.known_hosts.host_key_algorithms(self.hostid, opts.key_types)
            t.start_client(timeout=self.connect_timeout)
            return t.get_remote_server_key()
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise TransportError(f"{self.name}: SSH handshake failed: {e}") from e
        finally:
            if t is not None:
                t.close()
            sock.close()

    # -- commands ----------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        check: bool = True,
        stdin: bytes | str | None = None,
        env: Mapping[str, str] | None = None,
        sink: Sink | None = None,
    ) -> CommandResult:
        argv = check_argv(argv)
        command = remote_command(argv, check_env(env), replace=False)
        t, chan = self._open_channel()
        start = time.monotonic()
        try:
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            chan.close()
            raise TransportError(
                f"{self.name}: could not start {shlex.join(argv)}: {e}; it may or may not have run, "
                "and it is not retried"
            ) from e
        try:
            status, pid, out = self._collect(chan, stdin, sink, start + timeout)
        finally:
            chan.close()
        duration = time.monotonic() - start
        log.debug("%s: %s -> %s (%.3fs)", self.name, shlex.join(argv), status, duration)
        if status is None:
            self._end_remote(pid)
            raise CommandTimeout(out.result(argv, -1, duration), timeout, self.name)
        if status == -1:  # no exit status: the channel or the connection died under the command
            why = "connection dropped" if not t.is_active() else "channel closed without an exit status"
            raise TransportError(
                f"{self.name}: {why} while running {shlex.join(argv)}; "
                f"it may have run in part and is not retried\n{out.result(argv, -1, duration).tail()}".rstrip()
            )
        result = out.result(argv, status, duration)
        if check and not result.ok:
            raise CommandFailed(result, self.name)
        return result

    def _collect(self, chan, stdin, sink, deadline):
        """Read until exit; returns (status or None on timeout, remote pid, output)."""
        out = OutputBuffer(sink)
        head = b""  # stderr until the PID line has been seen
        pid = None
        if stdin is not None:
            data = stdin.encode() if isinstance(stdin, str) else stdin
            threading.Thread(target=_send_stdin, args=(chan, data), daemon=True).start()
        else:
            chan.shutdown_write()
        while True:
            while chan.recv_ready():
                out.feed("stdout", chan.recv(65536))
            while chan.recv_stderr_ready():
                chunk = chan.recv_stderr(65536)
                if pid is None:
                    head += chunk
                    m = _PID_LINE.search(head)  # login-shell noise may precede it
                    if m:
                        pid, chunk = int(m.group(1)), head[: m.start()] + head[m.end():]
                    elif len(head) >= 4096:
                        pid, chunk = 0, head  # no PID line: not a POSIX login shell
                    else:
                        continue
                    head = b""
                out.feed("stderr", chunk)
            drained = not chan.recv_ready() and not chan.recv_stderr_ready()
            if drained and (chan.eof_received or chan.closed) and chan.exit_status_ready():
                if head:
                    out.feed("stderr", head)
                return chan.recv_exit_status(), pid, out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, pid, out
            if drained and chan.eof_received:
                chan.status_event.wait(min(remaining, 0.5))
            else:
                # Never select() on a channel: fileno() gives it paramiko's event pipe, whose
                # clear() can block forever in os.read when the channel closes under a reader.
                chunk = _recv(chan, min(remaining, _POLL_S))
                if chunk:
                    out.feed("stdout", chunk)

    def spawn(self, argv: Sequence[str]) -> RemoteProcess:
        """Start a long-lived command on its own channel (a lease holder, a console reader)."""
        command = remote_command(check_argv(argv))
        _, chan = self._open_channel()
        try:
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            chan.close()
            raise TransportError(f"{self.name}: could not start {shlex.join(argv)}: {e}") from e
        return RemoteProcess(chan, self.name, tuple(argv), self._end_remote)

    def _end_remote(self, pid: int | None) -> None:
        """End a timed-out command's process group on the target."""
        if not pid:
            log.warning("%s: timed-out command never reported its PID; only its channel was closed", self.name)
            return
        try:
            self.run(["sh", "-c", _KILL_SCRIPT, "sh", str(pid)], timeout=30, check=False)
        except TransportError as e:
            log.warning("%s: could not end remote process group %d: %s", self.name, pid, e)

    # -- files ---------------------------------------------------------------

    def _sftp_client(self) -> paramiko.SFTPClient:
        t = self._transport()
        with self._lock:
            if self._sftp is None:
                # A timeout on the channel before the version exchange: a hung sftp-server
                # (or a dead link) is an error after SFTP_REQUEST_TIMEOUT_S, never a hang.
                chan = t.open_session(timeout=self.connect_timeout)
                chan.settimeout(self.sftp_request_timeout_s)
                chan.invoke_subsystem("sftp")
                self._sftp = paramiko.SFTPClient(chan)
            return self._sftp

    def _transfer(self, what: str, timeout: float, do: Callable[[paramiko.SFTPClient, Callable], object]) -> None:
        deadline = time.monotonic() + timeout

        def progress(_done: int, _total: int) -> None:
            if time.monotonic() > deadline:
                raise _TransferTimeout()

        try:
            do(self._sftp_client(), progress)
        except _TransferTimeout:
            self._forget_sftp()
            raise TransportError(f"{self.name}: {what} did not finish within {timeout:g}s") from None
        except socket.timeout:
            self._forget_sftp()
            raise TransportError(f"{self.name}: {what}: no answer from the sftp server within "
                                 f"{self.sftp_request_timeout_s:g}s (hung sftp-server or dead link)") from None
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise TransportError(f"{self.name}: {what} failed: {e}") from e

    def _forget_sftp(self) -> None:
        """An sftp session a request timed out on is out of step: never reuse it."""
        with self._lock:
            sftp, self._sftp = self._sftp, None
        if sftp is not None:
            _close_quietly(sftp, None)

    def put(self, local: Path, remote: str, *, timeout: float = 1800) -> None:
        self._transfer(f"uploading {local} to {remote}", timeout,
                       lambda c, cb: c.put(str(local), remote, callback=cb))

    def get(self, remote: str, local: Path, *, timeout: float = 1800) -> None:
        self._transfer(f"downloading {remote} to {local}", timeout,
                       lambda c, cb: c.get(remote, str(local), callback=cb))


class _TransferTimeout(Exception):
    pass


def _recv(chan: paramiko.Channel, wait: float) -> bytes | None:
    """stdout bytes (b"" at EOF), or None when none came within `wait` seconds."""
    try:
        chan.settimeout(max(wait, 0.0))
        return chan.recv(65536)
    except socket.timeout:
        return None
    except (OSError, EOFError, paramiko.SSHException):
        return b""  # the channel is gone: that is its end


def _send_all(chan: paramiko.Channel, data: bytes) -> None:
    """sendall that outlives the short timeout _recv sets on the channel (one timeout per
    channel, shared by both directions): a full window is waited out, a closed channel raises."""
    sent = 0
    while sent < len(data):
        try:
            n = chan.send(data[sent:sent + 1024 * 1024])
        except socket.timeout:
            n = None
        if n == 0 or (n is None and chan.closed):
            raise OSError("channel closed")
        sent += n or 0


def _close_quietly(sftp, t) -> None:
    for part in (sftp, t):
        try:
            if part is not None:
                part.close()
        except Exception as e:  # closing a dead link: nothing left to save
            log.debug("closing %r: %s", part, e)


def _dead_peer_detection(sock: socket.socket, keepalive_s: int) -> None:
    """Notice a dead peer in about a minute, not TCP's ~15: keepalive probes while idle, and
    TCP_USER_TIMEOUT for data that is never acknowledged (paramiko's keepalive only sends)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", keepalive_s), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 6),
                       ("TCP_USER_TIMEOUT", (keepalive_s + 60) * 1000)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)


def _send_stdin(chan: paramiko.Channel, data: bytes) -> None:
    try:
        _send_all(chan, data)
        chan.shutdown_write()
    except (OSError, paramiko.SSHException, EOFError):
        pass  # the command exited or the channel closed; the reader reports that


class RemoteProcess(LineReader):
    """A command running on its own channel; closing the channel ends its stdin."""

    def __init__(self, chan: paramiko.Channel, where: str, argv: tuple[str, ...],
                 end_remote: Callable[[int | None], None]) -> None:
        self._chan, self.where, self.argv = chan, where, argv
        self._end_remote = end_remote
        self._err = b""
        self._pid: int | None = None

    def _read(self, wait: float) -> bytes | None:
        chan = self._chan
        if chan.recv_ready():  # data still buffered after EOF is read first
            return chan.recv(65536)
        if chan.eof_received or chan.closed:
            return b""
        return _recv(chan, wait)

    def write(self, data: str) -> None:
        """Send to the command's stdin."""
        try:
            _send_all(self._chan, data.encode())
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise TransportError(f"{self.where}: writing to {shlex.join(self.argv)} failed: {e}") from e

    def exit_status(self, timeout: float) -> int | None:
        return self._chan.recv_exit_status() if self._chan.status_event.wait(timeout) else None

    @property
    def alive(self) -> bool:
        return not (self._chan.closed or self._chan.exit_status_ready())

    def close(self) -> None:
        self._chan.close()

    @property
    def pid(self) -> int | None:
        """The command's PID on the target (from the marker remote_command prints on stderr)."""
        if self._pid is None:
            deadline = time.monotonic() + 5
            while (m := _PID_MARK.search(self._err)) is None and len(self._err) < 4096 \
                    and time.monotonic() < deadline and not self._chan.closed:
                if self._chan.recv_stderr_ready():
                    self._err += self._chan.recv_stderr(4096)
                else:
                    time.sleep(0.01)
            self._pid = int(m.group(1)) if m else None
        return self._pid

    def kill(self) -> None:
        """End the process (group) on the target by its PID, then close the channel.

        For commands that never read stdin (`cat /dev/kmsg`): closing the channel alone
        would leave them running until their next write.
        """
        if self.alive:
            self._end_remote(self.pid)
        self.close()
