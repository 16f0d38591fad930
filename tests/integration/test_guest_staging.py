"""Where a guest's kernel and initramfs (which holds the guest's private host key) go on the target:
a directory mktemp -d made, 0700, against a real sshd."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from conftest import enrolled_transport
from harness.errors import BootError
from harness.targets.guest import Guest, GuestConfig, GuestImage


def test_guest_files_are_uploaded_to_a_fresh_private_directory(sshd, tmp_path):
    record = tmp_path / "seen"
    # A QEMU that notes the upload directory's mode, owner and contents, then fails to start.
    qemu = tmp_path / "qemu"
    qemu.write_text('#!/bin/sh\nwhile [ "$1" != -kernel ]; do shift; done\nd=${2%/*}\n'
                    f'{{ echo "$d"; stat -c "%a %u" "$d"; ls "$d"; }} > {record}\nexit 1\n')
    qemu.chmod(0o755)
    kernel, initrd = tmp_path / "bzImage", tmp_path / "initramfs.cpio.gz"
    kernel.write_bytes(b"kernel")
    initrd.write_bytes(b"an initramfs with the guest's private host key")
    t = enrolled_transport(sshd, tmp_path / "known_hosts")
    guest = Guest(SimpleNamespace(transport=t, name=t.name), tmp_path / "guest",
                  GuestConfig(qemu=str(qemu), boot_timeout_s=60))
    try:
        with pytest.raises(BootError, match="exited before the guest was up"):
            guest.boot(kernel, GuestImage(initrd, tmp_path / "unused_key", ""))
    finally:
        guest.close()
        t.close()
    where, perms, *files = record.read_text().splitlines()
    assert where.startswith("/tmp/snp-harness-guest.")
    assert perms == f"700 {os.getuid()}"
    assert files == ["bzImage", "initramfs.cpio.gz"]
    assert not os.path.exists(where)  # close() removed it
