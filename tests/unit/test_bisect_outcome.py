"""A bisect step's verdict from its JUnit cases, and git bisect run's exit codes."""

from __future__ import annotations

from harness.bisect.outcome import EXIT, classify
from harness.report.junit import Case, Outcome


def case(outcome: str, name: str = "test_x[qemu://]", message: str = "", repeat: str | None = None) -> Case:
    props = (("nodeid", f"tests/snp/test_gmem.py::{name}"),) + ((("repeat", repeat),) if repeat else ())
    return Case(name, "tests.snp.test_gmem", Outcome(outcome), message, props)


def test_git_exit_codes():
    assert EXIT == {"good": 0, "bad": 1, "skip": 125, "infra": 128}
    assert all(code >= 128 for o, code in EXIT.items() if o == "infra")  # git aborts, marks nothing


def test_all_passed_is_good():
    v = classify(0, [case("passed"), case("passed", "test_y[qemu://]")], 1)
    assert (v.outcome, v.exit, v.runs, v.failed_runs) == ("good", 0, 1, 0)


def test_a_failure_in_any_run_is_bad_and_runs_are_counted():
    cases = [case("passed", "test_x[qemu://-run1]", repeat="1"),
             case("failed", "test_x[qemu://-run2]", "assert 1 == 0\nmore", repeat="2"),
             case("passed", "test_x[qemu://-run3]", repeat="3"),
             case("failed", "test_x[qemu://-run4]", "boom", repeat="4")]
    v = classify(1, cases, 4)
    assert (v.outcome, v.exit, v.runs, v.failed_runs) == ("bad", 1, 4, 2)
    assert "2 of 4 run(s) failed" in v.reason and "assert 1 == 0" in v.reason and "more" not in v.reason
    assert v.failed_tests == ("tests/snp/test_gmem.py::test_x[qemu://-run2]",
                              "tests/snp/test_gmem.py::test_x[qemu://-run4]")


def test_an_error_anywhere_is_infra_even_with_failures():
    v = classify(1, [case("failed", message="x"), case("error", message="TransportError: connection lost")], 1)
    assert (v.outcome, v.exit) == ("infra", 128)
    assert "TransportError: connection lost" in v.reason


def test_everything_skipped_cannot_judge_the_commit():
    v = classify(0, [case("skipped", message="needs sw_protected_vm: not in this kernel")], 1)
    assert (v.outcome, v.exit) == ("skip", 125)
    assert "needs sw_protected_vm" in v.reason


def test_pytest_problems_are_infra():
    assert classify(5, [], 1).reason.endswith("(no tests collected: the selection matches no test)")
    assert classify(2, [case("passed")], 1).outcome == "infra"  # interrupted
    assert classify(0, [], 1).outcome == "infra"  # no JUnit results at all
    assert classify(1, [case("passed")], 1).outcome == "infra"  # exit 1 with nothing failed
