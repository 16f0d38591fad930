"""Selftests build: exact make argv, guest discovery, the bundle, and a build against a fake tree."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness.errors import BuildError, ConfigError
from harness.kernel.selftest_api import SelftestApi
from harness.kernel.selftests_build import (
    GUEST_FLAGS_STAMP, MANIFEST_FORMAT, Manifest, SelftestsBuild, build_selftests, bundle_selftests,
    guest_programs, selftest_commands)

REPO = Path(__file__).resolve().parents[2]
needs_toolchain = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("gcc", "make", "strip")), reason="needs gcc, make and strip (ci/bootstrap)")


# ---- argv --------------------------------------------------------------------

def test_selftest_commands_exact():
    cmds = selftest_commands(Path("/src/linux"), Path("/w/build"), Path("/w/hdr"), Path("/w/kvm"),
                             Path("/repo/guests"), 4)
    assert cmds == [
        ["make", "-C", "/src/linux", "O=/w/build", "headers_install", "INSTALL_HDR_PATH=/w/hdr"],
        ["make", "-C", "/src/linux/tools/testing/selftests/kvm",
         "--eval=TEST_GEN_PROGS := $(filter-out guests/guest_%,"
         "$(patsubst /repo/guests/%.c,guests/%,$(wildcard /repo/guests/*.c)))",
         "--eval=vpath guests/%.c /repo",
         "-j4", "KHDR_INCLUDES=-isystem /w/hdr/include", "OUTPUT=/w/kvm",
         "TMPOUT=/w/kvm/.tmp_$$$$"],
    ]


def test_selftest_commands_pass_guest_flags_to_our_objects_only():
    cmds = selftest_commands(Path("/src/linux"), Path("/w/build"), Path("/w/hdr"), Path("/w/kvm"),
                             Path("/repo/guests"), 2, ["-DSNPH_API=1", "-DSNPH_X_ARGS=-1"])
    assert cmds[1][5] == "--eval=/w/kvm/guests/%.o: private CPPFLAGS += -DSNPH_API=1 -DSNPH_X_ARGS=-1"
    assert cmds[1][6] == "-j2"


@pytest.mark.parametrize("flag", ["-DX=1 -DY=2", "-DX", "-DX=$(shell id)", "-include x.h", "-DX=1;"])
def test_selftest_commands_refuse_other_guest_flags(flag):
    with pytest.raises(ConfigError, match="must be -DNAME=INT"):
        selftest_commands(Path("/s"), Path("/b"), Path("/h"), Path("/o"), Path("/r/guests"), 1, [flag])


def test_selftest_commands_makes_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmds = selftest_commands(Path("linux"), Path("b"), Path("h"), Path("o/kvm"), Path("guests"), 1)
    assert cmds[0][:4] == ["make", "-C", f"{tmp_path}/linux", f"O={tmp_path}/b"]
    assert f"OUTPUT={tmp_path}/o/kvm" in cmds[1]
    assert f"--eval=vpath guests/%.c {tmp_path}" in cmds[1]


@pytest.mark.parametrize("kwargs, message", [
    ({"out_dir": Path("/w/with space/kvm")}, "make cannot handle this path"),
    ({"hdr_dir": Path("/w/a:b")}, "make cannot handle this path"),
    ({"srctree": Path("/src/50%")}, "make cannot handle this path"),
    ({"guests_dir": Path("/repo/progs")}, "must be named 'guests'"),
    ({"jobs": 0}, "jobs must be a positive integer"),
    ({"jobs": True}, "jobs must be a positive integer"),
])
def test_selftest_commands_refuses(kwargs, message):
    args = {"srctree": Path("/src"), "build_dir": Path("/b"), "hdr_dir": Path("/h"), "out_dir": Path("/o"),
            "guests_dir": Path("/repo/guests"), "jobs": 2, **kwargs}
    with pytest.raises(ConfigError, match=message):
        selftest_commands(**args)


# ---- guest programs ----------------------------------------------------------

def test_guest_programs(tmp_path):
    g = tmp_path / "guests"
    (g / "sub").mkdir(parents=True)
    for name in ("zeta.c", "alpha.c", "common.h", "README", "sub/nested.c"):
        (g / name).write_text("")
    (g / "dir.c").mkdir()
    assert guest_programs(g) == ["alpha", "zeta"]
    assert guest_programs(tmp_path / "missing") == []


def test_guest_programs_of_this_repo():
    assert "kvm_caps_probe" in guest_programs(REPO / "guests")


# ---- bundle ------------------------------------------------------------------

def _compile(src: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    c = out.parent / (out.name + ".c")
    c.write_text(src)
    subprocess.run(["gcc", "-g", "-O0", "-o", str(out), str(c)], check=True)
    c.unlink()


@pytest.fixture
def out_dir(tmp_path):
    """A selftests OUTPUT: two programs, a script, and objects that are not programs."""
    out = tmp_path / "kvm"
    _compile('#include <stdio.h>\nint main(void) { puts("hello tree"); return 0; }\n', out / "x86_64" / "tree_test")
    _compile('#include <stdio.h>\nint main(void) { puts("hello guest"); return 4; }\n', out / "guests" / "probe")
    (out / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (out / "run.sh").chmod(0o755)
    (out / "lib").mkdir()
    (out / "lib" / "kvm_util.o").write_bytes(b"\x7fELF not a program")
    (out / "x86_64" / "tree_test.d").write_text("deps\n")
    (out / "link_to_test").symlink_to("x86_64/tree_test")
    return out


def _state(root: Path) -> dict[str, tuple[str, int, int]]:
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns,
                                             p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def _members(tar_path: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(tar_path) as tar:
        return {m.name: (m, tar.extractfile(m).read()) for m in tar.getmembers()}


@needs_toolchain
def test_bundle(out_dir, tmp_path):
    before = _state(out_dir)
    dest = tmp_path / "bundle" / "selftests.tar.gz"
    manifest = bundle_selftests(out_dir, dest, source_tree=Path("/src/linux"))

    assert [f.path for f in manifest.files] == ["guests/probe", "run.sh", "x86_64/tree_test"]
    assert (manifest.tree_programs, manifest.guest_programs) == (2, 1)
    assert _state(out_dir) == before, "the originals must not be touched"

    members = _members(dest)
    assert list(members) == ["manifest.json", "guests/probe", "run.sh", "x86_64/tree_test"]
    stored = json.loads(members["manifest.json"][1])
    assert stored == manifest.to_dict()
    assert stored["source_tree"] == "/src/linux"
    assert stored["counts"] == {"total": 3, "tree": 2, "guests": 1}
    for entry in manifest.files:
        info, data = members[entry.path]
        assert (entry.size, entry.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert (info.mode, info.mtime, info.uid, info.gid) == (0o755, 0, 0, 0)
    assert members["run.sh"][1] == (out_dir / "run.sh").read_bytes(), "scripts are bundled as they are"
    for path in ("x86_64/tree_test", "guests/probe"):
        original = (out_dir / path).read_bytes()
        assert b".debug_info" in original and b".debug_info" not in members[path][1]
        assert len(members[path][1]) < len(original)
    assert not list(dest.parent.glob(".bundle-*")) and not dest.with_name(dest.name + ".tmp").exists()


@needs_toolchain
def test_bundle_programs_still_run(out_dir, tmp_path):
    dest = tmp_path / "selftests.tar.gz"
    bundle_selftests(out_dir, dest)
    root = tmp_path / "extracted"
    with tarfile.open(dest) as tar:
        tar.extractall(root, filter="data")
    assert subprocess.run([root / "x86_64" / "tree_test"], capture_output=True, text=True).stdout == "hello tree\n"
    assert subprocess.run([root / "guests" / "probe"]).returncode == 4


@needs_toolchain
def test_bundle_is_deterministic(out_dir, tmp_path):
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    bundle_selftests(out_dir, a, source_tree=Path("/src"))
    os.utime(out_dir / "x86_64" / "tree_test", (1, 1))
    bundle_selftests(out_dir, b, source_tree=Path("/src"))
    assert a.read_bytes() == b.read_bytes()
    assert gzip.open(a).read(1)  # a plain gzip stream


@needs_toolchain
def test_bundle_only_the_listed_programs(out_dir, tmp_path):
    manifest = bundle_selftests(out_dir, tmp_path / "t.tar.gz", programs=[out_dir / "x86_64" / "tree_test"])
    assert [f.path for f in manifest.files] == ["x86_64/tree_test"]
    assert list(_members(tmp_path / "t.tar.gz")) == ["manifest.json", "x86_64/tree_test"]
    with pytest.raises(BuildError, match="do not exist"):
        bundle_selftests(out_dir, tmp_path / "u.tar.gz", programs=[out_dir / "x86_64" / "gone_test"])


def test_bundle_of_nothing_is_an_error(tmp_path):
    (tmp_path / "kvm").mkdir()
    with pytest.raises(BuildError, match="no programs to bundle"):
        bundle_selftests(tmp_path / "kvm", tmp_path / "t.tar.gz")


def test_manifest_round_trip():
    m = Manifest.from_dict({"format": 1, "source_tree": "/src", "counts": {},
                            "files": [{"path": "guests/p", "sha256": "ab", "size": 3},
                                      {"path": "x86_64/t", "sha256": "cd", "size": 4}]})
    assert (m.tree_programs, m.guest_programs) == (1, 1)
    assert m.selftest_api is None, "a format 1 manifest has no API facts"
    assert Manifest.from_dict(json.loads(m.to_json())) == m


def test_manifest_records_the_selftest_api():
    api = SelftestApi("x86", True, {"vm_mem_add": 8, "snp_vm_launch_start": None},
                      {"vm_shape": ("type",)}, ("GUEST_MEMFD_FLAG_MMAP",), ("a problem",))
    m = Manifest("/src", (), api)
    data = json.loads(m.to_json())
    assert data["format"] == MANIFEST_FORMAT == 2
    assert data["selftest_api"]["functions"] == {"vm_mem_add": 8, "snp_vm_launch_start": None}
    assert data["selftest_api"]["macros"]["SNPH_VM_MEM_ADD_ARGS"] == 8
    assert Manifest.from_dict(data) == m


def test_manifest_locates_a_program_wherever_the_makefile_put_it():
    entry = lambda path: {"path": path, "sha256": "00", "size": 1}  # noqa: E731
    m = Manifest.from_dict({"source_tree": None, "files": [
        entry("guest_memfd_test"), entry("x86/sev_smoke_test"), entry("guests/kvm_caps_probe"),
        entry("a/twice"), entry("b/twice")]})
    assert m.locate("sev_smoke_test") == "x86/sev_smoke_test"
    assert m.locate("guest_memfd_test") == "guest_memfd_test"
    assert m.locate("guests/kvm_caps_probe") == "guests/kvm_caps_probe"
    assert m.locate("twice") is None and m.locate("absent") is None


# ---- a whole build against a fake kernel tree --------------------------------

FAKE_TOP_MAKEFILE = """\
headers_install:
\tmkdir -p $(INSTALL_HDR_PATH)/include/linux
\tcp include/uapi/linux/fake_kvm.h $(INSTALL_HDR_PATH)/include/linux/
"""

# The shape of the real kvm Makefile: appends to TEST_GEN_PROGS, lets lib.mk-style
# code prefix $(OUTPUT)/, probes the compiler with a try-run in $(TMPOUT), compiles
# each program's object with $(CPPFLAGS), then links it.
FAKE_KVM_MAKEFILE = """\
all:
TMPOUT = .tmp_$$$$
no-pie-option := $(shell set -e; mkdir -p $(TMPOUT); rmdir $(TMPOUT); echo -no-pie)
TEST_GEN_PROGS += tree_test
TEST_GEN_PROGS += x86_64/arch_test
TEST_GEN_PROGS := $(patsubst %,$(OUTPUT)/%,$(TEST_GEN_PROGS))
$(shell mkdir -p $(sort $(dir $(TEST_GEN_PROGS))))
all: $(TEST_GEN_PROGS)
-include $(patsubst %,%.o.d,$(TEST_GEN_PROGS))
$(TEST_GEN_PROGS): %: %.o
\tgcc $(no-pie-option) -o $@ $<
$(patsubst %,%.o,$(TEST_GEN_PROGS)): $(OUTPUT)/%.o: %.c
\tgcc -g -MD -MP -MF $@.d $(KHDR_INCLUDES) $(CPPFLAGS) -c -o $@ $<
"""

# Prints the UAPI header's value and SNPH_VM_MEM_ADD_ARGS (-9 where the flags did not reach it).
PROGRAM = """\
#include <linux/fake_kvm.h>
#include <stdio.h>
#ifndef SNPH_VM_MEM_ADD_ARGS
#define SNPH_VM_MEM_ADD_ARGS -9
#endif
int main(void) { printf("%d %d\\n", FAKE_KVM, SNPH_VM_MEM_ADD_ARGS); return 0; }
"""
# Scanned by selftest_api.detect, included by no program (so only the flags stamp can rebuild).
FAKE_KVM_UTIL_H = "void vm_mem_add(struct kvm_vm *vm, int slot);\n"


@pytest.fixture
def fake_tree(tmp_path):
    src = tmp_path / "linux"
    kvm = src / "tools/testing/selftests/kvm"
    (kvm / "x86_64").mkdir(parents=True)
    (src / "include/uapi/linux").mkdir(parents=True)
    (src / "Makefile").write_text(FAKE_TOP_MAKEFILE)
    (src / "include/uapi/linux/fake_kvm.h").write_text("#define FAKE_KVM 42\n")
    (kvm / "Makefile").write_text(FAKE_KVM_MAKEFILE)
    (kvm / "tree_test.c").write_text(PROGRAM)
    (kvm / "x86_64/arch_test.c").write_text(PROGRAM)
    (kvm / "include").mkdir()
    (kvm / "include/kvm_util.h").write_text(FAKE_KVM_UTIL_H)
    guests = tmp_path / "repo" / "guests"
    guests.mkdir(parents=True)
    (guests / "probe.c").write_text(PROGRAM)
    return src, guests


def _tree_state(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))} | \
        {".": root.stat().st_mtime_ns}


@needs_toolchain
def test_build_against_fake_tree(fake_tree, tmp_path):
    src, guests = fake_tree
    tree_before = _tree_state(src)
    streamed: list[str] = []
    work = tmp_path / "work"
    result = build_selftests(src, tmp_path / "obj", work, guests, jobs=2, log=streamed.append)

    assert isinstance(result, SelftestsBuild)
    assert [f.path for f in result.manifest.files] == ["guests/probe", "tree_test", "x86_64/arch_test"]
    assert result.tarball == work / "selftests.tar.gz" and result.tarball.is_file()
    api = result.manifest.selftest_api
    assert api is not None and api.functions["vm_mem_add"] == 2 and api.functions["vm_create_guest_memfd"] is None
    assert "x86 headers not found" in " ".join(api.problems)
    assert result.commands == tuple(tuple(c) for c in selftest_commands(
        src, tmp_path / "obj", work / "headers", work / "kvm", guests, 2, api.cflags()))
    assert set(result.durations_s) == {"headers_install", "selftests", "bundle"}
    assert _tree_state(src) == tree_before, "nothing may be written into the source tree"
    text = "".join(streamed)
    assert "$ make -C" in text and "probe.c" in text
    assert result.log_path.read_text() == text
    run = lambda p: subprocess.run([work / "kvm" / p], capture_output=True, text=True).stdout  # noqa: E731
    assert run("guests/probe") == "42 2\n", "the detected API reaches our programs"
    assert run("tree_test") == "42 -9\n", "and not the tree's"
    assert json.loads(_members(result.tarball)["manifest.json"][1])["selftest_api"]["functions"]["vm_mem_add"] == 2


@needs_toolchain
def test_a_changed_api_rebuilds_our_objects_only(fake_tree, tmp_path):
    src, guests = fake_tree
    work = tmp_path / "work"
    build_selftests(src, tmp_path / "obj", work, guests, jobs=1, log=None)
    tree_mtime = (work / "kvm" / "tree_test").stat().st_mtime_ns
    (src / "tools/testing/selftests/kvm/include/kvm_util.h").write_text(
        "void vm_mem_add(struct kvm_vm *vm, int slot, int fd);\n")
    result = build_selftests(src, tmp_path / "obj", work, guests, jobs=1, log=None)
    assert result.manifest.selftest_api.functions["vm_mem_add"] == 3
    out = subprocess.run([work / "kvm" / "guests" / "probe"], capture_output=True, text=True).stdout
    assert out == "42 3\n"
    assert (work / "kvm" / "tree_test").stat().st_mtime_ns == tree_mtime
    assert (work / "kvm" / "guests" / GUEST_FLAGS_STAMP).read_text().split() == result.manifest.selftest_api.cflags()


@needs_toolchain
def test_rebuild_is_incremental_and_leaves_stale_programs_out(fake_tree, tmp_path):
    src, guests = fake_tree
    work = tmp_path / "work"
    build_selftests(src, tmp_path / "obj", work, guests, jobs=1, log=None)
    probe = work / "kvm" / "guests" / "probe"
    mtime = probe.stat().st_mtime_ns
    (guests / "probe.c").rename(guests / "renamed.c")  # leaves a stale guests/probe behind

    sink = io.BytesIO()
    result = build_selftests(src, tmp_path / "obj", work, guests, jobs=1, log=sink)
    assert [f.path for f in result.manifest.files] == ["guests/renamed", "tree_test", "x86_64/arch_test"]
    assert probe.stat().st_mtime_ns == mtime
    assert (work / "kvm" / "tree_test").stat().st_mtime_ns < (work / "kvm" / "guests" / "renamed").stat().st_mtime_ns
    assert b"tree_test.c" not in sink.getvalue(), "unchanged headers must not trigger recompiles"
    assert b"renamed.c" in sink.getvalue()


@needs_toolchain
def test_build_failure_names_the_error(fake_tree, tmp_path):
    src, guests = fake_tree
    (guests / "broken.c").write_text("int main(void) { return undeclared_thing; }\n")
    with pytest.raises(BuildError) as e:
        build_selftests(src, tmp_path / "obj", tmp_path / "work", guests, jobs=1, log=None)
    assert e.value.log_path == tmp_path / "work" / "selftests-build.log"
    assert any("broken.c" in line and "error:" in line for line in e.value.first_errors)
    assert "selftests failed (exit 2)" in str(e.value)


def test_build_refuses_a_tree_without_kvm_selftests(tmp_path):
    (tmp_path / "guests").mkdir()
    with pytest.raises(ConfigError, match="no tools/testing/selftests/kvm/Makefile"):
        build_selftests(tmp_path, tmp_path / "obj", tmp_path / "work", tmp_path / "guests", jobs=1, log=None)


def test_guest_side_programs_are_compiled_without_the_kvm_library():
    cmds = selftest_commands(Path("/src/linux"), Path("/w/build"), Path("/w/hdr"), Path("/w/kvm"),
                             REPO / "guests", 2)
    assert "$(filter-out guests/guest_%," in cmds[1][3]  # not linked with libkvm by the Makefile
    assert cmds[2:] == [["gcc", "-O2", "-Wall", "-I/src/linux/tools/testing/selftests", "-isystem/w/hdr/include",
                         f"{REPO}/guests/guest_conversion_workload.c", "-o",
                         "/w/kvm/guests/guest_conversion_workload"]]
