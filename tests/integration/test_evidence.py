"""Per-test evidence for real: a WARN provoked on the QEMU target fails the test that caused it."""

from __future__ import annotations

import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.evidence.dmesg import KmsgFollower
from harness.testing.sshd import LoopbackSshd
from harness.transport.hostkeys import KnownHosts, host_id
from harness.transport.local import LocalTransport

pytest_plugins = ["pytester"]

SUITE = """
def test_quiet(target):
    assert target.transport.run(["true"], timeout=60).ok


def test_warns(target):
    # lkdtm (CONFIG_LKDTM=y in local-target.config): a real WARN_ON, and the write succeeds.
    r = target.transport.run(["sh", "-c", "echo WARNING > /sys/kernel/debug/provoke-crash/DIRECT"], timeout=120)
    assert r.ok


def test_after(target):
    assert target.transport.run(["true"], timeout=60).ok
"""


def _cases(junit) -> dict[str, tuple[ET.Element, dict[str, list[str]]]]:
    out = {}
    for case in ET.parse(junit).iter("testcase"):
        props: dict[str, list[str]] = {}
        for p in case.iter("property"):
            props.setdefault(p.get("name"), []).append(p.get("value"))
        out[case.get("name").split("[")[0]] = (case, props)
    return out


@pytest.mark.slow
def test_a_warn_fails_the_test_that_caused_it(pytester, kernel_build, kernel_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(kernel_cache.parent))  # the shared kernel cache: a build hit
    pytester.makepyfile(SUITE)
    run_dir = tmp_path / "run"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--snp-target", "qemu",
                                           f"--snp-run-dir={run_dir}", "--junitxml=junit.xml", "-rA")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*_ test_warns[[]qemu://[]] _*",
                                 "kernel splat during the test: WARNING in lkdtm_WARNING [[]warning[]]*"])
    cases = _cases(pytester.path / "junit.xml")

    case, props = cases["test_warns"]
    assert "WARNING in lkdtm_WARNING" in case.find("failure").get("message")
    assert props["splat_count"] == ["1"] and props["splat"][0].endswith("WARNING in lkdtm_WARNING")
    assert props["dmesg_evidence"] == ["ok"] and props["target"] == ["qemu://"]
    slice_text = open(props["dmesg"][0]).read()
    assert "lkdtm: Performing direct entry WARNING" in slice_text and "---[ end trace" in slice_text
    assert "snp-harness:" not in slice_text  # exactly the test's records: the markers bound it
    assert f"[[ATTACHMENT|{props['dmesg'][0]}]]" in case.find("system-out").text  # for Jenkins and GitLab
    # kvm:kvm_rmp_fault was armed (tracefs + kvm_amd with SEV code in the guest kernel) and stayed quiet.
    assert props["rmp_fault_tracing"] == ["armed"] and props["rmp_fault_events"] == ["0"]

    for quiet in ("test_quiet", "test_after"):  # the WARN is in no other test's slice
        case, props = cases[quiet]
        assert case.find("failure") is None and props["splat_count"] == ["0"]
        assert "WARNING" not in open(props["dmesg"][0]).read()
    assert (run_dir / "targets" / "qemu" / "kmsg.log").read_text().count("lkdtm_WARNING+") >= 1


def test_local_follower_slices_this_machines_kmsg(tmp_path):
    t = LocalTransport()
    f = KmsgFollower(t, tmp_path / "kmsg.log")
    f.start(timeout=30)
    if f.unavailable:
        pytest.skip(f"no per-test dmesg on this machine: {f.unavailable}")
    try:
        start = f.mark("begin local-test")
        t.run(["sh", "-c", 'printf "%s\\n" "snp-harness-test: hello from the test" > /dev/kmsg'], timeout=30)
        end = f.mark("end local-test")
        s = f.slice(start, end)
        assert [r.text for r in s.records] == ["snp-harness-test: hello from the test"]
        assert s.records[0].seq == start + 1 == end - 1
        assert "hello from the test" in (tmp_path / "kmsg.log").read_text()
    finally:
        f.close()
    assert not f._proc


