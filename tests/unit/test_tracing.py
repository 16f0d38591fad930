"""kvm_rmp_fault trace parsing (tests/data/trace/)."""

from __future__ import annotations

from hypothesis import given, strategies as st

from harness.evidence.tracing import parse_rmp_faults


def test_empty_instance_buffer_captured_on_the_qemu_target(data_dir):
    r = parse_rmp_faults((data_dir / "trace" / "qemu-tcg-6.12-empty-instance.txt").read_text())
    assert r.faults == () and r.lost == 0 and r.problems == ()
    assert r.properties() == {"rmp_fault_events": "0", "rmp_fault_psmash": "0", "rmp_fault_psmash_failures": "0"}


def test_faults_psmash_and_overflow(data_dir):
    r = parse_rmp_faults((data_dir / "trace" / "format-6.12-rmp-faults.txt").read_text())
    assert len(r.faults) == 4
    first = r.faults[0]
    assert (first.vcpu, first.gpa, first.pfn, first.error_code, first.rmp_level, first.psmash_ret) == (
        0, 0x100200000, 0x1a2c00, 0x100000004, 2, 0)
    assert r.psmash_attempts == 3 and r.psmash_failures == 1
    assert r.lost == 2
    assert r.properties()["rmp_fault_events_lost"] == "2"
    assert r.problems == ("unparsed kvm_rmp_fault line: qemu-1234 [001] ..... 10.0: kvm_rmp_fault: garbled",)


@given(st.text())
def test_never_raises(text):
    parse_rmp_faults(text)
