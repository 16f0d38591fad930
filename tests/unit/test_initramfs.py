"""Initramfs: the newc writer (checked by GNU cpio and by hand), ldd parsing, host keys, /init, a whole image."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from harness.errors import ConfigError, InfraError
from harness.targets.initramfs import (
    HOST_KEY_PATH, CpioWriter, InitramfsSpec, build_initramfs, generate_host_key, host_key_public_line,
    init_script, libraries_for, parse_ldd, parse_ldd_missing)

HOST_TOOLS = ("/bin/busybox", "/usr/sbin/dropbear", "/usr/bin/dropbearkey", "/usr/lib/openssh/sftp-server")
needs_host_tools = pytest.mark.skipif(
    not all(os.access(t, os.X_OK) for t in HOST_TOOLS) or not shutil.which("ldd"),
    reason="needs busybox-static, dropbear-bin and openssh-sftp-server (ci/bootstrap)")
needs_cpio = pytest.mark.skipif(not shutil.which("cpio"), reason="needs GNU cpio")
is_root = os.geteuid() == 0
CLIENT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0aVosIf4kFPRLqeAQ84TNhQzFR3iKXy492w8zsIGmn harness@test"


# ---- an independent newc reader ------------------------------------------------

@dataclass
class Entry:
    offset: int
    name: str
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    rdev: tuple[int, int]
    data: bytes


def read_newc(blob: bytes) -> list[Entry]:
    """Every entry up to and including the trailer; fails on bad magic or misalignment."""
    entries, pos = [], 0
    while True:
        assert pos % 4 == 0, f"entry at {pos} is not 4-byte aligned"
        head = blob[pos:pos + 110]
        assert head[:6] == b"070701", f"bad magic at {pos}: {head[:6]!r}"
        f = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, size, _, _, rmaj, rmin, namesize, check = f
        assert check == 0
        name = blob[pos + 110:pos + 110 + namesize]
        assert name.endswith(b"\0") and b"\0" not in name[:-1]
        data_at = pos + 110 + namesize + (-(110 + namesize) % 4)
        assert blob[pos + 110 + namesize:data_at] == b"\0" * (data_at - pos - 110 - namesize)
        data = blob[data_at:data_at + size]
        entries.append(Entry(pos, name[:-1].decode(), ino, mode, uid, gid, nlink, mtime, (rmaj, rmin), data))
        pos = data_at + size + (-size % 4)
        if entries[-1].name == "TRAILER!!!":
            assert pos == len(blob), "bytes after the trailer"
            return entries


def by_name(entries: list[Entry]) -> dict[str, Entry]:
    return {e.name: e for e in entries}


def sample_archive() -> bytes:
    out = io.BytesIO()
    w = CpioWriter(out)
    w.add_dir("/etc")
    w.add_file("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    w.add_file("usr/sbin/tool", b"\x7fELF\x01", 0o755)  # parents made on the way, odd size
    w.add_file("/usr/sbin/suid", b"ab", 0o4755)
    w.add_dir("/root", 0o700)
    w.add_dir("/root/.ssh", 0o700)
    w.add_file("/root/.ssh/authorized_keys", CLIENT_KEY.encode() + b"\n", 0o600)
    w.add_dir("/tmp", 0o1777)
    w.add_file("/tmp/empty", b"")
    w.add_symlink("/bin/sh", "busybox")
    w.add_symlink("/var/run", "../run")
    w.add_device("/dev/console", 0o600, 5, 1)
    w.add_device("/dev/null", 0o666, 1, 3)
    w.add_device("/dev/loop0", stat.S_IFBLK | 0o660, 7, 0)
    w.close()
    w.close()  # idempotent: one trailer
    return out.getvalue()


# ---- CpioWriter ------------------------------------------------------------------

def test_cpio_headers_by_hand():
    blob = sample_archive()
    entries = read_newc(blob)
    names = [e.name for e in entries]
    assert names == [
        "etc", "etc/passwd", "usr", "usr/sbin", "usr/sbin/tool", "usr/sbin/suid", "root", "root/.ssh",
        "root/.ssh/authorized_keys", "tmp", "tmp/empty", "bin", "bin/sh", "var", "var/run",
        "dev", "dev/console", "dev/null", "dev/loop0", "TRAILER!!!"]
    e = by_name(entries)
    assert e["etc"].mode == stat.S_IFDIR | 0o755 and e["etc"].nlink == 2
    assert e["usr/sbin"].mode == stat.S_IFDIR | 0o755
    assert e["root"].mode == stat.S_IFDIR | 0o700
    assert e["tmp"].mode == stat.S_IFDIR | 0o1777
    assert e["usr/sbin/tool"].mode == stat.S_IFREG | 0o755 and e["usr/sbin/tool"].data == b"\x7fELF\x01"
    assert e["usr/sbin/suid"].mode == stat.S_IFREG | 0o4755
    assert e["root/.ssh/authorized_keys"].mode == stat.S_IFREG | 0o600 and e["root/.ssh/authorized_keys"].nlink == 1
    assert e["tmp/empty"].data == b""
    assert e["bin/sh"].mode == stat.S_IFLNK | 0o777 and e["bin/sh"].data == b"busybox"
    assert e["var/run"].data == b"../run"
    assert (e["dev/console"].mode, e["dev/console"].rdev) == (stat.S_IFCHR | 0o600, (5, 1))
    assert (e["dev/null"].mode, e["dev/null"].rdev) == (stat.S_IFCHR | 0o666, (1, 3))
    assert (e["dev/loop0"].mode, e["dev/loop0"].rdev) == (stat.S_IFBLK | 0o660, (7, 0))
    body = entries[:-1]
    assert all((x.uid, x.gid, x.mtime) == (0, 0, 0) for x in entries)
    assert [x.ino for x in body] == list(range(1, len(body) + 1))
    assert (entries[-1].ino, entries[-1].mode, entries[-1].nlink, entries[-1].data) == (0, 0, 1, b"")
    assert len(blob) % 4 == 0
    assert sample_archive() == blob  # deterministic


@needs_cpio
def test_cpio_round_trip_with_gnu_cpio(tmp_path):
    blob = sample_archive()
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=blob, capture_output=True, check=True).stdout
    assert listing.decode().split() == [e.name for e in read_newc(blob)[:-1]]
    root = tmp_path / "x"
    root.mkdir()
    # Device nodes need root; elsewhere leave them out of the extraction.
    patterns = [] if is_root else ["--nonmatching", "dev/*"]
    r = subprocess.run(["cpio", "-idmv", "--no-absolute-filenames", *patterns], input=blob, cwd=root,
                       capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    assert (root / "etc/passwd").read_bytes() == b"root:x:0:0:root:/root:/bin/sh\n"
    assert (root / "usr/sbin/tool").read_bytes() == b"\x7fELF\x01"
    assert stat.S_IMODE((root / "usr/sbin/tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "root/.ssh/authorized_keys").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "root").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert os.readlink(root / "bin/sh") == "busybox"
    assert os.readlink(root / "var/run") == "../run"
    assert (root / "tmp/empty").stat().st_size == 0
    assert (root / "etc/passwd").stat().st_mtime == 0
    if is_root:
        st = (root / "dev/console").lstat()
        assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (5, 1)
        assert stat.S_ISBLK((root / "dev/loop0").lstat().st_mode)


@pytest.mark.parametrize("calls, message", [
    ([("add_file", "a", b""), ("add_file", "/a", b"")], "added twice"),
    ([("add_dir", "d", 0o755), ("add_dir", "d", 0o700)], "already added with mode 755"),
    ([("add_file", "f", b""), ("add_file", "f/x", b"")], "f is not a directory"),
    ([("add_file", "../etc/passwd", b"")], "unsafe"),
    ([("add_file", "a/../../b", b"")], "unsafe"),
    ([("add_file", "/", b"")], "unsafe or empty"),
    ([("add_symlink", "l", "")], "bad symlink target"),
    ([("add_device", "d", stat.S_IFREG | 0o600, 1, 3)], "not a device mode"),
    ([("close",), ("add_file", "late", b"")], "already closed"),
])
def test_cpio_refuses(calls, message):
    w = CpioWriter(io.BytesIO())
    with pytest.raises(ValueError, match=message):
        for name, *args in calls:
            getattr(w, name)(*args)


def test_cpio_same_dir_twice_is_one_entry():
    out = io.BytesIO()
    w = CpioWriter(out)
    w.add_file("/a/b/one", b"1")
    w.add_dir("/a/b")  # already made as a parent, same mode: nothing written
    w.add_file("//a/b/two", b"2")
    w.close()
    assert [e.name for e in read_newc(out.getvalue())] == ["a", "a/b", "a/b/one", "a/b/two", "TRAILER!!!"]
    assert "a/b" in w and "/a/b/one" in w and "a/c" not in w
    assert (w.entries, w.files, w.bytes_written) == (4, 2, len(out.getvalue()))


# ---- ldd ---------------------------------------------------------------------------

GNU = "/lib/x86_64-linux-gnu/"
LOADER = "/lib64/ld-linux-x86-64.so.2"


@pytest.mark.parametrize("log, libs", [
    ("ldd-dropbear-debian12.log", [GNU + "libtomcrypt.so.1", GNU + "libtommath.so.1", GNU + "libz.so.1",
                                   GNU + "libcrypt.so.1", GNU + "libc.so.6", GNU + "libgmp.so.10", LOADER]),
    ("ldd-kexec-debian12.log", [GNU + "libxenctrl.so.4.17", GNU + "libc.so.6", GNU + "libxentoollog.so.1",
                                GNU + "libxencall.so.1", GNU + "libxenevtchn.so.1", GNU + "libxengnttab.so.1",
                                GNU + "libxenforeignmemory.so.1", GNU + "libxendevicemodel.so.1", LOADER,
                                GNU + "libxentoolcore.so.1"]),
    ("ldd-sftp-server-debian12.log", [GNU + "libc.so.6", LOADER]),
    ("ldd-busybox-static.log", []),
    ("ldd-static-pie.log", []),
    ("ldd-missing-lib.log", [GNU + "libc.so.6", LOADER]),
    ("ldd-selftests-batch-with-static.log", [GNU + "libc.so.6", LOADER]),
])
def test_parse_ldd(data_dir, log, libs):
    assert parse_ldd((data_dir / "initramfs" / log).read_text()) == libs


@pytest.mark.parametrize("log, missing", [
    ("ldd-missing-lib.log", ["libfoo.so"]),
    ("ldd-dropbear-debian12.log", []),
    ("ldd-busybox-static.log", []),
])
def test_parse_ldd_missing(data_dir, log, missing):
    assert parse_ldd_missing((data_dir / "initramfs" / log).read_text()) == missing


def test_parse_ldd_never_raises_on_garbage():
    assert parse_ldd("\0\x01 => (0x)\n=> \n  /x\n(0x1234)\n") == []


@needs_host_tools
def test_libraries_for_real_binaries(tmp_path):
    libs = libraries_for(Path("/usr/sbin/dropbear"))
    assert Path(LOADER) in libs and any(p.name == "libc.so.6" for p in libs)
    assert libraries_for(Path("/bin/busybox")) == []
    with pytest.raises(InfraError, match="No such file"):
        libraries_for(tmp_path / "absent")


# ---- host key ------------------------------------------------------------------------

@needs_host_tools
def test_generate_host_key(tmp_path):
    key, public = generate_host_key(tmp_path / "work")
    assert public.startswith("ssh-ed25519 AAAA") and len(public.split()) == 2
    assert list((tmp_path / "work").iterdir()) == []  # the private key is not left on disk
    keyfile = tmp_path / "k"
    keyfile.write_bytes(key)
    shown = subprocess.run(["dropbearkey", "-y", "-f", str(keyfile)], capture_output=True, text=True, check=True)
    assert public in shown.stdout
    assert host_key_public_line(key) == public
    assert generate_host_key(tmp_path / "work")[0] != key


@pytest.mark.parametrize("key", [b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n", b"", b"\0\0\0\x0bssh-ed25519"])
def test_host_key_public_line_refuses_other_formats(key):
    with pytest.raises(ConfigError, match="dropbear-format ed25519"):
        host_key_public_line(key)


# ---- /init ----------------------------------------------------------------------------

def test_init_script_content():
    script = init_script("snp-target", "SNP-HARNESS-READY")
    assert script.startswith("#!/bin/sh\n")
    assert 'echo "SNP-HARNESS-READY uptime=$(up)" >/dev/console' in script
    dropbear = next(line for line in script.splitlines() if line.startswith("/usr/sbin/dropbear "))
    assert dropbear.split()[1:10] == ["-F", "-E", "-s", "-p", "22", "-r", HOST_KEY_PATH, "-P", "/run/dropbear.pid"]
    assert "-R" not in dropbear.split()
    for fs, where in [("proc", "/proc"), ("sysfs", "/sys"), ("devpts", "/dev/pts"), ("tmpfs", "/tmp"),
                      ("tmpfs", "/run"), ("debugfs", "/sys/kernel/debug"), ("tracefs", "/sys/kernel/tracing")]:
        assert f"try_mount {fs} {where} " in script
    assert "mount -t devtmpfs" in script and "mdev -s" in script
    assert "ip addr add 10.0.2.15/24 dev eth0" in script and "via 10.0.2.2" in script
    assert "[ -e /sys/class/net/eth0 ]" in script
    assert "say \"userspace reached at uptime $(up)\"" in script
    assert script.rstrip().endswith("while :; do sleep 3600; done")
    assert "\nhostname snp-target " in script


@pytest.mark.parametrize("shell", [["dash", "-n"], ["/bin/busybox", "sh", "-n"]])
def test_init_script_parses(tmp_path, shell):
    if not shutil.which(shell[0]):
        pytest.skip(f"no {shell[0]}")
    path = tmp_path / "init"
    path.write_text(init_script("host-1.lab", "READY_2"))
    r = subprocess.run([*shell, str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("hostname, marker", [("a b", "M"), ("x;reboot", "M"), ("h", "M $(x)"), ("h", ""),
                                              ("-h", "M")])
def test_init_script_refuses_unsafe_words(hostname, marker):
    with pytest.raises(ConfigError):
        init_script(hostname, marker)


# ---- a whole image ------------------------------------------------------------------------

PLAIN_C = '#include <stdio.h>\nint main(int c, char **v) { printf("%s ok %d\\n", v[0], c); return 0; }\n'
LIBM_C = ('#include <stdio.h>\n#include <math.h>\n'
          'int main(int c, char **v) { printf("%s ok %d\\n", v[0], (int)sqrt(c * 16.0)); return 0; }\n')


def fake_selftests(workdir: Path) -> Path:
    """A bundle shaped like selftests_build's: manifest.json plus two small programs, one under guests/."""
    programs = {"hello_test": (PLAIN_C, []), "guests/x": (LIBM_C, ["-lm"])}  # x also needs libm
    tarball = workdir / "selftests.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        manifest = json.dumps({"format": 1, "files": sorted(programs)}).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size, info.mode = len(manifest), 0o644
        tar.addfile(info, io.BytesIO(manifest))
        for name, (code, libs) in programs.items():
            src, binary = workdir / (name.replace("/", "_") + ".c"), workdir / name.replace("/", "_")
            src.write_text(code)
            subprocess.run(["gcc", "-O1", "-o", str(binary), str(src), *libs], check=True)
            info = tar.gettarinfo(str(binary), arcname=name)
            info.mode = 0o755
            with open(binary, "rb") as f:
                tar.addfile(info, f)
    return tarball


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    if not all(os.access(t, os.X_OK) for t in HOST_TOOLS) or not shutil.which("gcc"):
        pytest.skip("needs busybox-static, dropbear-bin, openssh-sftp-server and gcc (ci/bootstrap)")
    work = tmp_path_factory.mktemp("initramfs")
    key, public = generate_host_key(work)
    extra = tuple(p for p in (Path("/usr/sbin/kexec"),) if p.is_file())
    spec = InitramfsSpec(authorized_keys=CLIENT_KEY, host_key=key, selftests_tar=fake_selftests(work),
                         extra_binaries=extra, extra_files={"/boot/bzImage": b"not really a kernel"})
    info = build_initramfs(spec, work / "out" / "initramfs.cpio.gz")
    blob = gzip.decompress(info.path.read_bytes())
    return spec, info, blob, read_newc(blob)


