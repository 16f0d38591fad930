"""The SNP preflight suite and needs("snp") as a session sees them: skip only where the machine
cannot do SEV-SNP at all; on SNP-capable hardware every unmet requirement fails.

The local target runs the real plugin and tests/snp/test_preflight.py, with the preflight
probe's output replaced by a capture from tests/data/hostcheck (a plugin given with -p swaps
harness.targets.capabilities.collect_hostcheck before the session starts).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
PREFLIGHT = REPO / "tests" / "snp" / "test_preflight.py"
HOSTCHECK = REPO / "tests" / "data" / "hostcheck"

FAKE_PROBE = """
import os
from pathlib import Path

import harness.targets.capabilities as capabilities

_TEXT = Path(os.environ["SNP_TEST_HOSTCHECK"]).read_text()
capabilities.collect_hostcheck = lambda transport, timeout=60: _TEXT
"""

NEEDS_SNP = """
import pytest

@pytest.mark.needs("snp")
def test_needs_snp(target):
    pass
"""


def _run(pytester, monkeypatch, capture: str):
    monkeypatch.setenv("SNP_TEST_HOSTCHECK", str(HOSTCHECK / capture))
    pytester.makepyfile(fakeprobe=FAKE_PROBE, test_needs=NEEDS_SNP)
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "fakeprobe", "-m", "snp or not snp", "--snp-target", "local",
        "--snp-no-evidence", "-rA", "-k", "test_snp_requirement or test_needs_snp", str(PREFLIGHT), "test_needs.py")


@pytest.mark.parametrize("capture, unmet", [
    # The BIOS reserved no RMP, so the kernel cleared sev_snp: before, every test here skipped.
    ("genoa-rmp-not-reserved.txt", {"sev_snp_flag", "rmp_reserved", "snp_firmware", "kvm_amd_sev_snp"}),
    # SMEE off: not one SEV flag or message, yet a Milan is SNP hardware.
    ("milan-bios-smee-off.txt", {"sev_snp_flag", "rmp_reserved", "snp_firmware", "dev_sev", "kvm_amd_sev_snp"}),
])
def test_capable_but_misconfigured_host_fails(pytester, monkeypatch, capture, unmet):
    result = _run(pytester, monkeypatch, capture)
    result.assert_outcomes(passed=7 - len(unmet), failed=len(unmet), errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    for name in unmet:
        result.stdout.fnmatch_lines([f"FAILED *test_snp_requirement?local://-{name}?*"])
    result.stdout.fnmatch_lines(["*ERROR at setup of test_needs_snp*",
                                 "local:// can run snp (*) but is not set up for it: needs snp (*; fix: *"])


def test_only_a_machine_that_cannot_do_snp_skips(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, "qemu-tcg-6.12-guest.txt")  # -cpu EPYC-Milan: a Milan, but a VM
    result.assert_outcomes(skipped=8)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["SKIPPED *local:// cannot run SEV-SNP at all: a VM ('hypervisor' flag)*"])
    _run(pytester, monkeypatch, "milan-snp-ready.txt").assert_outcomes(passed=8)  # and a ready host passes
