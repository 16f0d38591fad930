"""harness.bisect.confidence: Clopper-Pearson bounds, --repeat advice, and the report sentence."""

from __future__ import annotations

import math

import pytest

from harness.bisect.confidence import Confidence, clopper_pearson_lower, confidence, runs_needed
from harness.bisect.report import read_steps


def _tail(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _step(outcome: str, runs: int = 3, failed: int = 0, phase: str = "bisect") -> dict:
    return {"phase": phase, "outcome": outcome, "runs": runs, "failed_runs": failed}


# --- clopper_pearson_lower -------------------------------------------------------------------

def test_all_failed_has_a_closed_form():
    assert clopper_pearson_lower(3, 3) == pytest.approx(0.05 ** (1 / 3), abs=1e-12)
    assert clopper_pearson_lower(3, 3) == pytest.approx(0.368, abs=1e-3)
    assert clopper_pearson_lower(9, 9) == pytest.approx(0.05 ** (1 / 9), abs=1e-12)
    assert clopper_pearson_lower(5, 5, alpha=0.1) == pytest.approx(0.1 ** (1 / 5), abs=1e-12)


def test_one_failure_has_a_closed_form():
    # P(X >= 1) = 1 - (1-p)^n = alpha
    for n in (1, 2, 10, 40):
        assert clopper_pearson_lower(1, n) == pytest.approx(1 - 0.95 ** (1 / n), abs=1e-12)


def test_known_value_and_the_defining_equation():
    # Beta(5, 6) 5% quantile, the textbook form of the same bound.
    assert clopper_pearson_lower(5, 10) == pytest.approx(0.22244, abs=1e-4)
    for k, n in ((2, 3), (8, 9), (7, 20), (1, 1)):
        assert _tail(k, n, clopper_pearson_lower(k, n)) == pytest.approx(0.05, abs=1e-9)


def test_no_failures_no_bound():
    assert clopper_pearson_lower(0, 3) == 0.0
    assert clopper_pearson_lower(0, 0) == 0.0


def test_monotone_and_below_the_estimate():
    for n in (1, 3, 9, 30):
        bounds = [clopper_pearson_lower(k, n) for k in range(n + 1)]
        assert bounds == sorted(bounds) and len(set(bounds)) == n + 1
        assert all(b < k / n for k, b in enumerate(bounds) if k)
    # More evidence for the same rate tightens the bound; a looser alpha raises it.
    assert clopper_pearson_lower(2, 3) < clopper_pearson_lower(20, 30) < clopper_pearson_lower(200, 300)
    assert clopper_pearson_lower(2, 3, alpha=0.01) < clopper_pearson_lower(2, 3) < clopper_pearson_lower(2, 3, 0.2)


@pytest.mark.parametrize("k, n, alpha", [(4, 3, 0.05), (-1, 3, 0.05), (1, 3, 0.0), (1, 3, 1.0)])
def test_bad_arguments(k, n, alpha):
    with pytest.raises(ValueError):
        clopper_pearson_lower(k, n, alpha)


# --- runs_needed -----------------------------------------------------------------------------

def test_runs_needed_known_values():
    assert runs_needed(0.2) == 14  # 0.8^13 = 0.055, 0.8^14 = 0.044
    assert runs_needed(0.5) == 5
    assert runs_needed(1.0) == 1
    assert runs_needed(0.99) == 1
    assert runs_needed(0.5, miss=0.125) == 3  # exactly on the boundary: (1/2)^3 == 0.125
    assert runs_needed(0.01, miss=0.01) == 459


def test_runs_needed_is_the_smallest():
    for p in (0.01, 0.05, 0.1, 0.25, 1 / 3, 0.5, 0.7, 0.9):
        for miss in (0.001, 0.01, 0.05, 0.2):
            n = runs_needed(p, miss)
            assert (1 - p) ** n <= miss
            assert n == 1 or (1 - p) ** (n - 1) > miss


@pytest.mark.parametrize("p, miss", [(0.0, 0.05), (-0.1, 0.05), (1.5, 0.05), (0.5, 0.0), (0.5, 1.0)])
def test_runs_needed_bad_arguments(p, miss):
    with pytest.raises(ValueError):
        runs_needed(p, miss)


# --- confidence ------------------------------------------------------------------------------

def test_confidence_of_the_sample_bisect(data_dir):
    c = confidence(read_steps(data_dir / "bisect" / "gmem-found" / "steps.jsonl"), 3)
    # Bad: endpoint-bad 3/3, bisect 2/3, confirm 3/3; good verdicts git acted on: one bisect step.
    assert (c.bad_runs, c.bad_failures, c.good_steps, c.repeat) == (9, 8, 1, 3)
    assert c.p_hat == pytest.approx(8 / 9)
    assert c.p_low == pytest.approx(clopper_pearson_lower(8, 9))
    assert c.miss_per_good_step == pytest.approx((1 / 9) ** 3)
    assert c.miss_per_good_step_low == pytest.approx((1 - c.p_low) ** 3)
    assert c.confidence == pytest.approx(1 - (1 / 9) ** 3)
    assert c.confidence_low == pytest.approx(1 - c.miss_per_good_step_low)
    assert c.confidence_low < c.confidence < 1
    assert c.flaky


def test_only_good_and_bad_verdicts_count():
    steps = [_step("good", phase="endpoint-good"), _step("bad", 3, 3, "endpoint-bad"),
             _step("skip", 0), _step("infra", 0), _step("bad", 3, 1, "verify-revert"),
             _step("good", phase="verify-revert"), _step("bad", 3, 3, "confirm"), {"outcome": "good"},
             {"phase": "bisect", "outcome": "bad", "runs": None, "failed_runs": "2"}]
    c = confidence(steps, 3)
    # Good verdicts count only where git acted on them (phase bisect): not the endpoint, not the revert.
    assert (c.bad_runs, c.bad_failures, c.good_steps) == (6, 6, 0)
    assert not c.flaky and c.p_hat == 1.0 and c.confidence == 1.0


def test_failed_runs_cannot_exceed_runs():
    c = confidence([_step("bad", 3, 5)], 3)
    assert (c.bad_runs, c.bad_failures) == (3, 3)


def test_confidence_is_frozen():
    c = confidence([_step("bad", 3, 3)], 3)
    assert isinstance(c, Confidence)
    with pytest.raises(AttributeError):
        c.p_hat = 0.5


def test_repeat_must_be_positive():
    with pytest.raises(ValueError):
        confidence([], 0)


# --- sentence --------------------------------------------------------------------------------

def test_sentence_for_a_steady_failure():
    steps = [_step("bad", 3, 3, "endpoint-bad"), _step("bad", 3, 3), _step("bad", 3, 3, "confirm"),
             _step("good", phase="endpoint-good"), _step("good"), _step("good")]
    text = confidence(steps, 3).sentence()
    assert text.startswith("The selection failed 9 of 9 runs on bad commits (95% lower bound "
                           "of the failure rate: 0.71).")
    # (1 - 0.7169)^3 = 0.02270 and its complement squared 0.9551: bounds round against the claim.
    assert "With 3 runs per step, a bad commit passes all of them with probability ≤ 0.023 " \
           "(point estimate 0.000)" in text
    assert text.endswith("over 2 good verdicts the culprit is right with probability ≥ 0.95.")
    assert "--repeat" not in text and "flaky" not in text


def test_sentence_recommends_repeat_when_flaky():
    steps = [_step("bad", 3, 2), _step("bad", 3, 1), _step("good")]
    c = confidence(steps, 3)
    assert c.flaky and c.p_hat == 0.5 and runs_needed(0.5) == 5
    text = c.sentence()
    assert "1 good verdict the culprit" in text
    assert "flaky" in text and "re-run with --repeat 5" in text
    assert f"--repeat {runs_needed(c.p_low)} to be safe" in text


def test_sentence_when_repeat_is_already_enough():
    c = confidence([_step("bad", 10, 9), _step("good", 10)], 10)
    assert c.flaky and runs_needed(c.p_hat) <= 10
    assert "re-run" not in c.sentence() and "--repeat 10 is enough" in c.sentence()


def test_sentence_without_bad_runs():
    assert "no estimate of the failure rate" in confidence([_step("good")], 3).sentence()
    assert "no estimate" in confidence([], 3).sentence()


def test_sentence_when_bad_verdicts_saw_no_failure():
    text = confidence([_step("bad", 3, 0), _step("good")], 3).sentence()
    assert "failed 0 of 3 runs" in text and "check the selection" in text
