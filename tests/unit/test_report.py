"""harness.report on a real pytest-written JUnit file (tests/data/report/) and RMP dumps built here."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from junitparser import Property, Skipped
from junitparser.xunit2 import JUnitXml, TestCase, TestSuite

from harness.evidence.rmp import STATE_NAMES, encode_entry
from harness.report.junit import Case, Outcome, enrich, merge, read_cases, read_report
from harness.report.rmp_map import STATE_LABELS, draw_rmp_map, layout
from harness.report.summary import reproducer, write_summary

SAMPLE = "pytest-xunit2-sample.xml"
QEMU = "tests_snp_test_gmem.py_test_gmem_misaligned_conversions_qemu"
EPYC = "tests_snp_test_gmem.py_test_gmem_misaligned_conversions_ssh_epyc1"
EPYC_NODEID = "tests/snp/test_gmem.py::test_gmem_misaligned_conversions[ssh://epyc1]"
META = {"build": "3f2a9c", "kernel_release": "6.12.117+", "series": "gmem-2m-v3", "hosts": ["qemu://", "ssh://epyc1"],
        "reproducer": "snp-harness run --snp-host epyc1",
        "reproducer_argv": ["snp-harness", "run", "--snp-host", "epyc1"], "tree_id": "9d1e0f",
        "patch_ids": ["a1b2 KVM: SEV: install 2M RMP entries", "c3d4 KVM: guest_memfd: huge folios"],
        "config_sha256": "77aa", "pytest_exit": 1, "duration_s": 48.1}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_dir(tmp_path, data_dir):
    d = tmp_path / "run"
    d.mkdir()
    shutil.copy(data_dir / "report" / SAMPLE, d / "junit.xml")
    return d


def _write_dump(run_dir, slug=EPYC, phase="after-convert", *, violation=True):
    """An RMP dump of 1024 PFNs: a 2M private entry at GPA 0x200000, 16 private 4K pages at 0x400000,
    and (violation) one page of the shared range assigned to the guest's ASID."""
    d = run_dir / "rmp" / slug
    d.mkdir(parents=True, exist_ok=True)
    ents = np.zeros((1024, 2), "<u8")
    ents[0] = encode_entry(assigned=True, pagesize_2m=True, gpa=0x200000, asid=5, validated=True)
    for i in range(16):
        ents[512 + i] = encode_entry(assigned=True, gpa=0x400000 + i * 4096, asid=5, validated=True)
    if violation:
        ents[600] = encode_entry(assigned=True, gpa=0x500000, asid=5, validated=True)
    (d / f"{phase}.bin").write_bytes(ents.tobytes())
    (d / f"{phase}.json").write_text(json.dumps({
        "dump": f"{phase}.bin", "start_pfn": 0x10000, "phase": phase, "nodeid": EPYC_NODEID, "target": "ssh://epyc1",
        "expectation": {"asid": 5, "private_gpas": [[0x200000, 0x410000]], "shared_gpas": [[0x410000, 0x600000]],
                        "torn_down": False, "leaked_pfns": [], "exclusive": True},
        "gpa_window": [0x200000, 0x600000]}))
    return d / f"{phase}.json"


def _cases(xml_path):
    return {tc.name: tc for suite in JUnitXml.fromfile(str(xml_path)) for tc in suite}


