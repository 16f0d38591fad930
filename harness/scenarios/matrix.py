"""The conversion matrix: private_mem_conversions_test over backing x memslots x vCPUs, as data."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

BACKINGS = ("anonymous", "anonymous_thp", "shmem", "anonymous_hugetlb_2mb")
MEMSLOTS = (1, 4)
VCPUS = (1, 2)
HUGETLB = {"anonymous_hugetlb_2mb", "shared_hugetlb"}  # need 2 MiB pages reserved first
HUGE_BACKED = HUGETLB | {"anonymous_thp"}  # the test aligns their memslots to 2 MiB
# private_mem_conversions_test gives each vCPU align_up(2M + 4K, 2M) = 4 MiB and splits the
# total evenly over the memslots (6.12's test_mem_conversions()).
PER_VCPU_BYTES = 4 << 20


@dataclass(frozen=True)
class ConversionCell:
    backing: str
    memslots: int
    vcpus: int

    @property
    def id(self) -> str:
        return f"{self.backing}-m{self.memslots}-n{self.vcpus}"

    @property
    def args(self) -> tuple[str, ...]:
        return ("-s", self.backing, "-m", str(self.memslots), "-n", str(self.vcpus))

    @property
    def hugetlb_pages_2m(self) -> int:
        """2 MiB hugetlb pages to reserve before the cell runs (64 covered -n 2 -m 4 when measured)."""
        return 64 if self.backing in HUGETLB else 0


    @property
    def valid(self) -> bool:
        """Whether the test can lay the cell out: each memslot a whole number of backing pages.

        With 2 MiB backing pages, 1 vCPU over 4 memslots gives 1 MiB slots, which the
        selftest library rejects (guest_paddr not aligned): a set-up error, not a kernel bug.
        """
        page = 2 << 20 if self.backing in HUGE_BACKED else 4096
        total = PER_VCPU_BYTES * self.vcpus
        return total % self.memslots == 0 and (total // self.memslots) % page == 0


def full_matrix() -> list[ConversionCell]:
    cells = (ConversionCell(b, m, n) for b, m, n in itertools.product(BACKINGS, MEMSLOTS, VCPUS))
    return [c for c in cells if c.valid]


def ci_matrix() -> list[ConversionCell]:
    """Every backing once plainly and once at the widest corner (4 memslots, 2 vCPUs)."""
    return [c for c in full_matrix() if (c.memslots, c.vcpus) in ((1, 1), (4, 2))]


MATRICES = {"ci": ci_matrix, "full": full_matrix}
