"""Timeouts for the harness's own tests that scale with how busy the machine is.

A nested-TCG boot takes twice as long when a kernel build shares the two cores: a test's
limit is there to catch a hang, never to measure speed (benchmarks do that), so it grows
with the load instead of failing by luck.
"""

from __future__ import annotations

import os

MAX_FACTOR = 4.0


def factor() -> float:
    """SNP_HARNESS_TIMEOUT_SCALE if set, else 1 plus the run queue beyond the cores (at most 4)."""
    env = os.environ.get("SNP_HARNESS_TIMEOUT_SCALE")
    if env:
        return max(1.0, float(env))
    cpus = os.cpu_count() or 1
    return min(MAX_FACTOR, 1.0 + max(0.0, os.getloadavg()[0] - 1.0) / cpus)


def scaled(seconds: float) -> float:
    return seconds * factor()
