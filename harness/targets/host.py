"""HostTarget: a real host from the inventory, reached over SSH.

install() pushes a build with sftp into a staging directory only the connecting
user can write, and records each file's sha256; every use (unpacking, kexec,
grub) checks the file again first. boot() kexecs into the build (or writes a
one-shot grub entry, removed again afterwards, and reboots), waits for the old
connection to drop and SSH to come back with a new boot_id, and checks that
/proc/version is the build's. If the host does not come back, the configured
power-cycle command brings it back on its default kernel, and the target is
marked broken.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.config import DEFAULT_STAGE_DIR, BootMethod, HostConfig
from harness.errors import (BootError, BootTimeout, ConfigError, HarnessError, HostKeyError, InfraError,
                            TransportError)
from harness.redact import redact_argv, scrub
from harness.targets.base import ProbedTarget
from harness.targets.kernel_cmdline import KernelArg, grub_linux_args, next_cmdline, next_cmdline_args
from harness.targets.staging import (KEEP_STAGED, PRUNE_SCRIPT, UNPACK_SCRIPT, make_stage_dir, remote_digests,
                                     sha256_file)
from harness.transport import boot_id
from harness.transport.local import stop_process
from harness.transport.ssh import SshTransport

log = logging.getLogger(__name__)

__all__ = ["GRUB_SCRIPT", "REMOTE_ROOT", "HostTarget", "bzimage_version", "matches_version", "next_cmdline"]

# Where builds are staged: root's own, persistent (unlike /var/tmp, nobody else may create it first).
REMOTE_ROOT = DEFAULT_STAGE_DIR
GRUB_SCRIPT = "/etc/grub.d/42_snp_harness"
POWER_CYCLE_TIMEOUT_S = 300


def bzimage_version(data: bytes) -> str:
    """The version string in a bzImage's setup header (x86 boot protocol: kernel_version at 0x20E)."""
    if data[0x202:0x206] != b"HdrS":
        raise ConfigError("not a bzImage (no HdrS magic)")
    offset = int.from_bytes(data[0x20E:0x210], "little") + 0x200
    return data[offset:data.index(b"\0", offset)].decode(errors="replace")


def matches_version(bz_version: str, proc_version: str) -> bool:
    """/proc/version shows the same release and build stamp (#N ... date) as the bzImage."""
    release = bz_version.split()[0]
    stamp = bz_version[bz_version.find("#"):] if "#" in bz_version else ""
    return proc_version.startswith(f"Linux version {release} ") and stamp in proc_version


def _message(e: BootError) -> str:
    """A BootError's message without the console tail that BootError appends."""
    tail = "\n--- console (last lines) ---\n" + e.console_tail
    return str(e).removesuffix(tail) if e.console_tail else str(e)


@dataclass
class _GrubChange:
    entry: str  # our menu entry's title
    prior_next_entry: str | None  # grubenv's next_entry before grub-reboot set ours


