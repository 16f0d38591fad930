"""One Target contract, two implementations: QemuTarget, and HostTarget on a VM standing in for a host (slow)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from harness.config import HostConfig
from harness.targets.host import HostTarget
from harness.targets.qemu import QemuConfig, QemuTarget

pytestmark = pytest.mark.slow


@pytest.fixture(params=["qemu", "host"])
def booted(request, kernel_build, tmp_path):
    if request.param == "qemu":
        target = QemuTarget(tmp_path / "qemu", QemuConfig(memory="2G"))
        target.install(kernel_build)
        target.boot()
        yield target
        target.close()
        return
    vm = QemuTarget(tmp_path / "vm", QemuConfig(memory="2G", no_reboot=False))
    vm.install(kernel_build, extra_binaries=(Path(shutil.which("kexec")),))
    vm.boot()
    host = HostConfig(name="vm-host", address="127.0.0.1", port=vm.port, user="root",
                      identity_file=vm.workdir / "id_ed25519", known_hosts=vm.workdir / "known_hosts",
                      connect_timeout=5, console=("tail", "-n", "0", "-F", str(vm.console_log)),
                      power_cycle=(sys.executable, "-m", "harness.targets.qmp", str(vm.qmp_socket), "system_reset"))
    target = HostTarget(host, workdir=tmp_path / "host", boot_timeout_s=120)
    target.install(kernel_build, initrd=vm.workdir / "initramfs.cpio.gz")
    target.boot()
    yield target
    target.close()
    vm.close()


def test_target_contract(booted, kernel_build):
    release = kernel_build.metadata["kernel_release"]
    assert booted.transport.run(["uname", "-r"], timeout=60).stdout.strip() == release
    caps = booted.capabilities()
    assert caps.facts.kernel_release == release and caps.has("kvm")
    assert booted.console_log.exists() and f"Linux version {release} " in booted.console_log.read_text(errors="replace")
    assert booted.name.startswith(("qemu://", "ssh://"))
