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
    selftest("x86_64/private_mem_kvm_exits_test", timeout=300)


@pytest.mark.needs("sev")
def test_sev_smoke(selftest):
    selftest("x86_64/sev_smoke_test", timeout=300)


def test_kvm_caps_probe_matches_the_preflight(selftest, target):
    import dataclasses

    from harness.scenarios.ktap import diagnostics_kv

    r = selftest("guests/kvm_caps_probe", timeout=120)
    facts = diagnostics_kv(r.ktap)
    caps = target.capabilities()
    # The target merged the same probe's facts into its capabilities ...
    assert caps.kvm is not None and caps.kvm["vm_types"] == facts["vm_types"]
    assert caps.has("gmem_hugepages") == (facts["gmem_huge_flags"] != "none")
    # ... while the preflight alone reads config and sysfs; the two must agree.
    preflight = dataclasses.replace(caps, kvm=None)
    vm_types = facts["vm_types"].split()[1:]
    assert ("sw_protected" in vm_types) == preflight.has("sw_protected_vm")
    assert ("snp" in vm_types) == preflight.has("snp")


@pytest.mark.needs("sev")
def test_sev_init2(selftest):
    selftest("x86_64/sev_init2_tests", timeout=300)


@pytest.mark.needs("sev")
def test_sev_migrate(selftest):
    selftest("x86_64/sev_migrate_tests", timeout=600)
