"""Kernel trees by name: `debian:7.3`, `debian:6.12`, `debian:latest` -> Debian's linux-source-X.Y.

Fetched the way apt would, without touching the machine's apt configuration: a private apt
state under the cache (sources list, lists, archives), naming the Debian mirrors the machine's
own sources already use, with the suites that carry kernel sources (its own, plus stable,
stable-backports, testing and unstable by their aliases, so no codename is hard-coded). Then
`apt-get download` and `dpkg-deb -x`; the tarball inside is imported like any other
(source.import_tree). A resolution is remembered for a day, so a cache hit runs no apt.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError, InfraError

log = logging.getLogger(__name__)

PREFIX = "debian:"
PACKAGE = "linux-source-"
EXTRA_SUITES = ("stable", "stable-backports", "testing", "unstable")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
FRESH_S = 24 * 3600  # how long a resolution (and the package lists) are trusted
APT_TIMEOUT_S = 900
_SPEC = re.compile(r"debian:(?P<series>latest|[0-9]+\.[0-9]+)(?:=(?P<version>[^\s/]+))?")


@dataclass(frozen=True)
class DebianSpec:
    series: str               # "7.3", or "latest"
    version: str | None = None  # an exact Debian version, e.g. "7.3.4-1~bpo13+1"

    def __str__(self) -> str:
        return PREFIX + self.series + (f"={self.version}" if self.version else "")


@dataclass(frozen=True)
class DebianPackage:
    name: str       # linux-source-7.3
    version: str    # 7.3.4-1~bpo13+1
    tarball: Path   # the unpacked usr/src/linux-source-7.3.tar.xz

    def describe(self) -> str:
        return f"{self.name} {self.version}"


def is_debian_spec(tree: object) -> bool:
    return isinstance(tree, str) and tree.startswith(PREFIX)


def parse_spec(text: str) -> DebianSpec:
    m = _SPEC.fullmatch(text.strip())
    if not m:
        raise ConfigError(f"kernel tree {text!r}: expected debian:X.Y (e.g. debian:7.3, debian:6.12), "
                          "debian:latest, or debian:X.Y=<exact Debian version>")
    if m["series"] == "latest" and m["version"]:
        raise ConfigError(f"kernel tree {text!r}: an exact version needs a series (debian:X.Y=VERSION)")
    return DebianSpec(m["series"], m["version"])


# ---- the machine's own Debian mirrors (read, never written) ------------------------------------

@dataclass(frozen=True)
class Source:
    uri: str
    suites: tuple[str, ...]
    signed_by: str | None


def _is_debian_archive(uri: str) -> bool:
    # deb.debian.org/debian, a local mirror's /debian, snapshot's .../archive/debian/<date>
    parts = [p for p in uri.rstrip("/").split("/") if p]
    return any(p in ("debian", "debian-security") for p in parts[2:] or parts[-1:])


def parse_sources(one_line: str = "", deb822: str = "") -> list[Source]:
    """`deb` entries from sources.list text and deb822 .sources text. Pure; junk is skipped."""
    out: list[Source] = []
    for raw in one_line.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        opts = re.match(r"deb\s+\[([^\]]*)\]\s+(.*)", line)
        rest, signed = (opts[2], re.search(r"signed-by=(\S+)", opts[1])) if opts else (line[4:], None)
        words = rest.split()
        if len(words) >= 2:
            out.append(Source(words[0], (words[1],), signed[1] if signed else None))
    for stanza in re.split(r"\n\s*\n", deb822):
        fields: dict[str, str] = {}
        key = None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1].isspace() and key:
                fields[key] += " " + raw.strip()
            elif ":" in raw:
                key, value = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        signed = fields.get("signed-by", "").split()
        for uri in fields.get("uris", "").split():
            out.append(Source(uri, tuple(fields.get("suites", "").split()),
                              signed[0] if len(signed) == 1 and signed[0].startswith("/") else None))
    return out


def machine_sources(etc: Path = Path("/etc/apt")) -> list[Source]:
    def read(p: Path) -> str:
        try:
            return p.read_text(errors="replace")
        except OSError:
            return ""
    one = read(etc / "sources.list") + "".join("\n" + read(p) for p in sorted((etc / "sources.list.d").glob("*.list")))
    d822 = "\n\n".join(read(p) for p in sorted((etc / "sources.list.d").glob("*.sources")))
    return [s for s in parse_sources(one, d822) if _is_debian_archive(s.uri)]


def private_sources_list(sources: list[Source]) -> str:
    """The private sources.list: the machine's Debian entries, plus the extra suites on each
    main-archive mirror (security mirrors keep only their own suites)."""
    merged: dict[tuple[str, str | None], list[str]] = {}
    for s in sources:
        suites = merged.setdefault((s.uri.rstrip("/"), s.signed_by), [])
        suites += [x for x in s.suites if x not in suites]
        if not s.uri.rstrip("/").endswith("-security"):
            suites += [x for x in EXTRA_SUITES if x not in suites]
    lines = []
    for (uri, signed), suites in merged.items():
        key = signed or KEYRING
        lines += [f"deb [signed-by={key}] {uri} {suite} main" for suite in suites]
    return "\n".join(lines) + "\n"


# ---- the private apt state -----------------------------------------------------------------------

class PrivateApt:
    def __init__(self, root: Path, sources: list[Source] | None = None) -> None:
        self.root = root
        self.sources = machine_sources() if sources is None else sources

    def options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::Etc::SourceList": r / "sources.list", "Dir::Etc::SourceParts": r / "sources.list.d",
            "Dir::State": r / "state", "Dir::State::Lists": r / "lists", "Dir::State::status": r / "status",
            "Dir::Cache": r / "cache", "Dir::Cache::archives": r / "archives",
            "Acquire::Languages": "none", "APT::Get::List-Cleanup": "true",
        }
        out = [f"-o{k}={v}" for k, v in opts.items()]
        if os.geteuid() == 0:  # _apt cannot write into a root-owned cache; there is nobody to drop to
            out.append("-oAPT::Sandbox::User=root")
        return out

    def prepare(self) -> None:
        if not self.sources:
            raise ConfigError("no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d/: "
                              "debian:X.Y trees are fetched from the mirror this machine already uses; "
                              "add one, or pass --tree with a tarball or a git checkout")
        for d in ("lists/partial", "archives/partial", "cache", "state", "sources.list.d"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        want = private_sources_list(self.sources)
        path = self.root / "sources.list"
        if not path.exists() or path.read_text() != want:
            path.write_text(want)
            (self.root / "lists" / ".updated").unlink(missing_ok=True)

    def run(self, *args: str, cwd: Path | None = None) -> str:
        argv = [args[0], *self.options(), *args[1:]]
        try:
            r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT_S,
                               env={**os.environ, "LC_ALL": "C"})
        except subprocess.TimeoutExpired as e:
            raise InfraError(f"{' '.join(args)}: no answer after {APT_TIMEOUT_S}s (network down?)") from e
        except FileNotFoundError as e:
            raise ConfigError(f"{args[0]} not found: debian:X.Y trees need apt (a Debian machine)") from e
        if r.returncode != 0 or re.search(r"^(E:|W: Failed to fetch)", r.stderr, re.M):
            raise _apt_error(args, r.stderr or r.stdout)
        return r.stdout

    def update(self, force: bool = False) -> None:
        stamp = self.root / "lists" / ".updated"
        if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < FRESH_S:
            return
        log.info("apt: updating the harness's private package lists in %s", self.root)
        self.run("apt-get", "update", "-q")
        stamp.touch()

    def offered(self) -> dict[str, list[str]]:
        """{"linux-source-7.3": ["7.3.4-1~bpo13+1", ...]} from the private lists, newest first."""
        names = sorted(n for n in self.run("apt-cache", "pkgnames", PACKAGE).split()
                       if re.fullmatch(r"linux-source-[0-9]+\.[0-9]+", n))
        return parse_madison(self.run("apt-cache", "madison", *names)) if names else {}


def parse_madison(text: str) -> dict[str, list[str]]:
    """`apt-cache madison` output -> {package: [versions, newest first]}. Pure."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) >= 3 and cols[0] and cols[1]:
            versions = out.setdefault(cols[0], [])
            if cols[1] not in versions:
                versions.append(cols[1])
    return out


