"""The guest launcher's pure parts: QEMU command lines, CPUID and `-object help` parsing."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.targets.guest import (GuestConfig, SevCpuid, guest_argv, parse_cpuid_8000001f, parse_object_types,
                                   snp_qemu_gap)


def read(data_dir, name: str) -> str:
    return (data_dir / "guest" / name).read_text()


def test_cbitpos_from_cpuid(data_dir):
    assert parse_cpuid_8000001f(read(data_dir, "cpuid-8000001f-constructed-milan.txt")) == SevCpuid(51, 1, True)
    assert parse_cpuid_8000001f(read(data_dir, "cpuid-8000001f-thismachine-kvm-pvm.txt")) == SevCpuid(0, 0, False)
    assert parse_cpuid_8000001f("") is None and parse_cpuid_8000001f("1 2 3") is None
    assert parse_cpuid_8000001f("zz 0 0 0") is None


def test_sev_snp_guest_support_detected(data_dir):
    old, new = read(data_dir, "qemu-7.2-debian12-object-help.txt"), read(data_dir, "qemu-constructed-9.1-object-help.txt")
    assert "sev-guest" in parse_object_types(old) and "sev-snp-guest" not in parse_object_types(old)
    gap = snp_qemu_gap(old, "/usr/bin/qemu-system-x86_64")
    assert "no sev-snp-guest object (it has sev-guest (SEV/SEV-ES only))" in gap and "QEMU >= 9.1" in gap
    assert snp_qemu_gap(new, "qemu") is None
    assert "printed no object list" in snp_qemu_gap("qemu: unknown option\n", "qemu")


SNP = GuestConfig(qemu="/opt/qemu/bin/qemu-system-x86_64", firmware="/opt/ovmf/OVMF.fd", snp=True,
                  memory_mb=2048, cpus=2, cpu="EPYC-v4")


def test_snp_command_line_argument_by_argument():
    argv = guest_argv(SNP, kernel="/r/bzImage", initrd="/r/initrd", ssh_port=2222, pidfile="/r/qemu.pid",
                      sev=SevCpuid(51, 1, True))
    assert argv[0] == "/opt/qemu/bin/qemu-system-x86_64"
    assert argv[argv.index("-accel") + 1] == "kvm" and argv[argv.index("-cpu") + 1] == "EPYC-v4"
    assert argv[argv.index("-m") + 1] == "2048M" and argv[argv.index("-smp") + 1] == "2"
    # The AMDSEV form: machine with confidential-guest-support and a memfd backend, the SNP object, OVMF.
    tail = argv[argv.index("-machine"):]
    assert tail == ["-machine", "q35,confidential-guest-support=sev0,memory-backend=ram1",
                    "-object", "memory-backend-memfd,id=ram1,size=2048M,share=true,prealloc=false",
                    "-object", "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1",
                    "-bios", "/opt/ovmf/OVMF.fd"]
    assert argv[argv.index("-netdev") + 1] == "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22"
    assert argv[argv.index("-serial") + 1] == "stdio" and argv[argv.index("-pidfile") + 1] == "/r/qemu.pid"


def test_plain_command_line_has_no_snp_objects():
    argv = guest_argv(GuestConfig(), kernel="k", initrd="i", ssh_port=3000, pidfile="p")
    assert argv[-2:] == ["-machine", "q35"] and "-object" not in argv and "-bios" not in argv
    assert argv[argv.index("-append") + 1] == "console=ttyS0 panic=-1 quiet no_timer_check"
    assert argv[argv.index("-cpu") + 1] == "qemu64"
    # legacy virtio: port-I/O notifications, no MMIO for nested KVM to emulate
    assert argv[argv.index("-device") + 1] == "virtio-net-pci,netdev=n0,romfile=,disable-modern=on"


@pytest.mark.parametrize("sev, firmware", [(None, "/ovmf"), (SevCpuid(51, 1, True), None)])
def test_snp_without_cpuid_or_firmware_is_a_config_error(sev, firmware):
    cfg = GuestConfig(snp=True, firmware=firmware)
    with pytest.raises(ConfigError, match="C-bit position"):
        guest_argv(cfg, kernel="k", initrd="i", ssh_port=1, pidfile="p", sev=sev)
