"""kbuild output readers, on real build logs."""

from __future__ import annotations

import pytest

from harness.kernel.buildlog import count_steps, first_errors, is_step


@pytest.mark.parametrize("log, expected", [
    ("kernel-6.12-compile-error.log", ["../arch/x86/kvm/svm/sev.c:54:1: error: expected ‘,’ or ‘;’ before ‘int’"]),
    ("kernel-6.12-link-error.log", ["ld: vmlinux.o: in function `snp_harness_link':",
                                    "(.text+0x7b902): undefined reference to `snp_harness_missing'"]),
])
def test_first_errors_on_real_logs(data_dir, log, expected):
    lines = (data_dir / "buildlog" / log).read_text().splitlines()
    assert first_errors(lines)[: len(expected)] == expected


def test_make_errors_are_the_fallback():
    lines = ["  CC      a.o", "make[1]: *** [Makefile:1: a.o] Error 1", "make: *** [Makefile:2: all] Error 2"]
    assert first_errors(lines) == lines[1:]


def test_nothing_found_in_a_clean_log():
    assert first_errors(["  CC      init/main.o", "  LD      vmlinux", "Kernel: arch/x86/boot/bzImage is ready"]) == []


@pytest.mark.parametrize("line, step", [
    ("  CC      arch/x86/kvm/svm/sev.o", True),
    ("  LD [M]  fs/foo.ko", True),
    ("  OBJCOPY arch/x86/boot/vmlinux.bin", True),
    ("make[1]: Entering directory '/x'", False),
    ("../arch/x86/kvm/svm/sev.c:54:1: error: expected", False),
    ("  GEN     Makefile", True),
])
def test_is_step(line, step):
    assert is_step(line) is step


def test_count_steps_on_real_log(data_dir):
    lines = (data_dir / "buildlog" / "kernel-6.12-link-error.log").read_text().splitlines()
    assert count_steps(lines) == sum(1 for ln in lines if ln.startswith("  ") and ln[2:3].isupper())
