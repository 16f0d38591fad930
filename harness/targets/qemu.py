"""QemuTarget: the local default target, a VM the harness boots itself.

KVM is used only where QEMU can really use it; otherwise TCG with a CPU model
that exposes SVM and NPT, so kvm_amd loads in the guest and the guest has a
working /dev/kvm (nested SVM). Single-threaded TCG: multi-threaded TCG crashed
the guest with `Oops: int3` during repeated VM creation (kernel text patching
race). The guest reaches no network: user networking with restrict=on, and only
an SSH port forwarded from 127.0.0.1.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import BootError, BootTimeout, ConfigError, TransportError
from harness.targets.base import ProbedTarget
from harness.transport.hostkeys import KnownHosts, host_id, parse_public_key
from harness.transport.local import stop_process

log = logging.getLogger(__name__)

READY_MARKER = "SNP-HARNESS-READY"
# The console lines that mean the guest kernel died.
_DEAD = re.compile(r"Kernel panic - not syncing|---\[ end Kernel panic|reboot: Restarting system|"
                   r"reboot: Power down")
TCG_CPU = "EPYC-Milan,+svm,+npt"
_LIVE: dict[int, subprocess.Popen] = {}  # QEMU processes this process started, by PID


@dataclass(frozen=True)
class QemuConfig:
    memory: str = "4G"
    cpus: int = 2
    cmdline: tuple[str, ...] = ("transparent_hugepage=madvise",)
    accel: str = "auto"  # auto | kvm | tcg
    boot_timeout_s: float = 300.0
    qemu: str = "qemu-system-x86_64"
    extra_args: tuple[str, ...] = ()
    # Exit on a guest reboot (the default: a panic ends the VM at once). A VM that
    # stands in for a lab host keeps running, so a QMP system_reset can power-cycle it.
    no_reboot: bool = True


def choose_accel(requested: str = "auto") -> tuple[str, str, str]:
    """(accel, cpu model, why): KVM only when this host can really run ordinary guests."""
    if requested == "tcg":
        return "tcg,thread=single", TCG_CPU, "TCG requested"
    flags = _cpu_flags()
    problem = None
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        problem = "/dev/kvm is missing or not accessible"
    elif Path("/sys/module/kvm_pvm").exists():
        problem = "/dev/kvm comes from kvm_pvm, which runs only PVM guests"
    elif not flags & {"svm", "vmx"}:
        problem = "the CPU has no svm/vmx flag, so /dev/kvm cannot run ordinary guests"
    if problem is None:
        return "kvm", "host", "KVM usable"
    if requested == "kvm":
        raise ConfigError(f"accel=kvm requested, but {problem}")
    return "tcg,thread=single", TCG_CPU, f"TCG with nested SVM: {problem}"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def qemu_argv(cfg: QemuConfig, *, accel: str, cpu: str, kernel: Path, initrd: Path, port: int,
              console: Path, qmp: Path, pidfile: Path, cmdline_extra: tuple[str, ...] = ()) -> list[str]:
    """The QEMU command line (pure, for --dry-run and tests)."""
    append = " ".join(("console=ttyS0", "panic=-1", "oops=panic", *cfg.cmdline, *cmdline_extra))
    if '"' in append:
        raise ConfigError(f"cannot pass '\"' in the kernel command line: {append}")
    return [
        cfg.qemu, "-name", "snp-harness", "-machine", "q35", "-accel", accel, "-cpu", cpu,
        "-smp", str(cfg.cpus), "-m", cfg.memory, *(["-no-reboot"] if cfg.no_reboot else []),
        "-display", "none", "-monitor", "none",
        "-nodefaults", "-serial", f"file:{console}",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
        # restrict=on: the guest reaches no network; only 127.0.0.1:port reaches its sshd.
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-qmp", f"unix:{qmp},server=on,wait=off", "-pidfile", str(pidfile),
        *cfg.extra_args,
    ]


def live_qemu_pids() -> list[int]:
    """PIDs of QEMU processes started by this process that are still running."""
    return [pid for pid, proc in _LIVE.items() if proc.poll() is None]


def _kill(proc: subprocess.Popen, grace: float = 5.0) -> None:
    stop_process(proc, grace)
    _LIVE.pop(proc.pid, None)


@atexit.register
def _kill_all() -> None:  # Ctrl-C or a crash in the harness never leaves a VM behind
    for proc in list(_LIVE.values()):
        _kill(proc, grace=2.0)


def stop_stray_qemu(run_dir: Path, grace: float = 5.0) -> list[int]:
    """Stop every QEMU still running from a run directory's targets/*/qemu.pid; their PIDs.

    For a process that started them and was killed outright (SIGKILL: no teardown, no atexit).
    Only a process whose command line names that very pidfile is signalled.
    """
    stopped = []
    for pidfile in sorted(Path(run_dir).resolve().glob("targets/*/qemu.pid")):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not _runs_qemu_of(pid, pidfile):
                break
            log.warning("QEMU %d (%s) outlived the process that started it: %s", pid, pidfile, sig.name)
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if pid not in stopped:
                stopped.append(pid)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _runs_qemu_of(pid, pidfile):
                time.sleep(0.05)
    return stopped


def _runs_qemu_of(pid: int, pidfile: Path) -> bool:
    try:  # a zombie's cmdline is empty: it is gone
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(pidfile).encode() in argv


@dataclass
class QemuTarget(ProbedTarget):
    boots_by_default = True  # the plugin installs and boots the build on it
    selftests_dir = "/selftests"  # where the initramfs carries the build's selftests

    workdir: Path
    config: QemuConfig = field(default_factory=QemuConfig)
    name: str = "qemu://"
    hosts_guests: bool = False  # carry QEMU + firmware in the initramfs, to run L2 guests (targets/guest.py)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.console_log = self.workdir / "console.log"
        self.accel, self.cpu, self.accel_reason = choose_accel(self.config.accel)
        self.transport = None
        self.broken: BaseException | None = None
        self._proc: subprocess.Popen | None = None
        self._initrd: Path | None = None
        self._kernel: Path | None = None
        self._host_pub: str | None = None
        self._sockdir: Path | None = None

    # -- install / boot -------------------------------------------------------

    def install(self, build, *, extra_binaries=(), extra_files=None) -> None:
        """Build the initramfs (busybox, dropbear, the build's selftests) for `build`."""
        from harness.targets.initramfs import InitramfsSpec, build_initramfs, generate_host_key
        from harness.testing.sshd import keygen

        client_key = self.workdir / "id_ed25519"
        if not client_key.exists():
            keygen(client_key)
        host_key, self._host_pub = generate_host_key(self.workdir)
        extra_binaries, extra_files = tuple(extra_binaries), dict(extra_files or {})
        if self.hosts_guests:
            from harness.targets.guest import qemu_image_files

            qemu = Path(shutil.which(self.config.qemu) or self.config.qemu)
            extra_binaries += (qemu,)
            extra_files.update(qemu_image_files(qemu))
        spec = InitramfsSpec(authorized_keys=client_key.with_suffix(".pub").read_text(), host_key=host_key,
                             selftests_tar=build.selftests, extra_binaries=extra_binaries,
                             extra_files=extra_files, ready_marker=READY_MARKER)
        self._initrd = self.workdir / "initramfs.cpio.gz"
        info = build_initramfs(spec, self._initrd)
        self._kernel = build.bzimage
        log.info("initramfs %s: %s", self._initrd, info)

    def boot(self, build=None, *, cmdline_extra: tuple[str, ...] = ()) -> None:
        if self.broken is not None:
            raise BootError(f"{self.name} is broken after an earlier failure: {self.broken}") from self.broken
        if build is not None and self._kernel != build.bzimage:
            self.install(build)
        if self._initrd is None:
            raise ConfigError(f"{self.name}: install(build) before boot()")
        self.shutdown()
        try:
            self._start(cmdline_extra)
            self._wait_ready()
        except BaseException as e:
            self.broken = e
            self.shutdown()
            raise

    def _start(self, cmdline_extra: tuple[str, ...]) -> None:
        from harness.testing.sshd import free_port

        self.port = free_port()
        self.console_log.write_bytes(b"")
        argv = qemu_argv(self.config, accel=self.accel, cpu=self.cpu, kernel=self._kernel, initrd=self._initrd,
                         port=self.port, console=self.console_log, qmp=self.qmp_socket,
                         pidfile=self.workdir / "qemu.pid", cmdline_extra=cmdline_extra)
        (self.workdir / "qemu.cmdline").write_text(shlex.join(argv) + "\n")
        log.info("%s: booting (%s, -cpu %s; %s)", self.name, self.accel, self.cpu, self.accel_reason)
        with open(self.workdir / "qemu.log", "ab") as out:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                          start_new_session=True)
        _LIVE[self._proc.pid] = self._proc
        self.started_at = time.monotonic()

    @property
    def qmp_socket(self) -> Path:
        """The QMP socket: in the workdir, unless that path is over the 107 bytes a UNIX socket may have."""
        path = self.workdir / "qmp.sock"
        if len(str(path)) < 100:
            return path
        if self._sockdir is None:
            self._sockdir = Path(tempfile.mkdtemp(prefix="snp-harness-"))
        return self._sockdir / "qmp.sock"

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait_ready(self) -> None:
        deadline = self.started_at + self.config.boot_timeout_s
        while True:
            text = self.console_log.read_text(errors="replace") if self.console_log.exists() else ""
            if READY_MARKER in text:
                break
            if _DEAD.search(text):
                raise BootError(f"{self.name}: the guest kernel died during boot", self.console_tail())
            if self._proc.poll() is not None:
                qemu_err = (self.workdir / "qemu.log").read_text(errors="replace")[-2000:]
                raise BootError(f"{self.name}: QEMU exited with {self._proc.returncode} during boot:\n{qemu_err}",
                                self.console_tail())
            if time.monotonic() > deadline:
                raise BootTimeout(f"{self.name}: no '{READY_MARKER}' on the console after "
                                  f"{self.config.boot_timeout_s:g}s", self.console_tail())
            time.sleep(0.02)  # the marker is what boot time is measured to: poll it closely
        self.transport = self._connect(deadline)
        log.info("%s: ssh up %.1fs after QEMU started", self.name, time.monotonic() - self.started_at)

    def _connect(self, deadline: float):
        from harness.transport.ssh import SshTransport

        known = self.workdir / "known_hosts"
        known.unlink(missing_ok=True)
        KnownHosts(known).add(host_id("127.0.0.1", self.port), parse_public_key(self._host_pub))
        transport = SshTransport("local", "127.0.0.1", port=self.port, user="root",
                                 identity_file=self.workdir / "id_ed25519", known_hosts=known, connect_timeout=10)
        transport.name = self.name
        while True:
            try:
                transport.connect()
                return transport
            except TransportError as e:
                if time.monotonic() > deadline:
                    raise BootTimeout(f"{self.name}: sshd did not answer: {e}", self.console_tail()) from e
                time.sleep(0.3)

    def shutdown(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self._proc is not None:
            _kill(self._proc)
            self._proc = None

    def close(self) -> None:
        self.shutdown()
        if self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None
