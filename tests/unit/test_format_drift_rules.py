"""Format drift (harness.evidence.format_drift) on synthetic trees; the real trees are in
tests/integration/test_format_drift.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.evidence.format_drift import (Entry, Problem, alt_forms, c_strings, catalogue_entries, check_samples,
                                           check_tree, default_entries, hostcheck_entries, render, sample)
from harness.evidence.splat_patterns import Fmt
from harness.evidence.splats import CATALOGUE


def tree(root: Path, files: dict[str, str]) -> Path:
    (root / "kernel").mkdir(parents=True, exist_ok=True)
    (root / "Makefile").write_text("VERSION = 7\n")
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def entry(name: str, *fmts: Fmt, rx: str = r".") -> Entry:
    return Entry(name, fmts, lambda s: re.search(rx, s) is not None)


@pytest.mark.parametrize("fmt, args, line", [
    ("WARNING: %s:%d at %pS, CPU#%d: %s/%d", (), "WARNING: word:123 at kvm_gmem_get_pfn+0x1c/0x50 [kvm], "
                                                "CPU#123: word/123"),
    ("error %#x, pfn:%05lx, %016llx, %08x", (), "error 0x1c, pfn:0001c, 000000000000001c, 0000001c"),
    ("%s%s() in [%ps] %%d %.*s\\n", ("__this_cpu_", "read"), "__this_cpu_read() in [kvm_gmem_get_pfn [kvm]] %d word"),
    ("%*pbl online, %pV, \\\"%c\\\"", (), "0-3 online, Poison overwritten, \"+\""),
])
def test_render(fmt, args, line):
    assert render(fmt, args) == line


def test_c_strings_joins_adjacent_literals_like_the_compiler():
    src = '''
    pr_err("BUG: Dentry %p{i=%llx,n=%pd} "   /* split */
           " still in use (%d)\\n", d);  // "not this"
    printk(KERN_ERR "a \\"quoted\\" one" X "after a macro");
    c = '"'; d = "x";
    '''
    assert c_strings(src) == ['BUG: Dentry %p{i=%llx,n=%pd}  still in use (%d)\\n', 'a \\"quoted\\" one',
                              "after a macro", "x"]


def test_every_pattern_names_its_sources_and_matches_them():
    assert all(p.fmts for p in CATALOGUE), [p.name for p in CATALOGUE if not p.fmts]
    assert all(e.fmts for e in hostcheck_entries())
    assert check_samples(default_entries()) == []


def test_a_pattern_missing_its_own_sample_is_reported():
    broken = entry("broken", Fmt("kernel/x.c", "BUG: thing %d happened"), rx=r"^BUG: other")
    (problem,) = check_samples([broken])
    assert problem.entry == "broken" and "does not match its own sample 'BUG: thing 123 happened'" in problem.what
    raising = Entry("raising", (Fmt("kernel/x.c", "x"),), lambda s: 1 / 0)
    assert "ZeroDivisionError" in check_samples([raising])[0].what


def test_synthetic_tree(tmp_path):
    root = tree(tmp_path, {
        "kernel/panic.c": 'pr_warn("WARNING: %s:%d at %pS, CPU#%d: %s/%d\\n",\n file, line);\n'
                          'pr_emerg("Kernel panic - not syncing: "\n         "%s\\n", buf);\n',
        "kernel/feature.c": "static int new_feature_init(void) { return 0; }\n"})
    entries = [
        entry("panic", Fmt("kernel/panic.c", "Kernel panic - not syncing: %s")),           # split literal: found
        entry("gone", Fmt("kernel/panic.c", "BUG: something else %d")),                     # reworded: reported
        entry("moved", Fmt("kernel/moved.c", "INFO: moved")),                               # file gone: reported
        entry("old_only", Fmt("kernel/panic.c", "WARNING: at %s:%d %pS()", old=True)),      # older kernels: not asked
        entry("warn_612", Fmt("kernel/panic.c", "WARNING: CPU: %d PID: %d at %s:%d %pS", alt="warn")),
        entry("warn_7x", Fmt("kernel/panic.c", "WARNING: %s:%d at %pS, CPU#%d: %s/%d", alt="warn")),
        entry("feature_absent", Fmt("kernel/panic.c", "FOO: %d", when=r"\bno_such_function\(")),
        entry("feature_present", Fmt("kernel/feature.c", "FEATURE: %d failed", when=r"\bnew_feature_init\(")),
    ]
    problems = check_tree(root, entries)
    assert sorted((p.entry, p.what) for p in problems) == [
        ("feature_present", "format string not in the file"),
        ("gone", "format string not in the file"),
        ("moved", "file not in this tree"),
    ]
    assert all(isinstance(p, Problem) and p.entry in str(p) for p in problems)
    assert alt_forms(root, entries) == {"warn": ("WARNING: %s:%d at %pS, CPU#%d: %s/%d",)}


def test_an_alternative_family_with_no_form_left_is_reported(tmp_path):
    root = tree(tmp_path, {"kernel/panic.c": 'pr_warn("WARNING: %s at %pS (CPU %d)\\n", x);\n'})
    warn = [e for e in catalogue_entries() if e.name in ("warning", "warning_7x")]
    problems = check_tree(root, warn)
    assert [(p.entry, p.what) for p in problems] == [
        ("warning, warning_7x", "no form of 'warn' is in this tree"),
        ("warning, warning_7x", "no form of 'warn_nofile' is in this tree")]
    root = tree(tmp_path, {"kernel/panic.c": 'pr_warn("WARNING: CPU: %d PID: %d at %s:%d %pS\\n", ...);\n'
                                             'pr_warn("WARNING: CPU: %d PID: %d at %pS\\n", ...);\n'})
    assert check_tree(root, warn) == []                     # 6.12's form alone is fine
    root = tree(tmp_path, {"kernel/panic.c": 'pr_warn("WARNING: %s:%d at %pS, CPU#%d: %s/%d\\n", ...);\n'})
    assert [p.what for p in check_tree(root, warn)] == ["no form of 'warn_nofile' is in this tree"]


def test_the_real_catalogue_on_an_empty_tree_reports_every_claimed_format(tmp_path):
    problems = check_tree(tree(tmp_path, {}))
    claimed = {(f.path, f.text) for e in default_entries() for f in e.fmts if not (f.old or f.when or f.alt)}
    assert {(p.path, p.text) for p in problems if p.what == "file not in this tree"} == claimed
    assert any("no form of 'warn'" in p.what for p in problems)
    assert check_tree(tmp_path / "nowhere", []) == [Problem("-", str(tmp_path / "nowhere"), "",
                                                            "not a kernel tree (no Makefile, no kernel/)")]


def test_samples_are_what_the_kernel_prints():
    f = Fmt("arch/x86/virt/svm/sev.c", "RMPUPDATE failed for PFN %llx, pg_level: %d, ret: %d", prefix="SEV-SNP: ")
    assert sample(f) == "SEV-SNP: RMPUPDATE failed for PFN 1c, pg_level: 123, ret: 123"
    g = Fmt("lib/refcount.c", "underflow; use-after-free", sample="refcount_t: underflow; use-after-free.")
    assert sample(g) == "refcount_t: underflow; use-after-free."
