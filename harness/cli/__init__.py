"""The snp-harness command line; the only module that prints.

Exit codes: 0 pass, 1 test failure (or: host not SNP-ready), 2 config or
usage error, 3 infrastructure error; 130 and 143 stopped by SIGINT and SIGTERM
(what was started is ended first, and a run's directory finished).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from harness import redact
from harness.errors import ConfigError, HarnessError, HostKeyError, InfraError, PatchError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INFRA = 0, 1, 2, 3

log = logging.getLogger("harness")


TREE_HELP = ("kernel tree: debian:7.3, debian:6.12, debian:latest (Debian's linux-source-X.Y, fetched once), "
             "a git checkout, a tarball or an unpacked tree (default: the inventory's [kernel] tree, else debian:7.3)")

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="snp-harness", description=__doc__.splitlines()[0])
    p.add_argument("--config", metavar="PATH",
                   help="inventory TOML (default: $SNP_HARNESS_CONFIG, then ./snp-harness.toml)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v: info, -vv: debug (every command)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("check", help="preflight: what the target can do, and what SNP still needs")
    where = c.add_mutually_exclusive_group()
    where.add_argument("host", nargs="?", help="inventory host name")
    where.add_argument("--local", action="store_true", help="check this machine (the default)")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.add_argument("--trust-new-host-key", action="store_true",
                   help="accept and record an unknown host key (never a changed one)")
    c.set_defaults(func=cmd_check)

    t = sub.add_parser("trust", help="record a host's SSH key in the harness's known_hosts")
    t.add_argument("host", help="inventory host name")
    t.add_argument("--fingerprint", metavar="SHA256:...",
                   help="the fingerprint you verified out of band; required when not on a terminal")
    t.add_argument("--replace", action="store_true", help="re-enrol a host whose key changed")
    t.set_defaults(func=cmd_trust)
    b = sub.add_parser("build", help="build the kernel and selftests (cached)")
    which = b.add_mutually_exclusive_group()
    which.add_argument("--series", metavar="NAME", help="kernel-patches/series/NAME, or a series directory")
    which.add_argument("--mbox", metavar="FILE", help="an mbox of patches (git format-patch --stdout, b4 am)")
    which.add_argument("--series-msgid", metavar="ID", help="fetch the series with b4 (needs the network)")
    b.add_argument("--tree", metavar="TREE", help=TREE_HELP)
    b.add_argument("--base", metavar="REF", help="base commit in --tree (default: HEAD)")
    b.add_argument("--config-base", metavar="BASE", default=None,
                   help="tinyconfig, x86_64_defconfig, defconfig or file:PATH (default: tinyconfig)")
    b.add_argument("--fragment", metavar="F", action="append", default=[],
                   help="config fragment: a path, or a name in kernel-patches/configs/ (repeatable; "
                        "default: local-target.config)")
    b.add_argument("-j", "--jobs", type=int, default=None, help="make -j (default: all CPUs)")
    b.add_argument("--no-instrumentation", action="store_true",
                   help="build without kernel-patches/instrumentation/ (the debugfs RMP dump)")
    b.add_argument("--dry-run", action="store_true", help="print every command instead of running it")
    b.set_defaults(func=cmd_build)
    q = sub.add_parser("qemu", help="boot the local QEMU target with a build; print the ssh command or open a shell")
    q.add_argument("--build", metavar="KEY", help="a cached build's key (default: build the default kernel)")
    q.add_argument("--shell", action="store_true", help="open an interactive shell; the VM stops when it exits")
    q.add_argument("--memory", default="4G", help="guest memory (default 4G)")
    q.add_argument("--cpus", type=int, default=2, help="guest vCPUs (default 2)")
    q.add_argument("--dry-run", action="store_true", help="print the QEMU command line instead of booting")
    q.set_defaults(func=cmd_qemu)

    r = sub.add_parser("run", help="the main job: build, bring up the target(s), run the kernel suites, report")
    r.add_argument("--snp-host", dest="hosts", metavar="NAME", action="append", default=[],
                   help="inventory host (repeatable; default: the local QEMU target)")
    r.add_argument("--snp-host-tag", dest="tags", metavar="TAG", action="append", default=[],
                   help="also every inventory host tagged TAG (repeatable); several hosts run in parallel, "
                        "one pytest-xdist worker each")
    r.add_argument("--install", action="store_true", help="install and boot the build on the hosts first")
    r.add_argument("--series", metavar="NAME", help="kernel-patches/series/NAME, or a series directory")
    r.add_argument("--tree", metavar="TREE", help=TREE_HELP)
    r.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: extra pytest arguments")
    r.set_defaults(func=cmd_run)

    h = sub.add_parser("boot", help="install a build on an inventory host and boot it (kexec or grub)")
    h.add_argument("host", help="inventory host name")
    h.add_argument("--build", metavar="KEY", help="a cached build's key (default: build the default kernel)")
    h.add_argument("--wait-lease", type=int, default=0, metavar="S", help="wait up to S seconds for the host's lease")
    h.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    h.set_defaults(func=cmd_boot)

    from harness.cli import bisect, evidence

    evidence.register(sub)  # splats, report: offline, over saved logs and run directories
    bisect.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    redact.install_log_scrubber()  # before any record: the inventory's secrets never reach a log
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sigterm = signal.getsignal(signal.SIGTERM)
    if sigterm is signal.SIG_DFL and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)  # a stop, not a death: what started is ended
    try:
        return args.func(args)
    except (ConfigError, PatchError) as e:
        _err(f"error: {e}")
        return EXIT_USAGE
    except InfraError as e:
        _err(f"infrastructure error: {e}")
        return EXIT_INFRA
    except HarnessError as e:  # pragma: no cover - every error is one of the above
        _err(f"error: {e}")
        return EXIT_INFRA
    except KeyboardInterrupt as e:
        _err(f"interrupted ({_signal_of(e).name})")
        return 128 + _signal_of(e)
    finally:
        if sigterm is signal.SIG_DFL and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a CI runner's cancel), raised in the main thread the way Ctrl-C is."""


