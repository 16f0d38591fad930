"""The host preflight: collect script, pure parsers, SNP checks, capability reasons."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.targets.capabilities import KNOWN_CAPS, capabilities, collect_hostcheck, evaluate
from harness.targets.hostcheck import (
    COLLECT_SCRIPT, DMESG_UNREADABLE, SECTIONS, cpu_generation, parse_bracketed_mode, parse_cpuid_snp, parse_cpuinfo,
    parse_dmesg, parse_hostcheck, parse_hugepages, parse_kconfig, parse_key_values, parse_rmp_range, parse_sev_firmware,
    snp_hardware, split_sections)

DATA = Path(__file__).resolve().parents[1] / "data" / "hostcheck"
CHECKS = ("cpu", "sev_snp_flag", "rmp_reserved", "snp_firmware", "dev_sev", "kvm_amd_sev_snp",
          "dev_kvm", "kernel_config")
NOT_HOST = {"sev_snp_flag", "rmp_reserved", "snp_firmware", "dev_sev", "kvm_amd_sev_snp"}
VM = NOT_HOST | {"cpu"}  # a VM's CPU cannot run host SNP, whatever its family and model


def load(name: str):
    return parse_hostcheck((DATA / name).read_text())


def caps_of(name: str):
    return evaluate(load(name))


def checks_of(facts) -> dict:
    return {c.name: c for c in evaluate(facts).checks}


# ---- the capture table ------------------------------------------------------

@pytest.mark.parametrize("capture, ready, failing, problems", [
    ("milan-snp-ready.txt", True, set(), ()),
    ("milan-snp-param-off.txt", False, {"kvm_amd_sev_snp"}, ()),
    ("milan-old-firmware.txt", False, {"snp_firmware", "kvm_amd_sev_snp"}, ()),
    ("genoa-rmp-not-reserved.txt", False,
     {"sev_snp_flag", "rmp_reserved", "snp_firmware", "kvm_amd_sev_snp"}, ()),
    ("genoa-dmesg-restricted.txt", False, {"rmp_reserved", "snp_firmware"}, ()),
    ("qemu-tcg-6.12-guest.txt", False, VM,
     ("section 'tracefs' missing", "section 'kvm-events' missing")),
    ("thismachine-kvm-pvm.txt", False, VM | {"kernel_config"}, ()),
    ("milan-bios-smee-off.txt", False, NOT_HOST, ()),
])
def test_capture_verdicts(capture, ready, failing, problems):
    caps = caps_of(capture)
    assert tuple(c.name for c in caps.checks) == CHECKS
    assert caps.snp_ready is ready
    assert {c.name for c in caps.checks if not c.ok} == failing
    assert caps.facts.problems == problems
    assert all(c.detail and c.fix for c in caps.checks)


# Measured by guests/kvm_caps_probe, which has not run in these captures.
_PROBED = {"gmem_hugepages", "gmem_mmap", "gmem_init_shared"} & set(KNOWN_CAPS)


@pytest.mark.parametrize("capture, present", [
    ("milan-snp-ready.txt", set(KNOWN_CAPS) - _PROBED),
    ("milan-snp-param-off.txt", set(KNOWN_CAPS) - {"snp", "sw_protected_vm"} - _PROBED),
    ("milan-old-firmware.txt", set(KNOWN_CAPS) - {"snp", "sev", "sev_es", "sw_protected_vm"} - _PROBED),
    ("genoa-dmesg-restricted.txt", {"kvm", "sev", "sev_es", "guest_memfd", "thp", "hugetlb_2m",
                                    "debugfs"}),
    ("qemu-tcg-6.12-guest.txt", {"kvm", "sw_protected_vm", "guest_memfd", "thp", "hugetlb_2m",
                                 "debugfs", "split_huge_pages"}),
    ("thismachine-kvm-pvm.txt", {"thp", "hugetlb_2m"}),
    ("milan-bios-smee-off.txt", set(KNOWN_CAPS) - {"snp", "sev", "sev_es"} - _PROBED),
])
def test_capture_capabilities(capture, present):
    caps = caps_of(capture)
    assert {c for c in KNOWN_CAPS if caps.has(c)} == present


def test_milan_ready_facts():
    f = load("milan-snp-ready.txt")
    assert (f.cpu_vendor, f.cpu_family, f.cpu_model) == ("AuthenticAMD", 25, 1)
    assert f.cpu_model_name == "AMD EPYC 7763 64-Core Processor"
    assert f.microcode == "0xa0011d5"
    assert {"sev", "sev_es", "sev_snp"} <= f.cpu_flags
    assert f.snp_api == (1, 55, 21) and f.sev_api == (1, 55, 21)
    assert f.rmp_range == (0x64000000, 0xA41FFFFF)
    assert f.kvm_sev == {"SEV": "enabled", "SEV-ES": "enabled", "SEV-SNP": "enabled"}
    assert f.kvm_sev_lines[-1] == "kvm_amd: SEV-SNP enabled (ASIDs 1 - 99)"
    assert f.iommu_snp_enabled and f.dmesg_from_boot and f.snp_errors == ()
    assert f.kvm_amd_params["sev_snp"] == "Y" and f.kvm_params["tdp_mmu"] == "Y"
    assert (f.dev_kvm, f.dev_sev, f.uid) == (True, True, 0)
    assert f.config_source == "/proc/config.gz" and f.config["KVM_AMD_SEV"] == "y"
    assert f.config["KVM_WERROR"] == "n"
    assert f.thp == {"enabled": "madvise", "defrag": "madvise", "shmem_enabled": "never",
                     "khugepaged/defrag": "1"}
    assert (f.nr_hugepages, f.hugepage_sizes_kb) == (0, {2048, 1048576})
    assert f.debugfs_mounted and f.split_huge_pages == "yes"
    assert f.tracefs_path == "/sys/kernel/tracing" and "kvm_rmp_fault" in f.kvm_trace_events
    check = checks_of(f)
    assert check["cpu"].detail.endswith("Zen 3 (Milan)")
    assert check["snp_firmware"].detail == "SEV-SNP API:1.55 build:21"


def test_failure_lines_are_the_kernels_own():
    old = load("milan-old-firmware.txt")
    assert old.snp_errors == (
        "ccp 0000:22:00.1: SEV-SNP support requires firmware version >= 1:51",
        "ccp 0000:22:00.1: SEV-SNP: failed to INIT rc -95, error 0")
    assert old.snp_api is None and old.sev_api is None
    assert "older than SNP API 1.51" in checks_of(old)["snp_firmware"].detail
    genoa = load("genoa-rmp-not-reserved.txt")
    assert genoa.snp_errors == (
        "SEV-SNP: Memory for the RMP table has not been reserved by BIOS",)
    assert "sev_snp" not in genoa.cpu_flags and genoa.sev_api == (1, 55, 37)
    assert genoa.kvm_sev == {"SEV": "enabled", "SEV-ES": "enabled"}
    off = load("milan-snp-param-off.txt")
    assert off.kvm_sev["SEV-SNP"] == "disabled" and off.snp_api == (1, 55, 21)


# drivers/crypto/ccp/sev-dev.c: 6.12's _sev_platform_init_locked(), and the SNP host series' sev_pci_init()
# before its merge (vendor and distro kernels), which printed no rc.
INIT_FAILED = ("ccp 0000:22:00.1: SEV-SNP: failed to INIT rc -5, error 0x3",
               "ccp 0000:22:00.1: SEV-SNP: failed to INIT error 0x3")


@pytest.mark.parametrize("line", INIT_FAILED)
def test_snp_init_failure_in_either_wording_fails_the_firmware_check(line):
    facts = parse_dmesg([f"[    8.899990] {line}", "[    8.900007] ccp 0000:22:00.1: SEV API:1.55 build:21"])
    assert facts.snp_errors == (line,) and facts.snp_api is None
    f = dataclasses.replace(load("milan-old-firmware.txt"), snp_errors=facts.snp_errors, sev_api=facts.sev_api)
    check = checks_of(f)["snp_firmware"]
    assert not check.ok and line in check.detail and "SEV API:1.55 build:21" in check.detail


def test_unreadable_dmesg_is_not_a_verdict():
    f = load("genoa-dmesg-restricted.txt")
    assert not f.dmesg_readable and f.uid == 1000
    assert f.dmesg_error == "dmesg: read kernel buffer failed: Operation not permitted"
    checks = checks_of(f)
    assert checks["rmp_reserved"].detail == checks["snp_firmware"].detail == DMESG_UNREADABLE
    assert evaluate(f).properties()["sev_firmware"] == "unknown (dmesg unreadable)"


def test_rotated_dmesg_infers_from_what_is_left():
    f = dataclasses.replace(load("milan-snp-ready.txt"), rmp_range=None, dmesg_from_boot=False)
    assert evaluate(f).snp_ready  # the SNP API line proves the RMP was set up
    f = dataclasses.replace(f, snp_api=None)
    checks = checks_of(f)
    assert checks["snp_firmware"].ok and "sev_snp=Y" in checks["snp_firmware"].detail
    assert not checks["rmp_reserved"].ok
    assert "no longer starts at boot" in checks["rmp_reserved"].detail


def test_firmware_below_minimum_fails():
    f = dataclasses.replace(load("milan-snp-ready.txt"), snp_api=(1, 49, 3))
    check = checks_of(f)["snp_firmware"]
    assert not check.ok and check.detail == "SEV-SNP API:1.49 build:3 is below 1.51"


# ---- small parsers ----------------------------------------------------------

def test_parse_cpuinfo_takes_the_first_block():
    info = parse_cpuinfo(["processor\t: 0", "vendor_id\t: AuthenticAMD", "cpu family\t: 26",
                          "model\t\t: 2", "model name\t: AMD EPYC", "microcode\t: 0x1000065",
                          "flags\t\t: fpu svm sev_snp", "", "processor\t: 1", "flags\t\t: other"])
    assert (info.vendor, info.family, info.model, info.microcode) == ("AuthenticAMD", 26, 2,
                                                                     "0x1000065")
    assert info.flags == {"fpu", "svm", "sev_snp"} and info.problems == ()


@pytest.mark.parametrize("lines, problem", [
    ([], "cpuinfo: no 'vendor_id' line"),
    (["vendor_id: AuthenticAMD", "garbage"], "cpuinfo: no ':' in 'garbage'"),
    (["cpu family\t: twenty-five"], "cpuinfo cpu family: not a number: 'twenty-five'"),
    (["model name\t: AMD EPYC 9454 48-Core Processor"], "cpuinfo: no 'flags' line"),
])
def test_parse_cpuinfo_malformed(lines, problem):
    assert problem in parse_cpuinfo(lines).problems


@pytest.mark.parametrize("text, mode", [
    ("always [madvise] never", "madvise"),
    ("always within_size advise [never] deny force", "never"),
    ("[always] defer defer+madvise madvise never", "always"),
    ("1", None), ("", None), ("always [madvise", None),
])
def test_parse_bracketed_mode(text, mode):
    assert parse_bracketed_mode(text) == mode


def test_parse_sev_firmware():
    lines = ["[    8.9] ccp 0000:22:00.1: SEV-SNP API:1.55 build:21",
             "[    9.0] ccp 0000:22:00.1: SEV API:1.55 build:21",
             "ccp 0000:22:00.1: SEV firmware updated from 1.51.3 to 1.55.21"]
    assert parse_sev_firmware(lines) == ((1, 55, 21), (1, 55, 21))
    assert parse_sev_firmware(["SEV-SNP API:1.52 build:4"]) == ((1, 52, 4), None)
    assert parse_sev_firmware(["SEV API:1.x build:?", "SEV-SNP API:", ""]) == (None, None)


def test_parse_rmp_range():
    line = ("[    0.000000] SEV-SNP: RMP table physical range "
            "[0x000000bc00000000 - 0x000000bc1fffffff]")
    assert parse_rmp_range(line) == (0xBC00000000, 0xBC1FFFFFFF)
    assert parse_rmp_range("SEV-SNP: RMP table physical range [0x12") is None


def test_parse_dmesg():
    d = parse_dmesg(["[    0.000000] Linux version 6.12.117", "",
                     "[    2.5] AMD-Vi: SNP: IOMMU SNP feature not enabled, "
                     "SNP cannot be supported.",
                     "[    9.0] kvm_amd: SEV-SNP disabled (ASIDs 1 - 99)",
                     "[    0.1] Memory Encryption Features active: AMD SEV SEV-ES SEV-SNP"])
    assert d.dmesg_from_boot and d.kvm_sev == {"SEV-SNP": "disabled"}
    assert d.snp_errors == (
        "AMD-Vi: SNP: IOMMU SNP feature not enabled, SNP cannot be supported.",)
    assert d.mem_encrypt == "AMD SEV SEV-ES SEV-SNP"
    assert not parse_dmesg(["[ 5.0] some later line"]).dmesg_from_boot


def test_parse_dmesg_7x_wording_and_caller_ids():
    """7.3's arch/x86/virt/svm/sev.c: segmented RMP tables (6.14+) and snp_prepare(); printk caller ids."""
    d = parse_dmesg([
        "[    0.000000][    T0] SEV-SNP: Segmented RMP using 64GB segments",
        "[    0.000000][    T0] SEV-SNP: Segmented RMP base table physical range "
        "[0x000000bc00000000 - 0x000000bc00003fff]",
        "[    0.000000][    T0] SEV-SNP: Failed to map RMP segment addr 0xbc00200000 size 0x1000000",
        "[    0.000000][    T0] SEV-SNP: Segmented RMP does not cover full system RAM (expected 0x2000000000 "
        "got 0x1000000000)",
        "[    3.100000][    T1] SEV-SNP: SNP init failed: not all CPUs online. (0-3 online <-> 0-7 present masks).",
        "[    9.000000][  T412] kvm_amd: SEV-SNP unusable (ASIDs 1 - 99)"])
    assert d.rmp_range == (0xBC00000000, 0xBC00003FFF)
    assert d.snp_errors == (
        "SEV-SNP: Failed to map RMP segment addr 0xbc00200000 size 0x1000000",
        "SEV-SNP: Segmented RMP does not cover full system RAM (expected 0x2000000000 got 0x1000000000)",
        "SEV-SNP: SNP init failed: not all CPUs online. (0-3 online <-> 0-7 present masks).")
    assert d.kvm_sev == {"SEV-SNP": "unusable"}
    for prefix in ("[  1.0][ T1] ", "[  1.0] [ T1] ", "[ T1] ", "<3>[  1.0] "):
        assert parse_dmesg([prefix + "SEV-SNP: Failed to map RMP table"]).snp_errors == (
            "SEV-SNP: Failed to map RMP table",)


