"""A plain-mode L2 guest inside the local QEMU target, started by the Guest launcher (slow).

The L1 runs with one vCPU: with two, the L2 deadlocks 12-18 s into boot under TCG's
nested SVM (../shared/notes/l2-guest-feasibility.md).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from harness.targets.guest import GUEST_READY, Guest, GuestConfig, qemu_image_files
from harness.targets.initramfs import InitramfsSpec, build_initramfs, generate_host_key
from harness.targets.qemu import QemuConfig, QemuTarget
from harness.testing.sshd import keygen

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def l1(kernel_build, tmp_path_factory):
    qemu = Path(shutil.which("qemu-system-x86_64"))
    target = QemuTarget(tmp_path_factory.mktemp("l1"), QemuConfig(memory="2G", cpus=1))
    target.install(kernel_build, extra_binaries=(qemu,), extra_files=qemu_image_files(qemu))
    target.boot()
    yield target
    target.close()


def test_plain_l2_boots_answers_ssh_through_the_l1_and_ends(l1, kernel_build, tmp_path):
    key = tmp_path / "id_ed25519"
    keygen(key)
    host_key, host_pub = generate_host_key(tmp_path)
    initrd = tmp_path / "l2.cpio.gz"
    build_initramfs(InitramfsSpec(authorized_keys=key.with_suffix(".pub").read_text(), host_key=host_key,
                                  hostname="l2guest", ready_marker=GUEST_READY), initrd)
    guest = Guest(l1, tmp_path / "guest", GuestConfig(boot_timeout_s=240))
    start = time.monotonic()
    try:
        guest.boot(kernel_build.bzimage, initrd, host_key_pub=host_pub, client_key=key)
        up = time.monotonic() - start
        r = guest.transport.run(["sh", "-c", "uname -r; hostname"], timeout=120)
        assert r.stdout.split() == [kernel_build.metadata["kernel_release"], "l2guest"]
        argv = (tmp_path / "guest" / "qemu.cmdline").read_text()
        assert "restrict=on" in argv and "hostfwd=tcp:127.0.0.1:" in argv and "-accel kvm" in argv
    finally:
        guest.close()
    print(f"L2 boot to SSH under nested TCG: {up:.1f} s")
    assert GUEST_READY in (tmp_path / "guest" / "console.log").read_text()
    # Nothing left running in the L1.
    for _ in range(50):
        ps = l1.transport.run(["ps"], timeout=60).stdout
        if "qemu-system" not in ps:
            break
        time.sleep(0.2)
    assert "qemu-system" not in ps
