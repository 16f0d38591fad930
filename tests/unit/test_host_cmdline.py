"""The next kernel's command line: /proc/cmdline split and words quoted the way the kernel does it
(next_arg() in lib/cmdline.c: double quotes only, opening anywhere in a word, no escapes)."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.targets.host import next_cmdline
from harness.targets.kernel_cmdline import (extra_arg, grub_linux_args, kernel_word, next_cmdline_args,
                                            split_kernel_cmdline)

# Captured from lab hosts and this machine (host names scrubbed); /proc/cmdline ends in a newline.
DEBIAN = "BOOT_IMAGE=/boot/vmlinuz-6.12.117+deb12-amd64 root=/dev/mapper/vg0-root ro quiet\n"
DYNDBG = ('BOOT_IMAGE=/boot/vmlinuz-6.12.117+deb12-amd64 root=/dev/mapper/vg0-root ro quiet '
          'ccp.dyndbg="func __sev_snp_init_locked +p"\n')
EFI_STUB = "initrd=\\EFI\\debian\\initrd.img root=UUID=0b7e3a52-5b0e-4c4e-9d1f-2f6f1d9f3c11 ro mem_encrypt=on\n"
WITH_INIT_ARGS = ("console=ttyS0 quiet reboot=k panic=1 rdinit=/process_api -- --addr 0.0.0.0:2024 "
                  "--log-vsock-port 5002\n")


def parsed(text: str) -> list[tuple[str, str | None]]:
    return [(a.param, a.value) for a in split_kernel_cmdline(text)]


def test_split_like_next_arg():
    assert parsed(DYNDBG) == [("BOOT_IMAGE", "/boot/vmlinuz-6.12.117+deb12-amd64"), ("root", "/dev/mapper/vg0-root"),
                              ("ro", None), ("quiet", None), ("ccp.dyndbg", "func __sev_snp_init_locked +p")]
    assert split_kernel_cmdline(DYNDBG)[-1].raw == 'ccp.dyndbg="func __sev_snp_init_locked +p"'
    # A quote opening the word; one in mid-value stays part of the value; no escapes at all.
    assert parsed('"dyndbg=file sev.c +p" x=a"b c"d path=C:\\dir\\ ') == [
        ("dyndbg", "file sev.c +p"), ("x", 'a"b c"d'), ("path", "C:\\dir\\")]
    # An apostrophe is an ordinary character; an unclosed quote runs to the end.
    assert parsed("root=/dev/sda it's foo=\"bar baz\n") == [("root", "/dev/sda"), ("it's", None), ("foo", "bar baz")]
    assert parsed("\t a=  b==c =x=y \"\" \n") == [("a", ""), ("b", "=c"), ("=x", "y"), ("", None)]
    assert parsed("") == [] and parsed("\n") == []


def test_boot_words_dropped_and_the_rest_kept_verbatim():
    assert next_cmdline(DEBIAN, ()) == "root=/dev/mapper/vg0-root ro quiet"
    assert next_cmdline(EFI_STUB, ()) == "root=UUID=0b7e3a52-5b0e-4c4e-9d1f-2f6f1d9f3c11 ro mem_encrypt=on"
    # shlex turned this into 'ccp.dyndbg=func __sev_snp_init_locked +p', which the kernel splits at each space.
    assert next_cmdline(DYNDBG, ("snp_harness_marker=42",)) == (
        'root=/dev/mapper/vg0-root ro quiet ccp.dyndbg="func __sev_snp_init_locked +p" snp_harness_marker=42')
    # shlex raised ValueError on the apostrophe.
    assert next_cmdline("BOOT_IMAGE=/vmlinuz root=/dev/sda it's\n", ("x=1",)) == "root=/dev/sda it's x=1"


def test_extra_words_quoted_the_kernels_way():
    assert next_cmdline(DEBIAN, ("dyndbg=file sev.c +p", "kvm_amd.sev_snp=1")) == (
        'root=/dev/mapper/vg0-root ro quiet dyndbg="file sev.c +p" kvm_amd.sev_snp=1')
    # Already in the kernel's syntax: kept as written.
    assert extra_arg('dyndbg="file sev.c +p"').raw == 'dyndbg="file sev.c +p"'
    assert kernel_word("a b", "c d").raw == '"a b=c d"' and kernel_word("x", "").raw == "x="
    for word in ("dyndbg=file sev.c +p", "a b=c d", "q", "x=", "t=tab\there"):
        args = split_kernel_cmdline(extra_arg(word).raw)
        assert [a.text for a in args] == [word]


def test_extra_words_go_before_init_arguments():
    # Everything after `--` is init's: the old code appended the marker there.
    assert next_cmdline(WITH_INIT_ARGS, ("snp_harness_marker=42",)) == (
        "console=ttyS0 quiet reboot=k panic=1 rdinit=/process_api snp_harness_marker=42 -- --addr 0.0.0.0:2024 "
        "--log-vsock-port 5002")


def test_an_unclosed_quote_is_closed_before_anything_follows():
    line = next_cmdline('root=/dev/sda foo="bar baz\n', ("x=1",))
    assert line == 'root=/dev/sda foo="bar baz" x=1'
    assert parsed(line) == [("root", "/dev/sda"), ("foo", "bar baz"), ("x", "1")]
    with pytest.raises(ConfigError, match="double quote"):
        next_cmdline('root=/dev/sda foo=a"b c\n', ("x=1",))


@pytest.mark.parametrize("extra", ['msg=say "hi" now', 'x=a"b', 'a="b" c="d"'])
def test_a_double_quote_in_a_value_cannot_be_written(extra):
    with pytest.raises(ConfigError, match="double quote"):
        next_cmdline(DEBIAN, (extra,))


def test_grub_gets_each_word_single_quoted_and_refuses_what_it_would_change():
    args = next_cmdline_args(DYNDBG, ("dyndbg=file sev.c +p", "marker=$x;y"))
    assert grub_linux_args(args) == ("'root=/dev/mapper/vg0-root' 'ro' 'quiet' "
                                     "'ccp.dyndbg=func __sev_snp_init_locked +p' 'dyndbg=file sev.c +p' "
                                     "'marker=$x;y'")
    with pytest.raises(ConfigError, match="kexec"):
        grub_linux_args(next_cmdline_args("root=/dev/sda it's\n", ()))
    with pytest.raises(ConfigError, match="kexec"):
        grub_linux_args(next_cmdline_args(DEBIAN, ("p=back\\slash",)))
