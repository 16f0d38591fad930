"""harness.config: the TOML inventory, its defaults, paths, lookup and errors."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from harness.config import (
    ArtifactsConfig,
    BootMethod,
    HarnessConfig,
    HostConfig,
    KernelConfig,
    find_config,
    load_config,
)
from harness.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "snp-harness.example.toml"

MINIMAL_HOST = '[hosts.epyc1]\naddress = "10.0.0.1"\n'


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never read or name the real user's home or XDG directories."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "SNP_HARNESS_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return home


def write(tmp_path: Path, text: str, name: str = "snp-harness.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- errors ------------------------------------------------------------------

BAD = [
    # (id, TOML text, exact substring of the message after "<file>: ")
    ("port-str", MINIMAL_HOST + 'port = "abc"',
     "hosts.epyc1.port: expected an integer from 1 to 65535, found 'abc'"),
    ("port-bool", MINIMAL_HOST + "port = true",
     "hosts.epyc1.port: expected an integer from 1 to 65535, found True"),
    ("port-zero", MINIMAL_HOST + "port = 0",
     "hosts.epyc1.port: expected an integer from 1 to 65535, found 0"),
    ("port-high", MINIMAL_HOST + "port = 65536",
     "hosts.epyc1.port: expected an integer from 1 to 65535, found 65536"),
    ("port-float", MINIMAL_HOST + "port = 22.0",
     "hosts.epyc1.port: expected an integer from 1 to 65535, found 22.0"),
    ("address-missing", "[hosts.epyc1]\nport = 22",
     "hosts.epyc1.address: missing, expected a non-empty string"),
    ("address-empty", '[hosts.epyc1]\naddress = ""',
     "hosts.epyc1.address: expected a non-empty string, found ''"),
    ("address-int", "[hosts.epyc1]\naddress = 10",
     "hosts.epyc1.address: expected a non-empty string, found 10"),
    ("user-empty", MINIMAL_HOST + 'user = "  "',
     "hosts.epyc1.user: expected a non-empty string, found '  '"),
    ("boot-method", MINIMAL_HOST + 'boot_method = "pxe"',
     "hosts.epyc1.boot_method: expected 'kexec' or 'grub', found 'pxe'"),
    ("boot-method-case", MINIMAL_HOST + 'boot_method = "KEXEC"',
     "hosts.epyc1.boot_method: expected 'kexec' or 'grub', found 'KEXEC'"),
    ("power-string", MINIMAL_HOST + 'power_cycle = "ipmitool power cycle"',
     "hosts.epyc1.power_cycle: expected a list of strings, found 'ipmitool power cycle'"),
    ("console-item", MINIMAL_HOST + 'console = ["ipmitool", 7]',
     "hosts.epyc1.console[1]: expected a string, found 7"),
    ("tags-string", MINIMAL_HOST + 'tags = "milan"',
     "hosts.epyc1.tags: expected a list of strings, found 'milan'"),
    ("timeout-zero", MINIMAL_HOST + "connect_timeout = 0",
     "hosts.epyc1.connect_timeout: expected a positive number of seconds, found 0"),
    ("timeout-negative", MINIMAL_HOST + "connect_timeout = -1.5",
     "hosts.epyc1.connect_timeout: expected a positive number of seconds, found -1.5"),
    ("timeout-nan", MINIMAL_HOST + "connect_timeout = nan",
     "hosts.epyc1.connect_timeout: expected a positive number of seconds, found nan"),
    ("timeout-inf", MINIMAL_HOST + "connect_timeout = inf",
     "hosts.epyc1.connect_timeout: expected a positive number of seconds, found inf"),
    ("timeout-str", MINIMAL_HOST + 'connect_timeout = "15"',
     "hosts.epyc1.connect_timeout: expected a positive number of seconds, found '15'"),
    ("timeout-bool", MINIMAL_HOST + "connect_timeout = true",
     "hosts.epyc1.connect_timeout: expected a positive number of seconds, found True"),
    ("identity-int", MINIMAL_HOST + "identity_file = 3",
     "hosts.epyc1.identity_file: expected a non-empty path string, found 3"),
    ("host-known-hosts-empty", MINIMAL_HOST + 'known_hosts = ""',
     "hosts.epyc1.known_hosts: expected a non-empty path string, found ''"),
    ("unknown-host-key", MINIMAL_HOST + "prot = 22",
     "hosts.epyc1.prot: unknown key; did you mean 'port'?"),
    ("unknown-host-key-lists", MINIMAL_HOST + "colour = 1",
     "hosts.epyc1.colour: unknown key (expected one of: address, known_hosts, port,"),
    ("unknown-host-subtable", MINIMAL_HOST + "[hosts.epyc1.ssh]\nx = 1",
     "hosts.epyc1.ssh: unknown table"),
    ("unknown-table", "[kernal]\ntree = 'x'",
     "kernal: unknown table; did you mean 'kernel'?"),
    ("unknown-top-key", "verbose = true",
     "verbose: unknown key (expected one of: harness, hosts, kernel, artifacts)"),
    ("unknown-harness-key", "[harness]\nknown_host = 'x'",
     "harness.known_host: unknown key; did you mean 'known_hosts'?"),
    ("unknown-artifacts-key", "[artifacts]\ndir = 'x'",
     "artifacts.dir: unknown key"),
    ("bad-host-name", '[hosts."-epyc"]\naddress = "x"',
     "hosts: expected a host name of letters, digits, '_', '.' and '-', "
     "starting with a letter or digit, found '-epyc'"),
    ("bad-host-name-space", '[hosts."epyc 1"]\naddress = "x"',
     "found 'epyc 1'"),
    ("hosts-not-table", "hosts = 1", "hosts: expected a table, found 1"),
    ("host-not-table", '[hosts]\nepyc1 = "10.0.0.1"',
     "hosts.epyc1: expected a table, found '10.0.0.1'"),
    ("kernel-not-table", 'kernel = "linux"', "kernel: expected a table, found 'linux'"),
    ("harness-cache-int", "[harness]\ncache_dir = 1",
     "harness.cache_dir: expected a non-empty path string, found 1"),
    ("kernel-series-list", "[kernel]\nseries = ['a']",
     "kernel.series: expected a non-empty string, found ['a']"),
    ("kernel-fragments-item", "[kernel]\nfragments = ['a.config', true]",
     "kernel.fragments[1]: expected a string, found True"),
    ("kernel-tree-bool", "[kernel]\ntree = false",
     "kernel.tree: expected a non-empty path string, found False"),
    ("artifacts-root-int", "[artifacts]\nroot = 5",
     "artifacts.root: expected a non-empty path string, found 5"),
    ("long-repr-cut", MINIMAL_HOST + "tags = " + repr("x" * 200),
     "hosts.epyc1.tags: expected a list of strings, found 'xxxx"),
    ("toml-syntax", "[hosts.epyc1]\naddress = \n",
     "invalid TOML: Invalid value (at line 2, column 11)"),
    ("toml-duplicate", MINIMAL_HOST + MINIMAL_HOST, "invalid TOML: "),
    ("relative-stage-dir", MINIMAL_HOST + 'stage_dir = "var/tmp/x"',
     "hosts.epyc1.stage_dir: expected an absolute path, found 'var/tmp/x'"),
]


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_names_file_key_found_and_expected(tmp_path: Path, text: str, message: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert message in str(exc.value)


def test_message_matches_the_documented_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write(tmp_path, MINIMAL_HOST + 'port = "abc"')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_config(Path("snp-harness.toml"))
    assert str(exc.value) == (
        "snp-harness.toml: hosts.epyc1.port: expected an integer from 1 to 65535, found 'abc'"
    )


def test_long_found_value_is_shortened(tmp_path: Path):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, MINIMAL_HOST + "tags = " + repr("x" * 200)))
    assert str(exc.value).endswith("...")
    assert len(str(exc.value)) < len(str(tmp_path)) + 150


def test_unreadable_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path)  # a directory
    with pytest.raises(ConfigError, match="cannot read the config file: No such file"):
        load_config(tmp_path / "missing.toml")


def test_not_utf8(tmp_path: Path):
    path = tmp_path / "snp-harness.toml"
    path.write_bytes(b'[kernel]\nseries = "\xff"\n')
    with pytest.raises(ConfigError, match="invalid TOML: 'utf-8' codec"):
        load_config(path)


def test_errors_are_not_chained_to_internal_exceptions(tmp_path: Path):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, MINIMAL_HOST + "port = 0"))
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


# --- values and defaults -----------------------------------------------------


def test_defaults_without_a_file(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None)
    assert cfg.path is None
    assert dict(cfg.hosts) == {}
    assert cfg.kernel == KernelConfig(tree=None, series=None, fragments=())
    assert cfg.artifacts == ArtifactsConfig(root=tmp_path / "runs")
    assert cfg.known_hosts == home / ".config/snp-harness/known_hosts"
    assert cfg.cache_dir == home / ".cache/snp-harness"


def test_defaults_follow_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = load_config(write(tmp_path, MINIMAL_HOST))
    assert cfg.known_hosts == tmp_path / "cfg/snp-harness/known_hosts"
    assert cfg.cache_dir == tmp_path / "cache/snp-harness"
    assert cfg.host("epyc1").known_hosts == cfg.known_hosts


def test_relative_xdg_values_are_ignored(home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/cfg")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    cfg = load_config(None)
    assert cfg.known_hosts == home / ".config/snp-harness/known_hosts"
    assert cfg.cache_dir == home / ".cache/snp-harness"


def test_known_hosts_is_never_the_users_ssh_file(home: Path):
    cfg = load_config(None)
    assert cfg.known_hosts != home / ".ssh/known_hosts"
    assert ".ssh" not in cfg.known_hosts.parts


def test_host_defaults(tmp_path: Path, home: Path):
    cfg = load_config(write(tmp_path, MINIMAL_HOST))
    assert cfg.host("epyc1") == HostConfig(
        name="epyc1",
        address="10.0.0.1",
        known_hosts=home / ".config/snp-harness/known_hosts",
        port=22,
        user="root",
        identity_file=None,
        boot_method=BootMethod.KEXEC,
        power_cycle=(),
        console=(),
        tags=(),
        connect_timeout=15.0,
    )
    assert cfg.artifacts.root == tmp_path / "runs"


def test_all_host_values(tmp_path: Path):
    cfg = load_config(write(tmp_path, MINIMAL_HOST + """
