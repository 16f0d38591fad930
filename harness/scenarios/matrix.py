"""The conversion matrix: private_mem_conversions_test over backing x memslots x vCPUs, as data."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

BACKINGS = ("anonymous", "anonymous_thp", "shmem", "anonymous_hugetlb_2mb")
MEMSLOTS = (1, 4)
VCPUS = (1, 2)
HUGETLB = {"anonymous_hugetlb_2mb", "shared_hugetlb"}  # need 2 MiB pages reserved first


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


def full_matrix() -> list[ConversionCell]:
    return [ConversionCell(b, m, n) for b, m, n in itertools.product(BACKINGS, MEMSLOTS, VCPUS)]


def ci_matrix() -> list[ConversionCell]:
    """Every backing once plainly and once at the widest corner (4 memslots, 2 vCPUs)."""
    return [c for c in full_matrix() if (c.memslots, c.vcpus) in ((1, 1), (4, 2))]


MATRICES = {"ci": ci_matrix, "full": full_matrix}