def _apt_error(args: tuple[str, ...], text: str) -> InfraError:
    tail = "\n".join(text.strip().splitlines()[-6:])
    if re.search(r"Temporary failure resolving|Could not resolve|Network is unreachable|Connection refused|"
                 r"Could not connect|timed out", text):
        return InfraError(f"{' '.join(args)}: the Debian mirror cannot be reached (no network?):\n{tail}\n"
                          "Fetch needs the mirror in /etc/apt/sources.list once; after that the tree is cached. "
                          "Offline, pass --tree with a tarball or a git checkout.")
    return InfraError(f"{' '.join(args)} failed:\n{tail}")


def _series_key(name: str) -> tuple[int, int]:
    major, minor = name.removeprefix(PACKAGE).split(".")
    return int(major), int(minor)


def choose(spec: DebianSpec, offered: dict[str, list[str]]) -> tuple[str, str]:
    """(package, version) for a spec, from what the suites offer. Pure."""
    have = ", ".join(n.removeprefix(PACKAGE) for n in sorted(offered, key=_series_key)) or "none"
    if spec.series == "latest":
        if not offered:
            raise ConfigError("debian:latest: the Debian suites offer no linux-source-X.Y package")
        name = max(offered, key=_series_key)
        return name, offered[name][0]
    name = PACKAGE + spec.series
    if name not in offered:
        raise ConfigError(f"{spec}: no suite of the Debian mirror carries {name} (offered: {have}); "
                          "pick one of those, or pass --tree with a tarball or a git checkout")
    if spec.version is None:
        return name, offered[name][0]
    if spec.version not in offered[name]:
        raise ConfigError(f"{spec}: the suites no longer carry {name} {spec.version} (now: "
                          f"{', '.join(offered[name])}); use debian:{spec.series} for the newest, or keep "
                          "the tarball and pass it with --tree")
    return name, spec.version


