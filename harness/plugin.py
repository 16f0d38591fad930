"""The pytest plugin: --snp-* options, the snp and needs markers, target fixtures.

Loaded through the pytest11 entry point. The only library module that knows pytest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import HarnessConfig, find_config, load_config
from harness.errors import ConfigError
from harness.targets.select import TARGET_KINDS, target_ids

_CONFIG_KEY = pytest.StashKey[HarnessConfig]()
_IDS_KEY = pytest.StashKey[list]()
_EVIDENCE_KEY = pytest.StashKey[tuple]()  # (TargetEvidence, Window) of the running test
_EVIDENCE_ERROR_KEY = pytest.StashKey[BaseException]()
_EVIDENCE_USED_KEY = pytest.StashKey[bool]()
_GUESTS_KEY = pytest.StashKey[bool]()
_RUN_DIR_KEY = pytest.StashKey[Path]()  # a selected test runs guests on the target


# labgrid's own pytest plugin (installed with the `labgrid` extra) defines a `target` fixture
# too; the two cannot share a session, and the harness only runs labgrid-client.
_CLASHING_PLUGINS = ("labgrid",)


def pytest_addhooks(pluginmanager) -> None:
    for name in _CLASHING_PLUGINS:
        if not pluginmanager.has_plugin(name):
            pluginmanager.set_blocked(name)  # entry points load after us in the same pass


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "snp-harness")
    group.addoption("--snp-config", metavar="PATH",
                    help="inventory TOML (default: $SNP_HARNESS_CONFIG, then ./snp-harness.toml)")
    group.addoption("--snp-host", metavar="NAME", action="append", default=[],
                    help="run the kernel suites on this inventory host (repeatable)")
    group.addoption("--snp-target", metavar="KIND", choices=TARGET_KINDS,
                    help=f"target when no --snp-host is given: {', '.join(TARGET_KINDS)} "
                         f"(default: {TARGET_KINDS[0]}, a VM the harness boots; local: this machine as it is)")
    group.addoption("--snp-install", action="store_true",
                    help="install and boot the build on --snp-host targets (kexec or grub, as the inventory "
                         "says); without it, hosts run the suites on the kernel they run now")
    group.addoption("--snp-series", metavar="NAME",
                    help="patch series to build and test (kernel-patches/series/NAME or a directory; "
                         "default: the inventory's [kernel] series)")
    group.addoption("--snp-kernel-tree", metavar="TREE",
                    help="kernel tree to build: debian:7.3, debian:6.12, debian:latest, a git checkout, a tarball "
                         "or an unpacked tree (overrides the inventory's [kernel] tree; default debian:7.3)")
    group.addoption("--snp-run-dir", metavar="PATH",
                    help="run directory for this session (default: a new <artifacts root>/<utc>-pytest/)")
    group.addoption("--snp-matrix", choices=("ci", "full"), default="ci",
                    help="conversion matrix: ci (each backing plain and at 4 memslots x 2 vCPUs) or full")
    group.addoption("--snp-no-evidence", action="store_true",
                    help="no per-test dmesg slices, splat checks or kvm_rmp_fault tracing: tests pass "
                         "unchecked, each saying so (property dmesg_evidence). Without it, a test that passes "
                         "where the target's /dev/kmsg cannot be followed is an error")
    group.addoption("--snp-trust-new-host-key", action="store_true",
                    help="accept and record an unknown host key on first contact (never a changed one)")
    group.addoption("--snp-host-tag", metavar="TAG", action="append", default=[],
                    help="also run on every inventory host tagged TAG (repeatable)")
    group.addoption("--snp-busy-host", choices=("wait", "skip"), default="wait",
                    help="a host whose lease is held elsewhere: wait for it (up to --snp-lease-wait), "
                         "or skip its tests with the holder named (default: wait)")
    group.addoption("--snp-lease-wait", metavar="SECONDS", type=int, default=3600,
                    help="how long to wait for a busy host's lease before the target errors (default 3600)")
    group.addoption("--snp-build", metavar="KEY",
                    help="use this cached build (a key `snp-harness build` printed) instead of building")
    group.addoption("--snp-repeat", metavar="N", type=int, default=1,
                    help="run every target test N times (ids get -runK); bisect uses it for flaky tests")


def pytest_configure(config: pytest.Config) -> None:
    from harness.redact import install_log_scrubber

    install_log_scrubber()  # before the inventory is read: its secrets never reach a captured log
    for name in _CLASHING_PLUGINS:
        if config.pluginmanager.has_plugin(name):
            raise pytest.UsageError(f"the {name} pytest plugin was loaded before snp-harness's and defines "
                                    f"its own `target` fixture; run with -p no:{name}")
    config.addinivalue_line("markers", "snp: kernel suite that drives a target (tests/snp/)")
    config.addinivalue_line(
        "markers", "needs(*caps): skip unless the target has every capability named, e.g. needs('snp')")
    config.addinivalue_line(
        "markers", "snp_guest: runs guest VMs on the target (the QEMU target then carries QEMU, with 1 vCPU)")
    if config.getoption("--snp-repeat") < 1:
        raise pytest.UsageError("--snp-repeat must be 1 or more")
    dist = getattr(config.option, "dist", "no")
    if dist not in ("no", "load", "loadscope") and (
            len(ids := _target_ids(config)) > 1 or any(i.startswith("ssh://") for i in ids)):
        raise pytest.UsageError(f"--dist {dist} can split one target's tests over two workers, which then "
                                "wait on each other's lease; use the default (load) or loadscope")
    if config.getoption("--snp-host") or config.getoption("--snp-config") or config.getoption("--snp-host-tag"):
        _target_ids(config)  # a bad inventory or host name is a usage error, before collection


def _harness_config(config: pytest.Config) -> HarnessConfig:
    if _CONFIG_KEY not in config.stash:
        path = find_config(config.getoption("--snp-config"))
        config.stash[_CONFIG_KEY] = load_config(path)
    return config.stash[_CONFIG_KEY]


def _target_ids(config: pytest.Config) -> list[str]:
    if _IDS_KEY not in config.stash:
        try:
            config.stash[_IDS_KEY] = target_ids(_harness_config(config), config.getoption("--snp-host"),
                                                config.getoption("--snp-target"),
                                                tags=config.getoption("--snp-host-tag"))
        except ConfigError as e:
            raise pytest.UsageError(str(e)) from e
    return config.stash[_IDS_KEY]


@pytest.hookimpl(trylast=True)  # after -k/-m and conftest deselection: only what will run counts
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from harness.targets.capabilities import KNOWN_CAPS

    config.stash[_GUESTS_KEY] = any(item.get_closest_marker("snp_guest") for item in items)
    timeout_plugin = config.pluginmanager.hasplugin("timeout")
    for item in items:
        if timeout_plugin and "target" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("timeout"):
            # Bringing a target up (a cold build, waiting for a lease, a boot) has timeouts of its
            # own and may rightly take longer than a test may: pytest-timeout times the body only.
            item.add_marker(pytest.mark.timeout(func_only=True))
        for mark in item.iter_markers("needs"):
            unknown = [c for c in mark.args if c not in KNOWN_CAPS]
            if unknown:
                raise pytest.UsageError(
                    f"{item.nodeid}: unknown capability {unknown} in needs(); known: {', '.join(KNOWN_CAPS)}")
            if "target" not in getattr(item, "fixturenames", ()):
                raise pytest.UsageError(f"{item.nodeid}: needs() is only for tests that use the target fixture")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        ids = _target_ids(metafunc.config)
        metafunc.parametrize("_snp_target_id", ids, ids=ids, indirect=True, scope="session")
        n = metafunc.config.getoption("--snp-repeat")
        if n > 1:
            metafunc.parametrize("_snp_repeat", range(1, n + 1), ids=[f"run{i}" for i in range(1, n + 1)],
                                 indirect=True)


@pytest.fixture(autouse=True)
def _snp_repeat(request: pytest.FixtureRequest) -> int:
    """Which of --snp-repeat's runs this is (1 without it); recorded so reports can count runs."""
    run = getattr(request, "param", 1)
    if run > 1 or request.config.getoption("--snp-repeat") > 1:
        request.node.user_properties.append(("repeat", str(run)))
    return run