def _unescaped(md: str) -> str:
    """summary.md with its Markdown escapes and word joiners undone: the text a reader sees."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", md).replace("\u2060", "")


def _attachments(tc):
    return [ln for out in tc._elem.findall("system-out") for ln in (out.text or "").splitlines()
            if ln.startswith("[[ATTACHMENT|")]


# --- read_cases ------------------------------------------------------------------------------

def test_read_cases_on_the_pytest_sample(data_dir):
    cases = read_cases(data_dir / "report" / SAMPLE)
    assert len(cases) == 12
    by = {c.name: c for c in cases}
    assert sum(c.outcome is Outcome.PASSED for c in cases) == 6
    fail = by["test_gmem_misaligned_conversions[ssh://epyc1]"]
    assert fail.outcome == "failed" and fail.message.startswith("Failed: dmesg: 2 splats")
    assert fail.nodeid == EPYC_NODEID and fail.target == "ssh://epyc1"
    assert fail.scenario == "test_gmem_misaligned_conversions"
    assert len(fail.props("splat")) == 2 and fail.prop("rmp_fault_events") == "4"
    err = by["test_gmem_thp_split_collapse[ssh://epyc1]"]
    assert err.outcome is Outcome.ERROR and "BootError" in err.message
    skip = by["test_snp_gmem_conversions[qemu://]"]
    assert skip.outcome is Outcome.SKIPPED
    assert skip.message == "qemu://: snp: SEV-SNP is not enabled (kvm_amd sev_snp=N)"


def test_read_report_keeps_suite_properties(data_dir):
    report = read_report(data_dir / "report" / SAMPLE)
    assert ("ssh://epyc1 microcode", "0xa101148") in report.suite_properties
    assert report.problems == ()


def test_read_cases_of_a_missing_or_broken_file(tmp_path):
    (tmp_path / "bad.xml").write_text("<testsuites><testsuite")
    assert read_cases(tmp_path / "missing.xml") == []
    assert read_cases(tmp_path / "bad.xml") == []
    assert "not a JUnit XML file" in read_report(tmp_path / "bad.xml").problems[0]


@pytest.mark.parametrize("classname, name, nodeid", [
    ("tests.snp.test_gmem", "test_a[qemu://]", "tests/snp/test_gmem.py::test_a[qemu://]"),
    ("tests.unit.test_x.TestGroup", "test_b", "tests/unit/test_x.py::TestGroup::test_b"),
])
def test_nodeid_rebuilt_without_the_property(classname, name, nodeid):
    assert Case(name, classname, Outcome.PASSED).nodeid == nodeid


# --- enrich ----------------------------------------------------------------------------------

def test_enrich_adds_suite_properties_and_attachments(run_dir):
    (run_dir / "dmesg").mkdir()
    qemu_dmesg = run_dir / "dmesg" / f"{QEMU}.log"
    qemu_dmesg.write_text("[    1.0] nothing\n")
    (run_dir / "dmesg" / f"{EPYC}.log").write_text("WARNING: CPU: 3\n")
    (run_dir / "targets" / "epyc1").mkdir(parents=True)
    (run_dir / "targets" / "epyc1" / "console.log").write_text("console\n")
    sidecar = _write_dump(run_dir)

    problems = enrich(run_dir / "junit.xml", run_dir, META)

    suite = next(iter(JUnitXml.fromfile(str(run_dir / "junit.xml"))))
    props = {p.name: p.value for p in suite.properties()}
    assert props["kernel_release"] == "6.12.117+" and props["build"] == "3f2a9c"
    assert props["patch_ids"] == "a1b2 KVM: SEV: install 2M RMP entries; c3d4 KVM: guest_memfd: huge folios"
    assert props["series"] == "gmem-2m-v3" and props["tree_id"] == "9d1e0f" and props["config_sha256"] == "77aa"
    assert props["ssh://epyc1 sev_firmware"] == "1.55.21"  # pytest's own are kept
    cases = _cases(run_dir / "junit.xml")
    assert _attachments(cases["test_gmem_misaligned_conversions[qemu://]"]) == [f"[[ATTACHMENT|{qemu_dmesg}]]"]
    assert _attachments(cases["test_gmem_misaligned_conversions[ssh://epyc1]"]) == [
        f"[[ATTACHMENT|{run_dir / 'dmesg' / f'{EPYC}.log'}]]", f"[[ATTACHMENT|{sidecar}]]",
        f"[[ATTACHMENT|{sidecar.with_suffix('.bin')}]]", f"[[ATTACHMENT|{run_dir / 'targets/epyc1/console.log'}]]"]
    # pytest's captured output stays, the attachments come after it
    out = cases["test_gmem_misaligned_conversions[qemu://]"].system_out
    assert out.index("# selftest output: 12 conversions ok") < out.index("[[ATTACHMENT|")
    assert "Captured Err" in cases["test_gmem_misaligned_conversions[qemu://]"].system_err
    # the selftest logs' absolute paths do not exist here: named as problems, not attached
    assert len(problems) == 2 and all("selftest_log /srv/snp-runs/" in p for p in problems)


def test_enrich_twice_adds_nothing_twice(run_dir):
    (run_dir / "dmesg").mkdir()
    (run_dir / "dmesg" / f"{QEMU}.log").write_text("x\n")
    enrich(run_dir / "junit.xml", run_dir, META)
    once = (run_dir / "junit.xml").read_bytes()
    enrich(run_dir / "junit.xml", run_dir, META)
    assert (run_dir / "junit.xml").read_bytes() == once
    suite = next(iter(JUnitXml.fromfile(str(run_dir / "junit.xml"))))
    assert [p.name for p in suite.properties()].count("kernel_release") == 1


def test_enrich_ignores_missing_files_and_reads_metadata_json(run_dir):
    (run_dir / "metadata.json").write_text(json.dumps({**META, "series": None}))
    problems = enrich(run_dir / "junit.xml", run_dir)
    assert all(_attachments(tc) == [] for tc in _cases(run_dir / "junit.xml").values())
    assert any(f"dmesg {run_dir / 'dmesg' / f'{QEMU}.log'}: no such file" in p for p in problems)
    props = {p.name for p in next(iter(JUnitXml.fromfile(str(run_dir / "junit.xml")))).properties()}
    assert "kernel_release" in props and "series" not in props


def test_enrich_attachment_paths_relative_for_gitlab(run_dir):
    (run_dir / "dmesg").mkdir()
    (run_dir / "dmesg" / f"{QEMU}.log").write_text("x\n")
    enrich(run_dir / "junit.xml", run_dir, {}, relative_to=run_dir.parent)
    tc = _cases(run_dir / "junit.xml")["test_gmem_misaligned_conversions[qemu://]"]
    assert _attachments(tc) == [f"[[ATTACHMENT|run/dmesg/{QEMU}.log]]"]


def test_enrich_adds_system_out_where_pytest_wrote_none(tmp_path):
    suite = TestSuite("pytest")
    tc = TestCase("test_a", "tests.snp.test_x")
    tc.add_property("attachment", "a.log")
    suite.add_testcase(tc)
    xml = JUnitXml()
    xml.add_testsuite(suite)
    xml.write(str(tmp_path / "junit.xml"))
    (tmp_path / "a.log").write_text("a\n")
    assert enrich(tmp_path / "junit.xml", tmp_path, {"kernel_release": "6.12.117+"}) == []
    suite = next(iter(JUnitXml.fromfile(str(tmp_path / "junit.xml"))))
    assert list(suite._elem)[0].tag == "properties"  # the schema's order: properties first
    assert next(iter(suite)).system_out == f"[[ATTACHMENT|{tmp_path / 'a.log'}]]\n"


def test_enrich_of_a_missing_file_is_a_problem(tmp_path):
    problems = enrich(tmp_path / "junit.xml", tmp_path, META)
    assert problems == [f"{tmp_path / 'junit.xml'}: no such file"]
    assert not (tmp_path / "junit.xml").exists()


# --- merge -----------------------------------------------------------------------------------

def _plain_junit(path):
    """A JUnit file without target properties, as a host's own pytest run would write it."""
    suite = TestSuite("pytest")
    for name in ("test_gmem_misaligned_conversions", "test_private_mem_conversions[anonymous_thp-m4-n2]"):
        tc = TestCase(name, "tests.snp.test_gmem", 1.5)
        suite.add_testcase(tc)
    xml = JUnitXml()
    xml.add_testsuite(suite)
    xml.write(str(path))


