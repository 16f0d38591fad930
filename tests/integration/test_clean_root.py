"""The README's first steps on a fresh Debian 12 machine: ci/bootstrap in a clean root, then the
default kernel and selftests build there (slow).

Guards against a package that ci/bootstrap forgets but the CI machine happens to have (rsync once).
The root shares this machine's ccache, so a warm machine builds it mostly from cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from harness.kernel.selftests_build import GUESTS, guest_programs
from harness.testing import clean_root as cr
from harness.testing.clean_root import CleanRoot, Mount

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3 * 3600)]

REPO = Path(__file__).resolve().parents[2]
PROJECT = "/root/snp-harness"  # where the new user cloned the project
HARNESS_CACHE = "/root/.cache/snp-harness"  # the root's user's harness cache (HOME=/root)
STATS_LOG = "/root/ccache-stats.log"
# Commands the bootstrap must have installed (the fresh root has none of them).
TOOLS = ("rsync", "qemu-system-x86_64", "git", "make", "gcc", "ccache", "flex", "bison", "bc", "cpio", "xz",
         "busybox", "sshd", "ssh", "ssh-keygen", "dropbear", "kexec", "depmod", "mmdebstrap")


def _cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mmdebstrap --mode=root, chroot, mounts): run the suite as root, as CI does"
    if subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True).returncode:
        return "cannot make a private mount namespace here (unshare --mount): needs CAP_SYS_ADMIN"
    lines = cr.machine_mirror_lines()
    if not lines:
        return ("no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d/: the clean root is made "
                "from the mirror this machine uses; add one")
    why = cr.mirror_problem(lines)
    if why:
        return f"the Debian mirror cannot be reached (no network?): {why}"
    return None


@pytest.fixture
def clean_root(tmp_path, kernel_cache):
    """(root, timings, logs dir); the unpacked root is removed afterwards, the cached tarball kept."""
    why = _cannot_run()
    if why:
        pytest.skip(why)
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap not found: ci/bootstrap installs it (run ci/bootstrap)", pytrace=False)
    logs = tmp_path / "logs"
    logs.mkdir()
    timings: dict = {}
    lines, options = cr.machine_mirror_lines(), cr.machine_apt_options()
    try:
        tarball, made_s = cr.root_tarball(kernel_cache / "clean-root", lines, options,
                                          logs / "mmdebstrap.log")
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    timings["mmdebstrap_s"] = None if made_s is None else round(made_s, 1)
    timings["root_tarball"] = str(tarball)
    start = time.monotonic()
    try:
        root = CleanRoot.unpack(tarball, tmp_path / "root")
    except RuntimeError as e:
        pytest.fail(f"{e}\n(remove {tarball} to make it again)", pytrace=False)
    timings["unpack_s"] = round(time.monotonic() - start, 1)
    try:
        yield root, timings, logs
    finally:
        root.remove()


def _ccache_summary(ccache_dir: Path) -> str:
    r = subprocess.run(["ccache", "-s"], capture_output=True, text=True,
                       env={**os.environ, "CCACHE_DIR": str(ccache_dir)})
    return r.stdout + r.stderr


def _keep_logs(root: CleanRoot, step_log: Path, logs: Path) -> list[Path]:
    """Copies of the logs a step's output names inside the root (the root is removed afterwards)."""
    kept = []
    named = re.findall(r"(?:full log|build log)(?: in)?:? (\S+)", step_log.read_text(errors="replace"))
    for inside in dict.fromkeys(named):
        src = root.host_path(inside if inside.startswith("/") else f"{PROJECT}/{inside}")
        if src.is_file():
            kept.append(logs / f"{len(kept) + 1}-{src.name}")
            shutil.copy(src, kept[-1])
    return kept


def _report(timings: dict, tmp_path: Path, logs: Path) -> None:
    """Each phase's cost: on stdout (-s) and as one JSON line in the test's tmp dir."""
    (tmp_path / "timings.json").write_text(json.dumps(timings, sort_keys=True) + "\n")
    print(f"\nclean root: {json.dumps(timings, sort_keys=True)}\nlogs: {logs}")


def test_bootstrap_then_default_build_on_a_clean_debian_12(clean_root, kernel_cache, tmp_path):
    root, timings, logs = clean_root
    packages = cr.bootstrap_packages((REPO / "ci" / "bootstrap").read_text())
    rc, before = root.output(f"dpkg-query -W -f='${{Package}} ${{db:Status-Status}}\\n' {' '.join(packages)} "
                             "2>/dev/null | awk '$2 == \"installed\" {print $1}'", logs / "before.log")
    preinstalled = sorted(before.split())
    assert not {"rsync", "python3", "git"} & set(preinstalled), \
        f"the fresh root is not fresh: it already has {preinstalled}"

    timings["preinstalled"] = preinstalled
    timings["commit"] = cr.clone_head(REPO, root.host_path(PROJECT))
    root.use_machine_network()

    boot = root.run("ci/bootstrap", f"cd {PROJECT} && ci/bootstrap", logs / "bootstrap.log", timeout=3600)
    timings["bootstrap_s"] = round(boot.seconds, 1)
    if not boot.ok:
        _report(timings, tmp_path, logs)
        kept = _keep_logs(root, boot.log, logs)
        pytest.fail(boot.failure() + "".join(f"\nkept: {p}" for p in kept), pytrace=False)

    rc, found = root.output("for t in " + " ".join(TOOLS) + "; do command -v $t >/dev/null || echo $t; done",
                            logs / "tools.log")
    missing = found.split()
    assert rc == 0 and not missing, f"ci/bootstrap left these commands missing: {missing} (see {logs / 'tools.log'})"

    # The host's ccache at the same path as on the host (HOME=/root both), so equal compile commands hit.
    host_ccache = kernel_cache / "ccache"
    host_ccache.mkdir(parents=True, exist_ok=True)
    (logs / "ccache-before.txt").write_text(_ccache_summary(host_ccache))
    build = root.run("snp-harness build", f"cd {PROJECT} && .venv/bin/snp-harness build", logs / "build.log",
                     mounts=[Mount(host_ccache, f"{HARNESS_CACHE}/ccache", read_only=False)],
                     env={"CCACHE_STATSLOG": STATS_LOG},  # counts this build's compilations only
                     timeout=2 * 3600)
    (logs / "ccache-after.txt").write_text(_ccache_summary(host_ccache))
    timings["build_s"] = round(build.seconds, 1)
    stats = cr.ccache_log_stats(root.host_path(STATS_LOG).read_text() if root.host_path(STATS_LOG).is_file() else "")
    cacheable = stats["hits"] + stats["misses"]
    timings["ccache"] = {**stats, "hit_rate": round(stats["hits"] / cacheable, 3) if cacheable else None}
    kept = _keep_logs(root, build.log, logs)
    _report(timings, tmp_path, logs)

    if not build.ok:
        pytest.fail(build.failure() + "".join(f"\nkept: {p}" for p in kept), pytrace=False)
    out = build.log.read_text(errors="replace")
    key = re.search(r"^cache (?:hit|miss): ([0-9a-f]+)$", out, re.M)
    assert key, f"snp-harness build printed no build key; output in {build.log}"
    bundle = root.host_path(f"{HARNESS_CACHE}/builds/{key[1]}/selftests.tar.gz")
    assert bundle.is_file(), f"build {key[1]} has no selftests bundle at {bundle}"
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
    want = {f"{GUESTS}/{p}" for p in guest_programs(root.host_path(f"{PROJECT}/guests"))}
    assert want and want <= names, f"the selftests bundle lacks {sorted(want - names)}"
