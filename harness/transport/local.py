"""Run commands on this machine, with the same contract as the SSH transport."""

from __future__ import annotations

import logging
import os
import selectors
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
import shutil
from typing import Mapping, Sequence

from harness.errors import CommandFailed, CommandTimeout, TransportError
from harness.transport.base import CommandResult, LineReader, OutputBuffer, Sink, check_argv, check_env

log = logging.getLogger(__name__)

# Seconds between SIGTERM and SIGKILL when a command times out.
KILL_GRACE_S = 1.0


class LocalTransport:
    name = "local://"

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
        extra_env = check_env(env)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        out = OutputBuffer(sink)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, **extra_env} if extra_env else None,
                start_new_session=True,  # its own process group, so a timeout ends children too
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as e:
            # Mirror what a shell reports, so callers see one contract everywhere.
            status = 127 if isinstance(e, FileNotFoundError) else 126
            out.feed("stderr", f"{argv[0]}: {e.strerror}\n".encode())
            return self._finish(out.result(argv, status, time.monotonic() - start), check)
        if data is not None:
            threading.Thread(target=_feed_stdin, args=(proc, data), daemon=True).start()
        timed_out = not _pump(proc, out, start + timeout)
        if timed_out:
            _kill_group(proc)
            _pump(proc, out, time.monotonic() + KILL_GRACE_S)
        status = proc.wait()
        result = out.result(argv, status, time.monotonic() - start)
        log.debug("%s -> %s (%.2fs)", shlex.join(argv), status, result.duration_s)
        if timed_out:
            raise CommandTimeout(result, timeout, self.name)
        return self._finish(result, check)

    def _finish(self, result: CommandResult, check: bool) -> CommandResult:
        if check and not result.ok:
            raise CommandFailed(result, self.name)
        return result

    def put(self, local: Path, remote: str, *, timeout: float = 1800) -> None:  # noqa: ARG002 (a local copy cannot hang on a peer)
        self._copy(Path(local), Path(remote))

    def get(self, remote: str, local: Path, *, timeout: float = 1800) -> None:  # noqa: ARG002
        self._copy(Path(remote), Path(local))

    def _copy(self, src: Path, dst: Path) -> None:
        try:
            shutil.copyfile(src, dst)
        except OSError as e:
            raise TransportError(f"{self.name}: copying {src} to {dst} failed: {e}") from e

    def spawn(self, argv: Sequence[str]) -> LocalProcess:
        """Start a long-lived command (same contract as SshTransport.spawn)."""
        argv = check_argv(argv)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            raise TransportError(f"{self.name}: could not start {shlex.join(argv)}: {e}") from e
        return LocalProcess(proc, self.name, argv)

    def close(self) -> None:
        pass


class LocalProcess(LineReader):
    """A command started by LocalTransport.spawn: readline with a timeout, kill by PID."""

    def __init__(self, proc: subprocess.Popen, where: str, argv: tuple[str, ...]) -> None:
        self._proc, self.where, self.argv = proc, where, argv
        self._sel = selectors.DefaultSelector()
        self._sel.register(proc.stdout, selectors.EVENT_READ)

    def _read(self, wait: float) -> bytes | None:
        return os.read(self._proc.stdout.fileno(), 65536) if self._sel.select(wait) else None

    def write(self, data: str) -> None:
        """Send to the command's stdin."""
        try:
            self._proc.stdin.write(data.encode())
            self._proc.stdin.flush()
        except (OSError, ValueError) as e:
            raise TransportError(f"{self.where}: writing to {shlex.join(self.argv)} failed: {e}") from e

    def exit_status(self, timeout: float) -> int | None:
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def close(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()

    def kill(self) -> None:
        if self.alive:
            _kill_group(self._proc)
        self._proc.wait()
        self._sel.close()
        self._proc.stdout.close()
        self.close()


def _feed_stdin(proc: subprocess.Popen, data: bytes) -> None:
    try:
        proc.stdin.write(data)
    except (BrokenPipeError, ValueError):
        pass  # the command exited without reading all of it
    finally:
        try:
            proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass


def _pump(proc: subprocess.Popen, out: OutputBuffer, deadline: float) -> bool:
    """Move output into `out` until both pipes close; False if the deadline passed first."""
    sel = selectors.DefaultSelector()
    for f, stream in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
        if not f.closed:
            sel.register(f, selectors.EVENT_READ, stream)
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    out.feed(key.data, chunk)
                else:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
        return True
    finally:
        sel.close()


def _kill_group(proc: subprocess.Popen) -> None:
    """End the command's process group: TERM, then KILL after a grace period."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        if wait is None:
            return
        try:
            proc.wait(timeout=wait)
            # The leader is gone; children in its group may still live.
        except subprocess.TimeoutExpired:
            continue


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """End a process we started: SIGTERM, then SIGKILL after `grace` seconds; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