def test_merge_keeps_two_hosts_identical_tests_apart(tmp_path):
    _plain_junit(tmp_path / "epyc1.xml")
    _plain_junit(tmp_path / "epyc2.xml")
    assert merge([("epyc1", tmp_path / "epyc1.xml"), ("epyc2", tmp_path / "epyc2.xml")], tmp_path / "all.xml") == []

    xml = JUnitXml.fromfile(str(tmp_path / "all.xml"))
    assert [s.name for s in xml] == ["pytest [epyc1]", "pytest [epyc2]"]
    cases = [tc for s in xml for tc in s]
    assert [tc.name for tc in cases] == [
        "test_gmem_misaligned_conversions [epyc1]", "test_private_mem_conversions[anonymous_thp-m4-n2] [epyc1]",
        "test_gmem_misaligned_conversions [epyc2]", "test_private_mem_conversions[anonymous_thp-m4-n2] [epyc2]"]
    assert [[p.value for p in tc.properties() if p.name == "host"] for tc in cases] == [
        ["epyc1"], ["epyc1"], ["epyc2"], ["epyc2"]]
    assert xml.tests == 4


def test_merge_uses_the_target_property_and_separates_same_target_runs(run_dir, tmp_path):
    shutil.copy(run_dir / "junit.xml", tmp_path / "b.xml")
    assert merge([("ci-a", run_dir / "junit.xml"), ("ci-b", tmp_path / "b.xml")], tmp_path / "all.xml") == []

    cases = read_cases(tmp_path / "all.xml")
    assert len(cases) == 24 and len({(c.classname, c.name) for c in cases}) == 24
    first = cases[0]
    # the name already holds its target (the parametrize id), so only the host property is added
    assert (first.name, first.props("host")) == ("test_gmem_misaligned_conversions[qemu://]", ["qemu://"])
    assert cases[12].name == "test_gmem_misaligned_conversions[qemu://] [ci-b]"
    assert cases[12].props("host") == ["qemu://"]


