"""The local target's initramfs: busybox, dropbear, the selftests and an /init, as gzip'd cpio newc.

No cpio binary: `CpioWriter` writes the newc format itself, deterministically
(mtime 0, uid/gid 0, increasing inodes), so the same inputs give the same bytes.
Host binaries are copied at their own paths with the libraries ldd names.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import logging
import os
import re
import shlex
import stat
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Mapping, Sequence

from harness.errors import ConfigError, InfraError

log = logging.getLogger(__name__)

DROPBEARKEY = Path("/usr/bin/dropbearkey")
SFTP_SERVER_PATH = "/usr/lib/sftp-server"  # what Debian's dropbear execs for the sftp subsystem
HOST_KEY_PATH = "/etc/dropbear/dropbear_ed25519_host_key"
GUEST_ADDRESS, GUEST_GATEWAY = "10.0.2.15/24", "10.0.2.2"  # QEMU user networking
TOOL_TIMEOUT_S = 120
GZIP_LEVEL = 1  # speed matters more than the last megabyte

_ED25519_HEADER = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x40"  # dropbear's private key format
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})")
_MARKER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}")
_APPLET = re.compile(r"[A-Za-z0-9_.\[\]-]+")
_LDD_ARROW = re.compile(r"=>\s+(/\S+)(?:\s+\(0x[0-9a-fA-F]+\))?\s*$")
_LDD_LOADER = re.compile(r"^\s*(/\S+)\s+\(0x[0-9a-fA-F]+\)\s*$")
_LDD_MISSING = re.compile(r"^\s*(\S+)\s+=>\s+not found\s*$")

# Directories made up front, in this order; "root" and ".ssh" must be 0700 for dropbear.
_BASE_DIRS = {d: 0o755 for d in "bin sbin usr/bin usr/sbin usr/lib lib lib64 etc dev dev/pts run var var/log mnt "
              "selftests".split()} | {"etc/dropbear": 0o700, "dev/shm": 0o1777, "proc": 0o555, "sys": 0o555,
                                     "tmp": 0o1777, "root": 0o700, "root/.ssh": 0o700}


class CpioWriter:
    """Writes a cpio "newc" archive, the format the kernel unpacks as an initramfs, to a binary stream.

    Paths may be given with or without a leading "/"; they are stored relative ("bin/sh").
    Missing parent directories are added (0755) before their first child, each once.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._out = stream
        self._ino = 0
        self._dirs: dict[str, int] = {}  # path -> permission bits
        self._others: set[str] = set()
        self._closed = False
        self.bytes_written = 0
        self.entries = 0
        self.files = 0

    def __contains__(self, path: str) -> bool:
        name = _image_path(path)
        return name in self._dirs or name in self._others

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        name, perm = _image_path(path), mode & 0o7777
        if name in self._dirs:
            if self._dirs[name] != perm:
                raise ValueError(f"cpio: directory {name} already added with mode {self._dirs[name]:o}")
            return
        self._claim(name, directory=True)
        self._entry(name, stat.S_IFDIR | perm, b"", nlink=2)
        self._dirs[name] = perm

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        name = self._claim(_image_path(path))
        self._entry(name, stat.S_IFREG | mode & 0o7777, data)
        self.files += 1

    def add_symlink(self, path: str, target: str) -> None:
        if not target or "\0" in target:
            raise ValueError(f"cpio: bad symlink target {target!r}")
        self._entry(self._claim(_image_path(path)), stat.S_IFLNK | 0o777, target.encode())

    def add_device(self, path: str, mode: int, major: int, minor: int) -> None:
        """A device node; `mode` is permission bits, plus S_IFBLK for a block device (char otherwise)."""
        kind = stat.S_IFMT(mode) or stat.S_IFCHR
        if kind not in (stat.S_IFCHR, stat.S_IFBLK):
            raise ValueError(f"cpio: {path}: not a device mode {mode:o}")
        self._entry(self._claim(_image_path(path)), kind | mode & 0o7777, b"", rdev=(major, minor))

    def close(self) -> None:
        """Write the trailer; the stream itself stays open."""
        if not self._closed:
            self._closed = True
            self._header("TRAILER!!!", ino=0, mode=0, nlink=1, size=0, rdev=(0, 0))

    def _claim(self, name: str, directory: bool = False) -> str:
        if self._closed:
            raise ValueError("cpio: archive already closed")
        if name in self._dirs or name in self._others:
            raise ValueError(f"cpio: {name} added twice")
        parent = PurePosixPath(name).parent
        missing = [p for p in (parent, *parent.parents) if str(p) != "." and str(p) not in self._dirs]
        for p in reversed(missing):
            if str(p) in self._others:
                raise ValueError(f"cpio: {p} is not a directory")
            self._entry(str(p), stat.S_IFDIR | 0o755, b"", nlink=2)
            self._dirs[str(p)] = 0o755
        if not directory:
            self._others.add(name)
        return name

    def _entry(self, name: str, mode: int, data: bytes, nlink: int = 1, rdev: tuple[int, int] = (0, 0)) -> None:
        self._ino += 1
        self._header(name, ino=self._ino, mode=mode, nlink=nlink, size=len(data), rdev=rdev)
        self._write(data)
        self._write(b"\0" * (-len(data) % 4))
        self.entries += 1

    def _header(self, name: str, *, ino: int, mode: int, nlink: int, size: int, rdev: tuple[int, int]) -> None:
        encoded = name.encode() + b"\0"
        if size > 0xFFFFFFFF:
            raise ValueError(f"cpio: {name} is too large for newc ({size} bytes)")
        # magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
        fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(encoded), 0)
        head = b"070701" + "".join(f"{v:08x}" for v in fields).encode() + encoded
        self._write(head + b"\0" * (-len(head) % 4))

    def _write(self, data: bytes) -> None:
        if data:
            self._out.write(data)
        self.bytes_written += len(data)


