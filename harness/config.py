"""The TOML inventory (hosts, kernel source, artifacts) as frozen dataclasses.

Every error names the file, the key path, what was found and what was
expected, for example::

    snp-harness.toml: hosts.epyc1.port: expected an integer from 1 to 65535, found 'abc'

Relative paths in the file resolve against the directory holding it, and `~`
is expanded. Nothing here checks that a path exists: that is the job of the
stage that uses it.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

from harness import redact
from harness.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_ENV = "SNP_HARNESS_CONFIG"
CONFIG_NAME = "snp-harness.toml"
DEFAULT_LEASE_FILE = "/var/lock/snp-harness.lease"
DEFAULT_STAGE_DIR = "/var/lib/snp-harness/stage"
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


class BootMethod(StrEnum):
    KEXEC = "kexec"
    GRUB = "grub"


@dataclass(frozen=True)
class GuestHostConfig:
    """[hosts.NAME.guest]: what the host runs confidential guests with."""
    qemu: str = "qemu-system-x86_64"  # the host's own QEMU (SNP needs >= 9.1)
    firmware: str | None = None  # OVMF on the host, for SNP guests


@dataclass(frozen=True, kw_only=True)
class HostConfig:
    name: str
    address: str
    known_hosts: Path  # the harness's own file, never ~/.ssh/known_hosts
    port: int = 22
    user: str = "root"
    identity_file: Path | None = None
    boot_method: BootMethod = BootMethod.KEXEC
    # argvs that may hold a BMC password: registered with harness.redact, and left out of repr()
    power_cycle: tuple[str, ...] = field(default=(), repr=False)  # empty: no power control
    console: tuple[str, ...] = field(default=(), repr=False)  # empty: no console capture
    tags: tuple[str, ...] = ()
    connect_timeout: float = 15.0
    guest: GuestHostConfig = GuestHostConfig()
    lease_file: str = DEFAULT_LEASE_FILE  # on the host: the flock that makes a run exclusive
    # On the host: where builds are staged; every component is checked to be writable by us only.
    stage_dir: str = DEFAULT_STAGE_DIR
    power_cycle_timeout_s: float = 300.0  # a power_cycle command running longer is killed
    # A labgrid place whose reservation replaces our lease; the address may then come from it.
    labgrid_place: str | None = None
    labgrid_coordinator: str | None = None  # host:port; default: labgrid's own $LG_COORDINATOR


@dataclass(frozen=True)
class KernelConfig:
    tree: Path | str | None = None  # a path, or a Debian source package by name ("debian:7.3")
    series: str | None = None
    fragments: tuple[str, ...] = ()
    instrumentation: bool = True  # apply kernel-patches/instrumentation/ (the RMP dump) after the series


@dataclass(frozen=True)
class ArtifactsConfig:
    root: Path


@dataclass(frozen=True)
class HarnessConfig:
    path: Path | None
    hosts: Mapping[str, HostConfig]
    kernel: KernelConfig
    artifacts: ArtifactsConfig
    known_hosts: Path
    cache_dir: Path

    def __post_init__(self) -> None:
        # Read-only, even when a caller (a test) passes a plain dict.
        object.__setattr__(self, "hosts", MappingProxyType(dict(self.hosts)))

    def host(self, name: str) -> HostConfig:
        if name in self.hosts:
            return self.hosts[name]
        if self.path is None:
            raise ConfigError(f"unknown host {name!r}: no config file was found "
                              f"(use --snp-config, ${CONFIG_ENV} or ./{CONFIG_NAME})")
        close = difflib.get_close_matches(name, list(self.hosts), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(self.hosts) or "none"
        raise ConfigError(f"{self.path}: unknown host {name!r}{hint} (known hosts: {known})")

    def hosts_with_tag(self, tag: str) -> tuple[HostConfig, ...]:
        return tuple(h for h in self.hosts.values() if tag in h.tags)


def find_config(
    explicit: str | Path | None,
    env: Mapping[str, str] = os.environ,
    cwd: Path | None = None,
) -> Path | None:
    """The inventory to use: --snp-config, then $SNP_HARNESS_CONFIG, then ./snp-harness.toml."""
    here = cwd if cwd is not None else Path.cwd()
    for given, source in ((explicit, "--snp-config"), (env.get(CONFIG_ENV), f"${CONFIG_ENV}")):
        if given is None or str(given) == "":
            continue
        path = Path(given).expanduser()
        path = path if path.is_absolute() else here / path
        if not path.exists():
            raise ConfigError(f"config file from {source} does not exist: {path}")
        log.debug("config file %s (from %s)", path, source)
        return path
    default = here / CONFIG_NAME
    if default.exists():
        log.debug("config file %s (found in the current directory)", default)
        return default
    return None


def load_config(path: Path | None) -> HarnessConfig:
    """Parse and check the inventory; None gives the defaults, with no hosts."""
    if path is None:
        return _build(None, {})
    path = Path(path)
    try:
        return _build(path, _read_toml(path))
    except _Invalid as e:
        raise ConfigError(f"{path}: {e}") from None


_TOP = ("harness", "hosts", "kernel", "artifacts")
_HARNESS = ("known_hosts", "cache_dir")
_HOST = tuple(f.name for f in fields(HostConfig) if f.name != "name")
_KERNEL = tuple(f.name for f in fields(KernelConfig))
_ARTIFACTS = tuple(f.name for f in fields(ArtifactsConfig))


class _Invalid(Exception):
    """A bad value; load_config prefixes the file name and raises ConfigError."""


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from e
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e


def _build(path: Path | None, data: dict[str, Any]) -> HarnessConfig:
    base = path.absolute().parent if path is not None else Path.cwd()
    as_path = partial(_path, base=base)
    _table(data, "", _TOP)
    harness = _table(data.get("harness", {}), "harness", _HARNESS)
    default_known_hosts = _xdg_dir("XDG_CONFIG_HOME", ".config") / "known_hosts"
    known_hosts = _opt(harness, "harness", "known_hosts", as_path, default_known_hosts)
    cache_dir = _opt(harness, "harness", "cache_dir", as_path, _xdg_dir("XDG_CACHE_HOME", ".cache"))

    hosts: dict[str, HostConfig] = {}
    for name, value in _table(data.get("hosts", {}), "hosts", None).items():
        if not _HOST_NAME.match(name):
            raise _expected("hosts", "a host name of letters, digits, '_', '.' and '-', "
                            "starting with a letter or digit", name)
        where = f"hosts.{name}"
        t = _table(value, where, _HOST)
        if "address" not in t and "labgrid_place" not in t:
            raise _Invalid(f"{where}.address: missing, expected a non-empty string "
                           "(or a labgrid_place to take it from)")
        hosts[name] = HostConfig(
            name=name,
            address=_opt(t, where, "address", _string, ""),
            known_hosts=_opt(t, where, "known_hosts", as_path, known_hosts),
            port=_opt(t, where, "port", _port, 22),
            user=_opt(t, where, "user", _string, "root"),
            identity_file=_opt(t, where, "identity_file", as_path, None),
            boot_method=_opt(t, where, "boot_method", _boot_method, BootMethod.KEXEC),
            power_cycle=_opt(t, where, "power_cycle", _argv, ()),
            console=_opt(t, where, "console", _argv, ()),
            tags=_opt(t, where, "tags", _strings, ()),
            connect_timeout=_opt(t, where, "connect_timeout", _seconds, 15.0),
            guest=_guest_table(t.get("guest", {}), f"{where}.guest"),
            lease_file=_opt(t, where, "lease_file", _string, DEFAULT_LEASE_FILE),
            stage_dir=_opt(t, where, "stage_dir", _absolute, DEFAULT_STAGE_DIR),
            power_cycle_timeout_s=_opt(t, where, "power_cycle_timeout_s", _seconds, 300.0),
            labgrid_place=_opt(t, where, "labgrid_place", _string, None),
            labgrid_coordinator=_opt(t, where, "labgrid_coordinator", _string, None),
        )
        # A user:password@ URL in any other string of the host (a coordinator URL, say).
        redact.register_data(t)

    k = _table(data.get("kernel", {}), "kernel", _KERNEL)
    kernel = KernelConfig(
        tree=_opt(k, "kernel", "tree", partial(_tree, base=base), None),
        series=_opt(k, "kernel", "series", _string, None),
        fragments=_opt(k, "kernel", "fragments", _strings, ()),
        instrumentation=_opt(k, "kernel", "instrumentation", _bool, True),
    )

    a = _table(data.get("artifacts", {}), "artifacts", _ARTIFACTS)
    artifacts = ArtifactsConfig(root=_opt(a, "artifacts", "root", as_path, base / "runs"))

    return HarnessConfig(path=path, hosts=hosts, kernel=kernel, artifacts=artifacts,
                         known_hosts=known_hosts, cache_dir=cache_dir)


def _opt(table: dict, where: str, name: str, check: Callable[..., Any], default: Any) -> Any:
    return check(table[name], f"{where}.{name}") if name in table else default


# One check per kind of value; each returns the value or raises _Invalid.

def _expected(key: str, what: str, value: object) -> _Invalid:
    found = redact.scrub(repr(value))  # before the cut, which could keep half a secret
    if len(found) > 60:
        found = found[:57] + "..."
    return _Invalid(f"{key}: expected {what}, found {found}")


def _guest_table(value: object, where: str) -> GuestHostConfig:
    g = _table(value, where, ("qemu", "firmware"))
    return GuestHostConfig(qemu=_opt(g, where, "qemu", _string, "qemu-system-x86_64"),
                           firmware=_opt(g, where, "firmware", _string, None))


def _table(value: object, key: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
    """A table whose keys are all in `allowed` (None: any key)."""
    if not isinstance(value, dict):
        raise _expected(key, "a table", value)
    for name, item in value.items():
        if allowed is None or name in allowed:
            continue
        kind = "table" if isinstance(item, dict) else "key"
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        where = f"{key}.{name}" if key else name
        raise _Invalid(f"{where}: unknown {kind}{hint} (expected one of: {', '.join(allowed)})")
    return value


def _string(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _expected(key, "a non-empty string", value)
    return value


def _strings(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _expected(key, "a list of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _expected(f"{key}[{i}]", "a string", item)
    return tuple(value)


def _argv(value: object, key: str) -> tuple[str, ...]:
    """A command's argv; its secrets (ipmitool -P X, ...) are registered first, even when it is
    written as one string by mistake, so that neither an error nor a log line shows them."""
    if isinstance(value, str):
        try:
            redact.register_argv(shlex.split(value))
        except ValueError:
            redact.register_argv(value.split())
    elif isinstance(value, list):
        redact.register_argv([v for v in value if isinstance(v, str)])
    return _strings(value, key)


def _absolute(value: object, key: str) -> str:
    path = _string(value, key)
    if not path.startswith("/"):
        raise _expected(key, "an absolute path", value)
    return path


def _bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise _expected(key, "true or false", value)
    return value


def _port(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _expected(key, "an integer from 1 to 65535", value)
    return value


def _seconds(value: object, key: str) -> float:
    # NaN fails the comparison too.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise _expected(key, "a positive number of seconds", value)
    return float(value)


def _boot_method(value: object, key: str) -> BootMethod:
    if not isinstance(value, str) or value not in {m.value for m in BootMethod}:
        choices = " or ".join(repr(m.value) for m in BootMethod)
        raise _expected(key, choices, value)
    return BootMethod(value)


_DEBIAN_TREE = re.compile(r"debian:(latest|[0-9]+\.[0-9]+)(=[^\s/]+)?")


def _tree(value: object, key: str, *, base: Path) -> Path | str:
    """A path, or `debian:X.Y` / `debian:latest` (harness.kernel.debian fetches it)."""
    if isinstance(value, str) and value.startswith("debian:"):
        if not _DEBIAN_TREE.fullmatch(value):
            raise _expected(key, "debian:X.Y (e.g. debian:7.3), debian:latest or debian:X.Y=VERSION", value)
        return value
    return _path(value, key, base=base)


def _path(value: object, key: str, *, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise _expected(key, "a non-empty path string", value)
    try:
        path = Path(value).expanduser()
    except RuntimeError as e:  # ~nosuchuser
        raise _expected(key, f"a path ({e})", value) from None
    return path if path.is_absolute() else base / path


def _xdg_dir(var: str, fallback: str) -> Path:
    """$XDG_..._HOME/snp-harness; the XDG spec says to ignore a relative value."""
    value = os.environ.get(var, "")
    return (Path(value) if os.path.isabs(value) else Path.home() / fallback) / "snp-harness"
