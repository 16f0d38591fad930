"""QemuTarget: the pipeline's kernel booted under QEMU, reached over SSH (slow)."""

from __future__ import annotations

import pytest

from harness.errors import BootError
from harness.targets.qemu import QemuConfig, QemuTarget, live_qemu_pids, qemu_argv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vm(kernel_build, tmp_path_factory):
    target = QemuTarget(tmp_path_factory.mktemp("qemu"), QemuConfig(memory="2G"))
    target.install(kernel_build)
    target.boot()
    yield target
    target.close()


def test_boots_the_pipeline_kernel_and_runs_commands(vm, kernel_build):
    r = vm.transport.run(["uname", "-r"], timeout=60)
    assert r.stdout.strip() == kernel_build.metadata["kernel_release"]
    assert vm.transport.run(["sh", "-c", "echo $((6*7))"], timeout=60).stdout == "42\n"


def test_capabilities_show_working_kvm_and_no_snp(vm):
    caps = vm.capabilities()
    assert caps.facts.problems == ()
    assert caps.missing("kvm") is None and caps.missing("sw_protected_vm") is None
    assert caps.facts.dev_kvm and not caps.snp_ready
    assert caps.missing("snp") is not None


def test_selftests_are_in_the_image(vm):
    from harness.scenarios.programs import read_programs

    conv = read_programs(vm.transport, "/selftests").find("private_mem_conversions_test")
    assert conv is not None
    r = vm.transport.run(["sh", "-c", "test -x /selftests/guests/kvm_caps_probe && "
                                      f"test -x /selftests/{conv} && echo ok"], timeout=60)
    assert r.stdout == "ok\n"


def test_instrumented_kernel_has_the_rmp_dump_and_it_says_enodev_without_snp(vm, kernel_build):
    from harness.evidence.rmp_collect import DEBUGFS_DIR, read_rmp_info

    # The default tree (7.x) gets the segmented-RMP variant, chosen from its sev.c.
    assert kernel_build.metadata["instrumentation"] == "rmp-segmented", kernel_build.metadata["instrumentation_note"]
    assert any("debugfs interface to dump RMP entries" in p["subject"] for p in kernel_build.metadata["patches"])
    r = vm.transport.run(["ls", DEBUGFS_DIR], timeout=60)
    assert r.stdout.split() == ["dump", "info"]
    info, why = read_rmp_info(vm.transport)
    assert info is None and "ENODEV: SEV-SNP is not enabled" in why
    r = vm.transport.run(["sh", "-c", f'(exec 3<>{DEBUGFS_DIR}/dump) 2>&1; echo "rc=$?"'], timeout=60)
    assert "No such device" in r.stdout


def test_console_is_streamed_to_the_run_directory(vm, kernel_build):
    text = vm.console_log.read_text(errors="replace")
    assert f"Linux version {kernel_build.metadata['kernel_release']} " in text and "SNP-HARNESS-READY" in text


def test_guest_network_is_restricted_and_loopback_only(vm):
    argv = (vm.workdir / "qemu.cmdline").read_text()
    assert "restrict=on" in argv and "hostfwd=tcp:127.0.0.1:" in argv


def test_kernel_that_cannot_reach_userspace_is_a_boot_error_and_breaks_the_target(kernel_build, tmp_path):
    target = QemuTarget(tmp_path, QemuConfig(memory="1G", cpus=1, boot_timeout_s=120))
    target.install(kernel_build)
    with pytest.raises(BootError) as e:
        target.boot(cmdline_extra=("rdinit=/snp-harness-no-such-init", "init=/snp-harness-no-such-init"))
    assert "Kernel panic" in e.value.console_tail
    with pytest.raises(BootError, match="broken after an earlier failure"):
        target.boot()
    target.close()
    assert target._proc is None


def test_argv_refuses_quotes_in_the_command_line(tmp_path):
    from harness.errors import ConfigError

    with pytest.raises(ConfigError):
        qemu_argv(QemuConfig(), accel="tcg", cpu="max", kernel=tmp_path / "k", initrd=tmp_path / "i", port=1,
                  console=tmp_path / "c", qmp=tmp_path / "q", pidfile=tmp_path / "p", cmdline_extra=('a="b"',))


def test_no_qemu_left_behind(vm):
    vm.close()
    assert live_qemu_pids() == []
