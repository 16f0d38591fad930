"""The tree's KVM selftests for guest_memfd, private memory and SEV, through the runner."""

from __future__ import annotations

import pytest


@pytest.mark.needs("guest_memfd")
def test_guest_memfd(selftest):
    selftest("guest_memfd_test", timeout=300)


@pytest.mark.needs("guest_memfd")
def test_set_memory_region(selftest):
    selftest("set_memory_region_test", timeout=900)


@pytest.mark.needs("sw_protected_vm")
def test_private_mem_kvm_exits(selftest):
    selftest("private_mem_kvm_exits_test", timeout=300)


@pytest.mark.needs("sw_protected_vm")
def test_pre_fault_memory(selftest):
    # KVM_PRE_FAULT_MEMORY on default and SW_PROTECTED VMs, private and shared (6.11+)
    selftest("pre_fault_memory_test", timeout=600)


@pytest.mark.needs("sev")
def test_sev_smoke(selftest):
    selftest("sev_smoke_test", timeout=300)


@pytest.mark.needs("snp")
def test_sev_smoke_snp(selftest):
    # Newer trees run an SNP guest in sev_smoke_test when KVM offers KVM_X86_SNP_VM, and say
    # nothing when it does not: so it counts as an SNP check only where SNP is enabled.
    selftest("sev_smoke_test", timeout=300)


def test_kvm_caps_probe_matches_the_preflight(selftest, target):
    import dataclasses

    from harness.scenarios.ktap import diagnostics_kv

    r = selftest("guests/kvm_caps_probe", timeout=120)
    facts = diagnostics_kv(r.ktap)
    caps = target.capabilities()
    assert caps.kvm is not None  # the target merged the probe's facts into its capabilities
    assert caps.has("gmem_hugepages") == (facts["gmem_huge_flags"] != "none")
    # KVM itself must agree with what it advertises: a type in KVM_CAP_VM_TYPES is one that
    # KVM_CREATE_VM accepts, and every other type is refused (0x0: the cap predates VM types).
    vm_types = facts["vm_types"].split()[1:]
    created = {t: facts[f"create_vm_{t}"] for t in ("default", "sw_protected", "sev", "sev_es", "snp")}
    if int(facts["vm_types"].split()[0], 16):
        assert {t for t, result in created.items() if result == "ok"} == set(vm_types), (facts["vm_types"], created)
    assert created["default"] == "ok"
    # The preflight alone reads config and sysfs, never KVM: the two must agree.
    preflight = dataclasses.replace(caps, kvm=None)
    assert ("sw_protected" in vm_types) == preflight.has("sw_protected_vm")
    assert ("snp" in vm_types) == preflight.has("snp")


@pytest.mark.needs("sev")
def test_sev_init2(selftest):
    selftest("sev_init2_tests", timeout=300)


@pytest.mark.needs("sev")
def test_sev_migrate(selftest):
    selftest("sev_migrate_tests", timeout=600)
