"""BISECT_SELECTION as both pipelines check it (harness.ci_selection): node ids, -k and -m only."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.ci_selection import SelectionError, main, parse_selection


@pytest.mark.parametrize("text, words", [
    ("tests/snp/test_gmem.py::test_gmem_misaligned_conversions",
     ["tests/snp/test_gmem.py::test_gmem_misaligned_conversions"]),
    ("tests/snp/test_gmem.py::test_gmem_misaligned_conversions[ssh://epyc1]",
     ["tests/snp/test_gmem.py::test_gmem_misaligned_conversions[ssh://epyc1]"]),
    ("'tests/snp/test_x.py::TestConv::test_one[qemu://-anonymous thp 2M]'",
     ["tests/snp/test_x.py::TestConv::test_one[qemu://-anonymous thp 2M]"]),
    ("tests/snp/test_gmem.py", ["tests/snp/test_gmem.py"]),
    ("tests/snp/test_a.py::test_x tests/snp/test_b.py::test_y",
     ["tests/snp/test_a.py::test_x", "tests/snp/test_b.py::test_y"]),
    ("-k 'gmem and not thp'", ["-k", "gmem and not thp"]),
    ("-m snp -k conversions tests/snp/test_gmem.py", ["-m", "snp", "-k", "conversions", "tests/snp/test_gmem.py"]),
    # Shell syntax is only text here: the words go to pytest as argv, never through a shell.
    ("-k 'x; rm -rf ~'", ["-k", "x; rm -rf ~"]),
])
def test_accepted(text, words):
    assert parse_selection(text) == words


@pytest.mark.parametrize("text, why", [
    ("--basetemp=$HOME", "option '--basetemp=$HOME' is not allowed"),
    ("tests/snp/test_gmem.py --basetemp /home/ci", "option '--basetemp' is not allowed"),
    ("-p evil_plugin tests/snp/test_gmem.py", "option '-p' is not allowed"),
    ("-c /tmp/evil.ini", "option '-c' is not allowed"),
    ("--rootdir=/", "not allowed"),
    ("-kgmem", "option '-kgmem' is not allowed"),
    ("-k", "-k needs an expression"),
    ("-k --basetemp=/", "-k needs an expression after it, found '--basetemp=/'"),
    ("-m ''", "-m needs an expression"),
    ("tests/../../home/ci/test_x.py", "'..' is not allowed"),
    ("tests/snp/../../conftest.py", "'..' is not allowed"),
    ("/abs/tests/test_x.py", "not a test module under tests/"),
    ("harness/plugin.py", "not a test module under tests/"),
    ("conftest.py", "not a test module under tests/"),
    ("tests/snp", "not a test module under tests/"),
    ("tests//test_x.py", "not a test module under tests/"),
    ("tests/snp/test_x.py::", "is not a node id"),
    ("tests/snp/test_x.py::test_a[x", "is not a node id"),
    ("tests/snp/test_x.py::test_a[x]y", "is not a node id"),
    ("tests/snp/test_x.py::1bad", "is not a node id"),
    ("", "empty"),
    ("'unbalanced", "cannot split"),
    ("-k 'a\nb'", "control characters"),
])
def test_refused(text, why):
    with pytest.raises(SelectionError) as e:
        parse_selection(text)
    assert why in str(e.value)


def test_main_prints_the_words_or_refuses(capsys):
    assert main(["-k 'a and b' tests/snp/test_x.py::t[1]"]) == 0
    assert capsys.readouterr().out == "-k\na and b\ntests/snp/test_x.py::t[1]\n"
    assert main(["--basetemp=/root"]) == 2
    assert "refused selection '--basetemp=/root': option '--basetemp=/root' is not allowed" in capsys.readouterr().err
    assert main([]) == 2 and "usage:" in capsys.readouterr().err


def test_the_command_gets_the_words_as_separate_arguments(tmp_path):
    """`-- COMMAND...` runs COMMAND with the words appended; a refusal runs nothing."""
    out = tmp_path / "argv.txt"
    record = [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write(repr(sys.argv[2:]))", str(out)]
    run = [sys.executable, "-m", "harness.ci_selection"]
    done = subprocess.run([*run, "-k 'a and b' tests/snp/test_x.py::t[ssh://h]", "--", *record],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == repr(["-k", "a and b", "tests/snp/test_x.py::t[ssh://h]"])
    out.unlink()
    refused = subprocess.run([*run, "--basetemp=/home", "--", *record], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "not allowed" in refused.stderr and not out.exists()
