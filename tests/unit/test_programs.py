"""Selftest programs found through the build's manifest, whatever directory the tree used."""

from __future__ import annotations

import pytest

from harness.errors import InfraError
from harness.scenarios.programs import Programs, parse_manifest


def test_find_by_name_in_either_layout():
    old = Programs(("guest_memfd_test", "guests/kvm_caps_probe", "x86_64/private_mem_conversions_test"))
    new = Programs(("guest_memfd_test", "guests/kvm_caps_probe", "x86/private_mem_conversions_test"))
    assert old.find("private_mem_conversions_test") == "x86_64/private_mem_conversions_test"
    assert new.find("private_mem_conversions_test") == "x86/private_mem_conversions_test"
    assert new.find("guests/kvm_caps_probe") == "guests/kvm_caps_probe"
    assert new.find("kvm_caps_probe") == "guests/kvm_caps_probe"
    assert new.find("x86_64/private_mem_conversions_test") is None  # a stale path is not guessed
    assert new.find("no_such_test") is None


def test_ambiguous_name_must_be_a_path():
    both = Programs(("x86/dirty_log_test", "arm64/dirty_log_test"))
    with pytest.raises(InfraError, match="ambiguous.*arm64/dirty_log_test"):
        both.find("dirty_log_test")
    assert both.find("arm64/dirty_log_test") == "arm64/dirty_log_test"


def test_parse_manifest():
    text = '{"format": 1, "files": [{"path": "x86/a", "sha256": "00", "size": 1}]}'
    assert parse_manifest(text, "t").paths == ("x86/a",)
    for bad in ("", "[]", '{"files": [{"nopath": 1}]}'):
        with pytest.raises(InfraError, match="not a selftests manifest"):
            parse_manifest(bad, "qemu:/selftests/manifest.json")