def test_merge_reports_unreadable_inputs_and_writes_the_rest(run_dir, tmp_path):
    (tmp_path / "garbage.xml").write_text("this is not xml")
    problems = merge([("qemu", run_dir / "junit.xml"), ("epyc2", tmp_path / "garbage.xml"),
                      ("epyc3", tmp_path / "gone.xml")], tmp_path / "out" / "all.xml")
    assert problems[0].startswith(f"epyc2: {tmp_path / 'garbage.xml'}: not a JUnit XML file")
    assert problems[1] == f"epyc3: {tmp_path / 'gone.xml'}: no such file"
    assert len(read_cases(tmp_path / "out" / "all.xml")) == 12


# --- summary ---------------------------------------------------------------------------------

@pytest.fixture
def summarised(run_dir):
    (run_dir / "metadata.json").write_text(json.dumps(META))
    (run_dir / "dmesg").mkdir()
    (run_dir / "dmesg" / f"{EPYC}.log").write_text("WARNING: CPU: 3\n")
    _write_dump(run_dir)
    result = write_summary(run_dir)
    return run_dir, result, (run_dir / "summary.md").read_text(), (run_dir / "summary.html").read_text()


def test_summary_tables_splats_and_skips(summarised):
    run_dir, result, md, page = summarised
    md = _unescaped(md)
    assert result.problems == ()
    assert "| scenario | qemu:// | ssh://epyc1 |" in md
    assert "| `test_gmem_misaligned_conversions` | pass | FAIL |" in md
    assert "| `test_private_mem_conversions` | 2 pass | 2 skip |" in md
    assert "| `test_gmem_thp_split_collapse` | pass | ERROR |" in md
    assert "| WARN | WARNING: CPU: 3 PID: 4242 at arch/x86/kvm/svm/sev.c:4711" in md
    assert f"[dmesg slice](<dmesg/{EPYC}.log>)" in md and f'<a href="dmesg/{EPYC}.log">dmesg slice</a>' in page
    assert ("| ssh://epyc1: sw_protected_vm: KVM_X86_SW_PROTECTED_VM is not among the supported VM types | 2 | "
            "`test_private_mem_conversions[ssh://epyc1-anonymous]` "
            "`test_private_mem_conversions[ssh://epyc1-anonymous_thp]` |") in md
    assert "qemu://: snp: SEV-SNP is not enabled (kvm_amd sev_snp=N)" in page
    assert "6.12.117+" in md and "a1b2" in page and "48.1 s" in md


def test_summary_reproducer_for_a_failure(summarised):
    _, _, md, page = summarised
    expected = ("snp-harness run --snp-host epyc1 -- "
                "'tests/snp/test_gmem.py::test_gmem_misaligned_conversions[ssh://epyc1]'")
    assert f"```sh\n{expected}\n```" in md
    assert f"<pre>{html.escape(expected)}</pre>" in page
    assert reproducer({}, "t.py::a") == "snp-harness run -- t.py::a"


def test_summary_escapes_html(summarised):
    _, _, md, page = summarised
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; | a &amp; b" in page
    assert "`Failed: <script>alert('x')</script> | a & b`" in md  # a code span: shown literally
    # self-contained: no scripts, no external stylesheets or images
    assert "<link" not in page and 'src="http' not in page and "<script" not in page


