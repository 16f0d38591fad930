"""Several hosts at once: `pytest -m snp --snp-host-tag genoa -n 2` against two real sshd "hosts".

Each host is this machine behind its own sshd on 127.0.0.1, with its own lease file,
so the run exercises the real path: xdist workers, one per host, each holding that
host's lease, and one merged JUnit naming the host of every testcase.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.targets.lease import acquire
from harness.transport.hostkeys import KnownHosts, host_id

from conftest import _start_sshd, enrolled_transport

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
PREFLIGHT = REPO / "tests" / "snp" / "test_preflight.py"

# Records, from inside the session, which worker ran which host and who held the lease then.
WHO = """
import json, os
from pathlib import Path

def test_who_holds_the_lease(target, harness_config):
    host = harness_config.host(target.name.split("://")[-1] if "://" in target.name else target.name)
    holder = json.loads(target.transport.run(["cat", host.lease_file], timeout=30).stdout)
    # Held, not just written: a second flock on the file must fail while the session runs.
    probe = target.transport.run(["flock", "-n", host.lease_file, "true"], timeout=30, check=False).exit_status
    out = Path(os.environ["WHO_DIR"]) / f"{host.name}.json"
    out.write_text(json.dumps({"worker": os.environ.get("PYTEST_XDIST_WORKER"), "holder": holder, "probe": probe}))
"""


@pytest.fixture
def two_hosts(tmp_path):
    servers = [_start_sshd(tmp_path / f"sshd-{n}") for n in ("a", "b")]
    known = tmp_path / "known_hosts"
    lines = [f'[harness]\nknown_hosts = "{known}"\n[artifacts]\nroot = "{tmp_path / "runs"}"\n']
    for name, server in zip(("epyc-a", "epyc-b"), servers):
        KnownHosts(known).add(host_id("127.0.0.1", server.port), server.public_host_key())
        lines.append(f'[hosts.{name}]\naddress = "127.0.0.1"\nport = {server.port}\nuser = "{server.user}"\n'
                     f'identity_file = "{server.client_key}"\ntags = ["genoa"]\n'
                     f'lease_file = "{tmp_path / name}.lease"\n')
    inventory = tmp_path / "inv.toml"
    inventory.write_text("\n".join(lines))
    yield inventory, servers, known
    for server in servers:
        server.stop()


def _cases(junit: Path) -> list[dict]:
    cases = []
    for tc in ET.parse(junit).iter("testcase"):
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        outcome = next((c.tag for c in tc if c.tag in ("failure", "error", "skipped")), "passed")
        cases.append({"name": tc.get("name"), "outcome": outcome, **props})
    return cases


def test_two_hosts_run_on_one_worker_each_holding_its_lease(pytester, two_hosts, tmp_path, monkeypatch):
    inventory, servers, _known = two_hosts
    monkeypatch.setenv("WHO_DIR", str(tmp_path))
    pytester.makepyfile(test_who=WHO)
    run_dir = tmp_path / "run"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-m", "snp or not snp", "--snp-config", str(inventory),
        "--snp-host-tag", "genoa", "-n", "2", "--snp-run-dir", str(run_dir),
        "--junitxml", str(tmp_path / "junit.xml"), "-v", "-rs", str(PREFLIGHT), "test_who.py")
    assert result.ret == 0, result.stdout.str()

    who = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("epyc-a", "epyc-b")}
    assert who["epyc-a"]["worker"] != who["epyc-b"]["worker"], "both hosts ran on one worker"
    for name, seen in who.items():
        assert seen["holder"]["run_id"] == run_dir.name, f"{name} was not leased by this run: {seen}"
        assert seen["probe"] == 1, f"{name}'s lease file was not locked during the session: {seen}"

    cases = _cases(tmp_path / "junit.xml")
    by_host = {t: [c for c in cases if c.get("target") == t] for t in ("ssh://epyc-a", "ssh://epyc-b")}
    assert all(by_host.values()), f"a host has no testcases in the merged report: {cases}"
    assert {c["name"].split("[")[0] for c in by_host["ssh://epyc-a"]} == \
        {c["name"].split("[")[0] for c in by_host["ssh://epyc-b"]}
    assert not [c for c in cases if c["outcome"] in ("failure", "error")]
    suite = {p.get("name") for p in ET.parse(tmp_path / "junit.xml").getroot().iter("property")}
    assert {"ssh://epyc-a kernel", "ssh://epyc-b kernel"} <= suite, "the workers' suite properties were lost"
    # Both hosts' leases were given back when the session ended: a new connection takes each at once.
    for name, server in zip(("epyc-a", "epyc-b"), servers):
        t = enrolled_transport(server, tmp_path / f"kh-after-{name}", name=f"after-{name}")
        try:
            acquire(t, "after-the-run", lock_path=str(tmp_path / f"{name}.lease"), wait_s=0).release()
        finally:
            t.close()


def _run_while_held(pytester, two_hosts, tmp_path, monkeypatch, held: int, *args: str):
    """The WHO suite run with `args` while another run holds host number `held`'s lease."""
    inventory, servers, _known = two_hosts
    monkeypatch.setenv("WHO_DIR", str(tmp_path))
    pytester.makepyfile(test_who=WHO)
    name = ("epyc-a", "epyc-b")[held]
    t = enrolled_transport(servers[held], tmp_path / "kh-other", name="other-run")
    lease = acquire(t, "other-run", lock_path=str(tmp_path / f"{name}.lease"))
    try:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--snp-config", str(inventory), *args,
                                             "--snp-run-dir", str(tmp_path / "run"), "-rs", "test_who.py")
    finally:
        lease.release()
        t.close()


def test_a_busy_host_is_skipped_with_its_holder_named(pytester, two_hosts, tmp_path, monkeypatch):
    result = _run_while_held(pytester, two_hosts, tmp_path, monkeypatch, 1,
                             "--snp-host-tag", "genoa", "--snp-busy-host", "skip")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*--snp-busy-host=skip: ssh://epyc-b is leased by *other-run*"])


def test_a_busy_host_is_waited_for_then_errors(pytester, two_hosts, tmp_path, monkeypatch):
    result = _run_while_held(pytester, two_hosts, tmp_path, monkeypatch, 0,
                             "--snp-host", "epyc-a", "--snp-lease-wait", "2")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*LeaseBusy: ssh://epyc-a is leased by *other-run*"])


@pytest.mark.slow
def test_run_spreads_tagged_hosts_over_workers_and_reports_each(two_hosts, tmp_path, kernel_cache, kernel_build,
                                                                capsys):
    """`snp-harness run --snp-host-tag genoa`: the main job on both hosts at once, one report."""
    from harness import cli

    inventory, _servers, _known = two_hosts
    inventory.write_text(inventory.read_text().replace("[harness]\n", f'[harness]\ncache_dir = "{kernel_cache}"\n'))
    rc = cli.main(["--config", str(inventory), "run", "--snp-host-tag", "genoa", "--", str(PREFLIGHT)])
    out = capsys.readouterr().out
    assert rc == cli.EXIT_OK, out
    assert " -n 2 " in out  # one worker per host, chosen for the user
    (run_dir,) = (tmp_path / "runs").glob("*-run")
    cases = _cases(run_dir / "junit.xml")
    assert {c.get("target") for c in cases} == {"ssh://epyc-a", "ssh://epyc-b"}
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["hosts"] == ["epyc-a", "epyc-b"] and "--snp-host=epyc-b" in meta["reproducer_argv"]