# A target on which the tests run but /dev/kmsg cannot be followed: this machine over a real sshd,
# every command run as nobody (the key's forced command drops root), so kmsg is not writable.
UNCHECKED_SUITE = """
import pytest

def test_passes(target):
    assert target.transport.run(["true"], timeout=60).ok

def test_fails(target):
    assert target.transport.run(["false"], timeout=60, check=False).ok

def test_skips(target):
    pytest.skip("nothing to do here")
"""
_AS_NOBODY = ('command="cd / && exec setpriv --reuid=65534 --regid=65534 --clear-groups '
              'sh -c \\"$SSH_ORIGINAL_COMMAND\\"" ')


@pytest.fixture
def unprivileged_host(pytester, tmp_path):
    server = LoopbackSshd(tmp_path / "sshd").start()
    try:
        if os.geteuid() == 0:  # sshd reads the key at each login: from now on, commands run as nobody
            if shutil.which("setpriv") is None:
                pytest.skip("no setpriv (util-linux) to drop root in the forced command")
            auth = tmp_path / "sshd" / "authorized_keys"
            auth.write_text(_AS_NOBODY + auth.read_text())
        leases = Path(tempfile.mkdtemp(prefix="snp-harness-leases-"))  # writable by nobody
        leases.chmod(0o1777)
        known = tmp_path / "known_hosts"
        KnownHosts(known).add(host_id("127.0.0.1", server.port), server.public_host_key())
        inv, runs = pytester.path / "inv.toml", pytester.path / "runs"
        inv.write_text(f'[harness]\nknown_hosts = "{known}"\n[artifacts]\nroot = "{runs}"\n'
                       f'[hosts.plain]\naddress = "127.0.0.1"\nport = {server.port}\nuser = "{server.user}"\n'
                       f'identity_file = "{server.client_key}"\nlease_file = "{leases}/plain.lease"\n')
        yield inv
        shutil.rmtree(leases, ignore_errors=True)
    finally:
        server.stop()


def test_a_pass_without_dmesg_evidence_is_an_error(pytester, unprivileged_host):
    pytester.makepyfile(UNCHECKED_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--snp-config", str(unprivileged_host),
                                           "--snp-host", "plain", "--snp-lease-wait", "30", "--junitxml=junit.xml",
                                           "-rA")
    # The body of test_passes passed, but nothing checked the kernel's log: an error, not a pass.
    # A failure stays a failure and a skip a skip; neither claims the kernel was quiet.
    result.assert_outcomes(passed=1, failed=1, skipped=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_passes*",
                                 "*DmesgUnavailable: ssh://plain: no dmesg evidence for *test_passes*"
                                 "/dev/kmsg is not readable and writable as uid *--snp-no-evidence*"])
    cases = _cases(pytester.path / "junit.xml")
    case, props = cases["test_passes"]
    assert "no dmesg evidence" in case.find("error").get("message")
    assert props["dmesg_evidence"][0].startswith("unavailable: /dev/kmsg is not readable and writable as uid ")
    for name in ("test_fails", "test_skips"):
        case, props = cases[name]
        assert case.find("error") is None and props["dmesg_evidence"][0].startswith("unavailable: ")


def test_no_evidence_asked_for_passes_and_says_so(pytester, unprivileged_host):
    pytester.makepyfile(UNCHECKED_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--snp-config", str(unprivileged_host),
                                           "--snp-host", "plain", "--snp-lease-wait", "30", "--snp-no-evidence",
                                           "--junitxml=junit.xml")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    cases = _cases(pytester.path / "junit.xml")
    assert cases["test_passes"][1]["dmesg_evidence"] == ["off: --snp-no-evidence"]