def test_summary_escapes_pipes_in_markdown_cells(tmp_path):
    suite = TestSuite("pytest")
    tc = TestCase("test_a[qemu://]", "tests.snp.test_x")
    tc.result = [Skipped("qemu://: needs a | b <c>")]
    suite.add_testcase(tc)
    xml = JUnitXml()
    xml.add_testsuite(suite)
    xml.write(str(tmp_path / "junit.xml"))
    write_summary(tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "| qemu\u2060://: needs a \\| b \\<c\\> | 1 | `test_a[qemu://]` |" in md


def test_summary_draws_the_rmp_map(summarised):
    run_dir, result, md, page = summarised
    png = run_dir / f"rmp-map-{EPYC}-after-convert.png"
    assert png in result.written
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert f"(<{png.name}>)" in md and 'src="data:image/png;base64,iVBORw0KGgo' in page
    assert "2 violations: unexpected_gpa x1, shared_assigned x1" in _unescaped(md)  # checked offline


def test_summary_records_a_broken_sidecar_and_draws_the_others(run_dir):
    _write_dump(run_dir, phase="before", violation=False)
    bad = run_dir / "rmp" / EPYC / "after.json"
    bad.write_text("{not json")
    result = write_summary(run_dir)
    assert (run_dir / f"rmp-map-{EPYC}-before.png").read_bytes().startswith(PNG_MAGIC)
    assert any(p.startswith(f"{bad}: no RMP map") for p in result.problems)


def test_summary_of_an_empty_directory(tmp_path):
    result = write_summary(tmp_path)
    assert any("metadata.json: no such file" in p for p in result.problems)
    assert any("junit.xml: no such file" in p for p in result.problems)
    assert (tmp_path / "summary.md").exists() and (tmp_path / "summary.html").exists()
    assert "Problems reading this run" in (tmp_path / "summary.md").read_text()


# --- rmp_map ---------------------------------------------------------------------------------

def test_map_rows_start_on_2m_boundaries():
    grid, base, width = layout(np.ones(600, np.int8), 0x100000)  # starts half-way into a 2M frame
    assert (grid.shape, base, width) == ((2, 512), 0, 512)
    assert (grid[0, :256] == -1).all() and (grid[0, 256:] == 1).all() and (grid[1, :344] == 1).all()
    grid, base, width = layout(np.zeros(8, np.int8), 0x200000)
    assert (grid.shape, base, width) == ((1, 8), 0x200000, 8)


def test_map_states_follow_rmp_encoding():
    assert [label.lower().replace(" ", "_") for label in STATE_LABELS] == list(STATE_NAMES)


def test_draw_rmp_map_writes_a_png(tmp_path):
    states = np.zeros(1024, np.int8)
    states[:512], states[600:616], states[700] = 2, 1, 3
    draw_rmp_map(states, 0x200000, tmp_path / "m.png", "after-convert")
    assert (tmp_path / "m.png").read_bytes().startswith(PNG_MAGIC)


def test_importing_rmp_map_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, harness.report.rmp_map; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2]).stdout
    assert out.strip() == "False"


def test_merged_suite_property_records_the_host(tmp_path):
    _plain_junit(tmp_path / "a.xml")
    merge([("epyc1", tmp_path / "a.xml")], tmp_path / "all.xml")
    suite = next(iter(JUnitXml.fromfile(str(tmp_path / "all.xml"))))
    assert Property("host", "epyc1") in list(suite.properties())