@needs_cpio
def test_image_listing_with_gnu_cpio(image):
    spec, info, blob, _ = image
    listing = set(subprocess.run(["cpio", "-it", "--quiet"], input=blob, capture_output=True, check=True)
                  .stdout.decode().split())
    expected = {"init", "bin/busybox", "bin/sh", "bin/mount", "bin/ip", "usr/sbin/dropbear", "usr/lib/sftp-server",
                "lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6",
                "lib/x86_64-linux-gnu/libtomcrypt.so.1", "lib/x86_64-linux-gnu/libm.so.6",
                "selftests/hello_test", "selftests/guests/x", "selftests/manifest.json",
                "root/.ssh/authorized_keys", "etc/dropbear/dropbear_ed25519_host_key", "etc/passwd", "etc/group",
                "etc/shadow", "etc/shells", "dev/console", "dev/null", "boot/bzImage", "proc", "sys", "tmp", "run",
                *(str(p).lstrip("/") for p in spec.extra_binaries)}
    assert expected <= listing, expected - listing


def test_image_modes_and_contents(image):
    spec, info, _, entries = image
    e = by_name(entries)
    assert e["init"].mode == stat.S_IFREG | 0o755
    script = e["init"].data.decode()
    assert "SNP-HARNESS-READY uptime=" in script and f"-r {HOST_KEY_PATH}" in script and " -R " not in script
    assert (e["root"].mode, e["root/.ssh"].mode) == (stat.S_IFDIR | 0o700, stat.S_IFDIR | 0o700)
    assert e["root/.ssh/authorized_keys"].mode == stat.S_IFREG | 0o600
    assert e["root/.ssh/authorized_keys"].data == CLIENT_KEY.encode() + b"\n"
    key = e[HOST_KEY_PATH.lstrip("/")]
    assert (key.mode, key.data) == (stat.S_IFREG | 0o600, spec.host_key)
    assert e["etc/passwd"].data == b"root:x:0:0:root:/root:/bin/sh\n"
    assert e["etc/shadow"].data.startswith(b"root:*:") and e["etc/shadow"].mode == stat.S_IFREG | 0o600
    assert e["etc/shells"].data == b"/bin/sh\n"
    assert (e["bin/sh"].mode, e["bin/sh"].data) == (stat.S_IFLNK | 0o777, b"busybox")
    assert e["bin/busybox"].data == Path("/bin/busybox").read_bytes()
    assert e["usr/lib/sftp-server"].data == Path("/usr/lib/openssh/sftp-server").read_bytes()
    assert e["usr/lib/sftp-server"].mode & 0o111
    assert e["lib64/ld-linux-x86-64.so.2"].mode & 0o111  # the kernel execs the loader
    assert e["selftests/guests/x"].mode == stat.S_IFREG | 0o755
    assert e["selftests/manifest.json"].mode == stat.S_IFREG | 0o644
    assert json.loads(e["selftests/manifest.json"].data)["files"] == ["guests/x", "hello_test"]
    assert e["dev/console"].rdev == (5, 1) and e["boot/bzImage"].data == b"not really a kernel"
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split()
    assert all(f"bin/{a}" in e for a in applets)
    names = [x.name for x in entries]
    assert len(names) == len(set(names)), "an entry was written twice"