@pytest.fixture(scope="session")
def harness_config(pytestconfig: pytest.Config) -> HarnessConfig:
    return _harness_config(pytestconfig)


@pytest.fixture(scope="session")
def _snp_target_id(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def snp_run_dir(pytestconfig) -> Path:
    """This session's run directory: build log, consoles, per-test evidence (one for all xdist workers)."""
    worker = getattr(pytestconfig, "workerinput", None)
    if worker is not None and "snp_run_dir" in worker:
        return Path(worker["snp_run_dir"])
    return _run_dir(pytestconfig)


def _run_dir(config: pytest.Config) -> Path:
    if _RUN_DIR_KEY not in config.stash:
        from harness.artifacts import new_run_dir

        given = config.getoption("--snp-run-dir")
        if given:
            Path(given).mkdir(parents=True, exist_ok=True)
            config.stash[_RUN_DIR_KEY] = Path(given).resolve()
        else:
            config.stash[_RUN_DIR_KEY] = new_run_dir(_harness_config(config).artifacts.root, "pytest")
    return config.stash[_RUN_DIR_KEY]


# -- pytest-xdist: one worker per target (`-n N` with N targets), one run directory, one report.

@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    if _uses_targets(node.config):
        node.workerinput["snp_run_dir"] = str(_run_dir(node.config))


def _uses_targets(config: pytest.Config) -> bool:
    return bool(config.getoption("--snp-host") or config.getoption("--snp-host-tag")
                or config.getoption("--snp-target") or "snp" in (config.getoption("markexpr") or ""))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Tests of one target go to one worker, which alone opens (and leases) that target."""
    if config.getoption("dist") not in ("load", "loadscope"):
        return None
    from harness.xdist_targets import TargetScheduling

    return TargetScheduling(config, log, targets=_target_ids(config))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """A worker's suite properties (build, target facts) into the controller's --junitxml."""
    props = getattr(node, "workeroutput", {}).get("snp_suite_properties", [])
    xml = _junit_xml(node.config)
    for name, value in props:
        if xml is not None:
            xml.add_global_property(name, value)


def _junit_xml(config: pytest.Config):
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - pytest moved it; properties then stay per worker
        return None
    return config.stash.get(xml_key, None)


def _suite_recorder(pytestconfig: pytest.Config, record_testsuite_property):
    """record_testsuite_property, which is a no-op on an xdist worker: there it goes to the controller."""
    out = getattr(pytestconfig, "workeroutput", None)

    def record(name: str, value) -> None:
        record_testsuite_property(name, value)
        if out is not None:
            out.setdefault("snp_suite_properties", []).append((name, str(value)))

    return record


@pytest.fixture(scope="session")
def snp_build(harness_config, snp_run_dir, pytestconfig):
    """The kernel and selftests under test (the inventory's [kernel]); a cache hit when built before."""
    from harness.kernel.build import build
    from harness.kernel.plan import build_request

    from harness.kernel.build import cached_build

    if pytestconfig.getoption("--snp-build"):
        return cached_build(harness_config.cache_dir, pytestconfig.getoption("--snp-build"))
    request = build_request(harness_config, series_name=pytestconfig.getoption("--snp-series"),
                            tree=pytestconfig.getoption("--snp-kernel-tree"))
    return build(request, snp_run_dir / "build.log")


@pytest.fixture(scope="session")
def target(_snp_target_id, harness_config, pytestconfig, request, snp_run_dir, record_testsuite_property):
    """One target per --snp-host (or the local default), booted and probed once.

    An error here (unreachable host, bad host key, a boot failure) is a pytest
    error, and pytest re-raises the same cached error for every later test of
    this target: a broken target is never rebooted again.
    """
    from contextlib import ExitStack

    from harness.errors import LeaseError
    from harness.targets.leasing import held_target

    slug = _snp_target_id.replace("://", "-").strip("-/")
    skip_busy = pytestconfig.getoption("--snp-busy-host") == "skip"
    with ExitStack() as stack:
        try:
            t = stack.enter_context(held_target(
                harness_config, _snp_target_id, run_id=snp_run_dir.name, workdir=snp_run_dir / "targets" / slug,
                wait_s=0 if skip_busy else pytestconfig.getoption("--snp-lease-wait"),
                trust_new_host_key=pytestconfig.getoption("--snp-trust-new-host-key"),
                for_guests=pytestconfig.stash.get(_GUESTS_KEY, False)))
        except LeaseError as e:
            if not skip_busy:
                raise
            pytest.skip(f"--snp-busy-host=skip: {e}")
        _bring_up(t, pytestconfig, request, _suite_recorder(pytestconfig, record_testsuite_property))
        yield t


def _bring_up(t, pytestconfig, request, record) -> None:
    """Install and boot the build where the target runs it; its facts become suite properties."""
    if getattr(t, "boots_by_default", False) or pytestconfig.getoption("--snp-install"):
        b = request.getfixturevalue("snp_build")
        t.install(b)
        t.boot()
        meta = b.metadata
        for key, value in (("kernel_build", b.key), ("tree_id", meta.get("key_parts", {}).get("tree_id")),
                           ("kernel_package", meta.get("package")),
                           ("config_sha256", meta.get("config_sha256")), ("series", meta.get("series")),
                           ("patch_ids", "; ".join(f"{p['patch_id']} {p['subject']}"
                                                   for p in meta.get("patches", [])))):
            if value:
                record(f"{t.name} {key}", value)
    if hasattr(t, "accel"):
        record(f"{t.name} accel", f"{t.accel} -cpu {t.cpu}")
    for key, value in t.capabilities().properties().items():
        record(f"{t.name} {key}", value)


@pytest.fixture(autouse=True)
def _snp_needs(request: pytest.FixtureRequest) -> None:
    if "target" not in request.fixturenames:
        return
    t = request.getfixturevalue("target")
    # Every testcase of a target names it (and its node id), skipped ones too: reports group by them.
    request.node.user_properties += [("target", t.name), ("nodeid", request.node.nodeid)]
    caps = t.capabilities()
    for mark in request.node.iter_markers("needs"):
        for cap in mark.args:
            reason = caps.missing(cap)
            if reason and caps.misconfigured(cap):  # the hardware can: a setup fault, never a skip
                pytest.fail(f"{t.name} can run {cap} ({caps.snp_hardware.evidence}) but is not set up for it: "
                            f"{reason}", pytrace=False)
            if reason:
                pytest.skip(f"{t.name}: {reason}")


@pytest.fixture
def selftest(target, request, snp_run_dir):
    """run(binary, *args, timeout=..., subtests=None): one selftest on the target, its verdict made pytest's.

    KSFT_SKIP skips with the test's own reason; a failure or a timeout fails with
    the assertion (or the output's tail); the raw output goes to the run directory.
    subtests (a sequence of harness.scenarios.subtests.DeclaredSkip; NO_SKIPS for none):
    every KTAP subtest must then pass or skip as declared, else the test fails; each
    declared skip that happened is a `subtest_skip` testcase property.
    """
    from harness.scenarios.programs import read_programs
    from harness.scenarios.runner import SelftestStatus, run_selftest

    if not target.selftests_dir:
        pytest.skip(f"{target.name}: the build's selftests are not installed there; use the qemu target, "
                    "or --snp-install for hosts")
    log_dir = snp_run_dir / "selftests" / _slug(request.node.nodeid)

    def run(name: str, *args: str, timeout: float = 600, subtests=None):
        """`name`: a program's file name (found through the build's manifest) or its bundle path."""
        cached = getattr(target, "_snp_programs", None)
        if cached is None or cached[0] != target.selftests_dir:
            cached = (target.selftests_dir, read_programs(target.transport, target.selftests_dir))
            target._snp_programs = cached
        binary = cached[1].find(name)
        if binary is None:
            pytest.skip(f"{name}: this tree's selftests do not build it (not in the build's manifest of "
                        f"{len(cached[1].paths)} programs)")
        r = run_selftest(target.transport, target.selftests_dir, binary, args, timeout=timeout, log_dir=log_dir)
        request.node.user_properties.append(("selftest", r.command))
        request.node.user_properties.append(("selftest_duration_s", f"{r.duration_s:.2f}"))
        if r.log_path is not None:
            request.node.user_properties.append(("selftest_log", str(r.log_path)))
        if r.status is SelftestStatus.SKIP:
            pytest.skip(f"{binary}: {r.reason}")
        if r.status is not SelftestStatus.PASS:
            pytest.fail(f"{r.command}: {r.status.value}: {r.reason}", pytrace=False)
        if subtests is not None:
            from harness.scenarios.subtests import review_subtests

            review = review_subtests(r.ktap, subtests)
            request.node.user_properties += [*review.properties(), ("subtests", review.summary())]
            if not review.ok:
                pytest.fail(f"{r.command}: exit 0, but not every subtest passed or skipped as declared:\n  "
                            + "\n  ".join(review.problems), pytrace=False)
        return r

    return run


def _slug(nodeid: str) -> str:
    from harness.evidence.session import slug

    return slug(nodeid)


@pytest.fixture(scope="session")
def target_evidence(target, snp_run_dir):
    """The target's kmsg follower and kvm_rmp_fault trace instance, for the whole session."""
    from harness.evidence.session import TargetEvidence

    ev = TargetEvidence(target, snp_run_dir / "targets" / _slug(target.name))
    try:
        ev.start()
        yield ev
    finally:
        ev.close()  # also after a failed start: nothing it began stays on the target


@pytest.fixture(autouse=True)
def _snp_evidence(request: pytest.FixtureRequest, _snp_needs):
    """Around every test that drives a target: what the kernel said becomes part of the verdict.

    The evidence is collected when the test body ends (pytest_runtest_makereport below), so a
    splat can fail the test itself; an infrastructure failure while collecting is raised here,
    in teardown, and so is reported as an error, never as a test failure.
    """
    if "target" not in request.fixturenames:
        yield
        return
    if request.config.getoption("--snp-no-evidence"):  # the user's choice, said on every testcase
        request.node.user_properties.append(("dmesg_evidence", "off: --snp-no-evidence"))
        yield
        return
    ev = request.getfixturevalue("target_evidence")
    request.config.stash[_EVIDENCE_USED_KEY] = True
    request.node.stash[_EVIDENCE_KEY] = (ev, ev.begin(request.node.nodeid))
    yield
    error = request.node.stash.get(_EVIDENCE_ERROR_KEY, None)
    if error is not None:
        raise error


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """After pytest wrote --junitxml: attachments into it (idempotent; `snp-harness run` repeats it)."""
    xml = getattr(config.option, "xmlpath", None)
    if xml and Path(xml).exists():
        from harness.report.finish import drop_unnamed_cases

        drop_unnamed_cases(Path(xml))  # a test an interrupt cut short: no result, never "passed"
    used = config.stash.get(_EVIDENCE_USED_KEY, False) or (
        _uses_targets(config) and bool(getattr(config.option, "numprocesses", None)))  # workers used it
    if not xml or not Path(xml).exists() or not used:
        return
    from harness.report.junit import enrich

    enrich(Path(xml), Path(xml).parent)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    rep = outcome.get_result()
    _scrub_report(rep)
    if rep.when != "call":
        return
    splat = _judge_evidence(item, rep) if _EVIDENCE_KEY in item.stash else False
    from harness.errors import InfraError
    from harness.artifacts import is_disk_full

    if rep.failed and not splat and call.excinfo is not None and (
            call.excinfo.errisinstance(InfraError) or is_disk_full(call.excinfo.value)):
        # The target died or a command hung inside the test body, and the kernel logged nothing
        # that explains it: no verdict on the kernel under test. pytest (terminal, JUnit) counts
        # a failed report of a phase other than "call" as an error, so relabel it (its message
        # then says "failed on setup"); the traceback stays, and a property says what happened.
        rep.when = "setup"
        item.user_properties.append(("infrastructure_error", call.excinfo.exconly()[:500]))  # JUnit: teardown's
        rep.sections.append(("snp-harness", "infrastructure error during the test body: reported as an error"))


def _scrub_report(rep) -> None:
    """No registered secret in what pytest prints or writes of a test (traceback, skip reason,
    captured output), whichever reporter reads the report next."""
    from harness import redact

    if not redact.any_registered():
        return
    if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3:  # a skip: (path, line, reason)
        path, line, reason = rep.longrepr
        rep.longrepr = (path, line, redact.scrub(reason))
    elif rep.longrepr is not None:
        text = str(rep.longrepr)
        if redact.scrub(text) != text:
            rep.longrepr = redact.scrub(text)
    rep.sections = [(title, redact.scrub(content)) for title, content in rep.sections]


def _judge_evidence(item: pytest.Item, rep) -> bool:
    """Apply the test's evidence to its report; True when a kernel splat failed it."""
    from harness.evidence.session import DmesgUnavailable, EvidenceError

    ev, window = item.stash[_EVIDENCE_KEY]
    del item.stash[_EVIDENCE_KEY]
    unchecked = None
    try:
        found = ev.end(window)
    except DmesgUnavailable as e:  # an error only where the test would pass unchecked (below)
        unchecked, found = e, e.evidence
    except EvidenceError as e:  # what was collected still counts; the failure becomes an error
        item.stash[_EVIDENCE_ERROR_KEY] = e
        found = e.evidence
    except Exception as e:  # raised again in the fixture's teardown: an error, never INTERNALERROR
        item.stash[_EVIDENCE_ERROR_KEY] = e
        return False
    item.user_properties.extend(found.properties)
    message = found.failure
    if message is None:
        if unchecked is not None and rep.passed:
            item.stash[_EVIDENCE_ERROR_KEY] = unchecked
        return False
    if rep.failed:  # keep the test's own failure first; the splat goes with it
        rep.sections.append(("kernel splats", message))
    else:
        rep.outcome, rep.longrepr = "failed", message
    return True


@pytest.fixture
def thp(target, request):
    """THP control for one test: thp.set(enabled="always", ...) is undone afterwards, and the
    thp_* vmstat counters that moved during the test become testcase properties."""
    from contextlib import ExitStack

    from harness.scenarios.thp import read_vmstat, thp_settings, vmstat_delta

    class Thp:
        def __init__(self, stack: ExitStack) -> None:
            self._stack = stack

        def set(self, **knobs: str) -> None:
            try:
                self._stack.enter_context(thp_settings(target.transport, **knobs))
            except ValueError as e:  # the kernel refused the value: the target can't do this mode
                pytest.skip(f"{target.name}: {e}")

    if not target.capabilities().has("thp"):
        pytest.skip(f"{target.name}: {target.capabilities().missing('thp')}")
    before = read_vmstat(target.transport)
    with ExitStack() as stack:
        yield Thp(stack)
    for name, delta in vmstat_delta(before, read_vmstat(target.transport)).items():
        request.node.user_properties.append((f"vmstat_{name}", f"{delta:+d}"))


# -- stopping: SIGINT/SIGTERM, and a full artifact disk ---------------------------------------

def pytest_sessionstart(session: pytest.Session) -> None:
    """SIGTERM (a CI runner's cancel) stops the session as Ctrl-C does: KeyboardInterrupt in the
    main thread, and the fixtures tear their targets down. The next signal, often the same stop
    sent twice (a terminal's to the process group and `snp-harness run`'s forward), is only
    announced; one more abandons the cleanup."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    seen: list[int] = []
    stderr = os.dup(2)  # the terminal's, not a test's captured stderr

    def stop(signum, _frame) -> None:
        seen.append(signum)
        name = signal.Signals(signum).name
        if len(seen) == 2:
            os.write(stderr, f"\nsnp-harness: {name}: already stopping, tearing the targets down "
                             "(once more abandons that)\n".encode())
            return
        raise KeyboardInterrupt(f"{name}" + (": cleanup abandoned" if len(seen) > 2 else ""))

    old = {}
    for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
        if signal.getsignal(sig) is default:  # never replace a handler someone else installed
            old[sig] = signal.signal(sig, stop)

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        os.close(stderr)

    session.config.add_cleanup(restore)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Before --junitxml is written: free the disk reserve `snp-harness run` set aside in the run
    directory, so the report fits on a disk that filled up (the controller's, under xdist)."""
    given = session.config.getoption("--snp-run-dir")
    if given and getattr(session.config, "workerinput", None) is None:
        from harness.artifacts import release_reserve

        release_reserve(Path(given))
