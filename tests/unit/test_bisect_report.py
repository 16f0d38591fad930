"""harness.bisect.report on the sample bisect directory (tests/data/bisect/gmem-found)."""

from __future__ import annotations

import json
import os
import re
import shutil
from xml.etree import ElementTree as ET

import pytest

from harness.bisect.confidence import confidence
from harness.bisect.report import read_steps, write_junit, write_markdown, write_report
from harness.report.junit import Outcome, read_report

CULPRIT = "e4666a670f042877c67a84473a71675ee0950a08"
PARENT = "a625406f6977d45c1391b078f4d3656e0b75bfcb"
SKIPPED = "6b1f53303a732ccc8c6aae6640399827c15250e3"
SELECTION = "tests/snp/test_gmem.py::test_gmem_misaligned_conversions"


@pytest.fixture
def bisect_dir(tmp_path, data_dir):
    return shutil.copytree(data_dir / "bisect" / "gmem-found", tmp_path / "bisect")


def _plan(bisect_dir) -> dict:
    return json.loads((bisect_dir / "bisect.json").read_text())


def _cases(junit_path) -> dict[str, ET.Element]:
    root = ET.parse(junit_path).getroot()
    return {tc.get("name"): tc for tc in root.iter("testcase")}


def _kind(tc: ET.Element) -> str:
    kinds = [c.tag for c in tc if c.tag in ("failure", "error", "skipped")]
    assert len(kinds) <= 1
    return kinds[0] if kinds else "passed"


def _props(elem: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in elem.find("properties")}


