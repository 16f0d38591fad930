"""The CLI end to end: inventory → trust flow → preflight over a real sshd."""

from __future__ import annotations

import json

import pytest

from harness import cli
from harness.transport.hostkeys import KnownHosts, fingerprint, host_id

from conftest import DATA_DIR as DATA


@pytest.fixture
def inventory(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    path = tmp_path / "snp-harness.toml"
    path.write_text(
        f'[harness]\nknown_hosts = "{known}"\n\n'
        f'[hosts.loop]\naddress = "127.0.0.1"\nport = {sshd.port}\nuser = "{sshd.user}"\n'
        f'identity_file = "{sshd.client_key}"\ntags = ["milan"]\n'
    )
    return path, known


def test_check_refuses_an_unknown_host_key(inventory, capsys):
    path, known = inventory
    assert cli.main(["--config", str(path), "check", "loop"]) == cli.EXIT_INFRA
    err = capsys.readouterr().err
    assert "infrastructure error" in err and "unknown host key" in err and "snp-harness trust loop" in err


def test_trust_needs_a_fingerprint_off_a_terminal(inventory, capsys, monkeypatch):
    path, known = inventory
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert cli.main(["--config", str(path), "trust", "loop"]) == cli.EXIT_USAGE
    assert "--fingerprint SHA256:" in capsys.readouterr().err
    assert not known.exists()


def test_trust_rejects_a_wrong_fingerprint(inventory, capsys):
    path, known = inventory
    assert cli.main(["--config", str(path), "trust", "loop", "--fingerprint", "SHA256:nope"]) == cli.EXIT_INFRA
    assert "does not match --fingerprint" in capsys.readouterr().err
    assert not known.exists()


def test_trust_then_check_over_ssh(inventory, sshd, capsys):
    path, known = inventory
    fp = fingerprint(sshd.public_host_key())
    assert cli.main(["--config", str(path), "trust", "loop", "--fingerprint", fp]) == cli.EXIT_OK
    assert fp in capsys.readouterr().out
    assert KnownHosts(known).keys_for(host_id("127.0.0.1", sshd.port)) == [sshd.public_host_key()]
    # Trusting again is a no-op.
    assert cli.main(["--config", str(path), "trust", "loop", "--fingerprint", fp]) == cli.EXIT_OK
    assert "already trusted" in capsys.readouterr().out

    rc = cli.main(["--config", str(path), "check", "loop", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["target"] == "ssh://loop"
    # This machine is no SNP host; the verdict and the exit code must agree.
    assert rc == (cli.EXIT_OK if all(c["ok"] for c in report["checks"]) else cli.EXIT_FAIL)


def test_trust_replace_re_enrols_a_changed_key(private_sshd, tmp_path, capsys):
    known = tmp_path / "known_hosts"
    path = tmp_path / "inv.toml"
    path.write_text(
        f'[hosts.loop]\naddress = "127.0.0.1"\nport = {private_sshd.port}\nuser = "{private_sshd.user}"\n'
        f'identity_file = "{private_sshd.client_key}"\nknown_hosts = "{known}"\n'
    )
    KnownHosts(known).add(host_id("127.0.0.1", private_sshd.port), private_sshd.public_host_key())
    private_sshd.rotate_host_key()
    fp = fingerprint(private_sshd.public_host_key())
    assert cli.main(["--config", str(path), "trust", "loop", "--fingerprint", fp]) == cli.EXIT_INFRA
    assert "trust --replace loop" in capsys.readouterr().err
    assert cli.main(["--config", str(path), "trust", "--replace", "loop", "--fingerprint", fp]) == cli.EXIT_OK
    assert KnownHosts(known).keys_for(host_id("127.0.0.1", private_sshd.port)) == [private_sshd.public_host_key()]


def test_bad_inventory_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[hosts.x]\naddress = 'h'\nport = 'abc'\n")
    assert cli.main(["--config", str(path), "check", "x"]) == cli.EXIT_USAGE
    assert "hosts.x.port" in capsys.readouterr().err


def test_unknown_host_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "inv.toml"
    path.write_text("[hosts.epyc1]\naddress = 'h'\n")
    assert cli.main(["--config", str(path), "check", "epyc2"]) == cli.EXIT_USAGE
    assert "epyc1" in capsys.readouterr().err


def test_local_check_prints_the_table(capsys):
    rc = cli.main(["check", "--local"])
    out = capsys.readouterr().out
    assert rc in (cli.EXIT_OK, cli.EXIT_FAIL)
    assert "SNP requirements" in out and "capabilities" in out
    assert ("not ready for SNP testing" in out) == (rc == cli.EXIT_FAIL)


def test_build_dry_run_prints_commands_and_runs_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["build", "--dry-run", "--series", str(DATA / "patches" / "series-two")]) == cli.EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert any(" am -3 --keep-non-patch " in ln and "0002-KVM-guest_memfd" in ln for ln in out)
    assert any(ln.startswith("make -C ") and ln.endswith(" bzImage") for ln in out)
    assert any("olddefconfig" in ln for ln in out) and any("headers_install" in ln for ln in out)
    assert not (tmp_path / "runs").exists()


def test_build_unknown_series_is_a_usage_error(capsys):
    assert cli.main(["build", "--series", "no-such-series"]) == cli.EXIT_USAGE
    assert "no patch series 'no-such-series'" in capsys.readouterr().err


def test_build_series_msgid_offline_is_an_infra_error(capsys, monkeypatch):
    from harness.testing.sshd import free_port

    # Point b4 at a closed loopback port: offline, and no traffic leaves the machine.
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "b4.midmask")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", f"http://127.0.0.1:{free_port()}/%s")
    assert cli.main(["build", "--series-msgid", "20261125.1-1-dev@example.invalid"]) == cli.EXIT_INFRA
    err = capsys.readouterr().err
    assert "b4 could not fetch 20261125.1-1-dev@example.invalid" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_build_cli_reports_a_cache_hit(kernel_build, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(kernel_build.dir.parents[2]))  # the shared kernel cache
    assert cli.main(["build"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert f"cache hit: {kernel_build.key}" in out and str(kernel_build.bzimage) in out


@pytest.mark.slow
def test_run_builds_boots_runs_and_reports(kernel_build, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(kernel_build.dir.parents[2]))  # the shared kernel cache
    rc = cli.main(["run", "--", "-k", "test_probe_parses_without_problems or test_guest_memfd"])
    out = capsys.readouterr().out
    assert rc == cli.EXIT_OK, out
    run_dir = next((tmp_path / "runs").glob("*-run"))
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["build"] == kernel_build.key and meta["counts"]["passed"] == 2 and meta["pytest_exit"] == 0
    assert (run_dir / "junit.xml").exists() and (run_dir / "targets" / "qemu" / "console.log").exists()
    assert "passed         2" in out and f"run directory: {run_dir}" in out