def test_parse_hugepages():
    assert parse_hugepages(["nr_hugepages=64", "hugepages-2048kB", "hugepages-1048576kB"]) == (
        64, {2048, 1048576}, ())
    assert parse_hugepages(["nr_hugepages=", "hugepages-2MB", ""]) == (
        None, frozenset(), ("hugepages: unexpected entry 'hugepages-2MB'",))


def test_bad_dmesg_status_is_recorded():
    text = (DATA / "milan-snp-ready.txt").read_text().replace(
        "@@snp-harness:dmesg-status@@\nrc=0", "@@snp-harness:dmesg-status@@\nexit 0")
    facts = parse_hostcheck(text)
    assert not facts.dmesg_readable
    assert "dmesg-status: no rc= line: 'exit 0'" in facts.problems


def test_parse_kconfig():
    source, config, problems = parse_kconfig([
        "source=/boot/config-6.12", "CONFIG_KVM=m", "# CONFIG_KVM_INTEL is not set",
        'CONFIG_LOCALVERSION="-snp"', "what is this"])
    assert source == "/boot/config-6.12"
    assert config == {"KVM": "m", "KVM_INTEL": "n", "LOCALVERSION": "-snp"}
    assert problems == ("config: unexpected line 'what is this'",)
    assert parse_kconfig(["source=none"])[:2] == ("", {})


