"""How far a bisect's verdicts can be trusted when the selection fails only sometimes.

A bad verdict is evidence by itself: a failure was seen (the harness assumes good
commits do not fail). A good verdict is not: a bad commit passes all `repeat` runs with
probability (1-p)^repeat, where p is the failure rate on bad commits, and one such
false "good" sends the bisect to the wrong commit. So p is estimated from the runs at
bad steps (with a one-sided 95% Clopper-Pearson lower bound, the pessimistic end), and
the culprit is right when every good verdict was really good: the product over good
steps of 1 - (1-p)^repeat.

Pure: no I/O, no scipy (math.comb and bisection are plenty for a few dozen runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MISS = 0.05  # the chance a bad commit may pass every run of a step that --repeat advice aims for
_GOOD_PHASES_ONLY = ("verify-revert",)  # a failing revert says nothing about the culprit's failure rate


def clopper_pearson_lower(k: int, n: int, alpha: float = 0.05) -> float:
    """One-sided (1 - alpha) lower confidence bound of a failure rate: k failures in n runs.

    The p at which seeing k or more failures has probability alpha; 0.0 when k == 0 (or n == 0).
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k} n={n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if k == 0:
        return 0.0

    def tail(p: float) -> float:  # P(X >= k) for X ~ Binomial(n, p), increasing in p
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))

    lo, hi = 0.0, 1.0
    for _ in range(100):  # 2^-100: far below a double's resolution
        mid = (lo + hi) / 2
        if tail(mid) < alpha:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def runs_needed(p: float, miss: float = MISS) -> int:
    """The smallest N with (1-p)^N <= miss: runs per step so a bad commit (failure rate p)
    passes all of them with probability at most `miss`."""
    if not 0 < p <= 1:
        raise ValueError(f"failure rate must lie in (0, 1], got {p}")
    if not 0 < miss < 1:
        raise ValueError(f"miss must lie in (0, 1), got {miss}")
    if p == 1:
        return 1
    n = max(1, math.ceil(math.log(miss) / math.log1p(-p)))
    # The logarithms may be off by an ulp right at the boundary: settle it with the power itself.
    while (1 - p) ** n > miss:
        n += 1
    while n > 1 and (1 - p) ** (n - 1) <= miss:
        n -= 1
    return n


@dataclass(frozen=True)
class Confidence:
    bad_runs: int  # runs at steps judged bad
    bad_failures: int  # failed runs among them
    p_hat: float  # failure rate on bad commits, point estimate
    p_low: float  # its 95% lower bound
    good_steps: int
    repeat: int
    miss_per_good_step: float  # (1 - p_hat)^repeat: a bad commit passing a whole step
    miss_per_good_step_low: float  # (1 - p_low)^repeat
    confidence: float  # P(no good verdict was a bad commit passing), at p_hat
    confidence_low: float  # the same at p_low
    flaky: bool  # some run at a bad step passed

    def sentence(self) -> str:
        """One or two plain English sentences for the report (three when flaky)."""
        if self.bad_runs == 0:
            return ("No test ran on a commit judged bad, so there is no estimate of the failure rate "
                    "and no measure of how far the good verdicts can be trusted.")
        plural = "" if self.good_steps == 1 else "s"
        text = (f"The selection failed {self.bad_failures} of {self.bad_runs} runs on bad commits "
                f"(95% lower bound of the failure rate: {_down(self.p_low, 2)}). "
                f"With {self.repeat} run{'' if self.repeat == 1 else 's'} per step, a bad commit passes "
                f"all of them with probability ≤ {_up(self.miss_per_good_step_low, 3)} "
                f"(point estimate {self.miss_per_good_step:.3f})")
        text += (f"; over {self.good_steps} good verdict{plural} the culprit is right with probability "
                 f"≥ {_down(self.confidence_low, 2)}." if self.good_steps else
                 "; no commit was judged good, so no verdict rests on a pass.")
        if self.flaky:
            text += " " + self._advice()
        return text

    def _advice(self) -> str:
        if self.p_hat == 0:
            return ("No run on a bad commit failed: those verdicts did not come from the selection's "
                    "tests, so check the selection before trusting this bisect.")
        need, low = runs_needed(self.p_hat), runs_needed(self.p_low)  # p_low > 0 as p_hat > 0
        text = (f"Some runs on bad commits passed (the failure is flaky): keeping a bad commit's chance "
                f"of passing a whole step ≤ {MISS:g} takes {need} runs at the estimated failure rate "
                f"{self.p_hat:.2f} and {low} at its lower bound; ")
        if need > self.repeat:
            return text + f"re-run with --repeat {need}" + (f" (--repeat {low} to be safe)." if low > need else ".")
        if low > self.repeat:
            return text + f"--repeat {self.repeat} is enough at the estimate, --repeat {low} would be safe."
        return text + f"--repeat {self.repeat} is enough."


def confidence(steps: list[dict], repeat: int) -> Confidence:
    """The Confidence of a bisect from its step records (steps.jsonl lines).

    The failure rate comes from every bad step (skip and infra steps tested nothing; a
    verify-revert step is never bad evidence). Only the good verdicts git acted on (phase
    "bisect") can have sent it the wrong way: the good endpoint is the premise, checked
    separately, and the revert check comes after the culprit is named.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    bad_runs = bad_failures = good_steps = 0
    for step in steps:
        outcome, phase = step.get("outcome"), step.get("phase")
        if outcome == "good" and phase == "bisect":
            good_steps += 1
        elif outcome == "bad" and phase not in _GOOD_PHASES_ONLY:
            runs = _count(step.get("runs"))
            bad_runs += runs
            bad_failures += min(_count(step.get("failed_runs")), runs)
    p_hat = bad_failures / bad_runs if bad_runs else 0.0
    p_low = clopper_pearson_lower(bad_failures, bad_runs)
    miss, miss_low = (1 - p_hat) ** repeat, (1 - p_low) ** repeat
    return Confidence(bad_runs=bad_runs, bad_failures=bad_failures, p_hat=p_hat, p_low=p_low,
                      good_steps=good_steps, repeat=repeat,
                      miss_per_good_step=miss, miss_per_good_step_low=miss_low,
                      confidence=(1 - miss) ** good_steps, confidence_low=(1 - miss_low) ** good_steps,
                      flaky=bad_failures < bad_runs)


def _count(value) -> int:
    # A torn or hand-edited record may hold null or a string: it counts as no runs.
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# Bounds are rounded away from the claim they support, so "≥ 0.95" is never really 0.949.
def _down(x: float, places: int) -> str:
    scale = 10**places
    return f"{math.floor(x * scale + 1e-9) / scale:.{places}f}"


def _up(x: float, places: int) -> str:
    scale = 10**places
    return f"{math.ceil(x * scale - 1e-9) / scale:.{places}f}"
