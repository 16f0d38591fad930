"""Which instrumentation variant fits a tree: decided from sev.c's definitions plus `git apply --check`."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from harness.kernel import instrumentation
from harness.kernel.instrumentation import (CONTIGUOUS, INSTRUMENTATION_DIR, SEGMENTED, SEV_C, VARIANTS, _link_copy,
                                            _unshare, apply_check, match_source, pick_variant, sev_c_warnings)

TREES = Path("/tmp/trees")  # TEMPORARY: the lead switches the real-tree tests to a fixture

# The definitions each variant's code relies on, as the trees spell them (shortened bodies).
CONTIGUOUS_DEFS = """\
struct rmpentry {
	union {
		struct {
			u64 assigned	: 1;
		};
		u64 lo;
	};
	u64 hi;
} __packed;

static struct rmpentry *rmptable __ro_after_init;
static u64 rmptable_max_pfn __ro_after_init;

static struct rmpentry *get_rmpentry(u64 pfn)
{
	if (!cc_platform_has(CC_ATTR_HOST_SEV_SNP))
		return ERR_PTR(-ENODEV);
}
"""
SEGMENTED_DEFS = """\
struct rmpentry {
	u64 gpa;
	u32 asid;
} __packed;

struct rmpentry_raw {
	u64 hi;
} __packed;

struct rmp_segment_desc {
	struct rmpentry_raw *rmp_entry;
	u64 max_index;
	u64 size;
};

static struct rmp_segment_desc **rmp_segment_table __ro_after_init;
static unsigned int rst_max_index __ro_after_init = 512;
static unsigned int rmp_segment_shift;

static struct rmpentry_raw *get_raw_rmpentry(u64 pfn)
{
	if (rmp_cfg & MSR_AMD64_SEG_RMP_ENABLED)
		return NULL;
}

static int get_rmpentry(u64 pfn, struct rmpentry *e)
{
	if (cpu_feature_enabled(X86_FEATURE_RMPREAD) && cc_platform_has(CC_ATTR_HOST_SEV_SNP))
		return 0;
}
"""


def preimages(variant) -> list[str]:
    """Each hunk's lines as they must be in the tree (context and removed lines)."""
    text = variant.series().patches[0].path.read_text()
    hunks = re.split(r"^@@ .*@@.*\n", text.split("\n-- \n")[0], flags=re.M)[1:]
    return ["".join(line[1:] + "\n" for line in h.splitlines() if line[:1] in (" ", "-")) for h in hunks]


def synthetic_tree(root: Path, variant, defs: str) -> Path:
    """A tree whose sev.c has the variant's definitions and every spot its patch touches."""
    first, *rest = preimages(variant)
    (root / SEV_C).parent.mkdir(parents=True, exist_ok=True)
    (root / SEV_C).write_text(first + "\n" + defs + "\n" + "".join(rest))
    return root


def digest(tree: Path) -> str:
    return hashlib.sha256((tree / SEV_C).read_bytes()).hexdigest()


@pytest.mark.parametrize("defs, expected", [(CONTIGUOUS_DEFS, CONTIGUOUS), (SEGMENTED_DEFS, SEGMENTED)])
def test_match_source_by_definitions(defs, expected):
    c = match_source(defs)
    assert c.variant is expected and bool(c)
    assert c.reason.startswith(f"{expected.name} (") and "defines" in c.reason


def test_match_source_names_what_each_variant_lacks():
    c = match_source(CONTIGUOUS_DEFS.replace("rmptable_max_pfn", "rmp_max_pfn"))
    assert c.variant is None and not c
    assert "rmp-contiguous (contiguous RMP, raw struct rmpentry (6.12 LTS)) lacks rmptable_max_pfn;" in c.reason
    assert "rmp-segmented (segmented RMP and RMPREAD (6.14+)) lacks struct rmpentry_raw," in c.reason


def test_a_struct_field_must_be_inside_that_struct():
    # "u64 lo;" of another struct does not make a contiguous layout
    text = CONTIGUOUS_DEFS.replace("\t\tu64 lo;\n", "") + "struct other {\n\tu64 lo;\n};\n"
    assert "lacks struct rmpentry with u64 lo" in match_source(text).reason


def test_match_source_refuses_an_instrumented_or_ambiguous_tree():
    c = match_source(CONTIGUOUS_DEFS + '\tstruct dentry *dir = debugfs_create_dir("sev_rmp", arch_debugfs_dir);\n')
    assert c.variant is None and "already creates the sev_rmp debugfs directory" in c.reason
    c = match_source(CONTIGUOUS_DEFS + SEGMENTED_DEFS.replace("struct rmpentry {", "struct rmpentry_read {"))
    assert c.variant is CONTIGUOUS
    c = match_source(CONTIGUOUS_DEFS.replace("u64 hi;\n} __packed;", "u32 asid;\n} __packed;", 1) + SEGMENTED_DEFS)
    assert c.variant is None and "matches every variant" in c.reason


