"""A plain-mode L2 guest inside the local QEMU target, started by the Guest launcher (slow).

The L1 runs with one vCPU: with two, the L2 deadlocks 12-18 s into boot under TCG's
nested SVM (../shared/notes/l2-guest-feasibility.md).
"""

from __future__ import annotations

import time

import pytest

from harness.targets.guest import GUEST_READY, Guest, GuestConfig, build_guest_image
from harness.targets.qemu import QemuConfig, QemuTarget
from harness.testing.slowness import scaled

pytestmark = pytest.mark.slow


def assert_no_qemu_left(l1) -> None:
    deadline = time.monotonic() + scaled(20)
    while True:
        ps = l1.transport.run(["ps"], timeout=60).stdout
        if "qemu-system" not in ps:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"a QEMU is still running in the L1:\n{ps}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def l1(kernel_build, tmp_path_factory):
    target = QemuTarget(tmp_path_factory.mktemp("l1"), QemuConfig(memory="2G", cpus=1), hosts_guests=True)
    target.install(kernel_build)
    target.boot()
    yield target
    target.close()


def test_plain_l2_boots_answers_ssh_through_the_l1_and_ends(l1, kernel_build, tmp_path):
    image = build_guest_image(kernel_build, tmp_path / "image")
    guest = Guest(l1, tmp_path / "guest", GuestConfig(boot_timeout_s=scaled(240)))
    start = time.monotonic()
    try:
        guest.boot(kernel_build.bzimage, image)
        up = time.monotonic() - start
        r = guest.transport.run(["sh", "-c", "uname -r; hostname"], timeout=120)
        assert r.stdout.split() == [kernel_build.metadata["kernel_release"], "snp-guest"]
        argv = (tmp_path / "guest" / "qemu.cmdline").read_text()
        assert "restrict=on" in argv and "hostfwd=tcp:127.0.0.1:" in argv and "-accel kvm" in argv
    finally:
        guest.close()
    print(f"L2 boot to SSH under nested TCG: {up:.1f} s")
    assert guest.clean_exit  # powered off from inside; QEMU exited by itself
    assert GUEST_READY in (tmp_path / "guest" / "console.log").read_text()
    assert_no_qemu_left(l1)


def test_a_guest_that_panics_is_a_boot_error_and_leaves_nothing_behind(l1, kernel_build, tmp_path):
    from harness.errors import BootError

    image = build_guest_image(kernel_build, tmp_path / "image")
    cfg = GuestConfig(boot_timeout_s=scaled(240), cmdline=(*GuestConfig().cmdline, "rdinit=/snp-harness-no-such-init",
                                                   "init=/snp-harness-no-such-init"))
    guest = Guest(l1, tmp_path / "guest", cfg)
    try:
        with pytest.raises(BootError, match="panicked while booting") as e:
            guest.boot(kernel_build.bzimage, image)
        assert "Kernel panic" in e.value.console_tail
    finally:
        guest.close()
    assert guest.clean_exit is False  # it never came up: QEMU was ended by its PID
    assert_no_qemu_left(l1)
