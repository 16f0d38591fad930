"""private_mem_conversions_test over the conversion matrix (--snp-matrix ci|full)."""

from __future__ import annotations

import pytest

from harness.scenarios.hugepages import HugepagesUnavailable, reserved_hugepages
from harness.scenarios.matrix import MATRICES

pytestmark = pytest.mark.needs("sw_protected_vm")


def pytest_generate_tests(metafunc):
    if "cell" in metafunc.fixturenames:
        cells = MATRICES[metafunc.config.getoption("--snp-matrix")]()
        metafunc.parametrize("cell", cells, ids=[c.id for c in cells])


def test_private_mem_conversions(target, selftest, cell):
    if not cell.hugetlb_pages_2m:
        selftest("private_mem_conversions_test", *cell.args, timeout=600)
        return
    if not target.capabilities().has("hugetlb_2m"):
        pytest.skip(f"{target.name}: {target.capabilities().missing('hugetlb_2m')}")
    try:
        with reserved_hugepages(target.transport, cell.hugetlb_pages_2m):
            selftest("private_mem_conversions_test", *cell.args, timeout=600)
    except HugepagesUnavailable as e:
        pytest.skip(f"{target.name}: {e}")


@pytest.mark.parametrize("mode", ["always", "madvise", "never"])
def test_private_mem_conversions_under_thp_mode(selftest, thp, mode):
    """The widest anonymous_thp cell with THP `enabled` forced to each mode (restored afterwards)."""
    thp.set(enabled=mode)
    selftest("private_mem_conversions_test", "-s", "anonymous_thp", "-m", "4", "-n", "2", timeout=600)
