"""Our own selftests' subtests: all pass, or skip as declared (harness.scenarios.subtests), on captured KTAP."""

from __future__ import annotations

import pytest

from harness.scenarios.ktap import parse_ktap
from harness.scenarios.subtests import NO_SKIPS, DeclaredSkip, review_subtests

THP = "ktap/gmem_thp_split_collapse_test-qemu-tcg-7.3-pass.log"
THP_EINVAL = "ktap/gmem_thp_split_collapse_test-constructed-collapse-einval.log"
MISALIGNED = "ktap/gmem_misaligned_conversions_test-qemu-tcg-7.3-pass.log"
PROBE = "ktap/kvm_caps_probe-qemu-tcg-6.12.log"
TRUNCATED = "ktap/kvm_caps_probe-kvm-pvm-6.18-truncated.log"
COLLAPSE = DeclaredSkip("*collapse*", r"MADV_COLLAPSE not supported", "a kernel without MADV_COLLAPSE")


def tree(data_dir, name):
    return parse_ktap((data_dir / name).read_text().splitlines())


@pytest.mark.parametrize("log, passed", [(THP, 9), (MISALIGNED, 69)])
def test_every_subtest_passed(data_dir, log, passed):
    r = review_subtests(tree(data_dir, log), NO_SKIPS)
    assert r.ok and len(r.passed) == passed and r.declared_skips == () and r.properties() == []


def test_collapse_einval_is_five_unexpected_skips(data_dir):
    # Exit 0 and `passed > 0`, yet the collapse half of the scenario never ran.
    root = tree(data_dir, THP_EINVAL)
    assert root.counts.passed == 4 and root.counts.failed == 0
    r = review_subtests(root)
    assert not r.ok and r.passed == ("fault_in_thp", "split_thp", "data_intact_after_split", "split_then_convert")
    assert [p.split(":")[0] for p in r.problems] == ["collapse_thp", "data_intact_after_collapse",
                                                     "collapse_then_convert", "split_while_private",
                                                     "collapse_while_private"]
    assert r.problems[0] == ("collapse_thp: skipped, and this scenario declares no such skip: "
                             "MADV_COLLAPSE not supported (EINVAL)")


def test_declared_skips_are_reported_with_their_reason(data_dir):
    r = review_subtests(tree(data_dir, THP_EINVAL), [COLLAPSE])
    # The reason must match too: split_while_private skipped for another reason, undeclared.
    assert r.problems == ("split_while_private: skipped, and this scenario declares no such skip: "
                          "no THP to split before it (AnonHugePages 0 kB)",)
    assert [n for n, _, _ in r.declared_skips] == ["collapse_thp", "data_intact_after_collapse",
                                                   "collapse_then_convert", "collapse_while_private"]
    assert r.properties()[0] == ("subtest_skip", "collapse_thp: MADV_COLLAPSE not supported (EINVAL) "
                                                 "(declared: a kernel without MADV_COLLAPSE)")
    everything = review_subtests(tree(data_dir, THP_EINVAL), [COLLAPSE, DeclaredSkip("split_*", "no THP", "x")])
    assert everything.ok and len(everything.properties()) == 5


def test_wrong_reason_is_not_covered(data_dir):
    other = DeclaredSkip("*collapse*", r"^THP disabled", "another reason")
    assert len(review_subtests(tree(data_dir, THP_EINVAL), [other]).problems) == 5


def test_probe_skips_are_problems_unless_declared(data_dir):
    root = tree(data_dir, PROBE)
    assert {p.split(":")[0] for p in review_subtests(root).problems} == {"create_snp_vm", "gmem_huge_folios"}
    declared = [DeclaredSkip("create_snp_vm", "not in KVM_CAP_VM_TYPES", "no SNP here"),
                DeclaredSkip("gmem_huge_folios", "only small folios", "mainline")]
    assert review_subtests(root, declared).ok


def test_crashed_and_missing_subtests_are_problems(data_dir):
    r = review_subtests(tree(data_dir, TRUNCATED))
    assert "KTAP: expected 6 tests, got 2" in r.problems
    assert "4 planned subtest(s) never reported a result (crashed)" in r.problems


@pytest.mark.parametrize("lines, problem", [
    (["TAP version 13", "1..2", "ok 1 a", "not ok 2 b # mismatch"], "b: fail: mismatch"),
    (["TAP version 13", "1..1", "not ok 1 a # error boom"], "a: error: boom"),
    (["TAP version 13", "1..0 # SKIP no /dev/kvm"], "no subtest ran: no /dev/kvm"),
    (["no ktap here"], "KTAP: no KTAP output: no 'KTAP version' or 'TAP version' line"),
])
def test_failures_and_empty_runs(lines, problem):
    assert problem in review_subtests(parse_ktap(lines)).problems


def test_no_ktap_at_all():
    assert review_subtests(None).problems == ("no KTAP output: the subtests cannot be checked",)


def test_nested_subtests_are_named_by_path():
    lines = ["KTAP version 1", "1..1", "  KTAP version 1", "  # Subtest: suite", "  1..2", "  ok 1 a",
             "  ok 2 b # SKIP later", "ok 1 suite"]
    r = review_subtests(parse_ktap(lines), [DeclaredSkip("suite/b", "later", "why")])
    assert r.ok and r.passed == ("suite/a",) and r.declared_skips == (("suite/b", "later", "why"),)
