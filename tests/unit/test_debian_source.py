"""debian:X.Y trees: spec parsing, the machine's mirrors, the private sources list, madison, choosing."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError, InfraError
from harness.kernel import debian
from harness.kernel.debian import DebianSpec, Source

DATA = Path(__file__).resolve().parents[1] / "data" / "apt"


def test_parse_spec():
    assert debian.parse_spec("debian:7.3") == DebianSpec("7.3")
    assert debian.parse_spec("debian:latest") == DebianSpec("latest")
    assert debian.parse_spec("debian:6.12=6.12.118-1~deb12u1") == DebianSpec("6.12", "6.12.118-1~deb12u1")
    assert str(DebianSpec("6.12", "6.12.118-1~deb12u1")) == "debian:6.12=6.12.118-1~deb12u1"
    for bad in ("debian:", "debian:7", "debian:seven", "debian:latest=1.0", "debian:7.3/x"):
        with pytest.raises(ConfigError, match="debian:X.Y"):
            debian.parse_spec(bad)


def test_machine_sources_from_a_real_deb822_file_and_a_one_line_list():
    d822 = (DATA / "bookworm-debian.sources").read_text()
    one = ("deb http://mirror.example/debian bookworm main  # comment\n"
           "deb [arch=amd64 signed-by=/etc/k.gpg] https://packages.example.com/apt cloud main\n"
           "deb-src http://deb.debian.org/debian bookworm main\n")
    got = [s for s in debian.parse_sources(one, d822) if debian._is_debian_archive(s.uri)]
    assert Source("http://mirror.example/debian", ("bookworm",), None) in got
    assert any(s.uri == "http://deb.debian.org/debian" and "bookworm-updates" in s.suites for s in got)
    assert any(s.uri == "http://deb.debian.org/debian-security" for s in got)
    assert all("packages.example.com" not in s.uri for s in got)  # not a Debian archive


def test_private_sources_list_adds_suite_aliases_to_main_mirrors_only():
    text = debian.private_sources_list([
        Source("http://deb.debian.org/debian", ("bookworm", "bookworm-updates"), "/usr/share/keyrings/k.gpg"),
        Source("http://deb.debian.org/debian-security", ("bookworm-security",), None)])
    lines = text.splitlines()
    assert "deb [signed-by=/usr/share/keyrings/k.gpg] http://deb.debian.org/debian stable-backports main" in lines
    assert "deb [signed-by=/usr/share/keyrings/k.gpg] http://deb.debian.org/debian unstable main" in lines
    assert [ln for ln in lines if "debian-security" in ln] == [
        f"deb [signed-by={debian.KEYRING}] http://deb.debian.org/debian-security bookworm-security main"]


def test_madison_and_choose_on_real_output():
    offered = debian.parse_madison((DATA / "madison-linux-source.txt").read_text())
    assert offered["linux-source-7.3"] == ["7.3.4-1~bpo13+1"]
    assert offered["linux-source-6.12"][0] == "6.12.118-1~deb12u1"
    assert debian.choose(DebianSpec("latest"), offered) == ("linux-source-7.3", "7.3.4-1~bpo13+1")
    assert debian.choose(DebianSpec("6.12"), offered) == ("linux-source-6.12", "6.12.118-1~deb12u1")
    assert debian.choose(DebianSpec("6.12", "6.12.107-1"), offered) == ("linux-source-6.12", "6.12.107-1")
    with pytest.raises(ConfigError, match=r"no suite .* carries linux-source-5.10 \(offered: 6.1, 6.12, 7.2, 7.3\)"):
        debian.choose(DebianSpec("5.10"), offered)
    with pytest.raises(ConfigError, match=r"no longer carry linux-source-7.3 7.3.1-1.*now: 7.3.4-1~bpo13\+1"):
        debian.choose(DebianSpec("7.3", "7.3.1-1"), offered)
    assert debian.parse_madison("garbage\n | |\n") == {}


def test_unreachable_mirror_is_an_infra_error_that_says_what_to_do():
    err = debian._apt_error(("apt-get", "update"), "Err:1 http://deb.debian.org/debian stable InRelease\n"
                            "  Temporary failure resolving 'deb.debian.org'\nE: Some index files failed")
    assert isinstance(err, InfraError)
    assert "cannot be reached" in str(err) and "--tree" in str(err)


def test_no_debian_mirror_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no Debian mirror"):
        debian.PrivateApt(tmp_path / "apt", sources=[]).prepare()


def test_fetch_uses_a_fresh_resolution_without_apt(tmp_path, monkeypatch):
    tarball = tmp_path / "debian" / "linux-source-7.3_1" / "usr" / "src" / "linux-source-7.3.tar.xz"
    tarball.parent.mkdir(parents=True)
    tarball.write_bytes(b"x")
    import json
    import time
    (tmp_path / "debian" / "resolved.json").write_text(json.dumps(
        {"debian:7.3": {"name": "linux-source-7.3", "version": "1", "tarball": str(tarball), "at": time.time()}}))

    class NoApt:
        def __getattr__(self, name):
            raise AssertionError("apt must not run on a fresh resolution")

    pkg = debian.fetch("debian:7.3", tmp_path, apt=NoApt())
    assert (pkg.name, pkg.version, pkg.tarball) == ("linux-source-7.3", "1", tarball)
    assert debian.planned_tarball("debian:7.3", tmp_path) == (tarball, [])


def test_fetch_offline_falls_back_to_the_last_resolution(tmp_path):
    tarball = tmp_path / "debian" / "x" / "linux-source-7.3.tar.xz"
    tarball.parent.mkdir(parents=True)
    tarball.write_bytes(b"x")
    import json
    (tmp_path / "debian" / "resolved.json").write_text(json.dumps(
        {"debian:7.3": {"name": "linux-source-7.3", "version": "1", "tarball": str(tarball), "at": 0}}))

    class Offline:
        def prepare(self):
            pass

        def update(self):
            raise debian._apt_error(("apt-get", "update"), "Could not resolve 'deb.debian.org'")

    assert debian.fetch("debian:7.3", tmp_path, apt=Offline()).tarball == tarball
    (tmp_path / "debian" / "resolved.json").unlink()
    with pytest.raises(InfraError, match="cannot be reached"):
        debian.fetch("debian:7.3", tmp_path, apt=Offline())


def test_dry_run_of_a_tree_not_fetched_yet_lists_the_fetch(tmp_path):
    from harness.kernel.build import BuildRequest
    from harness.kernel.plan import plan_commands

    cmds = plan_commands(BuildRequest(cache_dir=tmp_path, tree="debian:7.3"))
    assert cmds[0][0] == "apt-get" and cmds[0][-2:] == ["update", "-q"]
    assert cmds[1][-1] == "linux-source-7.3=<newest offered>" and cmds[2][0] == "dpkg-deb"
    assert cmds[3][:2] == ["tar", "-xf"] and "<digest>" in cmds[3][-2]
    assert not (tmp_path / "debian").exists()  # nothing fetched, nothing written
