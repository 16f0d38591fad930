"""The pytest plugin, driven through pytester against the local target and a real sshd."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from harness.transport.hostkeys import KnownHosts, host_id

pytest_plugins = ["pytester"]

SUITE = """
import pytest

def test_kernel(target):
    assert target.capabilities().facts.kernel_release

@pytest.mark.needs("snp")
def test_needs_snp(target):
    pass

def test_no_target():
    pass
"""


@pytest.fixture
def inventory(pytester, sshd, tmp_path):
    known = tmp_path / "known_hosts"
    path = pytester.path / "inv.toml"
    path.write_text(
        f'[harness]\nknown_hosts = "{known}"\n'
        f'[hosts.loop]\naddress = "127.0.0.1"\nport = {sshd.port}\nuser = "{sshd.user}"\n'
        f'identity_file = "{sshd.client_key}"\n'
    )
    return path, known


def test_local_target_runs_and_needs_skips_with_reason(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-rs", "--snp-target", "local", "--junitxml=junit.xml")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*local://: needs snp (*fix:*"])
    props = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "junit.xml").iter("property")}
    assert props["local:// kernel"]
    assert "local:// cpu" in props


def test_ssh_host_ids_and_suite_properties(pytester, inventory, sshd):
    path, known = inventory
    KnownHosts(known).add(host_id("127.0.0.1", sshd.port), sshd.public_host_key())
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-v", "--snp-config", str(path), "--snp-host", "loop", "--junitxml=junit.xml")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*test_kernel[[]ssh://loop[]] PASSED*"])
    props = {p.get("name") for p in ET.parse(pytester.path / "junit.xml").iter("property")}
    assert "ssh://loop kernel" in props


def test_unreachable_target_errors_once_per_test_never_fails(pytester, inventory):
    path, _ = inventory  # host key not enrolled: connecting must be refused
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--snp-config", str(path), "--snp-host", "loop")
    result.assert_outcomes(passed=1, errors=2)
    assert result.stdout.str().count("unknown host key") >= 2


def test_unknown_host_and_bad_capability_are_usage_errors(pytester, inventory):
    path, _ = inventory
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--snp-config", str(path), "--snp-host", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown host*nope*"])

    pytester.makepyfile(test_typo="import pytest\n@pytest.mark.needs('snpp')\ndef test_x(target): pass\n")
    result = pytester.runpytest("test_typo.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown capability*snpp*"])


INFRA_SUITE = """
from harness.errors import TransportError

def test_target_dies_mid_test(target):
    raise TransportError("qemu://: connection dropped while running /selftests/x")

def test_real_failure(target):
    assert 1 == 2
"""


def test_an_infrastructure_error_in_a_test_body_is_an_error_not_a_failure(pytester):
    from harness.report.junit import enrich

    pytester.makepyfile(INFRA_SUITE)
    result = pytester.runpytest("--snp-target", "local", "--snp-no-evidence", "--junitxml=junit.xml")
    result.assert_outcomes(failed=1, errors=1)
    enrich(pytester.path / "junit.xml", pytester.path, {})
    cases = {tc.get("name"): tc for tc in ET.parse(pytester.path / "junit.xml").iter("testcase")}
    dead = cases["test_target_dies_mid_test[local://]"]
    assert dead.find("failure") is None
    assert dead.find("error").get("message") == ("infrastructure error in the test body: "
                                                 "harness.errors.TransportError: qemu://: connection dropped "
                                                 "while running /selftests/x")
    assert "infrastructure_error" in {p.get("name") for p in dead.iter("property")}
    assert cases["test_real_failure[local://]"].find("failure") is not None
