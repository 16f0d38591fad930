"""The initramfs holds the target's (or guest's) dropbear private host key: never readable by others."""

from __future__ import annotations

import os
import shutil

import pytest

from harness.targets.initramfs import InitramfsSpec, build_initramfs, generate_host_key

HOST_TOOLS = ("/bin/busybox", "/usr/sbin/dropbear", "/usr/bin/dropbearkey", "/usr/lib/openssh/sftp-server")
pytestmark = pytest.mark.skipif(
    not all(os.access(t, os.X_OK) for t in HOST_TOOLS) or not shutil.which("ldd"),
    reason="needs busybox-static, dropbear-bin and openssh-sftp-server (ci/bootstrap)")
CLIENT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0aVosIf4kFPRLqeAQ84TNhQzFR3iKXy492w8zsIGmn harness@test"


@pytest.fixture
def usual_umask():
    old = os.umask(0o022)  # what most shells have: files 0644, directories 0755
    yield
    os.umask(old)


def perms(path) -> int:
    return path.stat().st_mode & 0o7777


def test_image_is_0600_in_a_0700_directory(tmp_path, usual_umask):
    work = tmp_path / "work"
    work.mkdir()
    assert perms(work) == 0o755
    key, _ = generate_host_key(work)
    assert perms(work) == 0o700
    spec = InitramfsSpec(authorized_keys=CLIENT_KEY, host_key=key)
    for dest in (work / "initramfs.cpio.gz", tmp_path / "new" / "dir" / "guest-initramfs.cpio.gz"):
        info = build_initramfs(spec, dest)
        assert perms(info.path) == 0o600 and perms(dest.parent) == 0o700
    # Rebuilt over an old, world-readable image: the new one is private too.
    old = work / "initramfs.cpio.gz"
    old.chmod(0o644)
    assert perms(build_initramfs(spec, old).path) == 0o600