def _image_path(path: str | os.PathLike[str]) -> str:
    parts = PurePosixPath(os.fspath(path)).parts
    parts = parts[1:] if parts and not parts[0].strip("/") else parts  # "/" or POSIX's "//"
    if not parts or any(p in (".", "..") or "\0" in p for p in parts):
        raise ValueError(f"cpio: unsafe or empty path {os.fspath(path)!r}")
    return "/".join(parts)


# ---- ldd ---------------------------------------------------------------------

def parse_ldd(text: str) -> list[str]:
    """Library paths (and the loader) from ldd output, one or many binaries, first-seen order, no duplicates."""
    found: dict[str, None] = {}
    for line in text.splitlines():
        m = _LDD_ARROW.search(line) or _LDD_LOADER.match(line)
        if m:
            found.setdefault(m.group(1))
    return list(found)


def parse_ldd_missing(text: str) -> list[str]:
    """Sonames ldd reports as "not found"."""
    return list(dict.fromkeys(m.group(1) for m in map(_LDD_MISSING.match, text.splitlines()) if m))


def libraries_for(binary: Path) -> list[Path]:
    """The shared libraries `binary` loads, per ldd; [] for a static binary."""
    return libraries_for_all([binary])


def libraries_for_all(binaries: Sequence[Path]) -> list[Path]:
    """Like libraries_for over many binaries, with one ldd call (86 selftests: 0.85 s, against 1.35 s)."""
    if not binaries:
        return []
    r = _run(["ldd", "--", *binaries])
    errors = [line.strip() for line in r.stderr.splitlines()
              if line.strip() and "not a dynamic executable" not in line]
    if r.returncode not in (0, 1) or errors:
        raise InfraError(f"initramfs: ldd exited {r.returncode}: {'; '.join(errors[:5])}")
    missing = parse_ldd_missing(r.stdout)
    if missing:
        raise InfraError(f"initramfs: ldd cannot find {', '.join(missing)} (needed by {len(binaries)} binaries)")
    return [Path(p) for p in parse_ldd(r.stdout)]


# ---- host key ----------------------------------------------------------------

def host_key_public_line(key: bytes) -> str:
    """'ssh-ed25519 AAAA...' for a dropbear-format ed25519 private key (its last 32 bytes are the public key)."""
    if key.startswith(b"-----BEGIN") or len(key) != len(_ED25519_HEADER) + 64 or not key.startswith(_ED25519_HEADER):
        raise ConfigError("host key is not a dropbear-format ed25519 key: make it with generate_host_key() "
                          "or convert it with dropbearconvert openssh dropbear")
    blob = _ED25519_HEADER[:15] + b"\x00\x00\x00\x20" + key[-32:]
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner can enter (0700): it holds private keys, or images with them."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError as e:
        raise ConfigError(f"{path}: cannot make it private (mode 0700) for keys and images: {e}") from e
    return path


