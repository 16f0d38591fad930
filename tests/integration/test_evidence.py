"""Per-test evidence for real: a WARN provoked on the QEMU target fails the test that caused it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from harness.evidence.dmesg import KmsgFollower
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
