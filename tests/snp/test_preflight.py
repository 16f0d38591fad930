"""The first kernel suite: does the target's probe agree with the target, and is it SNP-ready?"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.snp

# Every setup requirement of an SNP host. The `cpu` check is the hardware decision itself: where
# the machine cannot do SNP at all (a VM, another vendor, an AMD part without SNP) these skip; on
# SNP-capable hardware each one that is unmet fails with its fix, whatever the BIOS left off.
SNP_CHECKS = ("sev_snp_flag", "rmp_reserved", "snp_firmware", "dev_sev", "kvm_amd_sev_snp", "dev_kvm",
              "kernel_config")


def test_probe_parses_without_problems(target):
    facts = target.capabilities().facts
    assert facts.problems == (), "the preflight probe's output did not parse cleanly"


def test_probe_agrees_with_the_target(target):
    facts = target.capabilities().facts
    uname = target.transport.run(["uname", "-r"], timeout=30).stdout.strip()
    assert facts.kernel_release == uname
    kvm = target.transport.run(["test", "-c", "/dev/kvm"], timeout=30, check=False)
    assert facts.dev_kvm == (kvm.exit_status == 0)


@pytest.mark.parametrize("check_name", SNP_CHECKS)
def test_snp_requirement(target, check_name):
    caps = target.capabilities()
    hw = caps.snp_hardware
    if not hw.capable:
        pytest.skip(f"{target.name} cannot run SEV-SNP at all: {hw.evidence}")
    check = {c.name: c for c in caps.checks}[check_name]
    assert check.ok, f"{check.name}: {check.detail}\nfix: {check.fix}"


@pytest.mark.needs("kvm")
def test_kvm_device_opens(target):
    # KVM_GET_API_VERSION would need a helper binary; opening the device is the part that fails.
    r = target.transport.run(["sh", "-c", "exec 3<>/dev/kvm"], timeout=30, check=False)
    assert r.exit_status == 0, f"/dev/kvm cannot be opened read-write: {r.stderr.strip()}"


def test_rmp_dump_interface_answers(target, request):
    """Our RMP dump (kernel-patches/instrumentation/) is in the running kernel and answers: entries
    on an SNP host, ENODEV elsewhere. A tree that no variant fits is built without it: skip."""
    from harness.evidence.rmp_collect import DEBUGFS_DIR

    if not target.selftests_dir:  # a host as it is: no build of ours runs there (and none is made)
        pytest.skip(f"{target.name} does not run this build (use --snp-install)")
    snp_build = request.getfixturevalue("snp_build")
    variant = snp_build.metadata.get("instrumentation")
    if not variant:
        pytest.skip(f"the build has no RMP dump: {snp_build.metadata.get('instrumentation_note') or 'not requested'}")
    r = target.transport.run(["sh", "-c", f'(exec 3<>{DEBUGFS_DIR}/dump) 2>&1; echo "rc=$?"'], timeout=60)
    if target.capabilities().has("snp"):
        assert r.stdout.strip().endswith("rc=0"), r.stdout
    else:
        assert "No such device" in r.stdout and not r.stdout.strip().endswith("rc=0"), r.stdout
