"""Our guests/ built against each supported tree's selftest library, with its API detected (slow).

It reads each tree's real build (the default local-target build, the same one the kernel suites
run): CI builds each kernel and its selftests once.

The detected facts are checked against the compiler's own view of the same headers: gcc's
-aux-info prototypes, -dM macros, and a member access compiled per struct member.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.kernel.selftest_api import _count_params, FUNCTIONS, MEMBERS, SELFTESTS_INCLUDE, SNP_LIB, UAPI_NAMES
from harness.kernel.selftests_build import GUESTS, Manifest, guest_programs

pytestmark = pytest.mark.slow

GUESTS_DIR = Path(__file__).resolve().parents[2] / GUESTS


@dataclass(frozen=True)
class Built:
    manifest: Manifest
    hdr_dir: Path


@pytest.fixture(scope="module")
def built(supported_build):
    """(tree, its selftests, None) from the tree's cached default build."""
    request, b = supported_build
    obj = Path(b.metadata["worktree"]) / f".snp-build-{request.config.inputs_digest()[:12]}"
    tree = Path(b.metadata["worktree"])
    return tree, Built(Manifest.from_dict(b.metadata["selftests"]), obj / "selftests" / "headers"), None


def test_every_guest_program_is_built(built):
    _, result, _ = built
    paths = {f.path for f in result.manifest.files}
    assert {f"{GUESTS}/{name}" for name in guest_programs(GUESTS_DIR)} <= paths
    assert result.manifest.guest_programs == len(guest_programs(GUESTS_DIR))
    assert result.manifest.tree_programs > 50


def _gcc(tree: Path, hdr: Path, arch: str | None, *args: str, source: str) -> subprocess.CompletedProcess:
    kvm = tree / SELFTESTS_INCLUDE
    flags = ["-D_GNU_SOURCE", "-DCONFIG_64BIT", f"-I{tree}/tools/include", f"-I{tree}/tools/arch/x86/include",
             "-isystem", f"{hdr}/include", f"-I{kvm}", f"-I{kvm.parent.parent}"]
    if arch:
        flags.append(f"-I{kvm}/{arch}")
    return subprocess.run(["gcc", *flags, *args, "-x", "c", "-"], input=source, capture_output=True, text=True)


def _params(text: str) -> int:
    """Parameters in a prototype's or macro's parameter list (the detector's own counter: what is
    checked here is the prototypes gcc prints, against what the detector read from the headers)."""
    return _count_params(text.strip())


def test_detected_api_is_what_the_compiler_sees(built, tmp_path):
    tree, result, _ = built
    api = result.manifest.selftest_api
    # Where the Makefile put the tree's own x86 programs is where its x86 headers are.
    sev_smoke = result.manifest.locate("sev_smoke_test")
    assert sev_smoke is not None and api.arch_include == sev_smoke.split("/")[0]
    includes = '#include "kvm_util.h"\n#include "processor.h"\n' + ('#include "sev.h"\n' if api.sev_h else "")
    assert api.sev_h == (tree / SELFTESTS_INCLUDE / api.arch_include / "sev.h").is_file()

    aux = tmp_path / "aux.txt"
    r = _gcc(tree, result.hdr_dir, api.arch_include, "-fsyntax-only", "-aux-info", str(aux), source=includes)
    assert r.returncode == 0, r.stderr
    protos = {}
    for line in aux.read_text().splitlines():
        if m := re.match(r"/\*.*?\*/ .*?\b(\w+) \((.*)\);( /\*.*\*/)?$", line):
            protos.setdefault(m.group(1), _params(m.group(2)))
    r = _gcc(tree, result.hdr_dir, api.arch_include, "-E", "-dM", source=includes)
    assert r.returncode == 0, r.stderr
    macros = {m.group(1): _params(m.group(2)) for m in re.finditer(r"^#define (\w+)\(([^)]*)\)", r.stdout, re.M)}
    for name in FUNCTIONS:
        assert api.functions[name] == protos.get(name, macros.get(name)), name
    assert api.snp_lib == all(protos.get(f) == n for f, n in SNP_LIB.items())

    for struct, members in MEMBERS.items():
        for member in members:
            src = includes + f"int probe(void) {{ return sizeof(((struct {struct} *)0)->{member}); }}\n"
            compiles = _gcc(tree, result.hdr_dir, api.arch_include, "-fsyntax-only", source=src).returncode == 0
            assert api.has_member(struct, member) == compiles, f"{struct}.{member}"

    r = _gcc(tree, result.hdr_dir, None, "-E", "-dM", source="#include <linux/kvm.h>\n")
    defined = set(re.findall(r"^#define (\w+)", r.stdout, re.M))
    assert set(api.uapi) == {n for n in UAPI_NAMES if n in defined}
    assert result.manifest.to_dict()["selftest_api"]["macros"]["SNPH_HAVE_SNP_LIB"] == int(api.snp_lib)