def test_parse_key_values():
    values, problems = parse_key_values(["sev_snp=Y", "", "odd line", "path="], "params:kvm_amd")
    assert values == {"sev_snp": "Y", "path": ""}
    assert problems == ("params:kvm_amd: not name=value: 'odd line'",)


def test_split_sections_edge_cases():
    sections, problems = split_sections("ssh banner\r\n@@snp-harness:meta@@\r\nformat=1\r\n"
                                        "@@snp-harness:meta@@\nuid=0\n")
    assert sections == {"meta": ("format=1",)}
    assert "section 'meta' appears twice; kept the first" in problems
    assert "no end marker: output truncated" in problems
    assert "section 'dmesg' missing" in problems
    assert split_sections("Permission denied\n") == (
        {}, ("no @@snp-harness sections found: not COLLECT_SCRIPT output",))


def test_truncated_and_garbled_input_never_raises():
    text = (DATA / "milan-snp-ready.txt").read_text()
    lines = text.splitlines()
    for cut in range(0, len(lines), 7):
        facts = parse_hostcheck("\n".join(lines[:cut]))
        assert facts.problems  # every prefix lacks at least the end marker
        evaluate(facts).as_dict()
    garbled = text.replace("rc=0", "rc=zero").replace("uid=0", "uid=root").replace(
        "nr_hugepages=0", "nr_hugepages=many").replace("cpu family\t: 25", "cpu family\t: x")
    facts = parse_hostcheck(garbled)
    assert {"dmesg-status rc: not a number: 'zero'", "meta uid: not a number: 'root'",
            "nr_hugepages: not a number: 'many'",
            "cpuinfo cpu family: not a number: 'x'"} <= set(facts.problems)
    assert not facts.dmesg_readable and not evaluate(facts).snp_ready
    assert parse_hostcheck("").problems and parse_hostcheck("\x00@@\n@@snp-harness:@@").problems


