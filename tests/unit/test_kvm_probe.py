"""kvm_caps_probe facts merged into a target's capabilities (captured probe output, no target)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.targets.capabilities import evaluate, parse_kvm_probe
from harness.targets.hostcheck import parse_hostcheck

DATA = Path(__file__).resolve().parents[1] / "data"
QEMU_PROBE = DATA / "ktap" / "kvm_caps_probe-qemu-tcg-6.12.log"


def qemu_caps(probe: dict[str, str] | None):
    caps = evaluate(parse_hostcheck((DATA / "hostcheck" / "qemu-tcg-6.12-guest.txt").read_text()))
    return dataclasses.replace(caps, kvm=probe)


def test_probe_facts_from_the_captured_run():
    facts = parse_kvm_probe(QEMU_PROBE.read_text())
    assert facts["vm_types"] == "0x3 default sw_protected"
    assert facts["create_vm_snp"] == "EINVAL(22)"
    assert facts["gmem_huge_flags"] == "none" and facts["gmem_huge_kb"] == "0"
    assert "Totals" not in facts and "Random seed" not in " ".join(facts)


def test_parse_never_raises_on_garbage():
    assert parse_kvm_probe("\x00# \n#: x\n# Key: upper\n# ok: \nnot ok 1\n") == {"ok": ""}


def test_no_probe_means_no_gmem_hugepages_and_says_why():
    caps = qemu_caps(None)
    assert caps.has("guest_memfd") and caps.has("sw_protected_vm")
    reason = caps.missing("gmem_hugepages")
    assert "kvm_caps_probe has not run" in reason and "--snp-install" in reason
    assert caps.gmem_huge_flags is None


def test_small_folios_only_is_a_skip_naming_the_measurement():
    caps = qemu_caps(parse_kvm_probe(QEMU_PROBE.read_text()))
    reason = caps.missing("gmem_hugepages")
    assert "only 4K folios on 6.12.117+" in reason and "0 kB in huge pages" in reason
    assert "apply a series" in reason
    assert caps.properties()["gmem_huge_flags"] == "none"
    assert caps.as_dict()["kvm_probe"]["gmem_vm_type"] == "sw_protected"


def test_huge_folios_reported_by_a_series():
    # The captured run with the huge-folio answer a patched kernel gives (one line edited).
    text = QEMU_PROBE.read_text().replace("# gmem_huge_flags: none", "# gmem_huge_flags: 0x4")
    caps = qemu_caps(parse_kvm_probe(text))
    assert caps.has("gmem_hugepages") and caps.gmem_huge_flags == "0x4"


@pytest.mark.parametrize("key, value, cap", [
    ("create_vm_sw_protected", "ENOMEM(12)", "sw_protected_vm"),
])
def test_the_probes_own_vm_creation_overrides_the_config(key, value, cap):
    text = QEMU_PROBE.read_text().replace(f"# {key}: ok", f"# {key}: {value}")
    caps = qemu_caps(parse_kvm_probe(text))
    assert not caps.has(cap)
    assert f"KVM_CREATE_VM(sw_protected) returned {value}" in caps.missing(cap)
    assert qemu_caps(None).has(cap)  # the preflight alone would have said yes


def test_snp_ready_host_whose_probe_cannot_create_an_snp_vm():
    caps = evaluate(parse_hostcheck((DATA / "hostcheck" / "milan-snp-ready.txt").read_text()))
    assert caps.has("snp")
    broken = dataclasses.replace(caps, kvm={"create_vm_snp": "EIO(5)"})
    assert "KVM_CREATE_VM(snp) returned EIO(5)" in broken.missing("snp")


# ---- guest_memfd mmap (GUEST_MEMFD_FLAG_MMAP, INIT_SHARED) --------------------
# Constructed, not captured (no host here runs 7.3 with KVM): the 6.12 capture's shape with
# what 7.3's code answers (virt/kvm/guest_memfd.c, arch/x86/kvm/x86.c): MMAP for every VM type,
# INIT_SHARED only without private memory, and SIGBUS (EFAULT) for the host on private pages.
PROBE_73 = DATA / "ktap" / "kvm_caps_probe-constructed-7.3-sw-protected.txt"


def test_gmem_mmap_facts_of_the_constructed_73_run():
    facts = parse_kvm_probe(PROBE_73.read_text())
    assert facts["guest_memfd_flags_sw_protected"] == "0x1 mmap"
    assert facts["gmem_mmap_sw_protected"] == "fault EFAULT(14)"
    assert facts["gmem_init_shared_default"] == "ok"


def test_mmap_without_init_shared_on_73():
    caps = qemu_caps(parse_kvm_probe(PROBE_73.read_text()))
    assert caps.has("gmem_mmap"), "created and mmap()ed; private pages may refuse the host"
    reason = caps.missing("gmem_init_shared")
    assert "gmem_init_shared_sw_protected: create EINVAL(22)" in reason
    assert "KVM_CAP_GUEST_MEMFD_FLAGS of a sw_protected VM: 0x1 mmap" in reason
    assert "only to VMs without private memory" in reason


def test_init_shared_with_a_series_that_allows_it():
    text = (PROBE_73.read_text()
            .replace("# guest_memfd_flags_sw_protected: 0x1 mmap",
                     "# guest_memfd_flags_sw_protected: 0x3 mmap init_shared")
            .replace("# gmem_init_shared_sw_protected: create EINVAL(22)", "# gmem_init_shared_sw_protected: ok"))
    caps = qemu_caps(parse_kvm_probe(text))
    assert caps.has("gmem_mmap") and caps.has("gmem_init_shared")


@pytest.mark.parametrize("value, has_mmap, words", [
    ("ok", True, None),
    ("data mismatch", True, None),
    ("mmap ENODEV(19)", False, "gmem_mmap_sw_protected: mmap ENODEV(19)"),
    ("create EINVAL(22)", False, "gmem_mmap_sw_protected: create EINVAL(22)"),
    ("undefined", False, "UAPI headers have no GUEST_MEMFD_FLAG_MMAP: the kernel predates it"),
])
def test_gmem_mmap_answers(value, has_mmap, words):
    text = PROBE_73.read_text().replace("# gmem_mmap_sw_protected: fault EFAULT(14)",
                                        f"# gmem_mmap_sw_protected: {value}")
    caps = qemu_caps(parse_kvm_probe(text))
    assert caps.has("gmem_mmap") == has_mmap
    if words:
        assert words in caps.missing("gmem_mmap")


def test_a_probe_without_the_mmap_facts():
    caps = qemu_caps(parse_kvm_probe(QEMU_PROBE.read_text()))  # the 6.12 capture predates them
    reason = caps.missing("gmem_mmap")
    assert "reported no gmem_mmap_sw_protected (sw_protected guest_memfd: ok; or the probe predates" in reason
    assert "kvm_caps_probe has not run" in qemu_caps(None).missing("gmem_init_shared")


def test_no_sw_protected_vm_is_named_first():
    text = PROBE_73.read_text().replace("# create_vm_sw_protected: ok", "# create_vm_sw_protected: ENOMEM(12)")
    assert "KVM_CREATE_VM(sw_protected) returned ENOMEM(12)" in qemu_caps(parse_kvm_probe(text)).missing("gmem_mmap")
