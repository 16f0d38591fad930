"""Each supported tree gets the instrumentation variant that fits it, and that variant compiles.

Slow: the first run on a machine makes the O= directory (kbuild's prepare, objtool) before it
compiles the one object, arch/x86/virt/svm/sev.o; later runs reuse that directory in the kernel
cache and only recompile sev.o. The tree is never written: the check patches a hard-link copy
(harness.kernel.instrumentation.compile_check).
"""

from __future__ import annotations

import subprocess

import pytest

from harness.kernel.instrumentation import compile_check, pick_variant

pytestmark = pytest.mark.slow


def test_the_fitting_variant_compiles_without_warnings(supported_tree_dir, kernel_cache, tmp_path):
    choice = pick_variant(supported_tree_dir)
    assert choice.variant is not None, choice.reason
    build_dir = kernel_cache / "instrumentation-check" / f"{supported_tree_dir.name}-{choice.variant.name}"
    result = compile_check(supported_tree_dir, build_dir, choice.variant, tmp_path / "compile.log")
    assert result.ok, f"{choice.variant.name} on {supported_tree_dir}: {result.errors} (log: {result.log})"
    assert result.warnings == (), f"W=1 warnings in sev.c (log: {result.log})"
    assert result.object is not None and result.object.stat().st_size > 0
    # The harness's import of the tree is a git repository: the check must leave it clean.
    status = subprocess.run(["git", "-C", str(supported_tree_dir), "status", "--porcelain"],
                            capture_output=True, text=True, check=True).stdout
    assert status == ""
