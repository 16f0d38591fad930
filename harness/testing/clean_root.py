"""A clean Debian 12 root, to run ci/bootstrap in it the way a new user on a fresh machine would.

The root comes from mmdebstrap (variant minbase: essential + required + apt, like Debian's
container images, a subset of any installed system) off the Debian mirror the machine's own apt
sources name, and is cached as a tarball for a day. Commands run chrooted inside a private mount
and PID namespace: the mounts vanish and every process is killed when the command ends, even when
it is killed. Only the machine's environment is carried in (its apt mirror and Acquire options,
its pip configuration and the local package directories that configuration names), never a
package installed by hand.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from urllib.parse import urlparse

from harness.kernel.debian import KEYRING, Source, machine_sources

VARIANT = "minbase"
SUITE = "bookworm"
SUITES = {"main": ("bookworm", "bookworm-updates"), "security": ("bookworm-security",)}
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# pip settings whose values may name local files or directories.
PIP_PATH_KEYS = ("find-links", "extra-index-url", "index-url", "constraint", "requirement", "cert", "client-cert")
# apt settings of the machine a root must share to reach the same mirror the same way.
_APT_KEYS = re.compile(r"Acquire::(Check-Valid-Until|Check-Date|(https?|ftp)::Proxy(::[^ ]+)?)\s")


# ---- pure logic -----------------------------------------------------------------------------------

def mirror_lines(sources: Iterable[Source]) -> list[str]:
    """One-line sources for bookworm, -updates and -security on the machine's Debian mirrors. Pure."""
    kinds: dict[str, str] = {}
    for s in sources:
        uri = s.uri.rstrip("/")
        parts = urlparse(uri).path.split("/")
        kinds.setdefault(uri, "security" if any(p.endswith("-security") for p in parts) else "main")
    if "main" not in kinds.values():
        return []
    # The root's own keyring holds the same key at this path: no host file is named in the root.
    return [f"deb [signed-by={KEYRING}] {uri} {suite} main" for uri, kind in kinds.items() for suite in SUITES[kind]]


def apt_options(dump: str) -> list[str]:
    """From `apt-config dump`: the Acquire options (date checks, proxies) the root must share. Pure."""
    return [line.strip().rstrip(";") for line in dump.splitlines() if _APT_KEYS.match(line.strip() + " ")]


def bootstrap_packages(script: str) -> list[str]:
    """The APT_PACKAGES=( ... ) list of ci/bootstrap. Pure."""
    m = re.search(r"^APT_PACKAGES=\((.*?)^\)", script, re.S | re.M)
    if not m:
        return []
    return [w for line in m[1].splitlines() for w in line.split("#", 1)[0].split()]


def pip_settings(config_texts: Sequence[str], env: Mapping[str, str]) -> dict[str, str]:
    """pip's settings from its config files (in pip's order) and PIP_* variables (which win). Pure."""
    out: dict[str, str] = {}
    for text in config_texts:
        parser = configparser.RawConfigParser()
        try:
            parser.read_string(text)
        except configparser.Error:
            continue
        for section in parser.sections():
            for key, value in parser.items(section):
                out[key.replace("_", "-")] = value
    for name, value in env.items():
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
            out[name[4:].lower().replace("_", "-")] = value
    return out


def pip_local_paths(settings: Mapping[str, str]) -> list[Path]:
    """The local paths pip's settings name (file:// URLs and absolute paths), sorted. Pure.
    A PEP 503 index named by its simple/ directory links to files beside it: take its parent."""
    out: set[Path] = set()
    for key in PIP_PATH_KEYS:
        for word in settings.get(key, "").split():
            path = urlparse(word).path if word.startswith("file://") else word
            if not path.startswith("/"):
                continue
            p = Path(path.rstrip("/") or "/")
            out.add(p.parent if key.endswith("index-url") and p.name == "simple" else p)
    return sorted(out)


def ccache_log_stats(text: str) -> dict[str, int]:
    """Hits and misses of one ccache stats log (CCACHE_STATSLOG): one block per compilation. Pure."""
    counts = {"hits": 0, "misses": 0, "uncacheable": 0}
    for block in re.split(r"^# .*$", text, flags=re.M)[1:]:
        ids = set(block.split())
        if ids & {"direct_cache_hit", "preprocessed_cache_hit"}:
            counts["hits"] += 1
        elif "cache_miss" in ids:
            counts["misses"] += 1
        elif ids:
            counts["uncacheable"] += 1
    return counts


def cache_name(lines: Sequence[str], options: Sequence[str], day: str) -> str:
    """The cached tarball's name: one a day per set of mirror lines and apt options. Pure."""
    digest = hashlib.sha256("\n".join([VARIANT, *lines, *options]).encode()).hexdigest()[:12]
    return f"{SUITE}-{VARIANT}-{day}-{digest}.tar"


