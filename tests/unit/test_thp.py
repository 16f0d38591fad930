"""THP knob and vmstat parsing, and that thp_settings restores what it changed."""

from __future__ import annotations

import pytest

from harness.scenarios.thp import KNOBS, knob_value, parse_vmstat, thp_settings, vmstat_delta
from harness.transport.local import LocalTransport


@pytest.mark.parametrize("text, value", [
    ("always [madvise] never\n", "madvise"),
    ("always within_size advise [never] deny force\n", "never"),
    ("4096\n", "4096"),
])
def test_knob_value(text, value):
    assert knob_value(text) == value


def test_vmstat_delta_keeps_moved_thp_counters():
    before = parse_vmstat("nr_free_pages 10\nthp_split_pmd 2\nthp_collapse_alloc 0\nthp_fault_alloc 5\n")
    after = parse_vmstat("nr_free_pages 3\nthp_split_pmd 4\nthp_collapse_alloc 0\nthp_fault_alloc 5\nthp_new 1\n")
    assert vmstat_delta(before, after) == {"thp_split_pmd": 2, "thp_new": 1}


class FileKnobs(LocalTransport):
    """A LocalTransport whose THP knobs live in files of a temp dir (the command is real sh/cat)."""

    def __init__(self, root):
        self.root = root

    def run(self, argv, **kw):
        argv = [a.replace("/sys/kernel/mm/transparent_hugepage", str(self.root)) for a in argv]
        return super().run(argv, **kw)


def test_thp_settings_restores_even_on_failure(tmp_path):
    (tmp_path / "enabled").write_text("always [madvise] never\n")
    (tmp_path / "defrag").write_text("[always] defer madvise never\n")
    t = FileKnobs(tmp_path)
    # A plain file reads back what was written, so the read-back check sees "never".
    with pytest.raises(RuntimeError):
        with thp_settings(t, enabled="never", defrag="madvise") as previous:
            assert previous == {"enabled": "madvise", "defrag": "always"}
            assert (tmp_path / "enabled").read_text() == "never\n"
            raise RuntimeError("the test failed")
    assert (tmp_path / "enabled").read_text() == "madvise\n"
    assert (tmp_path / "defrag").read_text() == "always\n"


def test_unknown_knob_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown THP knob"):
        with thp_settings(FileKnobs(tmp_path), enbled="always"):
            pass
    assert set(KNOBS) >= {"enabled", "defrag", "shmem_enabled"}
