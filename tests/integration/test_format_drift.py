"""Every pattern we match against kernel output, against the format strings of each supported tree
(DESIGN.md, "Kernels we support"): a rewording shows up here before it hides a splat."""

from __future__ import annotations

import pytest

from harness.evidence.format_drift import alt_forms, check_tree

pytestmark = pytest.mark.slow  # it needs every supported tree fetched and imported


def test_every_pattern_matches_what_the_tree_prints(supported_tree_dir):
    problems = check_tree(supported_tree_dir)
    assert problems == [], "\n".join(map(str, problems))


def test_the_tree_prints_exactly_one_warning_form(supported_tree_dir):
    """Which WARNING line a tree prints is read from its kernel/panic.c, not from its version."""
    forms = alt_forms(supported_tree_dir)
    assert len(forms["warn"]) == 1 and len(forms["warn_nofile"]) == 1, forms
    assert all(forms[family] for family in forms), forms
