"""The stage script under each shell a host may have (dash, bash, busybox ash), run locally."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from harness.errors import ConfigError
from harness.targets.staging import REFUSED, STAGE_SCRIPT, parse_sha256sum, stage_components

SHELLS = [s for s in (["dash"], ["bash", "--posix"], ["busybox", "sh"]) if shutil.which(s[0])]


def stage(shell, root: str, key: str = "k1") -> subprocess.CompletedProcess:
    return subprocess.run([*shell, "-c", STAGE_SCRIPT, "sh", *stage_components(root, key)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_creates_each_missing_directory_private_and_refuses_open_ones(shell, tmp_path):
    r = stage(shell, f"{tmp_path}/a/b")
    assert r.returncode == 0, r.stderr
    for d in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "k1"):
        assert d.stat().st_mode & 0o7777 == 0o700
    assert stage(shell, f"{tmp_path}/a/b").returncode == 0  # again: nothing to do
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o775)
    r = stage(shell, f"{tmp_path}/open")
    assert r.returncode == REFUSED and not (tmp_path / "open" / "k1").exists()
    assert r.stderr == (f"snp-harness: will not stage files in {tmp_path}/open/k1: {tmp_path}/open is writable "
                        "by group or others (mode 775): chmod go-w it\n")
    (tmp_path / "sticky").mkdir()
    (tmp_path / "sticky").chmod(0o1777)
    assert stage(shell, f"{tmp_path}/sticky").returncode == 0
    os.symlink(tmp_path / "a", tmp_path / "sticky" / "link")
    r = stage(shell, f"{tmp_path}/sticky/link")
    assert r.returncode == REFUSED and "sticky/link is a symbolic link, not a directory" in r.stderr


@pytest.mark.parametrize("root, key", [("var/lib/stage", "k"), ("/var/../etc", "k"), ("/var/lib", "a b"),
                                       ("/var/lib", "../x"), ("/var/o'neil", "k")])
def test_only_plain_absolute_paths(root, key):
    with pytest.raises(ConfigError, match="stage directory"):
        stage_components(root, key)


def test_sha256sum_output():
    a, b = "ab" * 32, "cd" * 32
    text = f"{a}  /s/bzImage\n{b} */s/initrd\nsha256sum: /s/x: No such file or directory\n"
    assert parse_sha256sum(text) == {"/s/bzImage": a, "/s/initrd": b}


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_prune_keeps_the_build_being_installed_and_the_newest_others(shell, tmp_path):
    from harness.targets.staging import PRUNE_SCRIPT

    names = [f"{i:024x}" for i in range(6)]
    for age, name in enumerate(names):  # names[0] is the newest
        (tmp_path / name).mkdir()
        (tmp_path / name / "bzImage").write_text("x")
        os.utime(tmp_path / name, (1_700_000_000 - age * 60,) * 2)
    (tmp_path / "not-a-build").mkdir()
    current = names[5]  # the oldest, but it is the one being installed
    r = subprocess.run([*shell, "-c", PRUNE_SCRIPT, "sh", str(tmp_path), current, "2"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names[0], names[1], current, "not-a-build"])