def generate_host_key(workdir: Path) -> tuple[bytes, str]:
    """A fresh dropbear ed25519 host key: (private key in dropbear format, 'ssh-ed25519 AAAA...')."""
    private_dir(workdir)
    with tempfile.TemporaryDirectory(prefix=".hostkey-", dir=workdir) as tmp:
        keyfile = Path(tmp, "dropbear_ed25519_host_key")
        made = _run([DROPBEARKEY, "-t", "ed25519", "-f", keyfile])
        shown = _run([DROPBEARKEY, "-y", "-f", keyfile]) if made.returncode == 0 else made
        if shown.returncode != 0:
            raise InfraError(f"initramfs: {DROPBEARKEY} failed ({shown.returncode}): {shown.stderr.strip()}")
        key = keyfile.read_bytes()
    lines = [ln.split()[:2] for ln in shown.stdout.splitlines() if ln.startswith("ssh-ed25519 ")]
    public = " ".join(lines[0]) if lines else ""
    try:
        expected = host_key_public_line(key)
    except ConfigError as e:
        raise InfraError(f"initramfs: {DROPBEARKEY} wrote a key of an unknown format: {e}") from e
    if public != expected:
        raise InfraError(f"initramfs: dropbearkey -y printed {public!r}, which does not match the key it made")
    return key, public


# ---- the image ---------------------------------------------------------------

@dataclass(frozen=True)
class InitramfsSpec:
    authorized_keys: str  # the harness client's public key line(s)
    host_key: bytes  # dropbear-format ed25519 private key (generate_host_key)
    selftests_tar: Path | None = None  # the build's selftests.tar.gz, unpacked into /selftests
    extra_binaries: tuple[Path, ...] = ()  # host binaries copied at the same path, with their libraries
    extra_files: Mapping[str, bytes] = field(default_factory=dict)  # path in image -> content (mode 0644)
    hostname: str = "snp-target"
    ready_marker: str = "SNP-HARNESS-READY"
    busybox: Path = Path("/bin/busybox")
    dropbear: Path = Path("/usr/sbin/dropbear")
    sftp_server: Path = Path("/usr/lib/openssh/sftp-server")


@dataclass(frozen=True)
class InitramfsInfo:
    path: Path
    size: int  # bytes, compressed
    uncompressed_size: int
    files: int  # regular files
    entries: int  # every cpio entry: files, directories, symlinks, devices
    sha256: str  # of the compressed image
    duration_s: float
    libraries: tuple[str, ...]  # host library paths copied in


def init_script(hostname: str = "snp-target", ready_marker: str = "SNP-HARNESS-READY") -> str:
    """The /init of the image: POSIX sh for busybox; nothing in it may be fatal, since PID 1 must not exit."""
    if not _HOSTNAME.fullmatch(hostname):
        raise ConfigError(f"initramfs: hostname {hostname!r} is not a plain host name")
    if not _MARKER.fullmatch(ready_marker):
        raise ConfigError(f"initramfs: ready marker {ready_marker!r} must match {_MARKER.pattern}")
    return (_INIT.replace("@HOSTNAME@", hostname).replace("@MARKER@", ready_marker)
            .replace("@HOSTKEY@", HOST_KEY_PATH).replace("@ADDRESS@", GUEST_ADDRESS)
            .replace("@GATEWAY@", GUEST_GATEWAY))


