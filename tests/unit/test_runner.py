"""Selftest verdicts from exit status and captured 6.12 output; the conversion matrix."""

from __future__ import annotations

import pytest

from harness.scenarios.hugepages import meminfo_hugepages
from harness.scenarios.matrix import ci_matrix, full_matrix
from harness.scenarios.runner import SelftestStatus, classify, log_name


@pytest.mark.parametrize("log, exit_status, status, reason", [
    ("selftest/guest_memfd_test-qemu-tcg-6.12-pass.log", 0, SelftestStatus.PASS, ""),
    ("selftest/x86_64_sev_smoke_test-qemu-tcg-6.12-skip-no-sev.log", 4, SelftestStatus.SKIP,
     "Requirement not met: kvm_cpu_has(X86_FEATURE_SEV)"),
    ("selftest/x86_64_private_mem_conversions_test-qemu-tcg-6.12-hugetlb_1gb-assert.log", 254, SelftestStatus.FAIL,
     "lib/kvm_util.c:1000: region->mmap_start != MAP_FAILED"),
    ("ktap/kvm_caps_probe-kvm-pvm-6.18.log", 0, SelftestStatus.PASS, ""),
    ("ktap/kvm_caps_probe-kvm-pvm-6.18-truncated.log", 0, SelftestStatus.FAIL, "KTAP reports 0 failed, 4 crashed"),
])
def test_classify_real_output(data_dir, log, exit_status, status, reason):
    r = classify(("/selftests/x",), exit_status, (data_dir / log).read_text(), "", 1.0)
    assert r.status is status
    assert reason in r.reason


def test_a_failure_without_an_assertion_shows_the_tail():
    out = "\n".join(f"line {i}" for i in range(30))
    r = classify(("/selftests/x",), 1, out, "", 0.1)
    assert r.status is SelftestStatus.FAIL and r.reason.startswith("exit 1") and "line 29" in r.reason
    assert "line 10\n" not in r.reason


def test_killed_by_a_signal_is_a_failure():
    r = classify(("/selftests/x",), -1, "", "", 0.1)
    assert r.status is SelftestStatus.FAIL and "killed by a signal" in r.reason


def test_log_names_are_flat_and_readable():
    assert log_name("x86_64/private_mem_conversions_test", ["-s", "shmem", "-m", "4"]) == \
        "x86_64_private_mem_conversions_test_-s_shmem_-m_4.log"


def test_matrix_ids_and_args():
    full = full_matrix()
    # 4 backings x 2 memslot counts x 2 vCPU counts, less the two 2 MiB-backed cells that cannot
    # be laid out (1 vCPU over 4 memslots gives 1 MiB slots).
    assert len(full) == 14 and len({c.id for c in full}) == 14
    assert {c.id for c in full}.isdisjoint({"anonymous_thp-m4-n1", "anonymous_hugetlb_2mb-m4-n1"})
    assert "shmem-m4-n1" in {c.id for c in full}
    cell = next(c for c in full if c.id == "anonymous_thp-m4-n2")
    assert cell.args == ("-s", "anonymous_thp", "-m", "4", "-n", "2")
    ci = ci_matrix()
    assert {c.backing for c in ci} == {c.backing for c in full} and set(ci) < set(full)
    assert all(c.hugetlb_pages_2m == (64 if "hugetlb" in c.backing else 0) for c in full)


def test_meminfo_hugepages():
    assert meminfo_hugepages("MemTotal: 1 kB\nHugePages_Total:      64\nHugePages_Free: 64\n") == 64
    assert meminfo_hugepages("MemTotal: 1 kB\n") == 0