def test_image_info(image):
    _, info, blob, entries = image
    data = info.path.read_bytes()
    assert (info.size, info.uncompressed_size) == (len(data), len(blob))
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.files == sum(1 for x in entries if stat.S_ISREG(x.mode))
    assert info.entries == len(entries) - 1
    assert "/lib64/ld-linux-x86-64.so.2" in info.libraries and info.duration_s > 0  # measured, for the log
    assert [p.name for p in info.path.parent.iterdir()] == [info.path.name]  # no temporary files left


def test_image_is_reproducible(image, tmp_path):
    spec, info, _, _ = image
    assert build_initramfs(spec, tmp_path / "again.cpio.gz").sha256 == info.sha256


@pytest.mark.skipif(not is_root or not shutil.which("cpio"), reason="chroot needs root; extraction needs cpio")
def test_image_programs_run_from_their_own_libraries(image, tmp_path):
    """Unpacked and chrooted into, the image's programs find every library they need inside it."""
    _, _, blob, _ = image
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=blob, cwd=tmp_path, check=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}

    def chrooted(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["chroot", str(tmp_path), *argv], capture_output=True, text=True, env=env, timeout=30)

    assert chrooted("/selftests/guests/x").stdout == "/selftests/guests/x ok 4\n"
    assert chrooted("/selftests/hello_test", "a").stdout == "/selftests/hello_test ok 2\n"
    r = chrooted("/usr/sbin/dropbear", "-V")
    assert r.returncode == 0 and "Dropbear v" in r.stderr
    r = chrooted("/bin/sh", "-c", "ls /usr/lib/sftp-server && /usr/lib/sftp-server -h; true")
    assert "usage: sftp-server" in r.stderr
    assert chrooted("/bin/sh", "-n", "/init").returncode == 0