class HostTarget(ProbedTarget):
    grub_script = GRUB_SCRIPT  # the one-shot entry's generator; removed again after the boot

    def __init__(self, host: HostConfig, *, trust_new_host_key: bool = False, workdir: Path | None = None,
                 down_timeout_s: float = 120, boot_timeout_s: float = 600, recover_timeout_s: float = 900,
                 cmdline_extra: tuple[str, ...] = (), stage_root: str = REMOTE_ROOT,
                 power_cycle_timeout_s: float = POWER_CYCLE_TIMEOUT_S) -> None:
        self.host = host
        self.transport = SshTransport.from_host(host, trust_new_host_key=trust_new_host_key)
        self.name = self.transport.name
        self.workdir = Path(workdir) if workdir else None
        self.console_log = self.workdir / "console.log" if self.workdir else None
        self.down_timeout_s, self.boot_timeout_s = down_timeout_s, boot_timeout_s
        self.recover_timeout_s = recover_timeout_s
        self.power_cycle_timeout_s = power_cycle_timeout_s
        self.cmdline_extra = cmdline_extra
        self.stage_root = stage_root
        self.broken: BaseException | None = None
        self._key: str | None = None
        self._installed: dict[str, str] = {}  # name -> path on the host
        self._sha256: dict[str, str] = {}  # name -> digest of what was uploaded
        self._version = ""
        self._console: subprocess.Popen | None = None
        self._console_problem: str | None = None
        self._firing = None  # the reboot command's channel, until the host goes down
        self._grub_change: _GrubChange | None = None  # made on the host and not undone yet
        self.selftests_dir: str | None = None  # set by install()
        # Run once the host is back on the build: what a reboot undid (the lease's flock) is redone.
        self.after_boot: list[Callable[[], None]] = []

    # -- install --------------------------------------------------------------

    def install(self, build, *, initrd: Path | None = None) -> None:
        """Push bzImage (+ initrd, modules) into the build's staging directory and verify them there."""
        t = self.transport
        remote = make_stage_dir(t, self.stage_root, build.key)
        files = {"bzImage": build.bzimage}
        if initrd is not None:
            files["initrd"] = Path(initrd)
        if build.modules is not None:
            files["modules.tar.gz"] = build.modules
        files["selftests.tar.gz"] = build.selftests
        self._key, self._installed, self.selftests_dir = None, {}, None  # the old build is gone
        hashes = {name: sha256_file(local) for name, local in files.items()}
        for name, local in files.items():
            t.put(local, f"{remote}/{name}")
        installed = {name: f"{remote}/{name}" for name in files}
        got = remote_digests(t, list(installed.values()))
        for name, path in installed.items():
            if got.get(path) != hashes[name]:
                raise TransportError(f"{self.name}: {path} arrived corrupted (sha256 {got.get(path)}, "
                                     f"sent {hashes[name]})")
        self._installed, self._sha256 = installed, hashes
        if "modules.tar.gz" in files:
            self._verify(["modules.tar.gz"], TransportError)
            t.run(["tar", "-x", "-o", "-z", "-f", installed["modules.tar.gz"], "-C", "/"], timeout=600)
        self._verify(["selftests.tar.gz"], TransportError)
        t.run(["sh", "-c", UNPACK_SCRIPT, "sh", installed["selftests.tar.gz"], f"{remote}/selftests"],
              timeout=600)
        self.selftests_dir = f"{remote}/selftests"
        # /var/lib is never cleaned for us: older staged builds go, the newest few stay.
        t.run(["sh", "-c", PRUNE_SCRIPT, "sh", remote.rsplit("/", 1)[0], build.key, str(KEEP_STAGED)],
              timeout=300, check=False)
        self._caps = None  # the probe can run now
        self._key = build.key
        self._version = bzimage_version(build.bzimage.read_bytes())
        log.info("%s: installed %s in %s", self.name, build.key, remote)

    def _verify(self, names: list[str], error: type[InfraError]) -> None:
        """The staged files are still what was uploaded; checked right before each use."""
        got = remote_digests(self.transport, [self._installed[n] for n in names])
        for name in names:
            path, want = self._installed[name], self._sha256[name]
            if got.get(path) != want:
                now = f"sha256 now {got[path]}" if path in got else "now missing or unreadable"
                raise error(f"{self.name}: {path} was modified on the host since upload ({now}, uploaded "
                            f"{want}); not using it. Something on the host changed the staging directory: "
                            "find out what, then install the build again")

    # -- boot -----------------------------------------------------------------

    def boot(self, build=None, *, cmdline_extra: tuple[str, ...] = ()) -> None:
        if self.broken is not None:
            raise BootError(f"{self.name} is broken after an earlier failure: {self.broken}") from self.broken
        if build is not None and build.key != self._key:
            self.install(build)
        if not self._installed:
            raise ConfigError(f"{self.name}: install(build) before boot()")
        self._start_console()
        try:
            self._boot(cmdline_extra)
        except BaseException as e:
            problem = self._restore_boot_config()
            if problem:
                e.add_note(problem)
            raise
        else:
            problem = self._restore_boot_config()
            if problem:
                self.broken = BootError(f"{problem}; the host runs the build, but its boot configuration "
                                        "is not as it was")
                raise self.broken
        finally:
            self._stop_console()

    def _boot(self, cmdline_extra: tuple[str, ...]) -> None:
        old = ""
        try:
            old = boot_id(self.transport)
            current = self.transport.run(["cat", "/proc/cmdline"], timeout=30).stdout
            args = next_cmdline_args(current, (*self.cmdline_extra, *cmdline_extra))
            if self.host.boot_method == BootMethod.KEXEC:
                self._kexec(args)
            else:
                self._grub(args)
            self._wait_up(old, self.boot_timeout_s)
            self._back_up()
            self._caps = None  # a new kernel: probe again
            proc_version = self.transport.run(["cat", "/proc/version"], timeout=30).stdout.strip()
            if not matches_version(self._version, proc_version):
                raise BootError(f"{self.name} came back, but not on the build: /proc/version is "
                                f"{proc_version!r}, the build is {self._version!r}", self.console_tail())
        except HostKeyError as e:  # never accepted, never "recovered" from
            self.broken = e
            raise
        except BootTimeout as e:
            self.broken = e
            problem = self._recover(old)
            if problem is None:
                raise
            # The timeout stays the error; the failed recovery is part of its story.
            self.broken = BootTimeout(f"{_message(e)}\nrecovery failed: {problem}", e.console_tail)
            raise self.broken from e
        except BootError as e:
            self.broken = e
            raise

    def _boot_files(self) -> list[str]:
        return [n for n in ("bzImage", "initrd") if n in self._installed]

    def _kexec(self, args: list[KernelArg]) -> None:
        self._verify(self._boot_files(), BootError)
        cmdline = " ".join(a.raw for a in args)
        argv = ["kexec", "-l", self._installed["bzImage"], f"--command-line={cmdline}"]
        if "initrd" in self._installed:
            argv.append(f"--initrd={self._installed['initrd']}")
        self.transport.run(argv, timeout=120)
        has_systemd = self.transport.run(["test", "-d", "/run/systemd/system"], timeout=30, check=False).ok
        self._fire(["systemctl", "kexec"] if has_systemd else ["kexec", "-e"])

    def _grub(self, args: list[KernelArg]) -> None:
        # A one-shot entry: grub-reboot selects it for the next boot only, so a
        # reset falls back to the default kernel. The entry itself is removed after the boot.
        t = self.transport
        linux = grub_linux_args(args)  # refuses what grub would change, before the host is touched
        entry = f"snp-harness {self._key}"
        initrd = f"  initrd '{self._installed['initrd']}'\n" if "initrd" in self._installed else ""
        script = (f"#!/bin/sh\nexec tail -n +3 \"$0\"\nmenuentry '{entry}' {{\n"
                  f"  linux '{self._installed['bzImage']}' {linux}\n{initrd}}}\n")
        self._verify(self._boot_files(), BootError)
        self._grub_change = _GrubChange(entry, self._grub_next_entry())
        t.run(["sh", "-c", 'umask 022 && cat > "$1" && chmod 755 "$1"', "sh", self.grub_script],
              timeout=30, stdin=script)
        t.run(["update-grub"], timeout=300)
        t.run(["grub-reboot", entry], timeout=60)
        self._fire(["reboot"])

    def _grub_next_entry(self) -> str | None:
        r = self.transport.run(["grub-editenv", "-", "list"], timeout=60, check=False)
        found = [line.partition("=")[2] for line in r.stdout.splitlines() if line.startswith("next_entry=")]
        return found[-1] if found else None

    def _restore_boot_config(self) -> str | None:
        """Undo the grub change, if one is left: the host's boot configuration as it was found.
        Returns why that failed (logged), or None."""
        change = self._grub_change
        if change is None:
            return None
        t = self.transport
        try:
            t.run(["rm", "-f", "--", self.grub_script], timeout=30)
            t.run(["update-grub"], timeout=300)
            # Still ours: the host never booted the entry (grub clears next_entry when it does).
            if self._grub_next_entry() == change.entry:
                if change.prior_next_entry is None:
                    t.run(["grub-editenv", "-", "unset", "next_entry"], timeout=60)
                else:
                    t.run(["grub-editenv", "-", "set", f"next_entry={change.prior_next_entry}"], timeout=60)
        except HarnessError as e:
            problem = (f"{self.name}: could not undo the one-shot grub entry ({self.grub_script}, "
                       f"update-grub, grubenv next_entry): {e}")
            log.error("%s", problem)
            return problem
        self._grub_change = None
        log.info("%s: one-shot grub entry removed", self.name)
        return None

    def _fire(self, argv: list[str]) -> None:
        """Start a command that takes the host down; its channel dies with the connection."""
        try:
            # Keep the channel: closing it early can end the command before it ran.
            self._firing = self.transport.spawn(argv)
        except TransportError:
            pass  # the connection may already be going
        log.info("%s: %s", self.name, shlex.join(argv))

    def _wait_up(self, old_boot_id: str, timeout: float) -> None:
        """Until SSH answers with a boot_id other than old_boot_id.

        A host still on the old boot_id after down_timeout_s, without ever having
        dropped the connection, did not reboot at all: that is a BootError at once.
        """
        start = time.monotonic()
        went_down, last = False, None
        while time.monotonic() - start < timeout:
            try:
                new = boot_id(self.transport, timeout=10)
            except HostKeyError:
                raise  # a changed key across a reboot is never accepted
            except TransportError as e:
                went_down, last = True, e
                self._firing = None
                self.transport.close()
                time.sleep(1)
                continue
            if new and new != old_boot_id:
                log.info("%s: back with boot_id %s after %.1fs", self.name, new, time.monotonic() - start)
                return
            if not went_down and time.monotonic() - start > self.down_timeout_s:
                raise BootError(f"{self.name}: still on its old boot_id {self.down_timeout_s:g}s after the "
                                "reboot command: it did not reboot", self.console_tail())
            time.sleep(0.5)
        raise BootTimeout(f"{self.name}: no SSH with a new boot_id within {timeout:g}s (last: {last})",
                          self.console_tail())

    def _recover(self, old_boot_id: str) -> str | None:
        """Power-cycle a host that did not come back; it returns on its default kernel.
        Returns why the recovery failed (logged), or None."""
        if not self.host.power_cycle:
            return self._recovery_failed("no power_cycle command configured; the host needs a hand")
        shown = redact_argv(self.host.power_cycle)
        log.warning("%s: power-cycling: %s", self.name, shown)
        try:
            r = subprocess.run(list(self.host.power_cycle), capture_output=True, text=True,
                               timeout=self.power_cycle_timeout_s)
        except subprocess.TimeoutExpired:
            return self._recovery_failed(f"power-cycle command {shown} did not finish within "
                                         f"{self.power_cycle_timeout_s:g}s and was killed")
        except OSError as e:
            return self._recovery_failed(f"power-cycle command {shown} could not run: {e.strerror or e}")
        if r.returncode != 0:
            return self._recovery_failed(f"power-cycle command {shown} exited {r.returncode}: "
                                         f"{scrub(r.stderr.strip())[-500:]}")
        try:
            self._wait_up(old_boot_id, self.recover_timeout_s)
            self._back_up()
        except BootTimeout as e:
            return self._recovery_failed(f"the host did not come back after the power cycle: "
                                         f"{_message(e)}")
        except HarnessError as e:  # no reboot, or the lease could not be taken again
            return self._recovery_failed(f"after the power cycle: {e}")
        log.info("%s: back on its default kernel after the power cycle", self.name)
        return None

    def _recovery_failed(self, why: str) -> str:
        log.error("%s: recovery failed: %s", self.name, why)
        return why

    def _back_up(self) -> None:
        """The host answers again after a reboot: redo what the reboot undid (the lease's flock).
        If that fails, this run no longer holds the host: the target is broken."""
        for hook in self.after_boot:
            try:
                hook()
            except BaseException as e:
                self.broken = e
                raise

    # -- console --------------------------------------------------------------

    def _start_console(self) -> None:
        self._console_problem = None
        if not self.host.console or self.console_log is None:
            return
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.console_log, "ab") as out:
                self._console = subprocess.Popen(list(self.host.console), stdin=subprocess.DEVNULL, stdout=out,
                                                 stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:  # booting goes on without a console; its errors say so
            self._console_problem = (f"console command {redact_argv(self.host.console)} could not start: "
                                     f"{e.strerror or e}")
            log.error("%s: %s", self.name, self._console_problem)

    def _stop_console(self) -> None:
        if self._console is not None:
            stop_process(self._console)
            self._console = None

    def console_tail(self, lines: int = 40) -> str:
        if self._console_problem:
            return f"({self._console_problem})"
        if self.console_log is None or not self.console_log.exists():
            return "(no console configured: set console = [...] for this host in the inventory)"
        return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        try:
            self._restore_boot_config()  # a boot that left it (the host was unreachable then)
        finally:
            self._stop_console()
            self.transport.close()