def fetch(spec: DebianSpec | str, cache_dir: Path, *, apt: PrivateApt | None = None) -> DebianPackage:
    """The unpacked source tarball for a spec, downloaded once."""
    from harness.kernel.source import file_lock

    spec = parse_spec(spec) if isinstance(spec, str) else spec
    root = cache_dir / "debian"
    root.mkdir(parents=True, exist_ok=True)
    memo_path = root / "resolved.json"
    with file_lock(root / ".lock"):
        memo = _read_memo(memo_path)
        hit = memo.get(str(spec))
        if _still_good(hit, spec):
            return DebianPackage(hit["name"], hit["version"], Path(hit["tarball"]))
        apt = apt or PrivateApt(root / "apt")
        apt.prepare()
        try:
            apt.update()
            name, version = choose(spec, apt.offered())
        except InfraError as e:
            if hit and Path(hit["tarball"]).is_file():  # offline: the last resolution still stands
                log.warning("%s; using %s %s fetched before", e, hit["name"], hit["version"])
                return DebianPackage(hit["name"], hit["version"], Path(hit["tarball"]))
            raise
        pkg = _unpack(apt, root, name, version)
        memo[str(spec)] = {"name": name, "version": version, "tarball": str(pkg.tarball), "at": time.time()}
        tmp = memo_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(memo, indent=1, sort_keys=True))
        tmp.replace(memo_path)
        return pkg


def _still_good(hit: dict | None, spec: DebianSpec) -> bool:
    """A remembered resolution stands: its tarball is there, and it is pinned or younger than a day."""
    return bool(hit) and Path(hit["tarball"]).is_file() and bool(spec.version or time.time() - hit["at"] < FRESH_S)


def _read_memo(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _unpack(apt: PrivateApt, root: Path, name: str, version: str) -> DebianPackage:
    dest = root / f"{name}_{version.replace(':', '%3a')}"
    found = sorted(dest.glob(f"usr/src/{name}.tar.*"))
    if found:
        return DebianPackage(name, version, found[0])
    dl = root / "download"
    shutil.rmtree(dl, ignore_errors=True)
    dl.mkdir()
    log.info("apt: downloading %s %s", name, version)
    apt.run("apt-get", "download", "-q", f"{name}={version}", cwd=dl)
    debs = sorted(dl.glob("*.deb"))
    if len(debs) != 1:
        raise InfraError(f"apt-get download {name}={version} left {len(debs)} .deb files in {dl}")
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    r = subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp)], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InfraError(f"dpkg-deb -x {debs[0]} failed: {r.stderr.strip()}")
    found = sorted(tmp.glob(f"usr/src/{name}.tar.*"))
    if not found:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InfraError(f"{debs[0].name} holds no usr/src/{name}.tar.*: not a Debian kernel source package?")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    shutil.rmtree(dl, ignore_errors=True)
    return DebianPackage(name, version, dest / found[0].relative_to(tmp))


def planned_tarball(spec: DebianSpec | str, cache_dir: Path) -> tuple[Path, list[list[str]]]:
    """For --dry-run: the tarball a fetch would give, and the commands it would run (none when the
    last resolution is still fresh). Runs nothing."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    root = cache_dir / "debian"
    hit = _read_memo(root / "resolved.json").get(str(spec))
    if _still_good(hit, spec):
        return Path(hit["tarball"]), []
    apt = PrivateApt(root / "apt")
    name = PACKAGE + spec.series if spec.series != "latest" else PACKAGE + "<newest X.Y>"
    version = spec.version or "<newest offered>"
    dest = root / f"{name}_{version}"
    cmds = [["apt-get", *apt.options(), "update", "-q"],
            ["apt-get", *apt.options(), "download", "-q", f"{name}={version}"],
            ["dpkg-deb", "-x", f"{name}_{version}_all.deb", str(dest)]]
    return dest / "usr" / "src" / f"{name}.tar.xz", cmds
