"""Source -> series -> config -> cached build, on the default tree (Debian's linux-source-7.3) (slow)."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness.errors import PatchError
from harness.kernel.build import BuildRequest, build
from harness.kernel.kconfig import ConfigRequest, make_config
from harness.kernel.patches import apply_series, load_series
from harness.kernel.plan import CONFIGS_DIR
from harness.scenarios.programs import Programs

pytestmark = pytest.mark.slow

PATCHES = Path(__file__).parents[1] / "data" / "patches"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


# The patch tests' data (tests/data/patches) was written against the 6.12 LTS tree: hunk line
# numbers and error lines are those of its sev.c.
LTS = "debian:6.12"


@pytest.fixture(scope="module")
def lts_source(kernel_cache):
    from harness.kernel.source import resolve_source

    return resolve_source(LTS, None, kernel_cache)


@pytest.fixture(scope="module")
def scratch_worktree(lts_source, tmp_path_factory):
    """A worktree of our own, so patch tests never move the shared build worktree."""
    path = tmp_path_factory.mktemp("wt") / "linux"
    git(lts_source.repo, "worktree", "add", "-q", "--detach", str(path), lts_source.base)
    yield path
    git(lts_source.repo, "worktree", "remove", "--force", str(path))


def test_import_is_one_commit_of_the_debian_tree(kernel_source):
    assert git(kernel_source.repo, "rev-list", "--count", kernel_source.base).strip() == "1"
    makefile = git(kernel_source.repo, "show", f"{kernel_source.base}:Makefile")
    major, minor = kernel_source.package.split()[0].removeprefix("linux-source-").split(".")
    assert f"VERSION = {major}\nPATCHLEVEL = {minor}\n" in makefile  # the package is the tree it names


def test_two_patch_series_applies_with_patch_ids(scratch_worktree, lts_source):
    series = load_series(PATCHES / "series-two")
    applied = apply_series(scratch_worktree, lts_source.base, series)
    assert [a.subject for a in applied] == [
        "KVM: SVM: snp-harness test patch: comment in sev.c",
        "KVM: guest_memfd: snp-harness test patch: comment",
    ]
    assert git(scratch_worktree, "rev-list", "--count", f"{lts_source.base}..HEAD").strip() == "2"
    for a, patch in zip(applied, series.patches):
        expected = subprocess.run(["git", "patch-id", "--stable"], input=patch.path.read_bytes(),
                                  capture_output=True, check=True).stdout.split()[0].decode()
        assert a.patch_id == expected
    assert "snp-harness test series, patch 2" in (scratch_worktree / "virt/kvm/guest_memfd.c").read_text()


def test_conflicting_patch_names_patch_file_and_hunk_and_leaves_tree_clean(scratch_worktree, lts_source):
    series = load_series(PATCHES / "series-conflict")
    with pytest.raises(PatchError) as e:
        apply_series(scratch_worktree, lts_source.base, series)
    assert str(e.value) == (
        'patch 2/2 "KVM: SVM: snp-harness test patch that conflicts with patch 1" '
        "(0002-KVM-SVM-snp-harness-test-patch-that-conflicts-with-p.patch) does not apply: "
        "arch/x86/kvm/svm/sev.c: hunk at line 50\n"
        "failing hunk:\n"
        "@@ -50,7 +50,8 @@ static bool sev_es_enabled = true;\n"
        " module_param_named(sev_es, sev_es_enabled, bool, 0444);\n"
        " \n"
        " /* enable/disable SEV-SNP support */\n"
        "-static bool sev_snp_enabled = true;\n"
        "+/* a different change to the same place */\n"
        "+static bool sev_snp_enabled = false;\n"
        " module_param_named(sev_snp, sev_snp_enabled, bool, 0444);\n"
        " \n"
        " /* enable/disable SEV-ES DebugSwap support */\n"
        f"the tree was reset to {lts_source.base[:12]}"
    )
    assert git(scratch_worktree, "rev-parse", "HEAD").strip() == lts_source.base
    assert git(scratch_worktree, "status", "--porcelain").strip() == ""
    assert not (scratch_worktree / ".git").is_file() or not Path(
        git(scratch_worktree, "rev-parse", "--git-path", "rebase-apply").strip()).exists()


@pytest.mark.parametrize("base, fragment", [("tinyconfig", "local-target.config"),
                                            ("x86_64_defconfig", "snp-host.config")])
def test_shipped_fragments_stick_on_6_12(scratch_worktree, tmp_path, base, fragment):
    final = make_config(scratch_worktree, tmp_path / "o", ConfigRequest(base=base, fragments=(CONFIGS_DIR / fragment,)))
    assert final["KVM_AMD_SEV"] == "y" and final["KVM_SW_PROTECTED_VM"] == "y"


def test_build_has_kernel_config_and_selftests(kernel_build):
    d = kernel_build.dir
    assert (d / "bzImage").read_bytes()[0x202:0x206] == b"HdrS"  # the x86 boot protocol magic
    config = (d / "config").read_text()
    for option in ("CONFIG_KVM_AMD=y", "CONFIG_KVM_AMD_SEV=y", "CONFIG_KVM_SW_PROTECTED_VM=y",
                   "CONFIG_TRANSPARENT_HUGEPAGE=y", "CONFIG_DEBUG_FS=y", "CONFIG_KEXEC=y"):
        assert option in config.splitlines()
    meta = json.loads((d / "metadata.json").read_text())
    assert meta["package"].startswith("linux-source-7.3 ")  # the default tree, recorded with its version
    assert meta["kernel_release"].startswith("7.3.")
    assert meta["key"] == kernel_build.key
    with tarfile.open(d / "selftests.tar.gz") as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
    programs = Programs(tuple(sorted(names - {"manifest.json"})))
    for prog in ("guests/kvm_caps_probe", "private_mem_conversions_test", "guest_memfd_test",
                 "set_memory_region_test", "sev_smoke_test", "pre_fault_memory_test"):
        assert programs.find(prog) in names, prog
    assert {f["path"] for f in manifest["files"]} == names - {"manifest.json"}


def test_second_build_is_a_cache_hit(kernel_build, kernel_cache, tmp_path):
    # What a hit costs is bench/build_cache.py's (speedup_vs_make_noop); here: that it is one.
    stamps = {p: p.stat().st_mtime_ns for p in (kernel_build.bzimage, kernel_build.selftests)}
    again = build(BuildRequest(cache_dir=kernel_cache), tmp_path / "build.log")
    assert again.hit and again.key == kernel_build.key and again.dir == kernel_build.dir
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # served as built, nothing rewritten
    assert not (tmp_path / "build.log").exists()  # make never ran


def test_kvm_caps_probe_reports_ktap_here(kernel_build, tmp_path):
    with tarfile.open(kernel_build.selftests) as tar:
        tar.extract("guests/kvm_caps_probe", tmp_path, filter="data")
    probe = tmp_path / "guests" / "kvm_caps_probe"
    probe.chmod(0o755)
    r = subprocess.run([str(probe)], capture_output=True, text=True, timeout=60)
    if r.returncode == 4:
        pytest.skip(f"kvm_caps_probe: no usable /dev/kvm here: {r.stdout.strip().splitlines()[-1:]}")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "1..8" in lines
    results = [ln for ln in lines if ln.startswith(("ok ", "not ok "))]
    assert [ln.split()[2 if ln.startswith("ok") else 3] for ln in results] == [
        "vm_types", "guest_memfd", "memory_attributes", "gmem_flags", "create_sw_protected_vm", "create_snp_vm",
        "gmem_huge_folios", "gmem_mmap"]
    assert any(ln.startswith("# vm_types: 0x") for ln in lines)


def test_broken_build_raises_build_error_with_log_and_first_error(kernel_cache, tmp_path):
    # Runs after the tests above: it moves the shared worktree, which the next build resets.
    from harness.errors import BuildError

    series = load_series(PATCHES / "series-broken-build")
    log = tmp_path / "build.log"
    with pytest.raises(BuildError) as e:
        build(BuildRequest(cache_dir=kernel_cache, tree=LTS, series=series), log)
    assert e.value.log_path == log and log.exists()
    assert e.value.first_errors[0].startswith("../arch/x86/kvm/svm/sev.c:54:1: error: ")
    assert "sev.c:54:1: error" in str(e.value) and str(log) in str(e.value)
