"""THP control on a target: set the sysfs knobs for a test and put them back, force splits, count vmstat.

Every change is undone on exit, even when the test fails, so one test's THP mode
never leaks into the next.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Mapping

from harness.transport.base import Transport, write_value

THP_DIR = "/sys/kernel/mm/transparent_hugepage"
KNOBS = {
    "enabled": f"{THP_DIR}/enabled",
    "defrag": f"{THP_DIR}/defrag",
    "shmem_enabled": f"{THP_DIR}/shmem_enabled",
    "khugepaged_defrag": f"{THP_DIR}/khugepaged/defrag",
    "khugepaged_pages_to_scan": f"{THP_DIR}/khugepaged/pages_to_scan",
    "khugepaged_scan_sleep_millisecs": f"{THP_DIR}/khugepaged/scan_sleep_millisecs",
    "khugepaged_alloc_sleep_millisecs": f"{THP_DIR}/khugepaged/alloc_sleep_millisecs",
}
# khugepaged scanning as fast as it goes: collapses happen within a test, not minutes later.
KHUGEPAGED_EAGER = {"khugepaged_scan_sleep_millisecs": "0", "khugepaged_alloc_sleep_millisecs": "0",
                    "khugepaged_pages_to_scan": "65536"}
SPLIT_HUGE_PAGES = "/sys/kernel/debug/split_huge_pages"
_SELECTED = re.compile(r"\[([^\]]+)\]")


def knob_value(text: str) -> str:
    """The current setting: the bracketed choice of an enum knob ("always [madvise] never"), else the text."""
    m = _SELECTED.search(text)
    return m.group(1) if m else text.strip()


def parse_vmstat(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out


def vmstat_delta(before: Mapping[str, int], after: Mapping[str, int], prefixes=("thp_",)) -> dict[str, int]:
    """The counters (with one of the prefixes) that moved between two /proc/vmstat readings."""
    return {k: after[k] - before.get(k, 0) for k in after
            if k.startswith(prefixes) and after[k] != before.get(k, 0)}


def read_vmstat(transport: Transport) -> dict[str, int]:
    return parse_vmstat(transport.run(["cat", "/proc/vmstat"], timeout=30).stdout)


@contextmanager
def thp_settings(transport: Transport, **values: str) -> Iterator[dict[str, str]]:
    """Set THP knobs (names from KNOBS) inside the block; yields the previous values."""
    unknown = set(values) - set(KNOBS)
    if unknown:
        raise ValueError(f"unknown THP knob(s) {sorted(unknown)}; known: {', '.join(KNOBS)}")
    previous: dict[str, str] = {}
    try:
        for name, value in values.items():
            previous[name] = knob_value(transport.run(["cat", KNOBS[name]], timeout=30).stdout)
            write_value(transport, KNOBS[name], value)
            now = knob_value(transport.run(["cat", KNOBS[name]], timeout=30).stdout)
            if now != value:
                raise ValueError(f"{KNOBS[name]}: wrote {value!r}, reads back {now!r}")
        yield dict(previous)
    finally:
        for name, value in reversed(previous.items()):
            write_value(transport, KNOBS[name], value)


def split_huge_pages(transport: Transport, pid: int, start: int, end: int) -> None:
    """Force a split of the THPs mapped at [start, end) in process pid (debugfs)."""
    write_value(transport, SPLIT_HUGE_PAGES, f"{pid},{start:#x},{end:#x}")