def test_running_and_teardown_sidecars_as_the_evidence_writes_them(tmp_path):
    """The sidecars TargetEvidence.rmp_check writes: a running guest (allowed_gpas, a window: a map)
    and a teardown check (no window: a verdict, no map)."""
    from harness.evidence.rmp import ANY_ASID

    d = tmp_path / "rmp" / "t"
    d.mkdir(parents=True)
    ents = np.zeros((1024, 2), "<u8")
    ents[0] = encode_entry(assigned=True, pagesize_2m=True, gpa=0x200000, asid=7, validated=True)
    ents[600] = encode_entry(assigned=True, gpa=0x9000_0000, asid=7, validated=True)  # outside RAM
    (d / "running.bin").write_bytes(ents.tobytes())
    (d / "teardown.bin").write_bytes(np.zeros((1024, 2), "<u8").tobytes())
    for phase, exp, window in (
            ("running", {"asid": ANY_ASID, "allowed_gpas": [[0, 0x8000_0000]]}, [0, 0x400000]),
            ("teardown", {"asid": ANY_ASID, "torn_down": True}, None)):
        (d / f"{phase}.json").write_text(json.dumps({
            "dump": f"{phase}.bin", "start_pfn": 0, "phase": phase, "nodeid": "t::x", "target": "ssh://e",
            "expectation": {"private_gpas": [], "shared_gpas": [], "torn_down": False, "leaked_pfns": [],
                            "exclusive": True, **exp}, "gpa_window": window}))
    result = write_summary(tmp_path)
    pngs = [p for p in result.written if p.suffix == ".png"]
    assert [p.name for p in pngs] == ["rmp-map-t-running.png"]
    md = _unescaped((tmp_path / "summary.md").read_text())
    assert "1 violation: unexpected_gpa x1" in md and "ok: 1024 entries, 0 assigned to any guest ASID" in md


def test_dumps_kept_only_gzipped_are_read_from_the_gzip(tmp_path):
    """TargetEvidence deletes the raw dump of a check that passed and keeps <dump>.gz."""
    import gzip

    from harness.evidence.rmp import ANY_ASID

    d = tmp_path / "rmp" / "t"
    d.mkdir(parents=True)
    ents = np.zeros((1024, 2), "<u8")
    ents[0] = encode_entry(assigned=True, pagesize_2m=True, gpa=0x200000, asid=7, validated=True)
    for phase, exp, window in (("running", {"allowed_gpas": [[0, 0x8000_0000]]}, [0, 0x400000]),
                               ("teardown", {"torn_down": True}, None)):
        (d / f"{phase}.bin.gz").write_bytes(gzip.compress(ents.tobytes() if phase == "running" else b"\0" * 16))
        (d / f"{phase}.json").write_text(json.dumps({
            "dump": f"{phase}.bin", "start_pfn": 0, "phase": phase, "nodeid": "t::x", "target": "ssh://e",
            "expectation": {"asid": ANY_ASID, "private_gpas": [], "shared_gpas": [], "leaked_pfns": [],
                            "exclusive": True, **exp},
            "gpa_window": window, "verdict": "ok: recorded by the evidence"}))
    result = write_summary(tmp_path)
    assert [p.name for p in result.written if p.suffix == ".png"] == ["rmp-map-t-running.png"]
    md = _unescaped((tmp_path / "summary.md").read_text())
    assert "ok: 1024 entries, 1 assigned to any guest ASID (1 2M)" in md  # re-checked from the gzip
    assert "ok: recorded by the evidence" in md  # teardown: no map wanted, the recorded verdict
    assert sorted(p.name for p in d.iterdir()) == ["running.bin.gz", "running.json", "teardown.bin.gz",
                                                    "teardown.json"]  # nothing unpacked left behind


def test_summary_lists_subtests_skipped_as_declared(run_dir):
    xml = JUnitXml.fromfile(str(run_dir / "junit.xml"))
    case = next(tc for suite in xml for tc in suite if tc.name == "test_gmem_misaligned_conversions[qemu://]")
    case.add_property("subtest_skip", "collapse_2m: MADV_COLLAPSE EINVAL (declared: no THP on this host)")
    xml.write(str(run_dir / "junit.xml"))
    (run_dir / "metadata.json").write_text(json.dumps(META))
    write_summary(run_dir)
    md = _unescaped((run_dir / "summary.md").read_text())
    assert "## Subtests skipped as declared (1)" in md
    assert ("| `tests/snp/test_gmem.py::test_gmem_misaligned_conversions[qemu://]` | qemu:// | "
            "collapse_2m: MADV_COLLAPSE EINVAL (declared: no THP on this host) |") in md


def test_summary_says_how_a_run_ended_early(run_dir):
    (run_dir / "metadata.json").write_text(json.dumps({**META, "interrupted": "SIGTERM",
                                                       "disk_full": "artifact disk full at /runs/x"}))
    write_summary(run_dir)
    md = _unescaped((run_dir / "summary.md").read_text())
    assert "| interrupted | by SIGTERM: only the tests below ran |" in md
    assert "| artifact disk | artifact disk full at /runs/x |" in md