# ---- capabilities -----------------------------------------------------------

@pytest.mark.parametrize("capture, cap, words", [
    ("milan-snp-param-off.txt", "snp", ["kvm_amd_sev_snp", "kvm_amd.sev_snp=1"]),
    ("genoa-rmp-not-reserved.txt", "snp", ["no valid RMP table", "SNP Memory Coverage", "snp-harness check"]),
    ("milan-old-firmware.txt", "snp", ["rc -95", "amd_sev_fam19h"]),
    ("thismachine-kvm-pvm.txt", "kvm", ["kvm_pvm", "QEMU target"]),
    ("thismachine-kvm-pvm.txt", "guest_memfd", ["kvm_pvm"]),
    ("milan-snp-param-off.txt", "sw_protected_vm", ["CONFIG_KVM_SW_PROTECTED_VM=n",
                                                    "CONFIG_KVM_SW_PROTECTED_VM=y"]),
    ("genoa-dmesg-restricted.txt", "split_huge_pages", ["uid 1000", "root"]),
    ("genoa-dmesg-restricted.txt", "kvm_rmp_fault", ["tracefs", "mount -t tracefs"]),
    ("qemu-tcg-6.12-guest.txt", "sev", ["kvm_amd sev=N", "modprobe kvm_amd sev=1"]),
    ("thismachine-kvm-pvm.txt", "debugfs", ["not mounted", "mount -t debugfs"]),
])
def test_missing_names_what_and_how(capture, cap, words):
    reason = caps_of(capture).missing(cap)
    assert reason.startswith(f"needs {cap} ({KNOWN_CAPS[cap]}): ") and "; fix: " in reason
    for word in words:
        assert word in reason


