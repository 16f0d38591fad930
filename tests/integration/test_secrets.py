"""A BMC password in the inventory reaches no file of a run and no dry-run's output.

The suites run as `snp-harness run` runs them (harness.run.run_suites: a pytest child over the
real sshd, then the JUnit enriched and the summaries written), minus the kernel build; the test
there power-cycles its host the way HostTarget does after a boot timeout, through a fake
`ipmitool` that fails and echoes its arguments, as a real tool's error may.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from harness import cli, redact
from harness.redact import REDACTED
from harness.run import pytest_argv, run_suites
from harness.transport.hostkeys import KnownHosts, host_id

from conftest import DATA_DIR as DATA

# Unique per session: no other text contains them by chance.
SECRET = f"bmc-{uuid.uuid4().hex[:16]}"
CONSOLE_SECRET = f"sol-{uuid.uuid4().hex[:16]}"
POWER_CYCLE = ["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-U", "admin", "-P", SECRET,
               "chassis", "power", "cycle"]
CONSOLE = ["sshpass", "-p", CONSOLE_SECRET, "ssh", "-p", "2222", "sol@127.0.0.1"]

SUITE = """
import pytest

pytestmark = pytest.mark.snp


def test_host_that_needs_a_power_cycle(target):
    target._recover("boot id before the boot that timed out")  # what boot() does after BootTimeout
    pytest.fail(f"{target.name} did not come back on the build")


def test_a_careless_failure_message(target):  # a test that prints an inventory argv as it is
    print("console was:", " ".join(target.host.console))
    pytest.fail("power cycle was: " + " ".join(target.host.power_cycle))


def test_a_careless_skip_reason(target):
    pytest.skip("no BMC answers " + " ".join(target.host.power_cycle))
"""


@pytest.fixture(autouse=True)
def _fresh_registry():
    redact._reset_for_tests()  # the registry is per process: each test must register on its own
    yield
    redact._reset_for_tests()


@pytest.fixture
def fake_ipmitool(tmp_path, monkeypatch) -> Path:
    """`ipmitool` on PATH (the pytest child inherits it): fails, and echoes its argv on stderr."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "ipmitool"
    tool.write_text('#!/bin/sh\necho "ipmitool: unable to establish IPMI v2 / RMCP+ session ($*)" >&2\nexit 1\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tool


@pytest.fixture
def inventory(sshd, tmp_path) -> Path:
    known = tmp_path / "known_hosts"
    KnownHosts(known).add(host_id("127.0.0.1", sshd.port), sshd.public_host_key())
    path = tmp_path / "snp-harness.toml"
    path.write_text(
        f'[harness]\nknown_hosts = "{known}"\n'
        f'[hosts.loop]\naddress = "127.0.0.1"\nport = {sshd.port}\nuser = "{sshd.user}"\n'
        f'identity_file = "{sshd.client_key}"\nconnect_timeout = 10\n'
        f"power_cycle = {json.dumps(POWER_CYCLE)}\nconsole = {json.dumps(CONSOLE)}\n"
        f'[artifacts]\nroot = "{tmp_path / "runs"}"\n')
    return path


def _files_holding(root: Path, *secrets: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and any(s.encode() in p.read_bytes() for s in secrets))


def test_a_run_that_power_cycles_writes_no_secret(inventory, fake_ipmitool, tmp_path, capfd):
    suite = tmp_path / "suite" / "test_power.py"
    suite.parent.mkdir()
    suite.write_text(SUITE)
    run_dir = tmp_path / "runs" / "secret-run"
    run_dir.mkdir(parents=True)
    argv = pytest_argv(run_dir, config=inventory, hosts=["loop"], install=False, series=None,
                       extra=[str(suite), "-p", "no:labgrid", "--snp-no-evidence", "-o", "junit_logging=all",
                              f"--log-file={run_dir / 'pytest.log'}", "--log-file-level=DEBUG"])
    report = run_suites(run_dir, argv, {"hosts": ["loop"], "reproducer_argv": ["snp-harness", "run"]})
    out = capfd.readouterr()

    assert [c.outcome for c in report.cases] == ["failed", "failed", "skipped"], out.out[-3000:]
    log = (run_dir / "pytest.log").read_text()
    # The power cycle ran and was logged, the password and the tool's echo of it redacted.
    assert f"power-cycling: ipmitool -I lanplus -H 127.0.0.1 -U admin -P {REDACTED} chassis power cycle" in log
    assert f"-P {REDACTED} chassis power cycle)" in log  # its stderr
    for name in ("junit.xml", "metadata.json", "summary.md", "summary.html", "pytest.log"):
        assert (run_dir / name).is_file(), name
    assert REDACTED in (run_dir / "junit.xml").read_text()  # junit_logging: the captured log is in it
    assert _files_holding(tmp_path / "runs", SECRET, CONSOLE_SECRET) == []
    # The child's terminal output is the CI job's log.
    assert SECRET not in out.out + out.err and "power-cycling: ipmitool" in out.out
    assert CONSOLE_SECRET not in out.out + out.err
    assert f"power cycle was: ipmitool -I lanplus -H 127.0.0.1 -U admin -P {REDACTED}" in out.out
    assert f"no BMC answers ipmitool -I lanplus -H 127.0.0.1 -U admin -P {REDACTED}" in out.out  # -rs


def test_dry_runs_print_no_secret(inventory, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--config", str(inventory), "boot", "loop", "--dry-run"]) == cli.EXIT_OK
    boot = capsys.readouterr()
    # Both local commands are shown, as they would run, with their passwords redacted.
    assert f"loop: console (local): sshpass -p {REDACTED} ssh -p 2222 sol@127.0.0.1" in boot.out
    assert (f"loop: if it does not come back (local): ipmitool -I lanplus -H 127.0.0.1 -U admin "
            f"-P {REDACTED} chassis power cycle") in boot.out
    assert cli.main(["--config", str(inventory), "-vv", "build", "--dry-run",
                     "--series", str(DATA / "patches" / "series-two")]) == cli.EXIT_OK
    assert cli.main(["--config", str(inventory), "-vv", "qemu", "--dry-run"]) == cli.EXIT_OK
    rest = capsys.readouterr()
    assert "make -C " in rest.out and "-accel " in rest.out
    for text in (boot.out, boot.err, rest.out, rest.err):
        assert SECRET not in text and CONSOLE_SECRET not in text
    assert not (tmp_path / "runs").exists()


def test_a_misspelt_power_cycle_is_a_usage_error_that_hides_its_password(tmp_path, capsys):
    path = tmp_path / "inv.toml"
    path.write_text(f'[hosts.x]\naddress = "h"\npower_cycle = "ipmitool -P {SECRET} -H bmc chassis power cycle"\n')
    assert cli.main(["--config", str(path), "check", "x"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "hosts.x.power_cycle: expected a list of strings" in err
    assert SECRET not in err and f"-P {REDACTED}" in err