@pytest.mark.parametrize("variant, defs", [(CONTIGUOUS, CONTIGUOUS_DEFS), (SEGMENTED, SEGMENTED_DEFS)])
def test_pick_variant_on_a_synthetic_tree(tmp_path, variant, defs):
    tree = synthetic_tree(tmp_path / "tree", variant, defs)
    before = digest(tree)
    c = pick_variant(tree)
    assert c.variant is variant and c.reason.endswith("; git apply --check passed")
    assert digest(tree) == before and [p.relative_to(tree) for p in tree.rglob("*") if p.is_file()] == [Path(SEV_C)]


def test_pick_variant_when_the_definitions_fit_but_the_patch_does_not(tmp_path):
    tree = synthetic_tree(tmp_path / "tree", SEGMENTED, SEGMENTED_DEFS)
    text = (tree / SEV_C).read_text().replace("#include <linux/nospec.h>", "#include <linux/nospec2.h>")
    (tree / SEV_C).write_text(text)
    c = pick_variant(tree)
    assert c.variant is None
    assert c.reason.startswith("rmp-segmented fits arch/x86/virt/svm/sev.c's definitions but does not apply: error: ")
    assert pick_variant(tree, check_apply=False).variant is SEGMENTED


def test_pick_variant_in_a_tree_inside_another_repository(tmp_path):
    # Without a ceiling, git apply run in a subdirectory of a repository skips the paths outside it
    # and "applies" cleanly; the tree's own files must be what is checked.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    tree = synthetic_tree(tmp_path / "sub" / "tree", CONTIGUOUS, CONTIGUOUS_DEFS)
    (tree / SEV_C).write_text((tree / SEV_C).read_text().replace("amd-iommu.h", "amd_iommu.h"))
    assert "does not apply" in pick_variant(tree).reason


def test_pick_variant_in_a_git_worktree_leaves_it_clean(tmp_path):
    tree = synthetic_tree(tmp_path / "tree", CONTIGUOUS, CONTIGUOUS_DEFS)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run(["git", "-C", str(tree), *argv], check=True, env=env)
    assert pick_variant(tree).variant is CONTIGUOUS
    assert subprocess.run(["git", "-C", str(tree), "status", "--porcelain"], capture_output=True, text=True,
                          check=True).stdout == ""


def test_pick_variant_without_sev_c(tmp_path):
    c = pick_variant(tmp_path)
    assert c.variant is None and c.reason.startswith(f"cannot read {SEV_C} in {tmp_path}: ")


def test_variant_directories_hold_one_series_each():
    for v in VARIANTS:
        s = v.series()
        assert v.dir.parent == INSTRUMENTATION_DIR and len(s) == 1
        assert "debugfs interface to dump" in s.patches[0].subject
    # One directory per variant, nothing else that looks like a series
    assert sorted(p.name for p in INSTRUMENTATION_DIR.iterdir() if p.is_dir()) == sorted(v.name for v in VARIANTS)
    assert not (INSTRUMENTATION_DIR / "series").exists()


@pytest.mark.parametrize("tree, expected, other", [("6.12", CONTIGUOUS, SEGMENTED), ("7.3", SEGMENTED, CONTIGUOUS)])
def test_real_trees(tree, expected, other):
    root = TREES / f"linux-source-{tree}"  # TEMPORARY: becomes the supported_tree_dir fixture
    if not (root / SEV_C).is_file():
        pytest.skip(f"{root} is absent (Debian's linux-source-{tree}, unpacked): no real tree to check against")
    before = digest(root)
    c = pick_variant(root)
    assert c.variant is expected, c.reason
    assert apply_check(root, other.series()) is not None
    assert digest(root) == before


def test_link_copy_and_unshare_never_write_the_tree(tmp_path):
    tree = tmp_path / "tree"
    (tree / ".git").mkdir(parents=True)
    (tree / "arch/x86/virt/svm").mkdir(parents=True)
    (tree / SEV_C).write_text("original\n")
    (tree / "Makefile").write_text("all:\n")
    (tree / ".snp-build-0123456789ab").mkdir()
    copy = tmp_path / "copy"
    _link_copy(tree, copy)
    assert not (copy / ".git").exists() and not (copy / ".snp-build-0123456789ab").exists()
    assert (copy / "Makefile").stat().st_ino == (tree / "Makefile").stat().st_ino
    _unshare(copy, CONTIGUOUS.series())
    assert (copy / SEV_C).stat().st_ino != (tree / SEV_C).stat().st_ino
    (copy / SEV_C).write_text("patched\n")
    assert (tree / SEV_C).read_text() == "original\n"


def test_sev_c_warnings():
    lines = ["  CC      arch/x86/virt/svm/sev.o",
             "/x/arch/x86/virt/svm/sev.c:1140:13: warning: unused variable 'x' [-Wunused-variable]",
             "/x/arch/x86/kvm/svm/sev.c:10:1: warning: other file",
             "/x/arch/x86/virt/svm/sev.c:1140:13: warning: unused variable 'x' [-Wunused-variable]"]
    assert sev_c_warnings(lines) == (lines[1],)
    assert instrumentation.SEV_O == "arch/x86/virt/svm/sev.o"