@pytest.mark.parametrize("change, message", [
    ({"host_key": b"-----BEGIN OPENSSH PRIVATE KEY-----\n"}, "dropbear-format"),
    ({"authorized_keys": "  \n"}, "authorized_keys is empty"),
    ({"extra_files": {"/etc/passwd": b"x"}}, "etc/passwd added twice"),
    ({"extra_files": {"../escape": b"x"}}, "unsafe"),
    ({"extra_binaries": (Path("/nonexistent/tool"),)}, "missing on this host: /nonexistent/tool"),
    ({"hostname": "two words"}, "hostname"),
])
def test_build_refuses(image, tmp_path, change, message):
    spec, *_ = image
    with pytest.raises(ConfigError, match=message):
        build_initramfs(replace(spec, selftests_tar=None, **change), tmp_path / "bad.cpio.gz")
    assert list(tmp_path.iterdir()) == []


def test_build_reports_a_broken_bundle(image, tmp_path):
    spec, *_ = image
    bad = tmp_path / "selftests.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(InfraError, match="cannot unpack selftests bundle"):
        build_initramfs(replace(spec, selftests_tar=bad), tmp_path / "out.cpio.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["selftests.tar.gz"]


# ---- the real bundle, when this machine has built one ---------------------------------------

def _real_bundle() -> Path | None:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "snp-harness" / "builds"
    found = sorted(cache.glob("*/selftests.tar.gz")) if cache.is_dir() else []
    return found[0] if found else None


REAL_BUNDLE = _real_bundle()  # read at import, before the autouse fixture isolates XDG_CACHE_HOME


@pytest.mark.slow
@pytest.mark.skipif(REAL_BUNDLE is None, reason="no selftests.tar.gz built on this machine yet")
def test_real_bundle(image, tmp_path):
    spec, *_ = image
    info = build_initramfs(replace(spec, selftests_tar=REAL_BUNDLE), tmp_path / "r.cpio.gz")
    entries = {e.name: e for e in read_newc(gzip.decompress(info.path.read_bytes()))}
    with tarfile.open(REAL_BUNDLE) as tar:
        files = [m for m in tar if m.isfile()]
        assert {f"selftests/{m.name}" for m in files} <= entries.keys()
        for m in files:  # every program and file of the bundle, byte for byte, runnable where it was
            e = entries[f"selftests/{m.name}"]
            assert e.data == tar.extractfile(m).read(), m.name
            assert bool(e.mode & 0o111) == bool(m.mode & 0o111), m.name
