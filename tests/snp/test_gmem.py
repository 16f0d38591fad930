"""Our own guest_memfd selftests (guests/): misaligned memslots, forced THP split and collapse.

Each program's exit code only says nothing failed; every one of its subtests must pass
(subtests=NO_SKIPS: none of these scenarios declares a skip), so a half-run scenario fails.
"""

from __future__ import annotations

import pytest

from harness.scenarios.subtests import NO_SKIPS


@pytest.mark.needs("sw_protected_vm", "guest_memfd")
def test_gmem_misaligned_conversions(selftest):
    selftest("guests/gmem_misaligned_conversions_test", timeout=600, subtests=NO_SKIPS)


@pytest.mark.needs("sw_protected_vm", "gmem_hugepages")
def test_gmem_misaligned_conversions_huge_folios(selftest, target):
    """The same conversions with guest_memfd on huge folios (a series under test adds them)."""
    selftest("guests/gmem_misaligned_conversions_test",
             "-f", target.capabilities().gmem_huge_flags, timeout=600, subtests=NO_SKIPS)


@pytest.mark.needs("sw_protected_vm", "guest_memfd", "gmem_mmap")
def test_gmem_misaligned_conversions_gmem_mmap_shared_view(selftest):
    """The same conversions with the guest_memfd's own mmap as the shared view (-m: in place).

    gmem_mmap only says such a guest_memfd can be created and mmap()ed; where KVM keeps its pages
    private to the host (mainline, for VMs with private memory) the program skips and says so."""
    r = selftest("guests/gmem_misaligned_conversions_test", "-m", timeout=600, subtests=NO_SKIPS)
    assert all(t.name.startswith("mmap_offset_") for t in r.ktap.children)


@pytest.mark.needs("sw_protected_vm", "guest_memfd", "gmem_mmap", "gmem_hugepages")
def test_gmem_misaligned_conversions_gmem_mmap_huge_folios(selftest, target):
    """In place, on huge guest_memfd folios (a series under test adds them)."""
    selftest("guests/gmem_misaligned_conversions_test",
             "-m", "-f", target.capabilities().gmem_huge_flags, timeout=600, subtests=NO_SKIPS)


@pytest.mark.needs("sw_protected_vm", "guest_memfd", "thp", "split_huge_pages")
def test_gmem_thp_split_collapse(selftest, request):
    r = selftest("guests/gmem_thp_split_collapse_test", timeout=600, subtests=NO_SKIPS)
    # The vmstat deltas the test printed become properties of this testcase.
    for line in r.stdout.splitlines():
        if line.startswith("# vmstat ") and not line.endswith(": +0"):
            name, delta = line[len("# vmstat "):].split(": ", 1)
            request.node.user_properties.append((f"vmstat_{name}", delta))


@pytest.mark.needs("snp")
def test_snp_gmem_conversions(selftest):
    """The SNP counterpart: an SNP guest converts through GHCB page-state changes + PVALIDATE.

    Compiled in every build; it has not run on SNP hardware yet (see README).
    """
    selftest("guests/snp_gmem_conversions_test", timeout=900, subtests=NO_SKIPS)


@pytest.mark.needs("snp", "gmem_hugepages")
def test_snp_gmem_conversions_huge_folios(selftest, target):
    """With huge gmem folios a 2M RMP entry must be possible at the 2M-aligned offset (-H) and
    never at the misaligned ones. Never run on SNP hardware yet."""
    selftest("guests/snp_gmem_conversions_test",
             "-H", "-f", target.capabilities().gmem_huge_flags, timeout=900, subtests=NO_SKIPS)


@pytest.mark.needs("snp", "split_huge_pages")
def test_snp_gmem_thp_split_collapse(selftest):
    """The SNP counterpart of the THP split/collapse test; never run on SNP hardware yet."""
    selftest("guests/snp_gmem_thp_split_collapse_test", timeout=900, subtests=NO_SKIPS)
