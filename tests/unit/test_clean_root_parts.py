"""The clean-root check's pure logic: mirror lines, apt options, pip's local paths, ccache stats."""

from __future__ import annotations

from pathlib import Path

from harness.kernel.debian import KEYRING, Source, parse_sources
from harness.testing import clean_root as cr

MACHINE_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_mirror_lines_are_bookworm_updates_and_security_on_the_machines_mirrors():
    lines = cr.mirror_lines(parse_sources(deb822=MACHINE_SOURCES))
    k = f"[signed-by={KEYRING}]"
    assert lines == [f"deb {k} http://deb.debian.org/debian bookworm main",
                     f"deb {k} http://deb.debian.org/debian bookworm-updates main",
                     f"deb {k} http://deb.debian.org/debian-security bookworm-security main"]


def test_mirror_lines_from_a_trixie_machine_still_name_bookworm_and_keep_snapshot_uris():
    snap = "http://snapshot.debian.org/archive"
    sources = [Source(f"{snap}/debian/20250520T000000Z/", ("trixie",), None),
               Source(f"{snap}/debian-security/20250520T000000Z", ("trixie-security",), None),
               Source(f"{snap}/debian/20250520T000000Z", ("trixie-updates",), None)]
    assert [line.split(" ", 2)[2] for line in cr.mirror_lines(sources)] == [
        "http://snapshot.debian.org/archive/debian/20250520T000000Z bookworm main",
        "http://snapshot.debian.org/archive/debian/20250520T000000Z bookworm-updates main",
        "http://snapshot.debian.org/archive/debian-security/20250520T000000Z bookworm-security main"]


def test_no_main_mirror_gives_no_lines():
    assert cr.mirror_lines([Source("http://deb.debian.org/debian-security", ("bookworm-security",), None)]) == []
    assert cr.mirror_lines([]) == []


def test_apt_options_keep_date_checks_and_proxies_only():
    dump = '\n'.join(['APT "";', 'APT::Architecture "amd64";', 'Acquire::Check-Valid-Until "false";',
                      'Acquire::Check-Date "false";', 'Acquire::http::Proxy "http://proxy:3128";',
                      'Acquire::http::Proxy::deb.debian.org "DIRECT";', 'Acquire::Languages "none";',
                      'Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";'])
    assert cr.apt_options(dump) == ['Acquire::Check-Valid-Until "false"', 'Acquire::Check-Date "false"',
                                    'Acquire::http::Proxy "http://proxy:3128"',
                                    'Acquire::http::Proxy::deb.debian.org "DIRECT"']


def test_bootstrap_packages_parse_the_real_list():
    packages = cr.bootstrap_packages((Path(__file__).parents[2] / "ci" / "bootstrap").read_text())
    assert {"rsync", "python3-venv", "qemu-system-x86", "mmdebstrap", "ccache"} <= set(packages)
    assert not [p for p in packages if p.startswith("#") or "(" in p]


def test_pip_settings_env_wins_and_local_paths_are_found():
    etc = "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
    xdg = "[global]\nconstraint = /etc/xdg/pip/constraints.txt\n"
    user = ("[global]\nfind-links = /opt/old\n"
            "extra-index-url = file:///opt/pypi/simple file:///opt/pypi-more/simple https://example.org/simple\n")
    env = {"PIP_FIND_LINKS": "/opt/wheels", "PIP_DEFAULT_TIMEOUT": "180", "HOME": "/root"}
    settings = cr.pip_settings([xdg, etc, user], env)
    assert settings["find-links"] == "/opt/wheels" and settings["default-timeout"] == "180"
    assert cr.pip_local_paths(settings) == [Path("/etc/ssl/certs/ca-certificates.crt"),
                                            Path("/etc/xdg/pip/constraints.txt"),
                                            Path("/opt/pypi"), Path("/opt/pypi-more"), Path("/opt/wheels")]


def test_pip_settings_skip_a_broken_config():
    assert cr.pip_settings(["no section here"], {}) == {}


def test_ccache_log_stats_count_compilations():
    log = ("# a.c\ncache_miss\ndirect_cache_miss\nlocal_storage_miss\n"
           "# a.c\ndirect_cache_hit\nlocal_storage_hit\n"
           "# b.c\npreprocessed_cache_hit\n"
           "# c.S\ncalled_for_preprocessing\n")
    assert cr.ccache_log_stats(log) == {"hits": 2, "misses": 1, "uncacheable": 1}
    assert cr.ccache_log_stats("") == {"hits": 0, "misses": 0, "uncacheable": 0}


def test_cache_name_changes_with_day_and_sources():
    a = cr.cache_name(["deb x bookworm main"], [], "20261207")
    assert a.startswith("bookworm-minbase-20261207-") and a.endswith(".tar")
    assert a == cr.cache_name(["deb x bookworm main"], [], "20261207")
    assert a != cr.cache_name(["deb x bookworm main"], [], "20261208")
    assert a != cr.cache_name(["deb y bookworm main"], [], "20261207")


def test_mounts_under_reads_mountinfo_with_escapes():
    info = ("22 1 8:1 / / rw - ext4 /dev/vda rw\n"
            "90 22 0:5 / /tmp/t/root/dev rw - devtmpfs udev rw\n"
            "91 22 8:1 /opt/wheels /tmp/t/root/opt/my\\040wheels ro - ext4 /dev/vda ro\n"
            "92 22 8:1 / /tmp/t/rootless rw - ext4 /dev/vda rw\n")
    assert cr.mounts_under(info, Path("/tmp/t/root")) == ["/tmp/t/root/dev", "/tmp/t/root/opt/my wheels"]
    assert cr.mounts_under(info, Path("/srv")) == []
