"""The kernel suites on every supported tree other than the default one (slow).

The default tree's suites run in this very session (tests/snp, through the plugin). Each other
supported tree gets the main job as a user runs it, `snp-harness run --tree debian:X.Y`, on the
local QEMU target, sharing the machine's build cache, so CI builds each kernel once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KERNEL_CACHE, SUPPORTED_TREES
from harness.report.junit import read_cases

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# What must really run (pass, not skip) on the local target whatever the tree: conversions in
# guest_memfd through the tree's own selftest and ours, a plain L2 guest, and the RMP dump's
# ENODEV answer (the instrumentation is built and loaded).
MUST_PASS = ("test_guest_memfd", "test_private_mem_conversions", "test_gmem_misaligned_conversions",
             "test_gmem_thp_split_collapse", "test_rmp_dump_interface_answers", "test_guest_boots_and_converts")


@pytest.mark.parametrize("tree", SUPPORTED_TREES[1:])
def test_suites_pass_on_tree(tree, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(KERNEL_CACHE.parent), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        rc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--tree", tree], cwd=tmp_path, env=env,
                            stdout=out, stderr=subprocess.STDOUT, timeout=3600).returncode
    text = log.read_text(errors="replace")
    run_dirs = sorted((tmp_path / "runs").glob("*-run"))
    assert run_dirs, f"no run directory; output:\n{text[-3000:]}"
    cases = read_cases(run_dirs[-1] / "junit.xml")
    bad = [f"{c.outcome}: {c.name}: {c.message.splitlines()[0] if c.message else ''}"
           for c in cases if c.outcome in ("failed", "error")]
    assert rc == 0 and not bad, f"snp-harness run --tree {tree} exited {rc}:\n" + "\n".join(bad) + text[-3000:]
    passed = {c.name.split("[")[0] for c in cases if c.outcome == "passed"}
    assert set(MUST_PASS) <= passed, f"did not pass on {tree}: {sorted(set(MUST_PASS) - passed)}"
    assert all(c.message for c in cases if c.outcome == "skipped"), "a skip without its reason"
    print(f"{tree}: {len(passed)} passed, {sum(c.outcome == 'skipped' for c in cases)} skipped; {run_dirs[-1]}")