def _on_sigterm(_signum, _frame) -> None:
    raise _Terminated("SIGTERM")


def _signal_of(e: KeyboardInterrupt) -> signal.Signals:
    return signal.SIGTERM if isinstance(e, _Terminated) else signal.SIGINT


def _err(text: str) -> None:
    print(redact.scrub(text), file=sys.stderr)  # an error may quote a command or its output


def _config(args):
    from harness.config import find_config, load_config

    return load_config(find_config(args.config))


# -- check ---------------------------------------------------------------------

def cmd_check(args) -> int:
    from harness.targets.select import open_target

    config = _config(args)
    target_id = f"ssh://{config.host(args.host).name}" if args.host else "local://"
    target = open_target(config, target_id, trust_new_host_key=args.trust_new_host_key)
    try:
        caps = target.capabilities()
    finally:
        target.close()
    if args.json:
        print(json.dumps({"target": target.name, **caps.as_dict()}, indent=2, sort_keys=True))
    else:
        _print_capabilities(target.name, caps)
    return EXIT_OK if caps.snp_ready else EXIT_FAIL


def _print_capabilities(name: str, caps) -> None:
    from rich.console import Console
    from rich.table import Table

    from harness.targets.capabilities import KNOWN_CAPS

    console = Console()
    facts = Table(title=f"{name}: facts", show_header=False)
    for key, value in caps.properties().items():
        facts.add_row(key, value)
    console.print(facts)

    have = Table(title="capabilities")
    have.add_column("capability")
    have.add_column("")
    have.add_column("description / what is missing")
    for cap, description in KNOWN_CAPS.items():
        reason = caps.missing(cap)
        have.add_row(cap, "[red]no[/]" if reason else "[green]yes[/]", reason or description)
    console.print(have)

    snp = Table(title="SNP requirements")
    for col in ("check", "", "found", "fix"):
        snp.add_column(col)
    for check in caps.checks:
        snp.add_row(check.name, "[green]ok[/]" if check.ok else "[red]MISSING[/]", check.detail,
                    "" if check.ok else check.fix)
    console.print(snp)
    for problem in caps.facts.problems:
        console.print(f"[yellow]probe problem:[/] {problem}")
    verdict = "[green]ready for SNP testing[/]" if caps.snp_ready else "[red]not ready for SNP testing[/]"
    console.print(f"{name}: {verdict}")