port = 2222
user = "kvm"
boot_method = "grub"
power_cycle = ["ipmitool", "chassis", "power", "cycle"]
console = ["conserver", "epyc1"]
tags = ["genoa", "snp"]
connect_timeout = 2
stage_dir = "/srv/snp-stage"
power_cycle_timeout_s = 90
"""))
    h = cfg.host("epyc1")
    assert (h.stage_dir, h.power_cycle_timeout_s) == ("/srv/snp-stage", 90.0)
    assert (h.port, h.user, h.boot_method) == (2222, "kvm", "grub")
    assert h.boot_method is BootMethod.GRUB
    assert h.power_cycle == ("ipmitool", "chassis", "power", "cycle")
    assert h.console == ("conserver", "epyc1")
    assert h.tags == ("genoa", "snp")
    assert h.connect_timeout == 2.0 and isinstance(h.connect_timeout, float)


def test_sequences_are_tuples_and_config_is_frozen(tmp_path: Path):
    cfg = load_config(write(tmp_path, MINIMAL_HOST + 'tags = ["milan"]\n[kernel]\nfragments = ["a"]'))
    assert isinstance(cfg.host("epyc1").tags, tuple)
    assert isinstance(cfg.kernel.fragments, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.host("epyc1").port = 23  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.hosts["other"] = cfg.host("epyc1")  # type: ignore[index]


def test_hosts_mapping_is_read_only_even_from_a_dict(tmp_path: Path):
    host = HostConfig(name="a", address="x", known_hosts=tmp_path / "kh")
    source = {"a": host}
    cfg = HarnessConfig(path=None, hosts=source, kernel=KernelConfig(),
                        artifacts=ArtifactsConfig(root=tmp_path), known_hosts=tmp_path / "kh",
                        cache_dir=tmp_path)
    source.clear()
    assert list(cfg.hosts) == ["a"]
    with pytest.raises(TypeError):
        cfg.hosts["b"] = host  # type: ignore[index]


def test_host_names_and_order(tmp_path: Path):
    text = "".join(f'[hosts."{n}"]\naddress = "x"\n' for n in ("zeta", "a1", "epyc_2.lab-b", "9"))
    assert list(load_config(write(tmp_path, text)).hosts) == ["zeta", "a1", "epyc_2.lab-b", "9"]


def test_unknown_host_names_file_and_known_hosts(tmp_path: Path):
    path = write(tmp_path, MINIMAL_HOST + '[hosts.epyc2]\naddress = "x"\n')
    cfg = load_config(path)
    with pytest.raises(ConfigError) as exc:
        cfg.host("epyc-1")
    assert str(exc.value) == (
        f"{path}: unknown host 'epyc-1'; did you mean 'epyc1'? (known hosts: epyc1, epyc2)"
    )
    with pytest.raises(ConfigError, match=r"unknown host 'zzz' \(known hosts: epyc1, epyc2\)"):
        cfg.host("zzz")


def test_unknown_host_without_a_file():
    with pytest.raises(ConfigError, match="unknown host 'epyc1': no config file was found"):
        load_config(None).host("epyc1")


def test_hosts_with_tag(tmp_path: Path):
    cfg = load_config(write(tmp_path, """