def _unescaped(md: str) -> str:
    """Markdown with its escapes (and word joiners, which stop autolinks) undone; table cells
    keep their escaped pipes."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", lambda m: m[0] if m[1] == "|" else m[1], md).replace("\u2060", "")


def _table_rows(md: str, header_start: str) -> list[list[str]]:
    lines = md.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith(header_start))
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]])
    return rows


# --- read_steps ------------------------------------------------------------------------------

def test_read_steps_of_the_sample(bisect_dir):
    steps = read_steps(bisect_dir / "steps.jsonl")
    assert [s["n"] for s in steps] == list(range(1, 10))
    assert steps[3]["outcome"] == "skip" and steps[3]["test_s"] is None


def test_read_steps_skips_a_torn_last_line(bisect_dir):
    path = bisect_dir / "steps.jsonl"
    with path.open("ab") as f:  # killed mid-write, inside a multi-byte character
        f.write(b'{"n": 10, "phase": "bisect", "subject": "KVM: \xe2\x80')
    steps = read_steps(path)
    assert len(steps) == 9 and steps[-1]["n"] == 9


def test_read_steps_skips_any_bad_line(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text('{"n": 1, "outcome": "good"}\n\nnot json\n[1, 2]\n{"n": 2, "outcome": "bad"}\n{"n": 3')
    assert [s["n"] for s in read_steps(path)] == [1, 2]
    assert read_steps(tmp_path / "missing.jsonl") == []


# --- Markdown --------------------------------------------------------------------------------

def test_markdown_of_a_found_culprit(bisect_dir):
    md_path, junit_path = write_report(bisect_dir)
    assert (md_path, junit_path) == (bisect_dir / "bisect.md", bisect_dir / "junit.xml")
    md = _unescaped(md_path.read_text())
    assert md.startswith("# snp-harness bisect: found\n")
    assert (f"Culprit: `{CULPRIT}` KVM: SEV: Install 2M RMP entries for huge guest_memfd folios "
            "(confirmed: yes; revert verified: yes)") in md
    assert "is the first bad commit" in md  # the result's message
    assert "| wall time | 1872.3 s (31 min 12 s) |" in md
    assert "| bisect steps | 4 |" in md and "| skipped steps | 1 |" in md
    assert "| good | v6.12 (2d90ada89532) |" in md
    assert f"| selection | `{SELECTION}` |" in md
    assert not list(bisect_dir.glob("*.tmp"))


def test_markdown_steps_table(bisect_dir):
    md = _unescaped(write_markdown(bisect_dir, _plan(bisect_dir), read_steps(bisect_dir / "steps.jsonl")).read_text())
    rows = _table_rows(md, "| n | phase | commit |")
    assert len(rows) == 9 and all(len(r) == 10 for r in rows)
    by_n = {r[0]: r for r in rows}
    assert by_n["3"][1:3] == ["bisect", f"`{CULPRIT[:12]}`"]
    assert by_n["3"][4:7] == ["bad", "2 of 3 runs failed: test_gmem_misaligned_conversions", "2/3"]
    assert by_n["3"][9] == f"[steps/03-{CULPRIT[:12]}](<steps/03-{CULPRIT[:12]}>)"
    assert by_n["4"][4] == "skip" and by_n["4"][6] == "—" and by_n["4"][8] == "—"
    assert "implicit declaration of function 'kvm_gmem_populate_2m'" in by_n["4"][5]
    assert by_n["5"][4] == "infra"
    assert by_n["6"][7] == "hit, 0.4 s" and by_n["1"][7] == "built, 412.7 s" and by_n["1"][8] == "96.3 s"
    assert [r[1] for r in rows].count("confirm") == 2 and rows[-1][1] == "verify-revert"


def test_markdown_confidence_and_reproducers(bisect_dir):
    plan, steps = _plan(bisect_dir), read_steps(bisect_dir / "steps.jsonl")
    md = _unescaped(write_markdown(bisect_dir, plan, steps).read_text())
    sentence = confidence(steps, 3).sentence()
    assert "8 of 9 runs" in sentence and f"\n{sentence}\n" in md
    assert f"```sh\n{plan['reproducer']}\n```" in md
    assert f"```sh\n{plan['run_reproducer']}\n```" in md


def test_markdown_without_run_reproducer(bisect_dir):
    plan = _plan(bisect_dir)
    del plan["run_reproducer"]
    md = _unescaped(write_markdown(bisect_dir, plan, read_steps(bisect_dir / "steps.jsonl")).read_text())
    assert md.count("```sh") == 1 and plan["reproducer"] in md


def test_markdown_escapes_pipes(bisect_dir):
    steps = read_steps(bisect_dir / "steps.jsonl")
    steps[2] = {**steps[2], "subject": "KVM: x86: Fix a | b <and> c", "reason": "1 of 3 | runs failed"}
    md = write_markdown(bisect_dir, _plan(bisect_dir), steps).read_text()
    assert "KVM: x86: Fix a \\| b \\<and\\> c" in md and "1 of 3 \\| runs failed" in md
    assert all(len(r) == 10 for r in _table_rows(md, "| n | phase | commit |"))


def test_markdown_of_an_inconclusive_bisect(bisect_dir):
    plan = _plan(bisect_dir)
    plan["result"] = {"status": "inconclusive", "culprit": None, "confirmed": None, "revert_verified": None,
                      "candidates": [SKIPPED, PARENT], "message": "The first bad commit is one of 2 commits."}
    md = _unescaped(write_markdown(bisect_dir, plan, read_steps(bisect_dir / "steps.jsonl")).read_text())
    assert md.startswith("# snp-harness bisect: inconclusive\n")
    assert "Culprit:" not in md and "The first bad commit is one of 2 commits." in md
    rows = _table_rows(md, "| commit | subject |")
    assert rows == [[f"`{SKIPPED}`", "KVM: SEV: Populate 2M SNP_LAUNCH_UPDATE ranges from huge folios"],
                    [f"`{PARENT}`", "KVM: guest_memfd: Add kvm_gmem_populate_2m()"]]


def test_markdown_with_no_steps(tmp_path):
    md = _unescaped(write_markdown(tmp_path, {"result": {"status": "running"}}, []).read_text())
    assert md.startswith("# snp-harness bisect: running\n")
    assert "No step has been recorded." in md and "no estimate of the failure rate" in md


# --- JUnit -----------------------------------------------------------------------------------

def test_junit_suite(bisect_dir):
    _, junit_path = write_report(bisect_dir)
    root = ET.parse(junit_path).getroot()
    suites = root.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == "snp-harness bisect"
    suite = suites[0]
    props = _props(suite)
    assert props["tree"] == "/srv/kernel/linux" and props["good"] == "v6.12" and props["bad"] == "HEAD"
    assert props["selection"] == SELECTION and props["repeat"] == "3"
    assert props["status"] == "found" and props["culprit"] == CULPRIT
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("10", "3", "1", "1")
    assert float(suite.get("time")) == pytest.approx(1872.3)


def test_junit_one_case_per_step(bisect_dir):
    _, junit_path = write_report(bisect_dir)
    cases = _cases(junit_path)
    names = list(cases)
    assert len(names) == 10 and names[-1] == "culprit"
    assert names[2] == f"03 {CULPRIT[:12]} KVM: SEV: Install 2M RMP entries for huge guest_memfd folios"
    kinds = [(cases[n].get("classname"), _kind(cases[n])) for n in names[:-1]]
    assert kinds == [("bisect.endpoint-good", "passed"), ("bisect.endpoint-bad", "failure"),
                     ("bisect.bisect", "failure"), ("bisect.bisect", "skipped"), ("bisect.bisect", "error"),
                     ("bisect.bisect", "passed"), ("bisect.confirm", "failure"), ("bisect.confirm", "passed"),
                     ("bisect.verify-revert", "passed")]
    bad = cases[names[2]]
    failure = bad.find("failure")
    assert failure.get("message") == "2 of 3 runs failed: test_gmem_misaligned_conversions"
    assert failure.text.strip() == f"{SELECTION}[qemu://]"
    assert float(bad.get("time")) == pytest.approx(97.4 + 91.2)
    assert _props(bad) == {"commit": CULPRIT, "outcome": "bad", "runs": "3", "failed_runs": "2",
                           "build_key": "d44fe4166e633e456f4556d2", "build_hit": "false",
                           "run_dir": f"steps/03-{CULPRIT[:12]}"}
    skip = cases[names[3]]
    assert skip.find("skipped").get("message").startswith("make bzImage failed: arch/x86/kvm/svm/sev.c:2291:9")
    assert float(skip.get("time")) == pytest.approx(48.2)  # test_s is null
    assert cases[names[4]].find("error").get("message") == "ssh://epyc1 did not come back after kexec within 300 s"


def test_junit_culprit_case_of_a_found_bisect(bisect_dir):
    md_path, junit_path = write_report(bisect_dir)
    tc = _cases(junit_path)["culprit"]
    assert tc.get("classname") == "bisect.result" and _kind(tc) == "passed"
    out = tc.find("system-out").text
    assert f"culprit: {CULPRIT} KVM: SEV: Install 2M RMP entries" in out
    assert "confirmed: yes" in out and "revert verified: yes" in out and "candidate:" not in out
    attachments = [ln for ln in out.splitlines() if ln.startswith("[[ATTACHMENT|")]
    assert attachments == [f"[[ATTACHMENT|{os.path.abspath(md_path)}]]"]
    assert os.path.isabs(attachments[0][13:-2]) and md_path.is_file()
    assert _props(tc)["confirmed"] == "true" and _props(tc)["bisect_steps"] == "4"


@pytest.mark.parametrize("result, kind, message", [
    ({"status": "inconclusive", "message": "one of 2 commits"}, "failure", "one of 2 commits"),
    ({"status": "refused", "message": "the good endpoint fails too"}, "failure", "the good endpoint fails too"),
    ({"status": "aborted", "message": "interrupted"}, "error", "interrupted"),
    ({"status": "running", "message": "step 4 of ~6"}, "skipped", "step 4 of ~6"),
    ({"status": "running"}, "skipped", "bisect status: running"),
    ({"status": "found", "culprit": CULPRIT, "confirmed": False, "message": "parent fails too"}, "failure",
     f"culprit {CULPRIT[:12]} found but not confirmed (no): parent fails too"),
    ({"status": "found", "culprit": CULPRIT, "confirmed": None, "message": "m"}, "failure",
     f"culprit {CULPRIT[:12]} found but not confirmed (not checked): m"),
    ({"status": "exploded", "message": "m"}, "error", "m"),
    ({}, "error", "bisect status: unknown"),
])
def test_junit_culprit_case_by_status(bisect_dir, result, kind, message):
    plan = {**_plan(bisect_dir), "result": result}
    tc = _cases(write_junit(bisect_dir, plan, read_steps(bisect_dir / "steps.jsonl")))["culprit"]
    assert _kind(tc) == kind
    assert tc.find(kind).get("message") == message
    assert "[[ATTACHMENT|" in tc.find("system-out").text


def test_junit_reads_back_with_the_harness_reader(bisect_dir):
    report = read_report(write_report(bisect_dir)[1])
    assert not report.problems and ("status", "found") in report.suite_properties
    outcomes = [c.outcome for c in report.cases]
    assert outcomes.count(Outcome.FAILED) == 3 and outcomes.count(Outcome.ERROR) == 1
    assert report.cases[-1].name == "culprit" and report.cases[-1].outcome is Outcome.PASSED


def test_junit_unknown_outcome_is_an_error(bisect_dir):
    steps = [{"n": 1, "phase": "bisect", "commit": CULPRIT, "outcome": "weird", "reason": "r"}]
    tc = _cases(write_junit(bisect_dir, _plan(bisect_dir), steps))[f"01 {CULPRIT[:12]}"]
    assert tc.find("error").get("message") == "unknown outcome 'weird': r"


def test_junit_lists_candidates(bisect_dir):
    plan = {**_plan(bisect_dir), "result": {"status": "inconclusive", "candidates": [SKIPPED, PARENT],
                                            "message": "one of 2"}}
    out = _cases(write_junit(bisect_dir, plan, []))["culprit"].find("system-out").text
    assert f"candidate: {SKIPPED}\ncandidate: {PARENT}\n" in out


def test_junit_survives_control_characters(bisect_dir):
    steps = read_steps(bisect_dir / "steps.jsonl")
    steps[3] = {**steps[3], "reason": "make failed: \x1b[01;31merror:\x1b[m bad\x00", "subject": "a\x07b"}
    cases = _cases(write_junit(bisect_dir, _plan(bisect_dir), steps))
    skip = cases[f"04 {SKIPPED[:12]} ab"]
    assert skip.find("skipped").get("message") == "make failed: [01;31merror:[m bad"


def test_report_with_a_torn_step_and_no_plan(bisect_dir):
    (bisect_dir / "bisect.json").unlink()
    with (bisect_dir / "steps.jsonl").open("a") as f:
        f.write('{"n": 10, "pha')
    md_path, junit_path = write_report(bisect_dir)
    assert _unescaped(md_path.read_text()).startswith("# snp-harness bisect: unknown\n")
    cases = _cases(junit_path)
    assert len(cases) == 10
    error = cases["culprit"].find("error")
    assert error is not None and "bisect.json: unreadable" in error.get("message")


def test_a_registered_secret_never_reaches_the_bisect_report(tmp_path):
    from harness import redact
    from harness.bisect.report import write_junit, write_markdown

    secret = "bisect-secret-4f1c9e"
    redact.register(secret)
    plan = {"good": "v1", "bad": "v2", "status": "found", "command": f"ipmitool -P {secret} power cycle"}
    steps = [{"commit": "abc123", "outcome": "skip", "reason": f"power cycle `ipmitool -P {secret}` failed"}]
    md = write_markdown(tmp_path, plan, steps).read_text()
    xml = write_junit(tmp_path, plan, steps).read_text()
    assert secret not in md and secret not in xml
    assert redact.REDACTED in md + xml