# -- build ---------------------------------------------------------------------

def cmd_build(args) -> int:
    from harness.artifacts import new_run_dir
    from harness.kernel.plan import build_request_from_args, plan_commands
    from harness.kernel.build import build

    config = _config(args)
    run_dir = new_run_dir(config.artifacts.root, "build") if not args.dry_run else None
    request = build_request_from_args(args, config, workdir=run_dir)
    if args.dry_run:
        for argv in plan_commands(request):
            print(redact.redact_argv(argv))
        return EXIT_OK
    log_path = run_dir / "build.log"
    with _progress() as progress:
        result = build(request, log_path, progress)
    if result.hit and not any(run_dir.iterdir()):
        run_dir.rmdir()  # nothing ran, nothing to keep
    print(f"cache {'hit' if result.hit else 'miss'}: {result.key}")
    if not result.hit:
        print(f"build log: {log_path}")
    for phase, seconds in result.phases.items():
        print(f"  {phase:<10} {seconds:8.2f} s")
    print(f"kernel {result.metadata.get('kernel_release')}, config sha256 {result.metadata.get('config_sha256', '')[:16]}")
    for name in ("bzImage", "System.map", "config", "modules.tar.gz", "selftests.tar.gz", "metadata.json"):
        path = result.dir / name
        if path.exists():
            print(f"  {name:<17} {path}")
    return EXIT_OK