[hosts.a]
address = "a"
tags = ["milan", "snp"]
[hosts.b]
address = "b"
tags = ["genoa"]
[hosts.c]
address = "c"
tags = ["milan"]
"""))
    assert [h.name for h in cfg.hosts_with_tag("milan")] == ["a", "c"]
    assert [h.name for h in cfg.hosts_with_tag("genoa")] == ["b"]
    assert cfg.hosts_with_tag("turin") == ()


# --- paths -------------------------------------------------------------------


def test_paths_resolve_against_the_file_directory(tmp_path: Path, home: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    conf_dir = tmp_path / "lab"
    conf_dir.mkdir()
    monkeypatch.chdir(tmp_path)  # not the file's directory
    write(conf_dir, """
[harness]
known_hosts = "state/known_hosts"
cache_dir = "~/cache"
[hosts.epyc1]
address = "x"
identity_file = "keys/id_ed25519"
[hosts.epyc2]
address = "y"
identity_file = "/abs/id"
known_hosts = "~"
[kernel]
tree = "../linux"
[artifacts]
root = "out"
""")
    cfg = load_config(Path("lab/snp-harness.toml"))  # a relative path to the file
    assert cfg.known_hosts == conf_dir / "state/known_hosts"
    assert cfg.cache_dir == home / "cache"
    assert cfg.host("epyc1").identity_file == conf_dir / "keys/id_ed25519"
    assert cfg.host("epyc1").known_hosts == conf_dir / "state/known_hosts"
    assert cfg.host("epyc2").identity_file == Path("/abs/id")
    assert cfg.host("epyc2").known_hosts == home
    assert cfg.kernel.tree == conf_dir / "../linux"
    assert cfg.artifacts.root == conf_dir / "out"
    assert all(p.is_absolute() for p in (cfg.known_hosts, cfg.cache_dir, cfg.artifacts.root))


def test_default_artifacts_root_is_next_to_the_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "lab").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path / "lab", ""))
    assert cfg.artifacts.root == tmp_path / "lab/runs"
    assert dict(cfg.hosts) == {}


# --- lookup order ------------------------------------------------------------


def test_find_explicit_beats_env_beats_cwd(tmp_path: Path):
    explicit = write(tmp_path, "", "explicit.toml")
    from_env = write(tmp_path, "", "env.toml")
    in_cwd = write(tmp_path, "")
    env = {"SNP_HARNESS_CONFIG": str(from_env)}
    assert find_config(explicit, env=env, cwd=tmp_path) == explicit
    assert find_config(str(explicit), env=env, cwd=tmp_path) == explicit
    assert find_config(None, env=env, cwd=tmp_path) == from_env
    assert find_config(None, env={}, cwd=tmp_path) == in_cwd


def test_find_nothing_gives_none(tmp_path: Path):
    assert find_config(None, env={}, cwd=tmp_path) is None
    assert find_config(None, env={"SNP_HARNESS_CONFIG": ""}, cwd=tmp_path) is None
    assert find_config("", env={}, cwd=tmp_path) is None


def test_find_relative_paths_resolve_against_cwd(tmp_path: Path):
    write(tmp_path, "", "a.toml")
    assert find_config("a.toml", env={}, cwd=tmp_path) == tmp_path / "a.toml"
    assert find_config(None, env={"SNP_HARNESS_CONFIG": "a.toml"}, cwd=tmp_path) == tmp_path / "a.toml"


def test_find_uses_the_real_cwd_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write(tmp_path, "")
    monkeypatch.chdir(tmp_path)
    assert find_config(None, env={}) == tmp_path / "snp-harness.toml"


def test_find_reads_the_process_environment_by_default(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    path = write(tmp_path, "", "env.toml")
    monkeypatch.setenv("SNP_HARNESS_CONFIG", str(path))
    assert find_config(None, cwd=tmp_path) == path


def test_find_missing_explicit_path_names_its_source(tmp_path: Path):
    write(tmp_path, "")  # a usable ./snp-harness.toml must not hide the mistake
    with pytest.raises(ConfigError) as exc:
        find_config("nope.toml", env={}, cwd=tmp_path)
    assert str(exc.value) == f"config file from --snp-config does not exist: {tmp_path / 'nope.toml'}"


def test_find_missing_env_path_names_its_source(tmp_path: Path):
    write(tmp_path, "")
    with pytest.raises(ConfigError) as exc:
        find_config(None, env={"SNP_HARNESS_CONFIG": "/no/such.toml"}, cwd=tmp_path)
    assert str(exc.value) == "config file from $SNP_HARNESS_CONFIG does not exist: /no/such.toml"


def test_find_expands_tilde(home: Path, tmp_path: Path):
    write(home, "", "lab.toml")
    assert find_config("~/lab.toml", env={}, cwd=tmp_path) == home / "lab.toml"


# --- the example file --------------------------------------------------------


def test_example_loads_cleanly():
    cfg = load_config(EXAMPLE)
    assert len(cfg.hosts) >= 2
    assert cfg.hosts_with_tag("milan") and cfg.hosts_with_tag("genoa")
    assert {m.value for m in BootMethod} <= {h.boot_method.value for h in cfg.hosts.values()}
    assert cfg.kernel.series and cfg.kernel.fragments and cfg.kernel.tree


def test_example_shows_every_key():
    data = tomllib.loads(EXAMPLE.read_text())
    host_keys = {f.name for f in dataclasses.fields(HostConfig)} - {"name"}
    assert set(data) == {"harness", "hosts", "kernel", "artifacts"}
    assert set(data["harness"]) == {"known_hosts", "cache_dir"}
    assert set().union(*(set(h) for h in data["hosts"].values())) == host_keys
    assert set(data["kernel"]) == {f.name for f in dataclasses.fields(KernelConfig)}
    assert set(data["artifacts"]) == {f.name for f in dataclasses.fields(ArtifactsConfig)}


def test_every_name_in_the_example_exists(tmp_path):
    """The series, fragments and tree the example names resolve to real things in this repository."""
    from harness.kernel import debian
    from harness.kernel.patches import load_series
    from harness.kernel.plan import build_request, find_fragment, find_series

    cfg = load_config(EXAMPLE)
    series = load_series(find_series(cfg.kernel.series))
    assert series.patches and all(p.path.is_file() for p in series.patches)
    for name in cfg.kernel.fragments:
        assert find_fragment(name).is_file()
    assert cfg.kernel.tree == "debian:7.3" and debian.parse_spec(cfg.kernel.tree).series == "7.3"
    request = build_request(cfg)  # everything the build would read, resolved without building
    assert request.tree == "debian:7.3" and request.series.name == cfg.kernel.series
    assert [f.name for f in request.config.fragments] == list(cfg.kernel.fragments)


def test_kernel_tree_key_takes_debian_names_and_rejects_bad_ones(tmp_path):
    ok = tmp_path / "ok.toml"
    ok.write_text('[kernel]\ntree = "debian:6.12"\n')
    assert load_config(ok).kernel.tree == "debian:6.12"
    bad = tmp_path / "bad.toml"
    bad.write_text('[kernel]\ntree = "debian:six"\n')
    with pytest.raises(ConfigError, match=r"kernel\.tree.*debian:X\.Y"):
        load_config(bad)