_INIT = r"""#!/bin/sh
# /init of the snp-harness local target, generated by harness/targets/initramfs.py.
# PID 1 must never exit: every failure is reported on the console and tolerated.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
umask 022
say() { echo "INIT: $*" >/dev/console 2>/dev/null || echo "INIT: $*"; }
up() { read -r u _ </proc/uptime 2>/dev/null && echo "$u" || echo unknown; }
try_mount() {  # TYPE DIR OPTIONS
	mkdir -p "$2" 2>/dev/null
	mount -t "$1" -o "$3" "$1" "$2" || say "mount -t $1 on $2 failed (continuing)"
}
try_mount proc /proc nosuid,nodev,noexec
try_mount sysfs /sys nosuid,nodev,noexec
if ! mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev; then
	say "devtmpfs failed: populating /dev with mdev -s"
	mdev -s || say "mdev -s failed (continuing)"
fi
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx || say "no /dev/ptmx"
try_mount devpts /dev/pts mode=620,ptmxmode=666
try_mount tmpfs /dev/shm mode=1777,nosuid,nodev
try_mount tmpfs /tmp mode=1777,nosuid,nodev
try_mount tmpfs /run mode=755,nosuid,nodev
try_mount debugfs /sys/kernel/debug nosuid,nodev,noexec
try_mount tracefs /sys/kernel/tracing nosuid,nodev,noexec
try_mount tracefs /sys/kernel/tracing nosuid,nodev,noexec
say "userspace reached at uptime $(up)"
hostname @HOSTNAME@ || say "hostname failed (continuing)"
ip link set lo up || say "lo: ip link set up failed (continuing)"
if [ -e /sys/class/net/eth0 ]; then
	ip link set eth0 up && ip addr add @ADDRESS@ dev eth0 && ip route add default via @GATEWAY@ \
		|| say "eth0: configuration failed (continuing)"
else
	say "no eth0: network not configured"
fi
# -F: stay in the foreground (under &, so $! is its PID); -E: log to stderr; -s: no password logins.
# The host key is the harness's (pinned in its known_hosts); dropbear never makes one (-R is not used).
/usr/sbin/dropbear -F -E -s -p 22 -r @HOSTKEY@ -P /run/dropbear.pid \
	</dev/null >>/var/log/dropbear.log 2>&1 &
dropbear_pid=$!
i=0
while [ "$i" -lt 100 ] && kill -0 "$dropbear_pid" 2>/dev/null; do
	grep -qE '^ *[0-9]+: [0-9A-F]+:0016 [0-9A-F]+:0000 0A ' /proc/net/tcp /proc/net/tcp6 2>/dev/null && break
	sleep 0.1
	i=$((i + 1))
done
if kill -0 "$dropbear_pid" 2>/dev/null; then
	say "dropbear running as pid $dropbear_pid"
	echo "@MARKER@ uptime=$(up)" >/dev/console
else
	say "FATAL: dropbear exited; /var/log/dropbear.log follows"
	cat /var/log/dropbear.log >/dev/console 2>&1
fi
while :; do sleep 3600; done
"""


