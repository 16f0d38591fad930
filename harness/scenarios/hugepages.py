"""Reserve hugetlb pages on a target for a test, and give the old count back afterwards."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator

from harness.transport.base import Transport, write_value

NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"  # the default size: 2 MiB on x86


class HugepagesUnavailable(Exception):
    """The target could not reserve the pages (fragmented or too little memory)."""


def meminfo_hugepages(text: str) -> int:
    m = re.search(r"^HugePages_Total:\s+(\d+)", text, re.M)
    return int(m.group(1)) if m else 0


@contextmanager
def reserved_hugepages(transport: Transport, count: int) -> Iterator[int]:
    """At least `count` 2 MiB pages reserved inside the block; the old setting restored after."""
    before = transport.run(["cat", NR_HUGEPAGES], timeout=30).stdout.strip()
    if int(before or 0) >= count:
        yield int(before)
        return
    write_value(transport, NR_HUGEPAGES, str(count))
    try:
        got = meminfo_hugepages(transport.run(["cat", "/proc/meminfo"], timeout=30).stdout)
        if got < count:
            raise HugepagesUnavailable(f"asked for {count} 2 MiB hugetlb pages, the kernel reserved {got}; "
                                       "free memory on the target, or reserve them at boot (hugepages=N)")
        yield got
    finally:
        write_value(transport, NR_HUGEPAGES, before)
