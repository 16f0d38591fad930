"""Boot: what QemuTarget adds to a bare QEMU boot, and a kexec reboot against a full VM restart.

Two ratios, each against a baseline measured in the same run, rounds alternating:

  vs_bare_qemu      boot-to-SSH through QemuTarget.boot() (from the call until it
                    returns with SSH connected; install() is done once before and
                    not timed), over a bare `qemu-system-x86_64` with the same
                    kernel, the same initramfs file and the same argv (its own free
                    port, console file, QMP socket and pidfile), timed from Popen
                    until `SNP-HARNESS-READY` is in its console file (polled every
                    20 ms). The harness also pays for the SSH handshake; that is
                    part of what it costs. The moment its own console shows the
                    ready line is recorded too (same 20 ms polling, from a thread),
                    which splits the difference into "QEMU got slower" and "what
                    boot() does after the guest is ready". Goal: <= 1.1.
  kexec_vs_restart  inside a booted VM whose initramfs has kexec-tools and
                    /boot/bzImage: `kexec -e` (after an untimed `kexec -l` with the
                    initramfs as initrd) until the console shows a new ready line and
                    a fresh SSH connection reports a new boot_id, over a full restart
                    (target.close() then target.boot() and the same boot_id check).
                    No goal. kexec is the host target's boot path, exercised locally
                    (local-target.config); this says what it costs against simply
                    restarting the VM.

Uses the default build from the harness cache (~/.cache/snp-harness; a hit on a
machine that has built it, several minutes cold). The accelerator is what
choose_accel() picks (TCG with nested SVM where /dev/kvm cannot run ordinary
guests). Every QEMU it starts is ended on exit, Ctrl-C or SIGTERM, by PID.
The last stdout line is one JSON object.

    .venv/bin/python bench/boot.py [--rounds 5] [--kexec-rounds 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.config import load_config  # noqa: E402
from harness.errors import BootError, BootTimeout, HarnessError, TransportError  # noqa: E402
from harness.kernel.build import BuildRequest, build  # noqa: E402
from harness.kernel.source import tree_arg  # noqa: E402
from harness.targets.qemu import (READY_MARKER, QemuConfig, QemuTarget, choose_accel,  # noqa: E402
                                  live_qemu_pids, qemu_argv)
from harness.testing.sshd import free_port  # noqa: E402
from harness.transport import boot_id  # noqa: E402

MAX_VS_BARE = 1.1  # harness boot-to-SSH median / bare QEMU boot-to-ready median
POLL_S = 0.02  # how often the console files are read
BOOT_TIMEOUT_S = 300.0
COMMAND_TIMEOUT_S = 120
_UPTIME = re.compile(re.escape(READY_MARKER) + r" uptime=(\S+)")
_DEAD = re.compile(r"Kernel panic - not syncing|---\[ end Kernel panic|reboot: Power down")
STARTING = "kexec_core: Starting new kernel"  # the old kernel's last line
NEW_KERNEL = "] Linux version "  # the new kernel's first line


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def guest_uptime(console: Path, nth: int = 1) -> str:
    """The uptime the nth ready line reports (the guest's own view of its boot)."""
    found = _UPTIME.findall(console.read_text(errors="replace"))
    return found[nth - 1] if len(found) >= nth else "?"


def tail(console: Path, lines: int = 40) -> str:
    try:
        return "\n".join(console.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- 1: QemuTarget.boot() against a bare QEMU -----------------------------------


def harness_boot(target: QemuTarget) -> tuple[float, float]:
    """(seconds until boot() returned, seconds until the ready line was in the console file).

    The second is polled every 20 ms from a thread, exactly as for the bare QEMU, so the
    difference between the two is what boot() adds after the guest is ready (its own
    console polling and the SSH handshake).
    """
    marker: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            # target._proc is set only after _start() emptied the previous boot's console file.
            if target._proc is not None and READY_MARKER in target.console_log.read_text(errors="replace"):
                marker.append(time.monotonic() - start)
                return
            time.sleep(POLL_S)

    watcher = threading.Thread(target=watch, daemon=True)
    start = time.monotonic()
    watcher.start()
    try:
        target.boot()
        elapsed = time.monotonic() - start
    finally:
        done.set()
        watcher.join()
    target.close()
    return elapsed, marker[0] if marker else float("nan")


def bare_argv(target: QemuTarget, bare_dir: Path) -> list[str]:
    """The argv QemuTarget used, with a fresh port and this run's own console, QMP socket and pidfile."""
    port = free_port()
    argv = qemu_argv(target.config, accel=target.accel, cpu=target.cpu, kernel=target._kernel,
                     initrd=target.workdir / "initramfs.cpio.gz", port=port, console=bare_dir / "console.log",
                     qmp=bare_dir / "qmp.sock", pidfile=bare_dir / "qemu.pid")
    # qemu.cmdline is shlex.join(argv): check that only the per-run paths and port differ.
    recorded = (target.workdir / "qemu.cmdline").read_text().strip()
    mine = shlex.join(argv).replace(str(bare_dir / "console.log"), str(target.console_log)) \
        .replace(str(bare_dir / "qmp.sock"), str(target.qmp_socket)) \
        .replace(str(bare_dir / "qemu.pid"), str(target.workdir / "qemu.pid")) \
        .replace(f"127.0.0.1:{port}-", f"127.0.0.1:{target.port}-")
    if mine != recorded:
        raise RuntimeError(f"bare argv differs from the harness's qemu.cmdline:\n  {mine}\n  {recorded}")
    return argv


def stop_bare(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bare_boot(target: QemuTarget, bare_dir: Path, bare_procs: list[subprocess.Popen]) -> float:
    console = bare_dir / "console.log"
    console.write_bytes(b"")
    argv = bare_argv(target, bare_dir)
    with open(bare_dir / "qemu.log", "ab") as out:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    bare_procs.append(proc)
    try:
        while READY_MARKER not in console.read_text(errors="replace"):
            if proc.poll() is not None:
                raise BootError(f"bare QEMU exited with {proc.returncode}", tail(console))
            if time.monotonic() - start > BOOT_TIMEOUT_S:
                raise BootTimeout(f"bare QEMU: no {READY_MARKER} after {BOOT_TIMEOUT_S:g}s", tail(console))
            time.sleep(POLL_S)
        return time.monotonic() - start
    finally:
        stop_bare(proc)


def measure_vs_bare(build_, work: Path, rounds: int, bare_procs: list[subprocess.Popen]) -> dict[str, list[float]]:
    target = QemuTarget(work / "plain")
    try:
        note(f"accel: {target.accel} (-cpu {target.cpu}; {target.accel_reason})")
        note("installing the plain initramfs (not timed)")
        target.install(build_)
        bare_dir = work / "bare"
        bare_dir.mkdir()
        note("warm-up: one harness boot (page cache, qemu binary), not timed")
        harness_boot(target)
        times: dict[str, list[float]] = {"harness": [], "harness_ready": [], "bare": []}
        for n in range(rounds):
            order = ("harness", "bare") if n % 2 == 0 else ("bare", "harness")
            for kind in order:
                if kind == "harness":
                    t, ready = harness_boot(target)
                    times["harness_ready"].append(ready)
                    up = guest_uptime(target.console_log)
                    more = f"; ready line after {ready:.2f} s"
                else:
                    t = bare_boot(target, bare_dir, bare_procs)
                    up = guest_uptime(bare_dir / "console.log")
                    more = ""
                times[kind].append(t)
                note(f"round {n + 1}/{rounds}: {kind:<7} {t:6.2f} s  (guest uptime at ready: {up} s{more})")
        return times
    finally:
        target.close()


# -- 2: kexec reboot against a full restart --------------------------------------


def console_count(console: Path, needle: str) -> int:
    return console.read_text(errors="replace").count(needle)


def kexec_reboot(target: QemuTarget, kexec: Path) -> dict[str, float]:
    """One kexec reboot of the running VM; seconds, from `kexec -e` unless noted:

    load     `kexec -l` itself (before the clock starts; not counted);
    kernel   until the new kernel's "Linux version" line (kexec, purgatory, decompression);
    ready    until the new SNP-HARNESS-READY line;
    kexec    until a fresh SSH connection reports a new boot_id (the measurement).
    """
    console = target.console_log
    old_id = boot_id(target.transport)
    target.transport.put(target.workdir / "initramfs.cpio.gz", "/boot/initrd")  # / is a fresh rootfs each boot
    start = time.monotonic()
    target.transport.run(["sh", "-c", f'{kexec} -l /boot/bzImage --initrd=/boot/initrd '
                                      '--command-line="$(cat /proc/cmdline)"'], timeout=COMMAND_TIMEOUT_S)
    times = {"load": time.monotonic() - start}
    # The console file keeps the old boot's lines: count occurrences instead of searching.
    seen = {key: console_count(console, key) for key in (STARTING, NEW_KERNEL, READY_MARKER)}

    start = time.monotonic()
    try:
        proc = target.transport.spawn([str(kexec), "-e"])
    except TransportError:
        proc = None  # the link dropped already: the old kernel is going away
    deadline = start + BOOT_TIMEOUT_S
    while True:
        text = console.read_text(errors="replace")
        now = time.monotonic()
        if proc is not None and (text.count(STARTING) > seen[STARTING] or text.count(NEW_KERNEL) > seen[NEW_KERNEL]):
            # Close only now: closing the link before dropbear has exec'd `kexec -e` would end it unrun.
            proc = None
            target.transport.close()
            target.transport = None
        elif proc is not None and not proc.alive:
            raise RuntimeError(f"kexec -e exited (status {proc.exit_status(0)}) instead of booting "
                               "the loaded kernel")
        if "kernel" not in times and text.count(NEW_KERNEL) > seen[NEW_KERNEL]:
            times["kernel"] = now - start
        if text.count(READY_MARKER) > seen[READY_MARKER]:
            times["ready"] = now - start
            break
        if _DEAD.search(text[-4000:]) or target._proc.poll() is not None:
            raise BootError("kexec: the new kernel died or QEMU exited", target.console_tail())
        if now > deadline:
            raise BootTimeout(f"kexec: no new {READY_MARKER} after {BOOT_TIMEOUT_S:g}s", target.console_tail())
        time.sleep(POLL_S)
    if target.transport is not None:  # the ready line came without a "Starting new kernel" line
        target.transport.close()
    # QemuTarget._connect is private; a benchmark may use it: same port, same pinned host key
    # (the new kernel boots the same initramfs, so dropbear has the same key).
    target.transport = target._connect(deadline)
    new_id = boot_id(target.transport)
    times["kexec"] = time.monotonic() - start
    if new_id == old_id:
        raise BootError(f"kexec: boot_id is still {old_id}: the kernel was not replaced", target.console_tail())
    return times


def restart(target: QemuTarget) -> float:
    """close() then boot() until SSH is up and reports a new boot_id (the same check as after kexec)."""
    try:
        old_id = boot_id(target.transport) if target.transport is not None else None
    except TransportError:
        old_id = None  # a failed kexec left no usable VM; restarting it is what is measured
    start = time.monotonic()
    target.close()
    target.boot()
    new_id = boot_id(target.transport)
    elapsed = time.monotonic() - start
    if new_id == old_id:
        raise BootError(f"restart: boot_id is still {old_id}", target.console_tail())
    return elapsed


def measure_kexec(build_, work: Path, rounds: int) -> tuple[dict[str, list[float]], str | None]:
    kexec = shutil.which("kexec")
    target = QemuTarget(work / "kexec")
    times: dict[str, list[float]] = {"load": [], "kernel": [], "ready": [], "kexec": [], "restart": []}
    error = None
    try:
        if kexec is None:
            error = "kexec-tools is not installed on this host (apt-get install kexec-tools)"
        note("installing the initramfs with kexec-tools and /boot/bzImage (not timed)")
        target.install(build_, extra_binaries=(Path(kexec),) if kexec else (),
                       extra_files={"/boot/bzImage": build_.bzimage.read_bytes()})
        note(f"initramfs: {(target.workdir / 'initramfs.cpio.gz').stat().st_size / 1e6:.1f} MB; first boot (not timed)")
        target.boot()
        for n in range(rounds):
            if error is None:
                try:
                    kt = kexec_reboot(target, Path(kexec))
                    for key, value in kt.items():
                        times[key].append(value)
                    up = guest_uptime(target.console_log, console_count(target.console_log, READY_MARKER))
                    note(f"round {n + 1}/{rounds}: kexec   {kt['kexec']:6.2f} s  (new kernel's first line after "
                         f"{kt.get('kernel', float('nan')):.2f} s, ready line {kt['ready']:.2f} s, guest uptime "
                         f"at ready: {up} s; kexec -l took {kt['load']:.2f} s, not counted)")
                except (HarnessError, RuntimeError) as e:
                    error = f"{type(e).__name__}: {e}"
                    note(f"round {n + 1}/{rounds}: kexec FAILED: {error}\n--- console (last lines) ---\n"
                         f"{target.console_tail(60)}\n--- end; measuring restarts only ---")
            t = restart(target)
            times["restart"].append(t)
            note(f"round {n + 1}/{rounds}: restart {t:6.2f} s  (guest uptime at ready: "
                 f"{guest_uptime(target.console_log)} s)")
        return times, error
    finally:
        target.close()


# -- report --------------------------------------------------------------------


def report(bare: dict[str, list[float]], kx: dict[str, list[float]], kexec_error: str | None, accel: str,
           rounds: int, kexec_rounds: int, wall_s: float) -> dict:
    med = {k: statistics.median(v) for k, v in {**bare, **kx}.items() if v}
    vs_bare = med["harness"] / med["bare"]
    vs_restart = med["kexec"] / med["restart"] if "kexec" in med else None
    print(f"{'boot':<28} {'median':>8} {'min':>8} {'max':>8}   (s)")
    for label, key, runs in (("QemuTarget.boot() to SSH", "harness", bare), ("  of which to ready line", "harness_ready", bare),
                             ("bare QEMU to ready line", "bare", bare),
                             ("kexec -e to new kernel", "kernel", kx),
                             ("kexec -e to ready line", "ready", kx), ("kexec -e to SSH + boot_id", "kexec", kx),
                             ("restart to SSH + boot_id", "restart", kx), ("kexec -l (not counted)", "load", kx)):
        if runs[key]:
            print(f"{label:<28} {med[key]:8.2f} {min(runs[key]):8.2f} {max(runs[key]):8.2f}")
    ok = vs_bare <= MAX_VS_BARE
    print(f"harness / bare QEMU = {vs_bare:.3f}x (goal <= {MAX_VS_BARE}x): {'met' if ok else 'MISSED'}")
    if vs_restart is not None:
        print(f"kexec / restart     = {vs_restart:.3f}x (no goal)")
    else:
        print(f"kexec / restart     = n/a: {kexec_error}")
    print(f"wall time {wall_s:.0f} s")
    result = {
        "bench": "boot",
        "vs_bare_qemu": round(vs_bare, 3),
        "kexec_vs_restart": round(vs_restart, 3) if vs_restart is not None else None,
        "harness_boot_s": round(med["harness"], 2),
        "bare_boot_s": round(med["bare"], 2),
        "harness_ready_s": round(med["harness_ready"], 2),
        "kexec_s": round(med["kexec"], 2) if "kexec" in med else None,
        "restart_s": round(med["restart"], 2),
        "accel": accel,
        "rounds": rounds,
        "kexec_rounds": kexec_rounds,
        "kexec_kernel_s": round(med["kernel"], 2) if "kernel" in med else None,
        "kexec_ready_s": round(med["ready"], 2) if "ready" in med else None,
        "kexec_load_s": round(med["load"], 2) if "load" in med else None,
        "wall_s": round(wall_s, 1),
        "goals_met": ok,
    }
    if kexec_error:
        result["kexec_error"] = kexec_error.splitlines()[0]
    return result


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM tears down like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="harness and bare boots each (default 5)")
    parser.add_argument("--kexec-rounds", type=int, default=3, help="kexec reboots and restarts each (default 3)")
    parser.add_argument("-v", "--verbose", action="store_true", help="the harness's INFO log on stderr")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (console logs)")
    parser.add_argument("--tree", default=None, help="kernel tree to boot (debian:7.3, debian:6.12, a path; "
                                                     "default: the default tree)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.kexec_rounds < 1:
        parser.error("--rounds and --kexec-rounds must be at least 1")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="snp-bench-boot-"))
    bare_procs: list[subprocess.Popen] = []
    failed = True
    try:
        cache = load_config(None).cache_dir
        note(f"cache: {cache}; making sure the default build exists (cold: several minutes)")
        build_ = build(BuildRequest(cache_dir=cache, tree=tree_arg(args.tree)), work / "build.log")
        note(f"build {build_.key} ({'hit' if build_.hit else 'built'}); work dir {work}")
        bare = measure_vs_bare(build_, work, args.rounds, bare_procs)
        kx, kexec_error = measure_kexec(build_, work, args.kexec_rounds)
        failed = False
    except KeyboardInterrupt:
        note("boot: interrupted; cleaned up")
        return 130
    except (HarnessError, RuntimeError, OSError, subprocess.SubprocessError) as e:
        note(f"boot: setup or a boot failed (cleaned up; logs in {work}): {e}")
        return 3
    finally:
        for proc in bare_procs:
            stop_bare(proc)
        leaked = live_qemu_pids() + [p.pid for p in bare_procs if p.poll() is None]
        if leaked:
            note(f"boot: QEMU processes still running after clean-up: {leaked}")
        if not (failed or args.keep or leaked):
            shutil.rmtree(work, ignore_errors=True)
    if leaked:
        return 3
    accel = choose_accel(QemuConfig().accel)[0]
    print(json.dumps({**report(bare, kx, kexec_error, accel, args.rounds, args.kexec_rounds, time.monotonic() - began),
                      "tree": args.tree or "default", "kernel_release": build_.metadata.get("kernel_release")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