def mounts_under(mountinfo: str, root: Path) -> list[str]:
    """Mount points at or under root, from /proc/self/mountinfo text. Pure."""
    top = str(root).rstrip("/")
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
            if point == top or point.startswith(top + "/"):
                points.append(point)
    return points


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as e:
        return f"(no log: {e})"


# ---- the machine's environment ---------------------------------------------------------------------

def machine_mirror_lines() -> list[str]:
    return mirror_lines(machine_sources())


def machine_apt_options() -> list[str]:
    r = subprocess.run(["apt-config", "dump"], capture_output=True, text=True)
    return apt_options(r.stdout) if r.returncode == 0 else []


def mirror_problem(lines: Sequence[str], timeout: float = 10) -> str | None:
    """Why the mirror cannot be reached (one InRelease request per suite), or None."""
    for line in lines:
        words = line.split()
        uri, suite = words[-3], words[-2]
        url = f"{uri}/dists/{suite}/InRelease"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                pass
        except (urllib.error.URLError, OSError) as e:
            return f"{url}: {e}"
    return None


def pip_config_files(home: Path | None = None) -> list[Path]:
    """pip's config files on this machine, in pip's order (global, then user, then PIP_CONFIG_FILE).
    $XDG_CONFIG_HOME is not read: the repository's tests point it at a scratch directory."""
    home = home or Path(os.environ.get("HOME") or Path.home())
    dirs = (os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")
    names = [Path(d) / "pip" / "pip.conf" for d in dirs if d] + [Path("/etc/pip.conf"), home / ".pip" / "pip.conf",
                                                                  home / ".config" / "pip" / "pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        names.append(Path(os.environ["PIP_CONFIG_FILE"]))
    return [p for p in names if p.is_file()]


def logged_run(argv: list[str], log: Path, header: str, timeout: float) -> tuple[int, float]:
    """Run argv with its output into `log` after a header line: (exit status, -9 on timeout; seconds)."""
    start = time.monotonic()
    with open(log, "w") as f:
        f.write(header + "\n")
        f.flush()
        try:
            rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            f.write(f"\n# killed after {timeout:.0f}s\n")
            rc = -9
    return rc, time.monotonic() - start


@dataclass(frozen=True)
class Mount:
    src: Path
    inside: str        # absolute path inside the root
    read_only: bool = True


@dataclass
class PipEnvironment:
    files: list[tuple[Path, str]] = field(default_factory=list)   # host file -> path inside the root
    mounts: list[Mount] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def machine_pip() -> PipEnvironment:
    """This machine's pip configuration, to reproduce inside a root: its config files, its PIP_*
    variables, the files they name (copied) and the directories they name (bound read-only)."""
    home = Path(os.environ.get("HOME") or Path.home())
    out = PipEnvironment(env={k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    configs = pip_config_files(home)
    for p in configs:
        inside = "/root/" + str(p.relative_to(home)) if p.is_relative_to(home) else str(p)
        out.files.append((p, inside))
    settings = pip_settings([p.read_text(errors="replace") for p in configs], os.environ)
    paths = [p for p in pip_local_paths(settings) if p.exists()]
    dirs = [p for p in paths if p.is_dir() and not any(p.is_relative_to(q) and p != q for q in paths if q.is_dir())]
    out.mounts = [Mount(d, str(d)) for d in dirs]
    out.files += [(p, str(p)) for p in paths if p.is_file() and not any(p.is_relative_to(d) for d in dirs)]
    return out


# ---- making the root --------------------------------------------------------------------------------

def root_tarball(cache: Path, lines: Sequence[str], options: Sequence[str], log: Path,
                 timeout: float = 1800) -> tuple[Path, float | None]:
    """The cached clean root for today, made with mmdebstrap when missing: (tarball, seconds it
    took mmdebstrap, or None for a cache hit). Older tarballs are removed."""
    from harness.kernel.source import file_lock

    cache.mkdir(parents=True, exist_ok=True)
    name = cache_name(lines, options, time.strftime("%Y%m%d", time.gmtime()))
    dest = cache / name
    with file_lock(cache / ".lock"):
        if dest.is_file():
            return dest, None
        tmp = cache / f".tmp-{os.getpid()}.tar"
        argv = ["mmdebstrap", "--mode=root", f"--variant={VARIANT}", "--format=tar",
                *(f"--aptopt={o}" for o in options), SUITE, str(tmp), *lines]
        rc, seconds = logged_run(argv, log, f"$ {shlex.join(argv)}", timeout)
        if rc == -9:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"mmdebstrap: no result after {timeout:.0f}s\n{tail(log)}\nfull log: {log}")
        if rc != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"mmdebstrap failed (exit {rc}):\n{tail(log)}\nfull log: {log}")
        tmp.rename(dest)
        dest.with_suffix(".json").write_text(json.dumps(
            {"variant": VARIANT, "sources": list(lines), "aptopt": list(options), "mmdebstrap_s": round(seconds, 1),
             "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
        for old in cache.glob(f"{SUITE}-{VARIANT}-*"):
            if old.stem != dest.stem:
                old.unlink(missing_ok=True)
        return dest, seconds


def clone_head(repo: Path, dest: Path) -> str:
    """A clone of repo's HEAD commit (what CI tests: no uncommitted change) at dest; its commit id."""
    def git(*args: str, cwd: Path = repo) -> str:
        return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout

    head = git("rev-parse", "HEAD").strip()
    git("clone", "-q", "--no-hardlinks", "--no-checkout", str(repo), str(dest))
    git("fetch", "-q", str(repo), head, cwd=dest)  # HEAD may be detached, on no branch
    git("checkout", "-q", "--detach", head, cwd=dest)
    return head


@dataclass
class Step:
    name: str
    returncode: int
    seconds: float
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        return f"{self.name} failed (exit {self.returncode}) after {self.seconds:.0f}s; its last lines:\n" \
               f"{tail(self.log)}\nfull log: {self.log}"


class CleanRoot:
    """An unpacked root. `run` chroots into it inside a private mount + PID namespace."""

    BASE_ENV = {"HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash",
                "PATH": PATH, "LANG": "C.UTF-8", "TERM": "dumb"}

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounts: list[Mount] = []
        self.env: dict[str, str] = {}

    @classmethod
    def unpack(cls, tarball: Path, path: Path) -> CleanRoot:
        path.mkdir(parents=True)
        root = cls(path)
        r = subprocess.run(["tar", "-C", str(path), "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf",
                            str(tarball)], capture_output=True, text=True)
        if r.returncode != 0:
            root.remove()
            raise RuntimeError(f"unpacking {tarball} failed: {r.stderr.strip()[-2000:]}")
        return root

    def host_path(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")

    def copy_in(self, src: Path, inside: str) -> None:
        dest = self.host_path(inside)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)  # e.g. a dangling /etc/resolv.conf symlink
        shutil.copyfile(src, dest)

    def use_machine_network(self) -> None:
        """DNS and pip the way this machine has them (the mirror is in the root's sources already)."""
        self.copy_in(Path("/etc/resolv.conf"), "/etc/resolv.conf")
        # The machine's own CAs (a proxy's, say): when the bootstrap pulls in ca-certificates, its
        # postinst rebuilds the bundle pip's `cert` names, from Debian's CAs plus these.
        if LOCAL_CAS.is_dir():
            shutil.copytree(LOCAL_CAS, self.host_path(str(LOCAL_CAS)), dirs_exist_ok=True)
        pip = machine_pip()
        for src, inside in pip.files:
            self.copy_in(src, inside)
        self.mounts += pip.mounts
        self.env.update(pip.env)
        self.env.update({k: v for k, v in os.environ.items() if k.lower() in ("http_proxy", "https_proxy", "no_proxy")})

    def run(self, name: str, script: str, log: Path, *, mounts: Sequence[Mount] = (),
            env: Mapping[str, str] | None = None, timeout: float = 3600) -> Step:
        q = shlex.quote
        root = str(self.path)
        setup = ["set -e", f"mount -t proc proc {q(root + '/proc')}",
                 f"mount --rbind /dev {q(root + '/dev')}", f"mount --rbind /sys {q(root + '/sys')}"]
        for m in [*self.mounts, *mounts]:
            dst = q(str(self.host_path(m.inside)))
            setup += [f"mkdir -p {dst}", f"mount --bind {q(str(m.src))} {dst}"]
            if m.read_only:
                setup.append(f"mount -o remount,bind,ro {dst}")
        envs = [f"{k}={v}" for k, v in {**self.BASE_ENV, **self.env, **(env or {})}.items()]
        setup.append("exec " + shlex.join(["chroot", root, "/usr/bin/env", "-i", *envs, "/bin/bash", "-c", script]))
        # --pid --fork: the shell is PID 1 of a new namespace, so the kernel kills whatever it left
        # running when it exits; --kill-child: it exits when unshare does (a timeout kills unshare).
        argv = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
                "/bin/sh", "-c", "\n".join(setup)]
        rc, seconds = logged_run(argv, log, f"# {name}: {script}", timeout)
        return Step(name, rc, seconds, log)

    def output(self, script: str, log: Path, timeout: float = 120) -> tuple[int, str]:
        step = self.run("query", script, log, timeout=timeout)
        return step.returncode, "\n".join(log.read_text(errors="replace").splitlines()[1:])

    def remove(self) -> None:
        """Delete the root; refuse while anything is mounted inside it (a bound host directory
        would be emptied too)."""
        left = mounts_under(Path("/proc/self/mountinfo").read_text(), self.path)
        if left:
            raise RuntimeError(f"not removing {self.path}: still mounted: {', '.join(left)}")
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.path)], check=True)  # rmtree: 5x slower
