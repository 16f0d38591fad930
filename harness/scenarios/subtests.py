"""Every subtest of a selftest we own must pass, or skip for a reason its scenario declared (pure).

A program's exit code says only that nothing failed: kselftest exits 0 with most of its
subtests skipped (`ok 5 collapse_thp # SKIP MADV_COLLAPSE not supported (EINVAL)`). For our
own programs a skip nobody declared means the scenario did not run, so it is a problem like a
failure. A declared skip names the subtests it covers, the reason it expects and why that is
acceptable; each one that happens is reported, so a run's record says what was not tested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Iterator, Sequence

from harness.scenarios.ktap import Status, TestNode


@dataclass(frozen=True)
class DeclaredSkip:
    name: str    # fnmatch pattern over subtest names ("parent/child" when nested)
    reason: str  # regex searched in the skip's reason
    why: str     # why this scenario still means something without those subtests


NO_SKIPS: tuple[DeclaredSkip, ...] = ()


@dataclass(frozen=True)
class SubtestReport:
    passed: tuple[str, ...]
    declared_skips: tuple[tuple[str, str, str], ...]  # (subtest, its skip reason, the declaration's why)
    problems: tuple[str, ...]  # failed, crashed or undeclared-skipped subtests; KTAP errors; no subtests

    @property
    def ok(self) -> bool:
        return not self.problems

    def properties(self) -> list[tuple[str, str]]:
        """JUnit testcase properties: one `subtest_skip` per declared skip that happened."""
        return [("subtest_skip", f"{name}: {reason} (declared: {why})") for name, reason, why in self.declared_skips]

    def summary(self) -> str:
        return (f"{len(self.passed)} subtest(s) passed, {len(self.declared_skips)} skipped as declared, "
                f"{len(self.problems)} problem(s)")


def _leaves(node: TestNode, path: str = "") -> Iterator[tuple[str, TestNode]]:
    for child in node.children:
        name = f"{path}/{child.name}" if path else (child.name or f"test {child.number}")
        if child.children:
            yield from _leaves(child, name)
        else:
            yield name, child


def _errors(node: TestNode) -> Iterator[str]:
    yield from node.errors
    for child in node.children:
        yield from _errors(child)


def review_subtests(root: TestNode | None, declared: Sequence[DeclaredSkip] = NO_SKIPS) -> SubtestReport:
    """Each leaf subtest of `root` (parse_ktap's tree) against the rule above."""
    if root is None:
        return SubtestReport((), (), ("no KTAP output: the subtests cannot be checked",))
    passed, skips, problems = [], [], []
    for name, leaf in _leaves(root):
        if leaf.status in (Status.PASS, Status.XFAIL):
            passed.append(name)
        elif leaf.status is Status.SKIP:
            d = next((d for d in declared if fnmatchcase(name, d.name) and re.search(d.reason, leaf.reason)), None)
            if d is None:
                why = leaf.reason or "(no reason)"
                problems.append(f"{name}: skipped, and this scenario declares no such skip: {why}")
            else:
                skips.append((name, leaf.reason, d.why))
        elif leaf.status is Status.CRASHED:
            problems.append(f"{name}: never reported a result (crashed)")
        else:
            problems.append(f"{name}: {leaf.status.value}" + (f": {leaf.reason}" if leaf.reason else ""))
    crashed = sum(1 for _, leaf in _leaves(root) if leaf.status is Status.CRASHED)
    if root.counts.crashed > crashed:  # planned, never reported: no node of their own
        problems.append(f"{root.counts.crashed - crashed} planned subtest(s) never reported a result (crashed)")
    problems += [f"KTAP: {e}" for e in _errors(root)]
    if not passed and not skips:
        problems.append("no subtest ran" + (f": {root.reason}" if root.reason else ""))
    return SubtestReport(tuple(passed), tuple(skips), tuple(dict.fromkeys(problems)))
