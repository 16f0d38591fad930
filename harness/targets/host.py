"""HostTarget: a real host from the inventory, reached over SSH.

install() pushes a build with sftp and checks it there; boot() kexecs into it
(or writes a one-shot grub entry and reboots), waits for the old connection to
drop and SSH to come back with a new boot_id, and checks that /proc/version is
the build's. If the host does not come back, the configured power-cycle
command brings it back on its default kernel, and the target is marked broken.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import time
from pathlib import Path
from typing import Callable

from harness.config import BootMethod, HostConfig
from harness.errors import BootError, BootTimeout, ConfigError, HarnessError, HostKeyError, TransportError
from harness.targets.base import ProbedTarget
from harness.transport import boot_id
from harness.transport.local import stop_process
from harness.transport.ssh import SshTransport

log = logging.getLogger(__name__)

REMOTE_ROOT = "/var/tmp/snp-harness"
# Parameters of the running command line that describe the old boot, not the host.
_DROP_PARAMS = ("BOOT_IMAGE=", "initrd=")


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


def next_cmdline(current: str, extra: tuple[str, ...]) -> str:
    kept = [w for w in shlex.split(current) if not w.startswith(_DROP_PARAMS)]
    return " ".join(shlex.quote(w) if " " in w else w for w in [*kept, *extra])


class HostTarget(ProbedTarget):
    def __init__(self, host: HostConfig, *, trust_new_host_key: bool = False, workdir: Path | None = None,
                 down_timeout_s: float = 120, boot_timeout_s: float = 600, recover_timeout_s: float = 900,
                 cmdline_extra: tuple[str, ...] = ()) -> None:
        self.host = host
        self.transport = SshTransport.from_host(host, trust_new_host_key=trust_new_host_key)
        self.name = self.transport.name
        self.workdir = Path(workdir) if workdir else None
        self.console_log = self.workdir / "console.log" if self.workdir else None
        self.down_timeout_s, self.boot_timeout_s = down_timeout_s, boot_timeout_s
        self.recover_timeout_s = recover_timeout_s
        self.cmdline_extra = cmdline_extra
        self.broken: BaseException | None = None
        self._installed: dict[str, str] = {}
        self._version = ""
        self._console: subprocess.Popen | None = None
        self._firing = None  # the reboot command's channel, until the host goes down
        self.selftests_dir: str | None = None  # set by install()
        # Run once the host is back on the build: what a reboot undid (the lease's flock) is redone.
        self.after_boot: list[Callable[[], None]] = []

    # -- install --------------------------------------------------------------

    def install(self, build, *, initrd: Path | None = None) -> None:
        """Push bzImage (+ initrd, modules) to REMOTE_ROOT/<key>/ and verify them there."""
        remote = f"{REMOTE_ROOT}/{build.key}"
        t = self.transport
        t.run(["mkdir", "-p", remote], timeout=60)
        files = {"bzImage": build.bzimage}
        if initrd is not None:
            files["initrd"] = Path(initrd)
        if build.modules is not None:
            files["modules.tar.gz"] = build.modules
        files["selftests.tar.gz"] = build.selftests
        import hashlib

        for name, local in files.items():
            t.put(local, f"{remote}/{name}")
            want = hashlib.sha256(local.read_bytes()).hexdigest()
            got = t.run(["sha256sum", f"{remote}/{name}"], timeout=300).stdout.split()[0]
            if got != want:
                raise TransportError(f"{self.name}: {remote}/{name} arrived corrupted (sha256 {got}, sent {want})")
        if "modules.tar.gz" in files:
            t.run(["tar", "-xzf", f"{remote}/modules.tar.gz", "-C", "/"], timeout=600)
        t.run(["mkdir", "-p", f"{remote}/selftests"], timeout=60)
        t.run(["tar", "-xzf", f"{remote}/selftests.tar.gz", "-C", f"{remote}/selftests"], timeout=600)
        self.selftests_dir = f"{remote}/selftests"
        self._caps = None  # the probe can run now
        self._installed = {name: f"{remote}/{name}" for name in files}
        self._version = bzimage_version(build.bzimage.read_bytes())
        log.info("%s: installed %s in %s", self.name, build.key, remote)

    # -- boot -----------------------------------------------------------------

    def boot(self, build=None, *, cmdline_extra: tuple[str, ...] = ()) -> None:
        if self.broken is not None:
            raise BootError(f"{self.name} is broken after an earlier failure: {self.broken}") from self.broken
        if build is not None and self._installed.get("bzImage", "").split("/")[-2:-1] != [build.key]:
            self.install(build)
        if not self._installed:
            raise ConfigError(f"{self.name}: install(build) before boot()")
        self._start_console()
        try:
            old = boot_id(self.transport)
            cmdline = next_cmdline(self.transport.run(["cat", "/proc/cmdline"], timeout=30).stdout,
                                   (*self.cmdline_extra, *cmdline_extra))
            if self.host.boot_method == BootMethod.KEXEC:
                self._kexec(cmdline)
            else:
                self._grub(cmdline)
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
            self._recover(old)
            raise
        except BootError as e:
            self.broken = e
            raise
        finally:
            self._stop_console()

    def _kexec(self, cmdline: str) -> None:
        argv = ["kexec", "-l", self._installed["bzImage"], f"--command-line={cmdline}"]
        if "initrd" in self._installed:
            argv.append(f"--initrd={self._installed['initrd']}")
        self.transport.run(argv, timeout=120)
        has_systemd = self.transport.run(["test", "-d", "/run/systemd/system"], timeout=30, check=False).ok
        self._fire(["systemctl", "kexec"] if has_systemd else ["kexec", "-e"])

    def _grub(self, cmdline: str) -> None:
        # A one-shot entry: grub-reboot selects it for the next boot only, so a
        # reset falls back to the default kernel.
        kernel = self._installed["bzImage"]
        entry = f"snp-harness {kernel.split('/')[-2]}"
        initrd = f"\n  initrd {self._installed['initrd']}" if "initrd" in self._installed else ""
        script = (f"#!/bin/sh\nexec tail -n +3 $0\nmenuentry '{entry}' {{\n  linux {kernel} {cmdline}{initrd}\n}}\n")
        self.transport.run(["sh", "-c", 'cat > "$1" && chmod 755 "$1"', "sh", "/etc/grub.d/42_snp_harness"],
                           timeout=30, stdin=script)
        self.transport.run(["update-grub"], timeout=300)
        self.transport.run(["grub-reboot", entry], timeout=60)
        self._fire(["reboot"])

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

    def _recover(self, old_boot_id: str) -> None:
        """Power-cycle a host that did not come back; it returns on its default kernel."""
        if not self.host.power_cycle:
            log.error("%s: no power_cycle command configured; the host needs a hand", self.name)
            return
        log.warning("%s: power-cycling: %s", self.name, shlex.join(self.host.power_cycle))
        r = subprocess.run(list(self.host.power_cycle), capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            log.error("%s: power-cycle command failed (%d): %s", self.name, r.returncode, r.stderr.strip())
            return
        try:
            self._wait_up(old_boot_id, self.recover_timeout_s)
            self._back_up()
        except BootTimeout as e:
            log.error("%s: did not come back after the power cycle: %s", self.name, e)
        except HarnessError as e:  # the lease could not be taken again; the target is broken already
            log.error("%s: back after the power cycle, but: %s", self.name, e)

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
        if not self.host.console or self.console_log is None:
            return
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.console_log, "ab") as out:
            self._console = subprocess.Popen(list(self.host.console), stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True)

    def _stop_console(self) -> None:
        if self._console is not None:
            stop_process(self._console)
            self._console = None

    def console_tail(self, lines: int = 40) -> str:
        if self.console_log is None or not self.console_log.exists():
            return "(no console configured: set console = [...] for this host in the inventory)"
        return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        self._stop_console()
        self.transport.close()
