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