def test_present_capability_has_no_reason():
    caps = caps_of("milan-snp-ready.txt")
    assert caps.missing("snp") is None and caps.has("kvm_rmp_fault")


def test_unknown_capability_is_a_programming_error():
    caps = caps_of("milan-snp-ready.txt")
    with pytest.raises(ValueError, match=r"unknown capability 'snpp'; known: kvm, snp, sev"):
        caps.has("snpp")
    with pytest.raises(ValueError):
        caps.missing("gmem_hugepage")


def test_as_dict_is_json():
    caps = caps_of("milan-snp-ready.txt")
    data = json.loads(json.dumps(caps.as_dict()))
    assert data["snp_ready"] is True and data["capabilities"]["snp"] is True
    assert [c["name"] for c in data["checks"]] == list(CHECKS)
    assert data["facts"]["snp_api"] == [1, 55, 21] and "sev_snp" in data["facts"]["cpu_flags"]


def test_properties():
    assert caps_of("milan-snp-ready.txt").properties() == {
        "kernel": "6.12.117-snph",
        "cpu": "AMD EPYC 7763 64-Core Processor (family 0x19, model 0x1)",
        "microcode": "0xa0011d5", "sev_firmware": "SEV-SNP API:1.55 build:21",
        "kvm_amd": "sev=Y sev_es=Y sev_snp=Y npt=Y nested=1"}
    assert caps_of("thismachine-kvm-pvm.txt").properties()["kvm_amd"] == "not loaded"