class _progress:
    """Build progress on stderr: a bar on a terminal, a line every 30 s otherwise."""

    def __enter__(self):
        import time

        self._time = time.monotonic
        self._last = 0.0
        self._bar = None
        if sys.stderr.isatty():
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task("kernel", total=None)
        return self

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=phase, completed=done, total=total)
        elif self._time() - self._last >= 30:
            self._last = self._time()
            share = f" of ~{total} ({100 * done // max(total, 1)}%)" if total else ""
            print(f"{phase}: {done} steps{share}", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


# -- qemu / boot -----------------------------------------------------------------

def _the_build(args, config):
    from harness.artifacts import new_run_dir
    from harness.kernel.build import build, cached_build
    from harness.kernel.plan import build_request

    if args.build:
        return cached_build(config.cache_dir, args.build)
    with _progress() as progress:
        return build(build_request(config), new_run_dir(config.artifacts.root, "build") / "build.log", progress)


def cmd_run(args) -> int:
    from harness.artifacts import new_run_dir
    from harness.kernel.build import build
    from harness.kernel.plan import build_request
    from harness.artifacts import ArtifactDiskFull, is_disk_full
    from harness.run import pytest_argv, run_suites

    config = _config(args)
    from harness.targets.select import target_ids

    # Unknown hosts or tags are usage errors now, not pytest errors later.
    hosts = [t.split("://", 1)[1] for t in target_ids(config, args.hosts, None, tags=args.tags)
             if t.startswith("ssh://")]
    try:
        run_dir = new_run_dir(config.artifacts.root, "run")
    except OSError as e:
        if is_disk_full(e):
            raise ArtifactDiskFull(config.artifacts.root, str(e)) from e
        raise
    print(f"run directory: {run_dir}")
    series_name = args.series or config.kernel.series
    print("[1/3] build (cached)", flush=True)
    try:
        with _progress() as progress:
            b = build(build_request(config, series_name=series_name, tree=args.tree), run_dir / "build.log",
                      progress)
    except OSError as e:
        if is_disk_full(e):
            raise ArtifactDiskFull(run_dir, str(e)) from e
        raise
    except KeyboardInterrupt as e:  # the run directory says so, and why
        _note_interrupted(run_dir, e, "build")
        raise
    print(f"      {'cache hit' if b.hit else 'built'}: {b.key} ({b.metadata.get('kernel_release')}; "
          f"{b.metadata.get('package') or b.metadata.get('source')})", flush=True)
    extra = [a for a in args.pytest_args if a != "--"]
    if len(hosts) > 1 and not any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in extra):
        extra = ["-n", str(len(hosts)), *extra]  # each host on a worker of its own, at the same time
    argv = pytest_argv(run_dir, config=config.path, hosts=hosts, install=args.install,
                       series=args.series, tree=args.tree, extra=extra)
    print("[2/3] target(s) and [3/3] kernel suites: " + shlex_join(argv), flush=True)
    reproducer = ["snp-harness", "run", *(f"--snp-host={h}" for h in hosts),
                  *(["--install"] if args.install else []), *([f"--series={args.series}"] if args.series else []),
                  *([f"--tree={args.tree}"] if args.tree else [])]
    report = run_suites(run_dir, argv, {
        "build": b.key, "kernel_release": b.metadata.get("kernel_release"),
        "tree_id": b.metadata.get("key_parts", {}).get("tree_id"), "package": b.metadata.get("package"),
        "config_sha256": b.metadata.get("config_sha256"),
        "patch_ids": [f"{p['patch_id']} {p['subject']}" for p in b.metadata.get("patches", [])],
        "series": series_name, "hosts": hosts or ["qemu://"],
        "reproducer": shlex_join(["snp-harness", *sys.argv[1:]]), "reproducer_argv": reproducer})
    print(f"\n{'verdict':<10} {'count':>5}")
    for outcome in ("passed", "failed", "error", "skipped"):
        print(f"{outcome:<10} {report.count(outcome):>5}")
    for case in report.cases:
        if case.outcome in ("failed", "error"):
            print(f"  {case.outcome.upper():<6} {case.name}: {case.message.splitlines()[0] if case.message else ''}")
    for problem in report.report_problems:
        log.warning("report: %s", problem)
    if (run_dir / "summary.md").exists():
        print(f"summary: {run_dir / 'summary.md'} (and summary.html)")
    print(f"run directory: {run_dir}")
    if report.stop_signal is not None:  # 130 or 143, as a shell reports a job stopped that way
        _err(f"interrupted by {signal.Signals(report.stop_signal).name}: the targets were stopped; "
             f"the run directory holds the {len(report.cases)} test(s) that ran")
        return 128 + report.stop_signal
    if report.disk_full is not None:
        _err(f"infrastructure error: {report.disk_full}")
        return EXIT_INFRA
    if report.count("error") or (report.pytest_exit not in (0, 1) and not report.cases):
        return EXIT_INFRA
    return EXIT_FAIL if report.count("failed") or report.pytest_exit == 1 else EXIT_OK


def _note_interrupted(run_dir: Path, e: KeyboardInterrupt, phase: str) -> None:
    from harness.report.finish import finish_run

    try:
        (run_dir / "metadata.json").write_text(json.dumps({"interrupted": _signal_of(e).name, "phase": phase}))
        finish_run(run_dir)
    except OSError as err:
        log.warning("%s: %s", run_dir, err)


def shlex_join(argv) -> str:
    import shlex

    return shlex.join(argv)


def cmd_qemu(args) -> int:
    import shlex
    import subprocess
    import time

    from harness.artifacts import new_run_dir
    from harness.targets.qemu import QemuConfig, QemuTarget, choose_accel, qemu_argv

    config = _config(args)
    qcfg = QemuConfig(memory=args.memory, cpus=args.cpus)
    if args.dry_run:
        accel, cpu, why = choose_accel(qcfg.accel)
        print(f"# {why}")
        print(redact.redact_argv(qemu_argv(qcfg, accel=accel, cpu=cpu, kernel=Path("<bzImage>"),
                                           initrd=Path("<initramfs>"), port=0, console=Path("<run>/console.log"),
                                           qmp=Path("<run>/qmp.sock"), pidfile=Path("<run>/qemu.pid"))))
        return EXIT_OK
    b = _the_build(args, config)
    target = QemuTarget(new_run_dir(config.artifacts.root, "qemu"), qcfg)
    try:
        target.install(b)
        print(f"booting {b.key} ({target.accel}, -cpu {target.cpu}); console: {target.console_log}", file=sys.stderr)
        target.boot()
        ssh = ["ssh", "-i", str(target.workdir / "id_ed25519"), "-p", str(target.port),
               "-o", f"UserKnownHostsFile={target.workdir / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
               "root@127.0.0.1"]
        if args.shell:
            return subprocess.call(ssh)
        print(shlex.join(ssh))
        print("VM running; Ctrl-C stops it", file=sys.stderr)
        try:
            while target.transport is not None:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        return EXIT_OK
    finally:
        target.close()


