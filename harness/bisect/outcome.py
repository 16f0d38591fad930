"""One bisect step's verdict, from the selection's JUnit, and git bisect run's exit code for it.

good -> 0, bad -> 1, skip -> 125 (the commit can't be tested: it doesn't build, the
series doesn't apply, every test skipped), infra -> 128 (git aborts the bisect: a
dead host or a hung command says nothing about the commit, so it never marks one bad).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from harness.report.junit import Case

EXIT = {"good": 0, "bad": 1, "skip": 125, "infra": 128}
# What `snp-harness bisect-step` itself exits with. A guard around it (driver.GUARD) hands git
# 1 only for STEP_BAD: a step that crashed, or a Python that could not even start, exits 1 or 2
# and must stop the bisect, not mark the commit bad.
STEP_BAD = 42
STEP_EXIT = {**EXIT, "bad": STEP_BAD}
_PYTEST_EXITS = {2: "interrupted", 3: "internal error", 4: "usage error",
                 5: "no tests collected: the selection matches no test"}


@dataclass(frozen=True)
class Verdict:
    outcome: str  # good, bad, skip, infra
    reason: str
    runs: int = 0
    failed_runs: int = 0
    failed_tests: tuple[str, ...] = field(default_factory=tuple)

    @property
    def exit(self) -> int:
        return EXIT[self.outcome]


def _first_line(text: str) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def classify(pytest_exit: int, cases: Sequence[Case], repeat: int) -> Verdict:
    """The verdict of one step's pytest session: `repeat` runs of the selection."""
    errors = [c for c in cases if c.outcome == "error"]
    if errors:
        c = errors[0]
        return Verdict("infra", f"infrastructure error in {c.nodeid}: {_first_line(c.message)}")
    if pytest_exit not in (0, 1):
        return Verdict("infra", f"pytest exited {pytest_exit} ({_PYTEST_EXITS.get(pytest_exit, 'unknown')})")
    if not cases:
        return Verdict("infra", f"pytest exited {pytest_exit} and reported no testcase (no JUnit results)")
    failed = [c for c in cases if c.outcome == "failed"]
    if failed:
        runs_failed = sorted({c.prop("repeat", "1") for c in failed}, key=int)
        c = failed[0]
        return Verdict("bad", f"{len(runs_failed)} of {repeat} run(s) failed; first: {c.nodeid}: "
                              f"{_first_line(c.message)}", repeat, len(runs_failed),
                       tuple(dict.fromkeys(c.nodeid for c in failed)))
    if pytest_exit == 1:
        return Verdict("infra", "pytest exited 1 but no testcase failed (see the step's pytest output)")
    passed = [c for c in cases if c.outcome == "passed"]
    if not passed:
        return Verdict("skip", f"every selected test skipped, so this commit can't be judged: "
                               f"{_first_line(cases[0].message)}")
    return Verdict("good", f"all {repeat} run(s) passed ({len(passed)} testcase(s))", repeat, 0)
