"""KTAP / kselftest parser, assertion blocks and skip reasons, on real captured output (tests/data/ktap, selftest)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.scenarios.ktap import (AssertionFailure, Counts, Status, TestNode, diagnostics_kv, parse_assertion,
                                    parse_ktap, skip_reason)

PROBE = "ktap/kvm_caps_probe-kvm-pvm-6.18.log"
HUGETLB_1GB = "selftest/x86_64_private_mem_conversions_test-qemu-tcg-6.12-hugetlb_1gb-assert.log"
NO_KTAP = Counts(errors=1)


def read(data_dir, name: str) -> list[str]:
    return (data_dir / name).read_text().splitlines()


def parse(text: str) -> TestNode:
    return parse_ktap(text.splitlines())


THP = "ktap/gmem_thp_split_collapse_test-qemu-tcg-7.3-pass.log"
THP_EINVAL = "ktap/gmem_thp_split_collapse_test-constructed-collapse-einval.log"
MISALIGNED = "ktap/gmem_misaligned_conversions_test-qemu-tcg-7.3-pass.log"

TABLE = [
    (PROBE, Status.PASS, Counts(passed=3, skipped=3)),
    (THP, Status.PASS, Counts(passed=9)),
    (THP_EINVAL, Status.PASS, Counts(passed=4, skipped=5)),
    (MISALIGNED, Status.PASS, Counts(passed=69)),
    ("ktap/kvm_caps_probe-qemu-tcg-6.12.log", Status.PASS, Counts(passed=5, skipped=2)),
    ("ktap/kvm_caps_probe-kvm-pvm-6.18-truncated.log", Status.CRASHED, Counts(passed=2, crashed=4, errors=1)),
    ("ktap/kunit-all_passed_nested.log", Status.PASS, Counts(passed=7)),
    ("ktap/kunit-failure.log", Status.FAIL, Counts(passed=9, failed=1)),
    ("ktap/kunit-kernel_panic_interrupt.log", Status.CRASHED, Counts(passed=8, crashed=2, errors=2)),
    ("ktap/kunit-interrupted_tap_output.log", Status.PASS, Counts(passed=10)),
    ("ktap/kunit-kselftest_nested.log", Status.PASS, Counts(passed=4)),
    ("ktap/kunit-config_printk_time.log", Status.PASS, Counts(passed=10)),
    ("ktap/kunit-multiple_prefixes.log", Status.PASS, Counts(passed=10)),
    ("ktap/kunit-pound_sign.log", Status.PASS, Counts(passed=10)),
    ("ktap/kunit-missing_plan.log", Status.PASS, Counts(passed=10)),
    ("ktap/kunit-parse_ktap_output.log", Status.PASS, Counts(passed=3)),
    ("ktap/kunit-skip_tests.log", Status.PASS, Counts(passed=4, skipped=1)),
    ("ktap/kunit-skip_all_tests.log", Status.SKIP, Counts(skipped=5)),
    ("ktap/kunit-no_tests_run_with_header.log", Status.NO_TESTS, Counts(errors=1)),
    ("ktap/kunit-no_tests_run_no_header.log", Status.NO_TESTS, NO_KTAP),
    # 6.12 KVM selftests report through their exit code: no KTAP at all, even when they skip or assert.
    ("selftest/guest_memfd_test-qemu-tcg-6.12-pass.log", Status.NO_TESTS, NO_KTAP),
    ("selftest/set_memory_region_test-qemu-tcg-6.12-pass.log", Status.NO_TESTS, NO_KTAP),
    ("selftest/kvm_create_max_vcpus-qemu-tcg-6.12-pass.log", Status.NO_TESTS, NO_KTAP),
    ("selftest/x86_64_sev_smoke_test-qemu-tcg-6.12-skip-no-sev.log", Status.NO_TESTS, NO_KTAP),
    ("selftest/x86_64_nx_huge_pages_test-qemu-tcg-6.12-skip-no-token.log", Status.NO_TESTS, NO_KTAP),
    (HUGETLB_1GB, Status.NO_TESTS, NO_KTAP),
]


@pytest.mark.parametrize("log, status, counts", TABLE)
def test_parse(data_dir, log, status, counts):
    node = parse_ktap(read(data_dir, log))
    assert (node.status, node.counts) == (status, counts)


def test_every_data_file_is_in_the_table(data_dir):
    listed = {row[0] for row in TABLE}
    on_disk = {f"{d}/{p.name}" for d in ("ktap", "selftest") for p in (data_dir / d).glob("*.log")}
    assert on_disk == listed


def test_no_version_line_is_no_tests_with_an_error(data_dir):
    node = parse_ktap(read(data_dir, "selftest/set_memory_region_test-qemu-tcg-6.12-pass.log"))
    assert node.errors == ["no KTAP output: no 'KTAP version' or 'TAP version' line"]
    assert node.children == []


def test_probe_results_reasons_and_totals(data_dir):
    node = parse_ktap(read(data_dir, PROBE))
    assert node.plan == 6 and node.errors == []
    assert [(c.number, c.name, c.status, c.directive) for c in node.children] == [
        (1, "vm_types", Status.PASS, None),
        (2, "guest_memfd", Status.PASS, None),
        (3, "memory_attributes", Status.SKIP, "SKIP"),
        (4, "gmem_flags", Status.PASS, None),
        (5, "create_sw_protected_vm", Status.SKIP, "SKIP"),
        (6, "create_snp_vm", Status.SKIP, "SKIP"),
    ]
    assert node.children[2].reason == "KVM_CAP_MEMORY_ATTRIBUTES not supported"
    assert node.children[5].reason == "VM type snp not in KVM_CAP_VM_TYPES; KVM_CREATE_VM: EINVAL(22)"
    assert node.totals == {"pass": 3, "fail": 0, "xfail": 0, "xpass": 0, "skip": 3, "error": 0}
    # Noise before the version line is not part of the document.
    assert not any("Random seed" in line for c in [node, *node.children] for line in c.diagnostics)


def test_diagnostics_kv_on_the_probe(data_dir):
    facts = diagnostics_kv(parse_ktap(read(data_dir, PROBE)))
    assert facts == {
        "kernel_release": "6.18.44-fc-v669", "kvm_api_version": "12", "vm_types": "0x1 default",
        "create_vm_default": "ok", "create_vm_sw_protected": "EINVAL(22)", "create_vm_sev": "EINVAL(22)",
        "create_vm_sev_es": "EINVAL(22)", "create_vm_snp": "EINVAL(22)",
        "guest_memfd": "1", "user_memory2": "1", "guest_memfd_default": "1", "gmem_create_2m_default": "ok",
        "gmem_vm_type": "default", "gmem_create_2m": "ok",
        "memory_attributes": "0x0", "memory_attributes_default": "0x0",
        "gmem_flags_default": "0x3 bit0 bit1", "gmem_flags": "0x3 bit0 bit1", "gmem_flags_errors": "none",
    }
    assert "Totals" not in facts


def test_diagnostics_kv_without_ktap():
    assert diagnostics_kv(None) == {}
    # A repeated key: the first found wins, walking each node's own lines before its children's. The line
    # after `ok 1 a` belongs to the root, so it is found before the one that belongs to test `a`.
    assert diagnostics_kv(parse(
        "TAP version 13\n1..1\n# key: in a\n# not a key line\n# url: http://x\nok 1 a\n# key: trailing")) == {
        "key": "trailing", "url": "http://x"}


def test_truncated_probe_crashes_the_missing_tests(data_dir):
    node = parse_ktap(read(data_dir, "ktap/kvm_caps_probe-kvm-pvm-6.18-truncated.log"))
    assert node.errors == ["expected 6 tests, got 2"]
    assert [c.name for c in node.children] == ["vm_types", "guest_memfd"]
    # what test 3 printed before the output stopped stays on the document
    assert node.diagnostics[-2:] == ["# memory_attributes: 0x0", "# memory_attributes_default: 0x0"]
    assert diagnostics_kv(node)["memory_attributes"] == "0x0"


def test_kernel_panic_mid_suite(data_dir):
    node = parse_ktap(read(data_dir, "ktap/kunit-kernel_panic_interrupt.log"))
    assert [(c.name, c.status) for c in node.children] == [
        ("kunit-resource-test", Status.PASS), ("kunit-try-catch-test", Status.PASS), ("string-stream-test", Status.CRASHED)]
    stream = node.children[2]
    assert stream.plan == 3 and [c.name for c in stream.children] == ["string_stream_test_empty_on_creation"]
    assert stream.errors == ["expected 3 tests, got 1", "missing result line for string-stream-test"]
    assert stream.counts == Counts(passed=1, crashed=2, errors=2)


def test_dmesg_timestamps_are_measured_on_the_version_line_and_stripped(data_dir):
    for log in ("ktap/kunit-config_printk_time.log", "ktap/kunit-multiple_prefixes.log"):
        node = parse_ktap(read(data_dir, log))
        assert [c.name for c in node.children] == ["kunit-resource-test", "kunit-try-catch-test", "string-stream-test"]
        assert node.children[0].children[4].name == "kunit_resource_test_proper_free_ordering"
    # Lines of the section without the stamp (console output from userspace) are kept whole.
    node = parse("[    0.060000] KTAP version 1\n[    0.060000] 1..1\n# probe: 1\n[    0.061000] ok 1 t")
    assert (node.status, node.children[0].diagnostics) == (Status.PASS, ["# probe: 1"])


def test_noise_inside_the_section_is_diagnostics(data_dir):
    node = parse_ktap(read(data_dir, "ktap/kunit-interrupted_tap_output.log"))
    resource = node.children[0]
    assert "BTRFS: selftest: running btrfs free space cache tests" in resource.children[3].diagnostics
    assert node.errors == [] and node.counts.errors == 0


def test_nested_subtests(data_dir):
    node = parse_ktap(read(data_dir, "ktap/kunit-all_passed_nested.log"))
    sysctl, example = node.children
    assert (sysctl.name, sysctl.plan, len(sysctl.children)) == ("sysctl_test", 4, 4)
    inner = sysctl.children[1]
    assert (inner.name, [c.name for c in inner.children]) == ("example", ["example_simple_test", "example_mock_test"])
    assert "kunit sysctl_test: all tests passed" in sysctl.diagnostics
    assert example.counts == Counts(passed=2)


def test_ktap_v1_nested_version_lines(data_dir):
    node = parse_ktap(read(data_dir, "ktap/kunit-parse_ktap_output.log"))
    (suite,) = node.children
    assert (suite.name, [c.name for c in suite.children]) == ("suite", ["case_1", "case_2", "case_3"])


def test_kselftest_runner_nesting(data_dir):
    node = parse_ktap(read(data_dir, "ktap/kunit-kselftest_nested.log"))
    single, multi = node.children
    assert single.name == "selftests: membarrier: membarrier_test_single_thread"
    assert single.diagnostics[0] == "# selftests: membarrier: membarrier_test_single_thread"
    assert [c.name for c in single.children] == [
        "sys_membarrier available",
        "sys membarrier invalid command test: command = -1, flags = 0, errno = 22. Failed as expected"]
    assert multi.name == "selftests: membarrier: membarrier_test_multi_thread" and multi.counts == Counts(passed=2)


def test_kselftest_runner_with_a_failing_program():
    node = parse("TAP version 13\n1..2\n# selftests: kvm: a\n# TAP version 13\n# 1..1\n# ok 1 inner\n"
                 "not ok 1 selftests: kvm: a # exit=1\n# selftests: kvm: b\n# Random seed: 0x1\n"
                 "ok 2 selftests: kvm: b\n")
    a, b = node.children
    # the program said "ok" for its only test but exited 1: the runner's verdict is not lost
    assert (a.status, a.counts, a.reason) == (Status.FAIL, Counts(passed=1, failed=1), "exit=1")
    assert (b.status, b.children, b.diagnostics) == (Status.PASS, [], ["# selftests: kvm: b", "# Random seed: 0x1"])
    assert node.status is Status.FAIL


@pytest.mark.parametrize("line, name, status, directive, reason", [
    ("ok 1 a_test", "a_test", Status.PASS, None, ""),
    ("ok 1 - hyphenated", "hyphenated", Status.PASS, None, ""),
    ("not ok 1 broken", "broken", Status.FAIL, None, ""),
    ("ok 1 # SKIP - Requirement not met: kvm_cpu_has(X86_FEATURE_SEV)", "", Status.SKIP, "SKIP",
     "Requirement not met: kvm_cpu_has(X86_FEATURE_SEV)"),  # ksft_exit_skip() after a plan: no name
    ("ok 1 global.t # SKIP no 1G pages", "global.t", Status.SKIP, "SKIP", "no 1G pages"),  # kselftest_harness
    ("ok 1 # XFAIL known bug", "", Status.XFAIL, "XFAIL", "known bug"),  # ksft_test_result_xfail()
    ("ok 1 t # XPASS ", "t", Status.FAIL, "XPASS", ""),  # ksft_test_result_code(KSFT_XPASS)
    ("not ok 1 # error no /dev/kvm", "", Status.ERROR, "ERROR", "no /dev/kvm"),  # ksft_test_result_error()
    ("not ok 1 t # TIMEOUT 30 seconds", "t", Status.FAIL, "TIMEOUT", "30 seconds"),
    ("not ok 1 t # TODO later", "t", Status.XFAIL, "TODO", "later"),
    ("ok 1 t # TODO later", "t", Status.PASS, "TODO", "later"),
    ("ok 1 t #  rcode=0", "t", Status.PASS, None, "rcode=0"),  # ksft_test_result_code(): "#  " and no directive
])
def test_result_lines(line, name, status, directive, reason):
    (child,) = parse(f"KTAP version 1\n1..1\n{line}").children
    assert (child.name, child.status, child.directive, child.reason) == (name, status, directive, reason)


def test_whole_program_skip_plan():
    node = parse("TAP version 13\n1..0 # SKIP - Requirement not met: kvm_has_cap(KVM_CAP_VM_TYPES)")
    assert (node.status, node.counts, node.errors) == (Status.SKIP, Counts(skipped=1), [])
    assert node.reason == "Requirement not met: kvm_has_cap(KVM_CAP_VM_TYPES)"


def test_bail_out_stops_the_document():
    node = parse("TAP version 13\n1..3\nok 1 a\nBail out! cannot open /dev/kvm: No such file (2)\n"
                 "ok 2 after-bail\n# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0")
    assert node.status is Status.CRASHED and node.counts == Counts(passed=1, crashed=2, errors=2)
    assert node.errors == ["Bail out! cannot open /dev/kvm: No such file (2)", "expected 3 tests, got 1"]


def test_totals_that_disagree_are_an_error():
    node = parse("TAP version 13\n1..1\nok 1 a\n# Totals: pass:2 fail:0 xfail:0 xpass:0 skip:0 error:0")
    assert node.errors == ["'# Totals:' counts 2 results, parsed 1"]


def test_extra_results_and_wrong_numbers_are_errors():
    node = parse("KTAP version 1\n1..1\nok 1 a\nok 3 b")
    assert node.errors == ["expected 1 tests, got 2"] and node.children[1].errors == ["expected test number 2, got 3"]
    assert (node.status, node.counts) == (Status.PASS, Counts(passed=2, errors=2))


def test_trailing_plan():
    node = parse("TAP version 13\nok 1 a\nnot ok 2 b\n1..2")
    assert (node.plan, node.status, node.counts) == (2, Status.FAIL, Counts(passed=1, failed=1))


def test_deep_nesting_is_cut_off_without_raising():
    node = parse("KTAP version 1\n" + "# Subtest: s\n" * 500 + "ok 1 s\n")
    assert node.status is Status.CRASHED
    assert any("tests nested too deeply" in e for n in _walk(node) for e in n.errors)


def _walk(node: TestNode):
    yield node
    for child in node.children:
        yield from _walk(child)


def test_parse_assertion_on_the_real_hugetlb_1gb_failure(data_dir):
    failure = parse_assertion(read(data_dir, HUGETLB_1GB))
    assert failure == AssertionFailure(
        file="lib/kvm_util.c", line=1000, expression="region->mmap_start != MAP_FAILED", errno=22,
        message="mmap() failed, rc: -1 errno: 22 (Invalid argument)", backtrace=["(stack trace empty)"],
        strerror="Invalid argument")
    assert str(failure) == ("lib/kvm_util.c:1000: region->mmap_start != MAP_FAILED: "
                            "mmap() failed, rc: -1 errno: 22 (Invalid argument) (errno 22: Invalid argument)")


# The shape test_assert() prints when addr2line works (lib/assert.c: `addr2line ... | cat -n`), under the
# kselftest runner's "# " prefix, with a second assertion from another thread after it.
WITH_BACKTRACE = """\
# Random seed: 0x6b8b4567
# ==== Test Assertion Failure ====
#   x86_64/private_mem_conversions_test.c:208: !memcmp(mem, expected, size)
#   pid=412 tid=415 errno=0 - Success
#      1\t0x0000000000402c9b: guest_code at private_mem_conversions_test.c:208
#      2\t0x00000000004031f4: vcpu_thread_main at private_mem_conversions_test.c:331
#      3\t0x00007f5d30c29d8f: ?? ??:0
#   Guest data mismatch at 0x1000: 0x0 != 0xaa
#   (after a conversion to shared)
#
# ==== Test Assertion Failure ====
#   lib/kvm_util.c:1:2: never this one
not ok 1 selftests: kvm: private_mem_conversions_test # exit=254
"""


def test_parse_assertion_with_backtrace_prefix_and_multiline_message():
    failure = parse_assertion(WITH_BACKTRACE.splitlines())
    assert (failure.file, failure.line, failure.errno) == ("x86_64/private_mem_conversions_test.c", 208, 0)
    assert failure.expression == "!memcmp(mem, expected, size)"
    assert failure.backtrace == [
        "1\t0x0000000000402c9b: guest_code at private_mem_conversions_test.c:208",
        "2\t0x00000000004031f4: vcpu_thread_main at private_mem_conversions_test.c:331",
        "3\t0x00007f5d30c29d8f: ?? ??:0"]
    assert failure.message == "Guest data mismatch at 0x1000: 0x0 != 0xaa\n(after a conversion to shared)"
    assert str(failure).startswith("x86_64/private_mem_conversions_test.c:208: !memcmp(mem, expected, size): Guest")
    assert "errno" not in str(failure)  # errno 0 is noise


def test_parse_assertion_without_addr2line_and_without_a_block():
    failure = parse_assertion(["==== Test Assertion Failure ====", "  lib/x.c:7: a == b",
                               "  pid=1 tid=1 errno=2 - No such file or directory", "sh: 1: addr2line: not found",
                               "  0x1 != 0x2 (a != b)"])
    assert failure.backtrace == ["sh: 1: addr2line: not found"] and failure.message == "0x1 != 0x2 (a != b)"
    assert str(failure) == "lib/x.c:7: a == b: 0x1 != 0x2 (a != b) (errno 2: No such file or directory)"
    assert parse_assertion(["Random seed: 0x6b8b4567"]) is None
    assert str(parse_assertion(["==== Test Assertion Failure ===="])) == "Test Assertion Failure"


@pytest.mark.parametrize("log, reason", [
    ("selftest/x86_64_sev_smoke_test-qemu-tcg-6.12-skip-no-sev.log",
     "Requirement not met: kvm_cpu_has(X86_FEATURE_SEV)"),
    # The fmt spans two lines; only the `1..0 # SKIP` line is taken (stderr may follow it in a capture).
    ("selftest/x86_64_nx_huge_pages_test-qemu-tcg-6.12-skip-no-token.log",
     "This test must be run with the magic token via '-t 887563923'."),
    ("selftest/guest_memfd_test-qemu-tcg-6.12-pass.log", None),
    (HUGETLB_1GB, None),
])
def test_skip_reason_on_real_logs(data_dir, log, reason):
    assert skip_reason(read(data_dir, log)) == reason


def test_skip_reason_other_forms():
    assert skip_reason(["Random seed: 0x1", "MCG_CMCI_P is not supported, skipping test"]) == \
        "MCG_CMCI_P is not supported"  # print_skip()
    assert skip_reason(["TAP version 13", "1..3", "ok 1 a", "ok 2 # SKIP - Requirement not met: x",
                        "# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:1 error:0"]) == "Requirement not met: x"
    assert skip_reason(["1..0 # SKIP"]) is None


KTAPISH = st.sampled_from([
    "KTAP version 1", "TAP version 13", "# TAP version 13", "# # KTAP version 1", "1..0", "1..2", "  1..1",
    "1..0 # SKIP x", "ok 1 a", "not ok 1 a", "ok 2 - b # SKIP r", "not ok 2 # error e", "  ok 1 a", "\tok 3 c",
    "# Subtest: a", "  # Subtest: b", "# ok 1 a", "# not ok 2", "# 1..1", "Bail out! x", "# # Bail out!", "#",
    "# Totals: pass:1 fail:0", "# key: value", "[    0.1] KTAP version 1", "[    0.1] ok 1 a",
    "==== Test Assertion Failure ====", "  f.c:1: e", "  pid=1 tid=1 errno=22 - x", "     1\t0x1: f at g:1",
    "1..0 # SKIP - Requirement not met: y", "z, skipping test", "List of all partitions:", "", " ",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(KTAPISH, st.text(max_size=40)), max_size=40))
def test_parsers_never_raise(lines):
    node = parse_ktap(lines)
    assert isinstance(node, TestNode) and isinstance(node.status, Status)
    assert not any(e.startswith("internal parser error") for n in _walk(node) for e in n.errors)
    assert node.counts.errors == sum(len(n.errors) for n in _walk(node))
    assert node.counts.status() is node.status
    # What the other parsers return comes from the input, and only where the input has it.
    text = "\n".join(lines)
    for key, value in diagnostics_kv(node).items():
        assert f"{key}:" in text and value in text
    failure = parse_assertion(lines)
    headed = any(re.search(r"==== Test Assertion Failure ====\s*$", x) for x in text.splitlines())
    assert (failure is not None) == headed
    if failure is not None:
        assert failure.file in text and failure.expression in text
        assert all(m in text for m in failure.message.splitlines())
        assert str(failure).startswith(f"{failure.file}:{failure.line}: " if failure.file else failure.expression
                                       or "Test Assertion Failure")
    reason = skip_reason(lines)
    assert reason is None or (reason.strip() == reason != "" and reason in text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_parsers_never_raise_on_arbitrary_text(text):
    parse_ktap(text.splitlines())
    parse_assertion(text.splitlines())
    skip_reason(text.splitlines())