def cmd_boot(args) -> int:
    from harness.artifacts import new_run_dir
    from harness.targets.leasing import held_target

    config = _config(args)
    host = config.host(args.host)
    if args.dry_run:
        remote = f"{host.stage_dir}/<key>"
        if host.console:  # started here, beside the boot; its secrets shown as ********
            print(f"{host.name}: console (local): {redact.redact_argv(host.console)}")
        stage = ["sh", "-c", "<stage script: each component 0700, ours, no symlink>", "sh",
                 *[c for c in host.stage_dir.split("/") if c], "<key>"]
        for argv in (stage, ["sftp-put", "<bzImage>", f"{remote}/bzImage"],
                     ["sha256sum", f"{remote}/bzImage"], ["cat", "/proc/sys/kernel/random/boot_id"],
                     ["kexec", "-l", f"{remote}/bzImage", "--command-line=<current /proc/cmdline>"]
                     if host.boot_method == "kexec" else ["update-grub"],
                     ["systemctl", "kexec"] if host.boot_method == "kexec" else ["grub-reboot", "<entry>"]):
            print(f"{host.name}: {redact.redact_argv(argv)}")
        if host.power_cycle:
            print(f"{host.name}: if it does not come back (local): {redact.redact_argv(host.power_cycle)}")
        return EXIT_OK
    b = _the_build(args, config)
    run_dir = new_run_dir(config.artifacts.root, f"boot-{host.name}")
    with held_target(config, f"ssh://{host.name}", run_id=run_dir.name, wait_s=args.wait_lease,
                     workdir=run_dir) as target:
        target.install(b)
        target.boot()
    print(f"{target.name}: running {b.metadata.get('kernel_release')} ({b.key})")
    return EXIT_OK


# -- trust -----------------------------------------------------------------------

def cmd_trust(args) -> int:
    from harness.transport.hostkeys import KnownHosts, describe, fingerprint
    from harness.transport.ssh import SshTransport

    host = _config(args).host(args.host)
    transport = SshTransport.from_host(host)
    key = transport.host_key()
    known = KnownHosts(host.known_hosts)
    found = known.lookup(transport.hostid)
    print(f"{transport.name} ({transport.hostid}) offers {describe(key)}")
    revoked = found.revoked_by(key)
    if revoked is not None:
        raise HostKeyError(f"{transport.name}: the offered key is revoked in {host.known_hosts} line {revoked.lineno}")
    if found.matches(key) and not found.problems:
        print(f"already trusted in {host.known_hosts}")
        return EXIT_OK
    if found.known and not args.replace:  # any entry, even one we cannot read, means the host is not new
        raise HostKeyError(
            f"{transport.name}: the offered key is not trusted: {found.summary()}. If the host was reinstalled, "
            f"check the key out of band and run `snp-harness trust --replace {host.name}`")
    if args.fingerprint:
        if args.fingerprint != fingerprint(key):
            raise HostKeyError(
                f"{transport.name}: offered key {fingerprint(key)} does not match --fingerprint {args.fingerprint}")
    elif not sys.stdin.isatty():
        raise ConfigError(
            f"not on a terminal: confirm the key by passing --fingerprint {fingerprint(key)} "
            "after checking it out of band (e.g. `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on the host)")
    elif input("Trust this key? [y/N] ").strip().lower() not in ("y", "yes"):
        print("not trusted")
        return EXIT_FAIL
    (known.replace if args.replace else known.add)(transport.hostid, key)
    print(f"trusted: recorded in {host.known_hosts}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
