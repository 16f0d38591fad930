"""HostTarget's kexec path, with a QEMU VM standing in for the lab host (slow)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from harness.config import HostConfig
from harness.errors import BootError, BootTimeout
from harness.targets.host import HostTarget, bzimage_version, matches_version
from harness.targets.qemu import QemuConfig, QemuTarget
from harness.transport import boot_id

pytestmark = pytest.mark.slow


@pytest.fixture
def qemu_host(kernel_build, tmp_path):
    """A VM with kexec-tools, kept alive across guest reboots so QMP can reset it; and its inventory entry."""
    vm = QemuTarget(tmp_path / "vm", QemuConfig(memory="2G", no_reboot=False))
    # util-linux's flock for the lease (busybox has none); it must survive a kexec into the same image.
    vm.install(kernel_build, extra_binaries=(Path(shutil.which("kexec")), Path(shutil.which("flock"))))
    vm.boot()
    host = HostConfig(
        name="qemu-host", address="127.0.0.1", port=vm.port, user="root",
        identity_file=vm.workdir / "id_ed25519", known_hosts=vm.workdir / "known_hosts", connect_timeout=5,
        power_cycle=(sys.executable, "-m", "harness.targets.qmp", str(vm.qmp_socket), "system_reset"),
        console=("tail", "-n", "0", "-F", str(vm.console_log)),
    )
    yield vm, host
    vm.close()


def cmdline(target) -> str:
    return target.transport.run(["cat", "/proc/cmdline"], timeout=30).stdout


def test_kexec_into_the_build(qemu_host, kernel_build, tmp_path):
    vm, host = qemu_host
    target = HostTarget(host, workdir=tmp_path / "host", boot_timeout_s=180,
                        cmdline_extra=("snp_harness_marker=42",))
    target.install(kernel_build, initrd=vm.workdir / "initramfs.cpio.gz")
    before = boot_id(target.transport)
    target.boot()
    assert boot_id(target.transport) != before
    assert "snp_harness_marker=42" in cmdline(target)
    version = target.transport.run(["cat", "/proc/version"], timeout=30).stdout
    assert matches_version(bzimage_version(kernel_build.bzimage.read_bytes()), version)
    assert "kexec_core: Starting new kernel" in target.console_log.read_text(errors="replace")
    target.close()


def test_dead_kernel_times_out_power_cycles_and_breaks_the_target(qemu_host, kernel_build, tmp_path):
    vm, host = qemu_host
    target = HostTarget(host, workdir=tmp_path / "host", boot_timeout_s=25, recover_timeout_s=240,
                        cmdline_extra=("rdinit=/snp-harness-nothing", "init=/snp-harness-nothing", "panic=0"))
    target.install(kernel_build, initrd=vm.workdir / "initramfs.cpio.gz")
    before = boot_id(target.transport)
    with pytest.raises(BootTimeout) as e:
        target.boot()
    assert "Kernel panic" in e.value.console_tail  # the console command's log, kept in the run directory
    # The power cycle brought the host back on its default kernel.
    assert boot_id(target.transport) != before
    assert "snp-harness-nothing" not in cmdline(target)
    with pytest.raises(BootError, match="broken after an earlier failure"):
        target.boot()
    target.close()


def test_bzimage_version_and_proc_version_match_rules(kernel_build):
    v = bzimage_version(kernel_build.bzimage.read_bytes())
    assert v.startswith(kernel_build.metadata["kernel_release"] + " ") and "#" in v
    release, stamp = v.split()[0], v[v.index("#"):]
    assert matches_version(v, f"Linux version {release} (x@y) (gcc 12) {stamp}\n")
    assert not matches_version(v, f"Linux version {release}-other (x@y) (gcc 12) {stamp}\n")
    assert not matches_version(v, f"Linux version {release} (x@y) (gcc 12) #999 SMP\n")


def test_boot_cli_leases_installs_and_kexecs(qemu_host, kernel_build, kernel_cache, tmp_path, capsys):
    from harness import cli

    vm, host = qemu_host
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[harness]\ncache_dir = "{kernel_cache}"\n'
        f'[hosts.vmhost]\naddress = "127.0.0.1"\nport = {host.port}\nuser = "root"\n'
        f'identity_file = "{host.identity_file}"\nknown_hosts = "{host.known_hosts}"\nconnect_timeout = 5\n'
        f'[artifacts]\nroot = "{tmp_path / "runs"}"\n')
    before = boot_id(vm.transport)
    rc = cli.main(["--config", str(inventory), "boot", "vmhost", "--build", kernel_build.key])
    out = capsys.readouterr()
    assert rc == cli.EXIT_OK, out.err
    assert f"ssh://vmhost: running {kernel_build.metadata['kernel_release']} ({kernel_build.key})" in out.out
    vm.transport.close()
    assert boot_id(vm.transport) != before
    # The reboot ended the flock's channel; the lease was taken again in the new boot (a fresh /var/lock).
    holder = vm.transport.run(["cat", "/var/lock/snp-harness.lease"], timeout=30).stdout
    assert "-boot-vmhost" in holder, holder


def test_boot_and_qemu_dry_runs_print_commands(tmp_path, capsys):
    from harness import cli

    inventory = tmp_path / "inv.toml"
    inventory.write_text('[hosts.epyc1]\naddress = "10.0.0.1"\n')
    assert cli.main(["--config", str(inventory), "boot", "epyc1", "--dry-run"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "epyc1: kexec -l '/var/tmp/snp-harness/<key>/bzImage'" in out and "systemctl kexec" in out
    assert cli.main(["qemu", "--dry-run"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "restrict=on,hostfwd=tcp:127.0.0.1:" in out and "-accel " in out