@pytest.mark.parametrize("family, model, name", [
    (0x19, 0x01, "Zen 3 (Milan)"), (0x19, 0x11, "Zen 4 (Genoa)"),
    (0x19, 0xA0, "Zen 4c (Bergamo/Siena)"), (0x1A, 0x02, "Zen 5 (Turin)"),
    (0x19, 0x21, None), (0x17, 0x31, None), (None, None, None),
])
def test_cpu_generation(family, model, name):
    assert cpu_generation(family, model) == name


def test_unknown_model_is_said_plainly():
    f = dataclasses.replace(load("milan-bios-smee-off.txt"), cpu_model=0x21, cpuid_snp=None)
    check = evaluate(f).checks[0]
    assert check.ok and "model not recognised, but an EPYC" in check.detail


# ---- can the machine do SNP at all? (skip) or is it only not set up? (fail) --------------

def cpu_facts(name: str, **kw):
    c = parse_cpuinfo((DATA / name).read_text().splitlines())
    assert c.problems == ()
    return dataclasses.replace(load("milan-bios-smee-off.txt"), cpu_vendor=c.vendor, cpu_family=c.family,
                               cpu_model=c.model, cpu_model_name=c.model_name, cpu_flags=c.flags,
                               **{"cpuid_snp": None, **kw})


@pytest.mark.parametrize("capture, capable, words", [
    ("milan-snp-ready.txt", True, ["Zen 3 (Milan)"]),
    ("genoa-rmp-not-reserved.txt", True, ["Zen 4 (Genoa)"]),   # the kernel hid sev_snp: no RMP
    ("milan-bios-smee-off.txt", True, ["Zen 3 (Milan)"]),      # no sev flags at all: SMEE off
    ("milan-old-firmware.txt", True, ["Zen 3 (Milan)"]),
    ("genoa-dmesg-restricted.txt", True, ["Genoa"]),
    ("qemu-tcg-6.12-guest.txt", False, ["a VM", "hypervisor"]),  # -cpu EPYC-Milan: family 19h all the same
    ("thismachine-kvm-pvm.txt", False, ["a VM"]),
])
def test_snp_hardware_on_captures(capture, capable, words):
    hw = snp_hardware(load(capture))
    assert hw.capable is capable
    assert all(w in hw.evidence for w in words), hw.evidence