def build_initramfs(spec: InitramfsSpec, dest: Path) -> InitramfsInfo:
    """Write the image to `dest` (.cpio.gz) and describe it."""
    start, dest = time.monotonic(), Path(dest)
    script = init_script(spec.hostname, spec.ready_marker)
    host_key_public_line(spec.host_key)
    if not spec.authorized_keys.strip() or "\0" in spec.authorized_keys:
        raise ConfigError("initramfs: authorized_keys is empty or holds a NUL byte")
    binaries = [(spec.busybox, "/bin/busybox"), (spec.dropbear, "/usr/sbin/dropbear"),
                (spec.sftp_server, SFTP_SERVER_PATH), *((Path(b), str(b)) for b in spec.extra_binaries)]
    absent = [str(src) for src, _ in binaries if not src.is_file()]
    if absent:
        raise ConfigError(f"initramfs: missing on this host: {', '.join(absent)} (see ci/bootstrap)")
    private_dir(dest.parent)  # the image holds the host's private key
    with tempfile.TemporaryDirectory(prefix=".initramfs-", dir=dest.parent) as tmp:  # same file system as dest
        tmp_out = Path(tmp, "image.cpio.gz")
        selftests = _unpack(spec.selftests_tar, Path(tmp, "selftests")) if spec.selftests_tar else []
        elves = [p for _, p, _ in selftests if _is_elf(p)]
        libs = libraries_for_all([src for src, _ in binaries] + elves)
        applets = _busybox_applets(spec.busybox)
        try:
            # 0600 from the start: never readable by others, not even for a moment.
            with os.fdopen(os.open(tmp_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as raw, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as gz:
                w = CpioWriter(gz)
                _write_base(w, spec, script)
                for src, path in binaries:
                    w.add_file(path, src.read_bytes(), src.stat().st_mode & 0o7777)
                _write_libraries(w, libs)
                for rel, extracted, mode in selftests:
                    w.add_file(f"selftests/{rel}", extracted.read_bytes(), mode)
                for path, data in spec.extra_files.items():
                    w.add_file(path, data, 0o644)
                for name in applets:
                    if f"bin/{name}" not in w:
                        w.add_symlink(f"bin/{name}", "busybox")
                w.close()
        except ValueError as e:  # a path of extra_binaries or extra_files clashes or is unsafe
            raise ConfigError(f"initramfs: {e}") from e
        os.replace(tmp_out, dest)
    with open(dest, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    info = InitramfsInfo(dest, dest.stat().st_size, w.bytes_written, w.files, w.entries, digest,
                         time.monotonic() - start, tuple(map(str, libs)))
    log.info("initramfs %s: %d files, %.1f MB (%.1f MB uncompressed) in %.1fs", dest, info.files,
             info.size / 1e6, info.uncompressed_size / 1e6, info.duration_s)
    return info


def _write_base(w: CpioWriter, spec: InitramfsSpec, script: str) -> None:
    for path, mode in _BASE_DIRS.items():
        w.add_dir(path, mode)
    w.add_device("dev/console", 0o600, 5, 1)  # opened by the kernel for /init before devtmpfs exists
    w.add_device("dev/null", 0o666, 1, 3)
    w.add_symlink("var/run", "../run")
    etc = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
        "etc/group": "root:x:0:\n",
        "etc/shells": "/bin/sh\n",
        "etc/hostname": f"{spec.hostname}\n",
        "etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{spec.hostname}\n",
        "etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    }
    for path, text in etc.items():
        w.add_file(path, text.encode())
    w.add_file("etc/shadow", b"root:*:1:0:99999:7:::\n", 0o600)  # locked: key logins only
    w.add_file("root/.ssh/authorized_keys", (spec.authorized_keys.strip() + "\n").encode(), 0o600)
    w.add_file(HOST_KEY_PATH, spec.host_key, 0o600)
    w.add_file("init", script.encode(), 0o755)


def _write_libraries(w: CpioWriter, libs: Sequence[Path]) -> None:
    """Each library at ldd's path; a second path to the same host file becomes a symlink to the first."""
    first: dict[Path, str] = {}
    for lib in libs:
        if str(lib) in w:
            continue
        real = lib.resolve()
        if real in first:
            w.add_symlink(str(lib), first[real])
            continue
        try:
            w.add_file(str(lib), real.read_bytes(), real.stat().st_mode & 0o7777)
        except OSError as e:
            raise InfraError(f"initramfs: cannot read library {lib}: {e}") from e
        first[real] = "/" + _image_path(lib)


def _unpack(tar_path: Path, into: Path) -> list[tuple[str, Path, int]]:
    """The bundle's regular files unpacked under `into`: (path relative to /selftests, unpacked path, mode)."""
    out = []
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    log.debug("initramfs: %s: skipping non-file member %s", tar_path, member.name)
                    continue
                rel = _image_path(member.name)
                target = into / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                target.write_bytes(src.read() if src else b"")
                out.append((rel, target, member.mode & 0o7777))
    except (OSError, tarfile.TarError, ValueError) as e:
        raise InfraError(f"initramfs: cannot unpack selftests bundle {tar_path}: {e}") from e
    return out


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def _busybox_applets(busybox: Path) -> list[str]:
    r = _run([busybox, "--list"])
    applets = [a for a in r.stdout.split() if _APPLET.fullmatch(a) and a != "busybox"]
    if r.returncode != 0 or not applets:
        raise InfraError(f"initramfs: {busybox} --list exited {r.returncode}: {r.stderr.strip()}")
    return applets


def _run(argv: Sequence[object]) -> subprocess.CompletedProcess[str]:
    args = [str(a) for a in argv]
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S,
                           env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InfraError(f"initramfs: {shlex.join(args)}: {e}") from e
    log.debug("%s -> %d", shlex.join(args), r.returncode)
    return r
