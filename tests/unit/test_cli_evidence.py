"""`snp-harness splats` and `snp-harness report` on saved files (offline, in-process)."""

from __future__ import annotations

import json
import shutil

from junitparser import JUnitXml

from harness import cli


def test_splats_json_and_exit_code(data_dir, capsys):
    warn = data_dir / "kmsg" / "qemu-tcg-6.12-lkdtm-warning.log"
    healthy = data_dir / "dmesg" / "qemu-tcg-healthy.log"
    assert cli.main(["splats", "--json", str(warn), str(healthy)]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found == [{"title": "WARNING in lkdtm_WARNING", "category": "warning", "first_line": 3,
                      "last_line": 37, "file": str(warn)}]


def test_splats_none_found_is_zero_and_lines_are_readable(data_dir, capsys):
    assert cli.main(["splats", str(data_dir / "dmesg" / "constructed-negatives.log")]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "0 splat(s) in 1 file(s)" in out.err


def test_splats_text_output(data_dir, capsys):
    log = data_dir / "dmesg" / "constructed-rmpupdate-fail.log"
    assert cli.main(["splats", str(log)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith(f"{log}:") and "] " in line for line in lines)
    assert any("[snp] RMPUPDATE failed for PFN ADDR (ret NUM)" in line for line in lines)


def test_splats_unreadable_file_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["splats", str(tmp_path / "missing.log")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_report_merge_keeps_hosts_apart(data_dir, tmp_path, capsys):
    sample = data_dir / "report" / "pytest-xunit2-sample.xml"
    for host in ("epyc1", "epyc2"):
        (tmp_path / host).mkdir()
        shutil.copy(sample, tmp_path / host / "junit.xml")
    out = tmp_path / "merged.xml"
    assert cli.main(["report", "merge", f"epyc1={tmp_path / 'epyc1'}", str(tmp_path / "epyc2" / "junit.xml"),
                     "-o", str(out)]) == 0
    names = [c.name for suite in JUnitXml.fromfile(str(out)) for c in suite]
    assert len(names) == 2 * len([c for s in JUnitXml.fromfile(str(sample)) for c in s])
    assert len(set(names)) == len(names)


def test_report_summary_of_a_run_directory(data_dir, tmp_path, capsys):
    shutil.copy(data_dir / "report" / "pytest-xunit2-sample.xml", tmp_path / "junit.xml")
    (tmp_path / "metadata.json").write_text(json.dumps({"reproducer_argv": ["snp-harness", "run"]}))
    assert cli.main(["report", "summary", str(tmp_path)]) == 0
    assert (tmp_path / "summary.md").exists() and (tmp_path / "summary.html").exists()
