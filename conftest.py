"""Fixtures for the repository's own tests (the pytest plugin itself is harness.plugin)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy  # noqa: F401 (loaded here once: pytester's in-process runs drop what they import, and numpy cannot load twice)
import pytest

from harness.testing.sshd import LoopbackSshd
from harness.transport.hostkeys import KnownHosts, host_id
from harness.transport.ssh import SshTransport

DATA_DIR = Path(__file__).parent / "tests" / "data"
# The persistent cache (imported tree, ccache, builds), read before any test isolates HOME/XDG:
# slow tests share it so a machine builds each kernel once, and CI on a warm machine is fast.
KERNEL_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "snp-harness"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true",
                     help="also run tests marked slow (kernel builds, QEMU boots); CI does")


def pytest_collection_modifyitems(config, items):
    snp_dir = Path(__file__).parent / "tests" / "snp"
    for item in items:  # the kernel suites drive a target: a kernel build and a VM boot
        if snp_dir in Path(item.fspath).parents:
            item.add_marker(pytest.mark.snp)
            item.add_marker(pytest.mark.slow)
    # An explicit -m (say `pytest -m snp`) is the user's choice: do not deselect behind it.
    if config.getoption("--run-slow") or config.getoption("markexpr"):
        return
    slow = [i for i in items if i.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [i for i in items if not i.get_closest_marker("slow")]


@pytest.fixture(autouse=True)
def _inner_sessions_without_labgrid_plugin(request, monkeypatch):
    """pytester's inner sessions leave out labgrid's pytest plugin: its `target` fixture clashes
    with ours (the repository's pyproject does the same with -p no:labgrid)."""
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")  # it clears PYTEST_ADDOPTS when it starts
        monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:labgrid")  # whatever rootdir the inner run picks


@pytest.fixture
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(autouse=True)
def _isolated_home(monkeypatch, tmp_path_factory):
    """Never read or write the developer's own SSH config, agent, known_hosts or caches."""
    root = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("SNP_HARNESS_CONFIG", raising=False)


def _start_sshd(workdir: Path) -> LoopbackSshd:
    why = LoopbackSshd.available()
    if why:
        pytest.fail(f"cannot start the test sshd: {why}", pytrace=False)
    return LoopbackSshd(workdir).start()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """One real sshd on 127.0.0.1 for the whole session; tests must not disturb it."""
    server = _start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def private_sshd(tmp_path):
    """An sshd of the test's own, for tests that kill, restart or re-key it."""
    server = _start_sshd(tmp_path / "sshd")
    yield server
    server.stop()


def enrolled_transport(server: LoopbackSshd, known_hosts: Path, name: str = "loopback") -> SshTransport:
    """An SshTransport to `server` whose host key is already trusted."""
    KnownHosts(known_hosts).add(host_id("127.0.0.1", server.port), server.public_host_key())
    return SshTransport(name, "127.0.0.1", port=server.port, user=server.user,
                        identity_file=server.client_key, known_hosts=known_hosts, connect_timeout=10)


@pytest.fixture
def ssh_transport(sshd, tmp_path):
    t = enrolled_transport(sshd, tmp_path / "known_hosts")
    yield t
    t.close()


@pytest.fixture(scope="session")
def kernel_cache() -> Path:
    return KERNEL_CACHE


# Every tree the harness supports, by name; the first is the default (the newest mainline).
SUPPORTED_TREES = ("debian:7.3", "debian:6.12")


@pytest.fixture(scope="session")
def kernel_source(kernel_cache):
    """The default tree (Debian's linux-source-7.3), fetched and imported into git once per machine."""
    from harness.kernel.source import resolve_source

    return resolve_source(None, None, kernel_cache)


@pytest.fixture(scope="session", params=SUPPORTED_TREES)
def supported_build(request, kernel_cache, tmp_path_factory):
    """(BuildRequest, Build): each supported tree's default local-target build, built once per
    machine and shared with the kernel suites (the default tree's is kernel_build's)."""
    from harness.kernel.build import BuildRequest, build

    req = BuildRequest(cache_dir=kernel_cache, tree=request.param)
    return req, build(req, tmp_path_factory.mktemp("tree-build") / "build.log")


@pytest.fixture(scope="session", params=[t.removeprefix("debian:") for t in SUPPORTED_TREES])
def supported_tree_dir(request, kernel_cache) -> Path:
    """Each supported tree's sources (the harness's import of it; read-only for tests)."""
    from harness.kernel.source import resolve_source

    return resolve_source(f"debian:{request.param}", None, kernel_cache).repo


@pytest.fixture(scope="session")
def kernel_build(kernel_cache, kernel_source, tmp_path_factory):
    """The default local-target kernel + selftests: built once per machine, a cache hit after."""
    from harness.kernel.build import BuildRequest, build

    log = tmp_path_factory.mktemp("kernel-build") / "build.log"
    return build(BuildRequest(cache_dir=kernel_cache), log)


@pytest.hookimpl(trylast=True)  # after pytest's own teardown of an interrupted session
def pytest_sessionfinish(session, exitstatus):
    """No QEMU started by these tests may outlive them."""
    from harness.targets.qemu import live_qemu_pids

    left = live_qemu_pids()
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"FAILED: QEMU processes left running after the tests: {left}", red=True)
