"""Our own kernel-side inputs hold on every supported tree: the config fragments stick through
olddefconfig, and the example series applies (slow: real make on each tree)."""

from __future__ import annotations

import subprocess

import pytest

from harness.kernel.kconfig import ConfigRequest, make_config, parse_fragment
from harness.kernel.patches import load_series
from harness.kernel.plan import CONFIGS_DIR, SERIES_DIR

pytestmark = pytest.mark.slow

# Each fragment on the base it is documented for (kernel-patches/configs/README.md).
FRAGMENTS = {"local-target.config": "tinyconfig", "snp-host.config": "x86_64_defconfig"}


@pytest.mark.parametrize("fragment", sorted(FRAGMENTS))
def test_fragment_sticks_on_every_supported_tree(supported_tree_dir, fragment, tmp_path):
    path = CONFIGS_DIR / fragment
    final = make_config(supported_tree_dir, tmp_path / "o", ConfigRequest(base=FRAGMENTS[fragment], fragments=(path,)))
    wanted = parse_fragment(path.read_text()).options
    assert {k: final.get(k, "n") for k in wanted} == wanted  # make_config raises first; this restates it
    assert not (supported_tree_dir / ".config").exists()  # O= only: the tree stays clean


@pytest.mark.parametrize("series", sorted(p.name for p in SERIES_DIR.iterdir() if (p / "series").is_file()))
def test_series_apply_to_every_supported_tree(supported_tree_dir, series):
    for patch in load_series(SERIES_DIR / series).patches:
        r = subprocess.run(["git", "-C", str(supported_tree_dir), "apply", "--check", str(patch.path)],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"{patch.path.name} does not apply to {supported_tree_dir}: {r.stderr}"