@pytest.mark.parametrize("cpuinfo, kw, capable, words", [
    ("cpuinfo-thismachine-vm.txt", {}, False, ["a VM"]),   # family 19h model 1 "AMD EPYC", hypervisor
    ("cpuinfo-thismachine-vm.txt", {"cpuid_snp": True}, False, ["a VM"]),
    ("cpuinfo-constructed-xeon-8480.txt", {}, False, ["GenuineIntel", "AMD's"]),
    ("cpuinfo-constructed-ryzen-5950x.txt", {}, False, ["family 19h model 21h", "no SNP-capable EPYC"]),
    ("cpuinfo-constructed-ryzen-5950x.txt", {"cpuid_snp": False}, False, ["EAX bit 4 is clear"]),
    ("cpuinfo-constructed-epyc-7742-rome.txt", {}, False, ["family 17h", "no SNP-capable EPYC"]),
    # what the CPU reports outranks a family/model table that does not know the part
    ("cpuinfo-constructed-ryzen-5950x.txt", {"cpuid_snp": True}, True, ["EAX bit 4 (SEV-SNP) is set"]),
    # the RMP is probed only on SNP hardware: its messages prove it, whatever the table says
    ("cpuinfo-constructed-ryzen-5950x.txt",
     {"snp_errors": ("SEV-SNP: Memory for the RMP table has not been reserved by BIOS",)}, True, ["probed the RMP"]),
    ("cpuinfo-constructed-ryzen-5950x.txt", {"rmp_range": (0x64000000, 0xA41FFFFF)}, True, ["found SEV-SNP"]),
])
def test_snp_hardware_on_cpuinfo(cpuinfo, kw, capable, words):
    hw = snp_hardware(cpu_facts(cpuinfo, **kw))
    assert hw.capable is capable
    assert all(w in hw.evidence for w in words), hw.evidence


def test_unidentified_cpu_is_never_a_reason_to_skip():
    f = dataclasses.replace(load("milan-bios-smee-off.txt"), cpu_vendor="", cpu_family=None, cpu_model=None,
                            cpu_model_name="", cpuid_snp=None)
    assert snp_hardware(f).capable


@pytest.mark.parametrize("capture, misconfigured", [
    ("genoa-rmp-not-reserved.txt", True), ("milan-bios-smee-off.txt", True), ("milan-old-firmware.txt", True),
    ("milan-snp-param-off.txt", True), ("genoa-dmesg-restricted.txt", True),
    ("milan-snp-ready.txt", False),                                      # nothing missing
    ("qemu-tcg-6.12-guest.txt", False), ("thismachine-kvm-pvm.txt", False),  # cannot: these skip
])
def test_missing_snp_on_capable_hardware_is_a_setup_fault(capture, misconfigured):
    caps = caps_of(capture)
    assert caps.misconfigured("snp") is misconfigured
    assert caps.has("snp") is (capture == "milan-snp-ready.txt")
    assert not caps.misconfigured("thp") and not caps.misconfigured("sev")  # only what hardware alone rules out


def test_smee_off_names_the_bios_fix():
    caps = caps_of("milan-bios-smee-off.txt")
    check = {c.name: c for c in caps.checks}
    assert check["cpu"].ok and not check["sev_snp_flag"].ok
    assert "SMEE" in check["sev_snp_flag"].fix
    assert caps.facts.snp_errors == ("ccp 0000:22:00.1: SEV: memory encryption not enabled by BIOS",)
    assert caps.facts.cpuid_snp is True and caps.facts.problems == ()


