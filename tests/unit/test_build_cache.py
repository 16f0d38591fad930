"""The build cache: key digests, file and series digests, and BuildCache's entries and tree-id memo."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness.kernel.cache import BuildCache, BuildKey, files_digest, series_digest

KEY = BuildKey(
    tree_id="4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    config_inputs="c0ffee",
    compiler="gcc (Debian 12.2.0-14+deb12u1) 12.2.0",
    make_args=("-j2", "LOCALVERSION=-snp"),
    guests="guests0",
    recipe=1,
)
PATCH = b"--- a/a.c\n+++ b/a.c\n@@ -1 +1 @@\n-x\n+y\n"
BASE = "2a96ff8b2fc10df1ad164600dcae259917dcb240"


def write_files(directory: Path, files: list[tuple[str, bytes]]) -> list[Path]:
    """Each file in its own subdirectory, so a list may hold two files of the same name."""
    paths = []
    for n, (name, content) in enumerate(files):
        path = directory / str(n) / name
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
        paths.append(path)
    return paths


# ---- BuildKey -----------------------------------------------------------------------------------

def test_digest_is_stable():
    # Pinned: a different value means every cached build is orphaned (fine when meant: bump RECIPE_VERSION).
    assert KEY.digest() == "7930f62285a19bd5cf3d5769"
    assert KEY.digest() == KEY.digest() == dataclasses.replace(KEY).digest()


CHANGES = [
    ("tree_id", "4b825dc642cb6eb9a060e54bf8d69288fbee4905"),
    ("config_inputs", "c0ffef"),
    ("compiler", "gcc (Debian 12.2.0-14+deb12u2) 12.2.0"),
    ("make_args", ("LOCALVERSION=-snp", "-j2")),  # order matters
    ("make_args", ("-j2 LOCALVERSION=-snp",)),  # so do argument boundaries
    ("make_args", ("-j2",)),
    ("make_args", ()),
    ("guests", "guests1"),
    ("recipe", 2),
]


@pytest.mark.parametrize("field, value", CHANGES, ids=[f"{f}={v!r}" for f, v in CHANGES])
def test_digest_changes_with_any_field(field, value):
    assert dataclasses.replace(KEY, **{field: value}).digest() != KEY.digest()


def test_every_field_is_in_the_table():
    assert {f.name for f in dataclasses.fields(BuildKey)} == {f for f, _ in CHANGES}


# ---- files_digest / series_digest ---------------------------------------------------------------

FILES = [("a.c", b"int a;\n"), ("b.c", b"int b;\n")]
OTHER_FILES = {
    "order": [FILES[1], FILES[0]],
    "name": [("a2.c", b"int a;\n"), FILES[1]],
    "content": [("a.c", b"int a; \n"), FILES[1]],
    "bytes-moved-across-files": [("a.c", b"int a;\nint b;\n"), ("b.c", b"")],
    "one-less": [FILES[0]],
    "one-more": [*FILES, ("c.c", b"")],
    "none": [],
}


@pytest.mark.parametrize("other", OTHER_FILES.values(), ids=OTHER_FILES.keys())
def test_files_digest_depends_on_names_contents_and_order(tmp_path, other):
    assert files_digest(write_files(tmp_path / "x", other)) != files_digest(write_files(tmp_path / "y", FILES))


def test_files_digest_ignores_directories(tmp_path):
    # A series split into a new work directory on every run must keep its digest.
    assert files_digest(write_files(tmp_path / "run1", FILES)) == files_digest(write_files(tmp_path / "run2", FILES))


def test_files_digest_is_unambiguous_with_nul_bytes(tmp_path):
    one = write_files(tmp_path / "one", [("a", b"x\0b\0y")])
    two = write_files(tmp_path / "two", [("a", b"x"), ("b", b"y")])
    assert files_digest(one) != files_digest(two)


def test_series_digest_same_inputs_same_key(tmp_path):
    [p1] = write_files(tmp_path / "1", [("0001.patch", PATCH)])
    [p2] = write_files(tmp_path / "2", [("0001.patch", PATCH)])
    assert series_digest(BASE, [p1]) == series_digest(BASE, [p2])


def test_series_digest_changes_with_base(tmp_path):
    patches = write_files(tmp_path, [("0001.patch", PATCH)])
    assert series_digest(BASE, patches) != series_digest(BASE[:-1] + "1", patches)
    assert series_digest(BASE, patches) != series_digest(BASE, [])


def test_series_digest_changes_with_any_patch_byte(tmp_path):
    [patch] = write_files(tmp_path, [("0001.patch", PATCH)])
    original = series_digest(BASE, [patch])
    unchanged = []
    for i in range(len(PATCH)):
        patch.write_bytes(PATCH[:i] + bytes([PATCH[i] ^ 1]) + PATCH[i + 1:])
        if series_digest(BASE, [patch]) == original:
            unchanged.append(i)
    assert unchanged == []


# ---- BuildCache ---------------------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path) -> BuildCache:
    return BuildCache(tmp_path / "cache")


def test_lookup_miss_on_an_empty_cache(cache):
    assert cache.lookup(KEY.digest()) is None


@pytest.mark.parametrize("files", [
    {},
    {"bzImage": b"kernel"},
    {"bzImage": b"kernel", "metadata.json": b'{"tree_id": "4b82'},
], ids=["empty-dir", "no-metadata", "truncated-metadata"])
def test_lookup_treats_a_half_written_entry_as_a_miss(cache, files):
    key = KEY.digest()
    cache.entry(key).mkdir(parents=True)
    for name, content in files.items():
        (cache.entry(key) / name).write_bytes(content)
    assert cache.lookup(key) is None


def test_staging_then_commit_publishes_atomically(cache):
    key = KEY.digest()
    staging = cache.staging(key)
    assert (staging.parent, staging.name.startswith(f".tmp-{key}-"), list(staging.iterdir())) == (
        cache.builds, True, [])
    (staging / "bzImage").write_bytes(b"kernel")
    (staging / "metadata.json").write_text(json.dumps({"key": key}))
    assert cache.lookup(key) is None  # a filled staging directory is not an entry

    inode = staging.stat().st_ino
    entry = cache.commit(key, staging)

    assert entry == cache.entry(key)
    assert entry.stat().st_ino == inode  # renamed, not copied
    assert not staging.exists()
    assert cache.lookup(key) == {"key": key}
    assert (entry / "bzImage").read_bytes() == b"kernel"
    assert [p.name for p in cache.builds.iterdir()] == [key]


def test_staging_starts_empty_after_a_crashed_attempt(cache):
    key = KEY.digest()
    (cache.staging(key) / "bzImage").write_bytes(b"half a kernel")
    assert list(cache.staging(key).iterdir()) == []


def test_commit_replaces_a_broken_entry(cache):
    key = KEY.digest()
    cache.entry(key).mkdir(parents=True)
    (cache.entry(key) / "stale").write_bytes(b"from a build that died")
    staging = cache.staging(key)
    (staging / "metadata.json").write_text('{"ok": true}')

    entry = cache.commit(key, staging)

    assert sorted(p.name for p in entry.iterdir()) == ["metadata.json"]
    assert cache.lookup(key) == {"ok": True}


def test_remembered_tree_round_trip(cache):
    series_key = "0" * 64
    assert cache.remembered_tree(series_key) is None
    cache.remember_tree(series_key, "4b825dc642cb6eb9a060e54bf8d69288fbee4904")
    assert cache.remembered_tree(series_key) == "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    cache.remember_tree(series_key, "d8329fc1cc938780ffdd9f94e0d364e0ea74f579")
    assert cache.remembered_tree(series_key) == "d8329fc1cc938780ffdd9f94e0d364e0ea74f579"
    assert cache.remembered_tree("1" * 64) is None
    assert [p.name for p in cache.memo.iterdir()] == [series_key]  # no temporary files left behind


def test_remembered_tree_empty_file_is_a_miss(cache):
    cache.memo.mkdir(parents=True)
    (cache.memo / "k").write_text("\n")
    assert cache.remembered_tree("k") is None