@pytest.mark.parametrize("name, snp", [
    ("cpuid-8000001f-constructed-milan.txt", True),
    ("cpuid-8000001f-thismachine-kvm-pvm.txt", False),
])
def test_parse_cpuid_snp(name, snp):
    text = (DATA.parent / "guest" / name).read_text()
    assert parse_cpuid_snp(text.splitlines()) is snp


@pytest.mark.parametrize("lines", [[], [""], ["0001007f 00000073"], ["zz 0 0 0"], ["1 2 3 4 5"]])
def test_parse_cpuid_snp_malformed(lines):
    assert parse_cpuid_snp(lines) is None


def test_cpuid_section_only_from_format_2():
    text = (DATA / "milan-bios-smee-off.txt").read_text()
    without = text.replace("@@snp-harness:cpuid@@\n 0001007f 00000073 000001fd 00000001\n", "")
    assert "section 'cpuid' missing" in parse_hostcheck(without).problems  # format 2 promised it
    assert parse_hostcheck(without.replace("format=2", "format=1")).problems == ()
    garbled = text.replace(" 0001007f 00000073 000001fd 00000001", "dd: error reading")
    assert parse_hostcheck(garbled).problems == ("cpuid: not four 32-bit words: 'dd: error reading'",)


# ---- the collector ----------------------------------------------------------

class FakeTransport:
    name = "fake://"

    def __init__(self, stdout: str) -> None:
        self.stdout = stdout
        self.calls: list[tuple] = []

    def run(self, argv, *, timeout, check=True, **kwargs):
        self.calls.append((list(argv), timeout, check))
        return SimpleNamespace(stdout=self.stdout, stderr="", exit_status=0)


def test_capabilities_runs_the_script_once():
    fake = FakeTransport((DATA / "milan-snp-ready.txt").read_text())
    caps = capabilities(fake)
    assert caps.snp_ready
    assert fake.calls == [(["sh", "-c", COLLECT_SCRIPT], 60, True)]
    assert collect_hostcheck(fake, timeout=5) == fake.stdout and fake.calls[-1][1] == 5


def _busybox() -> str | None:
    return "/bin/busybox" if os.path.exists("/bin/busybox") else shutil.which("busybox")


@pytest.mark.parametrize("shell", ["dash", "sh", "busybox"])
def test_script_runs_locally(shell, tmp_path):
    env = None
    if shell == "busybox":
        busybox = _busybox()
        if busybox is None:
            pytest.skip("no busybox (/bin/busybox): apt-get install busybox-static to run this")
        # Applets only, as on the initramfs target: nothing else on PATH.
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout
        for applet in applets.split():
            (tmp_path / applet).symlink_to(busybox)
        argv, env = [busybox, "sh"], {"PATH": str(tmp_path)}
    else:
        path = shutil.which(shell)
        if path is None:
            pytest.skip(f"no {shell} on PATH")
        argv = [path]
    r = subprocess.run([*argv, "-c", COLLECT_SCRIPT], capture_output=True, text=True,
                       timeout=60, env=env)
    assert (r.returncode, r.stderr) == (0, "")
    facts = parse_hostcheck(r.stdout)
    assert facts.problems == ()
    assert facts.kernel_release == os.uname().release and facts.sections == set(SECTIONS)
    assert facts.cpu_flags and facts.cpu_family is not None
    evaluate(facts).as_dict()


def test_script_survives_an_empty_path():
    """No external command at all: every section still prints and the script exits 0."""
    sh = shutil.which("dash") or shutil.which("sh")
    r = subprocess.run([sh, "-c", COLLECT_SCRIPT], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/nonexistent"})
    assert r.returncode == 0
    facts = parse_hostcheck(r.stdout)
    assert facts.sections == set(SECTIONS) and not facts.dmesg_readable
    assert "no end marker: output truncated" not in facts.problems
