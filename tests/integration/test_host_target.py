"""HostTarget: install, kexec, grub and recovery against a real sshd on 127.0.0.1, where the commands
that would take the machine down are shims; and the kexec path with a QEMU VM standing in for the
lab host (slow)."""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from harness.config import BootMethod, HostConfig
from harness.errors import BootError, BootTimeout, InfraError, TransportError
from harness.targets.host import HostTarget, bzimage_version, matches_version
from harness.targets.qemu import QemuConfig, QemuTarget
from harness.transport import boot_id
from harness.transport.hostkeys import KnownHosts, host_id

slow = pytest.mark.slow


@pytest.fixture
def qemu_host(kernel_build, tmp_path):
    """A VM with kexec-tools, kept alive across guest reboots so QMP can reset it; and its inventory entry."""
    vm = QemuTarget(tmp_path / "vm", QemuConfig(memory="2G", no_reboot=False))
    # util-linux's flock for the lease (busybox has none); it must survive a kexec into the same image.
    vm.install(kernel_build, extra_binaries=(Path(shutil.which("kexec")), Path(shutil.which("flock"))))
    vm.boot()
    host = HostConfig(
        name="qemu-host", address="127.0.0.1", port=vm.port, user="root",
        identity_file=vm.workdir / "id_ed25519", known_hosts=vm.workdir / "known_hosts", connect_timeout=5,
        power_cycle=(sys.executable, "-m", "harness.targets.qmp", str(vm.qmp_socket), "system_reset"),
        console=("tail", "-n", "0", "-F", str(vm.console_log)),
    )
    yield vm, host
    vm.close()


def cmdline(target) -> str:
    return target.transport.run(["cat", "/proc/cmdline"], timeout=30).stdout


@slow
def test_kexec_into_the_build(qemu_host, kernel_build, tmp_path):
    vm, host = qemu_host
    target = HostTarget(host, workdir=tmp_path / "host", boot_timeout_s=180,
                        cmdline_extra=("snp_harness_marker=42",))
    target.install(kernel_build, initrd=vm.workdir / "initramfs.cpio.gz")
    before = boot_id(target.transport)
    target.boot()
    assert boot_id(target.transport) != before
    assert "snp_harness_marker=42" in cmdline(target)
    version = target.transport.run(["cat", "/proc/version"], timeout=30).stdout
    assert matches_version(bzimage_version(kernel_build.bzimage.read_bytes()), version)
    assert "kexec_core: Starting new kernel" in target.console_log.read_text(errors="replace")
    target.close()


@slow
def test_dead_kernel_times_out_power_cycles_and_breaks_the_target(qemu_host, kernel_build, tmp_path):
    vm, host = qemu_host
    target = HostTarget(host, workdir=tmp_path / "host", boot_timeout_s=25, recover_timeout_s=240,
                        cmdline_extra=("rdinit=/snp-harness-nothing", "init=/snp-harness-nothing", "panic=0"))
    target.install(kernel_build, initrd=vm.workdir / "initramfs.cpio.gz")
    before = boot_id(target.transport)
    with pytest.raises(BootTimeout) as e:
        target.boot()
    assert "Kernel panic" in e.value.console_tail  # the console command's log, kept in the run directory
    # The power cycle brought the host back on its default kernel.
    assert boot_id(target.transport) != before
    assert "snp-harness-nothing" not in cmdline(target)
    with pytest.raises(BootError, match="broken after an earlier failure"):
        target.boot()
    target.close()


@slow
def test_bzimage_version_and_proc_version_match_rules(kernel_build):
    v = bzimage_version(kernel_build.bzimage.read_bytes())
    assert v.startswith(kernel_build.metadata["kernel_release"] + " ") and "#" in v
    release, stamp = v.split()[0], v[v.index("#"):]
    assert matches_version(v, f"Linux version {release} (x@y) (gcc 12) {stamp}\n")
    assert not matches_version(v, f"Linux version {release}-other (x@y) (gcc 12) {stamp}\n")
    assert not matches_version(v, f"Linux version {release} (x@y) (gcc 12) #999 SMP\n")


@slow
def test_boot_cli_leases_installs_and_kexecs(qemu_host, kernel_build, kernel_cache, tmp_path, capsys):
    from harness import cli

    vm, host = qemu_host
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[harness]\ncache_dir = "{kernel_cache}"\n'
        f'[hosts.vmhost]\naddress = "127.0.0.1"\nport = {host.port}\nuser = "root"\n'
        f'identity_file = "{host.identity_file}"\nknown_hosts = "{host.known_hosts}"\nconnect_timeout = 5\n'
        f'[artifacts]\nroot = "{tmp_path / "runs"}"\n')
    before = boot_id(vm.transport)
    rc = cli.main(["--config", str(inventory), "boot", "vmhost", "--build", kernel_build.key])
    out = capsys.readouterr()
    assert rc == cli.EXIT_OK, out.err
    assert f"ssh://vmhost: running {kernel_build.metadata['kernel_release']} ({kernel_build.key})" in out.out
    vm.transport.close()
    assert boot_id(vm.transport) != before
    # The reboot ended the flock's channel; the lease was taken again in the new boot (a fresh /var/lock).
    holder = vm.transport.run(["cat", "/var/lock/snp-harness.lease"], timeout=30).stdout
    assert "-boot-vmhost" in holder, holder


@slow
def test_boot_and_qemu_dry_runs_print_commands(tmp_path, capsys):
    from harness import cli

    inventory = tmp_path / "inv.toml"
    inventory.write_text('[hosts.epyc1]\naddress = "10.0.0.1"\n[hosts.epyc2]\naddress = "10.0.0.2"\n'
                         'stage_dir = "/srv/stage"\n')
    assert cli.main(["--config", str(inventory), "boot", "epyc1", "--dry-run"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "epyc1: kexec -l '/var/lib/snp-harness/stage/<key>/bzImage'" in out and "systemctl kexec" in out
    assert "mkdir" not in out and "sh var lib snp-harness stage '<key>'" in out  # the stage script's components
    assert cli.main(["--config", str(inventory), "boot", "epyc2", "--dry-run"]) == cli.EXIT_OK
    assert "epyc2: kexec -l '/srv/stage/<key>/bzImage'" in capsys.readouterr().out  # the host's stage_dir
    assert cli.main(["qemu", "--dry-run"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "restrict=on,hostfwd=tcp:127.0.0.1:" in out and "-accel " in out


# ---- against a real sshd, with shims for what would take this machine down -------------------------

VERSION = "6.12.0-snph (builder@lab) #7 SMP PREEMPT_DYNAMIC Thu Jan  1 00:00:00 UTC 2026"
CMDLINE = 'BOOT_IMAGE=/boot/vmlinuz-6.12.0 root=UUID=0b7e3a52 ro quiet dyndbg="file sev.c +p"\n'
# Each shim logs "name args" to $STATE/log; "booting" writes a new boot_id that the cat shim then shows,
# with the build's /proc/version: the host came back on the build.
_SHIMS = {
    "cat": """case "$1" in
/proc/sys/kernel/random/boot_id) [ -e "$STATE/booted" ] && exec /bin/cat "$STATE/booted" ;;
/proc/version) [ -e "$STATE/booted" ] && exec /bin/cat "$STATE/version" ;;
/proc/cmdline) exec /bin/cat "$STATE/cmdline" ;;
esac
exec /bin/cat "$@\"""",
    "kexec": 'log kexec "$@"; [ "$1" = -e ] && boot; exit 0',
    "systemctl": 'log systemctl "$@"; [ "$1" = kexec ] && boot; exit 0',
    "reboot": 'log reboot; boot; exit 0',
    "update-grub": ('if [ -e "$STATE/42_snp_harness" ]; then log update-grub with-entry; '
                    'sh "$STATE/42_snp_harness" > "$STATE/grub.cfg"; else log update-grub without-entry; fi'),
    "grub-reboot": 'log grub-reboot "$@"; grep -v "^next_entry=" "$STATE/grubenv" > "$STATE/env.new"; '
                   'echo "next_entry=$1" >> "$STATE/env.new"; mv "$STATE/env.new" "$STATE/grubenv"',
    "grub-editenv": """log grub-editenv "$@"
case "$2" in
list) exec /bin/cat "$STATE/grubenv" ;;
unset) grep -v "^$3=" "$STATE/grubenv" > "$STATE/env.new" ;;
set) { grep -v "^${3%%=*}=" "$STATE/grubenv"; echo "$3"; } > "$STATE/env.new" ;;
esac
mv "$STATE/env.new" "$STATE/grubenv\"""",
    # Modules go to /: only logged here.
    "tar": 'for a do [ "$prev" = -C ] && [ "$a" = / ] && { log tar-into-root "$@"; exit 0; }; prev=$a; done\n'
           'exec /bin/tar "$@"',
}
_PRELUDE = """#!/bin/sh
STATE={state}
log() {{ echo "$*" >> "$STATE/log"; }}
boot() {{  # unless the new kernel is dead; grub clears a one-shot next_entry when it boots it
	[ -e "$STATE/dead" ] && return
	/bin/cat /proc/sys/kernel/random/uuid > "$STATE/booted"
	grep -v "^next_entry=" "$STATE/grubenv" > "$STATE/env.new"; mv "$STATE/env.new" "$STATE/grubenv"
}}
"""
DANGEROUS = ("kexec", "systemctl", "reboot", "update-grub", "grub-reboot", "grub-editenv", "tar")


class Shimmed:
    """The target's own SSH transport, with the shims first on PATH; after_run(argv) runs after each command."""

    def __init__(self, inner, bin_dir: Path) -> None:
        self.inner, self.name, self.bin_dir = inner, inner.name, bin_dir
        self.after_run = None

    def _argv(self, argv):
        return ["env", f"PATH={self.bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", *argv]

    def run(self, argv, **kwargs):
        r = self.inner.run(self._argv(argv), **kwargs)
        if self.after_run is not None:
            self.after_run(list(argv))
        return r

    def spawn(self, argv):
        return self.inner.spawn(self._argv(argv))

    def put(self, local, remote):
        self.inner.put(local, remote)

    def get(self, remote, local):
        self.inner.get(remote, local)

    def close(self):
        self.inner.close()


class FakeBuild:
    def __init__(self, root: Path, key: str = "0123abcd") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.bzimage = root / "bzImage"
        data = bytearray(0x400)
        data[0x202:0x206] = b"HdrS"
        data[0x20E:0x210] = (0x100).to_bytes(2, "little")  # the version at 0x300
        data[0x300:0x300 + len(VERSION) + 1] = VERSION.encode() + b"\0"
        self.bzimage.write_bytes(bytes(data))
        self.initrd = root / "initrd.cpio.gz"
        self.initrd.write_bytes(b"an initramfs with a private key in it")
        self.selftests = root / "selftests.tar.gz"
        self.modules = root / "modules.tar.gz"
        for tarball, name in ((self.selftests, "kvm_probe"), (self.modules, "lib/modules/6.12.0-snph/x.ko")):
            src = root / "member"
            src.write_text("#!/bin/sh\necho probe\n")
            with tarfile.open(tarball, "w:gz") as tar:
                info = tar.gettarinfo(str(src), arcname=name)
                info.uid, info.gid, info.mode = 4242, 4242, 0o755  # someone else's, as a build user's
                with open(src, "rb") as f:
                    tar.addfile(info, f)


@pytest.fixture
def lab(sshd, tmp_path):
    """(make_target, state dir, build): HostTargets on the loopback sshd whose reboot, kexec and grub are shims."""
    state, bin_dir = tmp_path / "state", tmp_path / "bin"
    state.mkdir()
    bin_dir.mkdir()
    (state / "cmdline").write_text(CMDLINE)
    (state / "version").write_text(f"Linux version {VERSION}\n")
    (state / "grubenv").write_text("saved_entry=0\n")
    (state / "log").write_text("")
    for name, body in _SHIMS.items():
        shim = bin_dir / name
        shim.write_text(_PRELUDE.format(state=state) + body + "\n")
        shim.chmod(0o755)
    known = tmp_path / "known_hosts"
    KnownHosts(known).add(host_id("127.0.0.1", sshd.port), sshd.public_host_key())
    targets = []

    def make(boot_method=BootMethod.KEXEC, power_cycle=(), console=(), **kwargs) -> HostTarget:
        host = HostConfig(name="loop", address="127.0.0.1", port=sshd.port, user=sshd.user,
                          identity_file=sshd.client_key, known_hosts=known, connect_timeout=10,
                          boot_method=boot_method, power_cycle=tuple(power_cycle), console=tuple(console))
        kwargs.setdefault("stage_root", str(tmp_path / "var" / "lib" / "snp-harness"))
        target = HostTarget(host, workdir=tmp_path / "run", **kwargs)
        target.transport = Shimmed(target.transport, bin_dir)
        target.grub_script = str(state / "42_snp_harness")
        # Never the real thing on this machine.
        found = target.transport.run(["sh", "-c", 'for c do command -v "$c"; done', "sh", *DANGEROUS],
                                     timeout=30).stdout.split()
        assert found == [str(bin_dir / cmd) for cmd in DANGEROUS], found
        targets.append(target)
        return target

    yield make, state, FakeBuild(tmp_path / "build")
    for t in targets:
        t.close()


def log_lines(state: Path) -> list[str]:
    return (state / "log").read_text().splitlines()


def mode(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


def test_install_stages_in_a_directory_only_we_can_write(lab, tmp_path):
    make, state, build = lab
    target = make()
    target.install(build, initrd=build.initrd)
    stage = tmp_path / "var" / "lib" / "snp-harness"
    where = stage / build.key
    assert mode(tmp_path / "var") == mode(tmp_path / "var" / "lib") == mode(stage) == 0o700
    assert mode(where) == 0o700 and (where / "initrd").read_bytes() == build.initrd.read_bytes()
    selftests = where / "selftests"
    assert target.selftests_dir == str(selftests) and mode(selftests) == 0o700
    assert (selftests / "kvm_probe").stat().st_uid == os.getuid()  # not the tarball's 4242
    assert any(line.startswith("tar-into-root -x -o ") for line in log_lines(state))  # modules: never their uids


def _world_writable_parent(base: Path) -> str:
    (base / "shared").mkdir(mode=0o777)
    (base / "shared").chmod(0o777)
    return str(base / "shared" / "stage")


def _premade_open_dir(base: Path) -> str:
    (base / "stage" / "0123abcd").mkdir(parents=True)
    (base / "stage" / "0123abcd").chmod(0o777)
    return str(base / "stage")


def _symlinked_dir(base: Path) -> str:
    (base / "stage").mkdir()
    (base / "elsewhere").mkdir(mode=0o700)
    (base / "stage" / "0123abcd").symlink_to(base / "elsewhere")
    return str(base / "stage")


def _symlinked_parent(base: Path) -> str:
    (base / "real").mkdir(mode=0o700)
    (base / "link").symlink_to(base / "real")
    return str(base / "link" / "stage")


def _others_dir(base: Path) -> str:
    (base / "stage" / "0123abcd").mkdir(parents=True, mode=0o700)
    os.chown(base / "stage" / "0123abcd", 65534, 65534)
    return str(base / "stage")


def _others_parent(base: Path) -> str:
    (base / "theirs").mkdir(mode=0o755)
    os.chown(base / "theirs", 65534, 65534)
    return str(base / "theirs" / "stage")


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")


@pytest.mark.parametrize("make_root, problem", [
    (_world_writable_parent, "/shared is writable by group or others (mode 777): chmod go-w it"),
    (_premade_open_dir, "/stage/0123abcd is writable by group or others (mode 777): remove it"),
    (_symlinked_dir, "/stage/0123abcd is a symbolic link, not a directory: remove it"),
    (_symlinked_parent, "/link is a symbolic link, not a directory"),
    pytest.param(_others_dir, "/stage/0123abcd belongs to uid 65534, not to uid 0 who runs the harness",
                 marks=root_only),
    pytest.param(_others_parent, "/theirs belongs to uid 65534", marks=root_only),
], ids=["world-writable-parent", "premade-0777", "symlink", "symlinked-parent", "not-ours", "parent-not-ours"])
def test_staging_refuses_a_directory_others_could_have_made(lab, tmp_path, make_root, problem):
    make, state, build = lab
    base = tmp_path / "roots"
    base.mkdir(mode=0o700)
    stage_root = make_root(base)
    target = make(stage_root=stage_root)
    with pytest.raises(InfraError) as e:
        target.install(build)
    msg = str(e.value)
    assert msg.startswith(f"ssh://loop: snp-harness: will not stage files in {stage_root}/0123abcd: {base}")
    assert problem in msg
    assert not target.selftests_dir and not list(Path(stage_root).parent.rglob("bzImage"))


def test_a_sticky_parent_like_tmp_is_fine_below_it_all_must_be_ours(lab, tmp_path):
    make, state, build = lab
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    target = make(stage_root=str(sticky / "stage"))
    target.install(build)
    assert mode(sticky / "stage" / build.key) == 0o700


@pytest.mark.parametrize("name", ["modules.tar.gz", "selftests.tar.gz"])
def test_a_tarball_changed_after_its_upload_check_is_not_unpacked(lab, tmp_path, name):
    make, state, build = lab
    target = make()
    staged = tmp_path / "var" / "lib" / "snp-harness" / build.key / name
    checks = []

    def tamper(argv):  # right after the upload check, someone on the host swaps the file
        if argv[0] == "sha256sum":
            checks.append(argv)
            if len(checks) == 1:
                staged.write_bytes(staged.read_bytes() + b"swapped")

    target.transport.after_run = tamper
    with pytest.raises(TransportError, match=f"{staged} was modified on the host since upload"):
        target.install(build)
    unpacked_modules = any(line.startswith("tar-into-root") for line in log_lines(state))
    assert unpacked_modules == (name == "selftests.tar.gz")  # modules come first
    assert not (staged.parent / "selftests" / "kvm_probe").exists()


def test_kexec_boot_verifies_again_and_passes_the_kernel_its_own_quoting(lab, tmp_path):
    make, state, build = lab
    target = make(cmdline_extra=("snp_harness_marker=a b",))
    target.install(build, initrd=build.initrd)
    target.boot()
    loads = [line for line in log_lines(state) if line.startswith("kexec -l")]
    assert len(loads) == 1
    assert 'root=UUID=0b7e3a52 ro quiet dyndbg="file sev.c +p" snp_harness_marker="a b"' in loads[0]
    # A boot of the build already staged checks it again: a changed initrd is never kexec'd.
    staged = tmp_path / "var" / "lib" / "snp-harness" / build.key / "initrd"
    staged.write_bytes(b"a different initramfs")
    with pytest.raises(BootError, match=f"{staged} was modified on the host since upload"):
        target.boot()
    assert len([line for line in log_lines(state) if line.startswith("kexec -l")]) == 1
    with pytest.raises(BootError, match="broken after an earlier failure"):
        target.boot()


def test_grub_entry_is_removed_once_the_host_is_back(lab):
    make, state, build = lab
    target = make(boot_method=BootMethod.GRUB, cmdline_extra=("dyndbg=file kvm.c +p",))
    target.install(build, initrd=build.initrd)
    target.boot()
    assert "linux '" in (state / "grub.cfg").read_text()
    assert "'dyndbg=file kvm.c +p'" in (state / "grub.cfg").read_text()
    grub = [line for line in log_lines(state) if line.startswith(("update-grub", "grub-reboot", "reboot"))]
    assert grub == ["update-grub with-entry", "grub-reboot snp-harness 0123abcd", "reboot",
                    "update-grub without-entry"]
    assert not (state / "42_snp_harness").exists()
    assert (state / "grubenv").read_text() == "saved_entry=0\n"


@pytest.mark.parametrize("prior", [None, "Debian GNU/Linux, with Linux 6.1.0-30-amd64"])
def test_a_failed_grub_boot_leaves_the_boot_configuration_as_found(lab, prior):
    make, state, build = lab
    if prior:
        (state / "grubenv").write_text(f"saved_entry=0\nnext_entry={prior}\n")
    before = (state / "grubenv").read_text()
    (state / "dead").touch()  # the reboot command does nothing: the host never goes down
    target = make(boot_method=BootMethod.GRUB, down_timeout_s=1)
    target.install(build)
    with pytest.raises(BootError, match="it did not reboot"):
        target.boot()
    assert not (state / "42_snp_harness").exists() and log_lines(state)[-3] == "update-grub without-entry"
    assert (state / "grubenv").read_text() == before  # next_entry: ours is gone, what was there is back


def _booting_power_cycle(state: Path) -> tuple[str, ...]:
    return ("sh", "-c", 'cat /proc/sys/kernel/random/uuid > "$1"', "sh", str(state / "booted"))


@pytest.mark.parametrize("power_cycle, kwargs, why", [
    (("/nonexistent/snp-harness-power",), {}, "power-cycle command /nonexistent/snp-harness-power could not run: "
                                               "No such file or directory"),
    (("sleep", "30"), {"power_cycle_timeout_s": 0.5}, "power-cycle command sleep 30 did not finish within 0.5s"),
    (("sh", "-c", "echo BMC says no >&2; exit 3"), {}, "exited 3: BMC says no"),
    (("true",), {"recover_timeout_s": 1}, "the host did not come back after the power cycle: ssh://loop: no SSH"),
    ((), {}, "no power_cycle command configured"),
], ids=["missing", "hangs", "fails", "host-stays-down", "none"])
def test_a_failed_recovery_is_reported_with_the_boot_timeout(lab, caplog, power_cycle, kwargs, why):
    make, state, build = lab
    (state / "dead").touch()  # the new kernel never comes up
    target = make(power_cycle=power_cycle, boot_timeout_s=1, **kwargs)
    target.install(build)
    with pytest.raises(BootTimeout) as e:
        target.boot()
    msg = str(e.value)
    assert msg.startswith("ssh://loop: no SSH with a new boot_id within 1s")
    assert "\nrecovery failed: " in msg and why in msg.partition("\nrecovery failed: ")[2]
    assert target.broken is e.value and why in caplog.text


def test_power_cycle_secrets_stay_out_of_errors_and_logs(lab, caplog):
    make, state, build = lab
    (state / "dead").touch()
    argv = ("/nonexistent/ipmitool", "-I", "lanplus", "-H", "bmc1", "-U", "admin", "-P", "hunter2-secret",
            "power", "cycle")
    target = make(power_cycle=argv, boot_timeout_s=1)
    target.install(build)
    with pytest.raises(BootTimeout) as e:
        target.boot()
    assert "power-cycle command /nonexistent/ipmitool -I lanplus -H bmc1 -U admin -P ******** power cycle " \
        "could not run" in str(e.value)
    assert "hunter2-secret" not in str(e.value) and "hunter2-secret" not in caplog.text


def test_a_console_command_that_cannot_start_does_not_hide_the_boot_timeout(lab):
    make, state, build = lab
    (state / "dead").touch()
    target = make(console=("/nonexistent/snp-harness-console", "bmc1"), power_cycle=_booting_power_cycle(state),
                  boot_timeout_s=1)
    target.install(build)
    with pytest.raises(BootTimeout) as e:
        target.boot()
    assert str(e.value).startswith("ssh://loop: no SSH with a new boot_id within 1s")
    assert "recovery failed" not in str(e.value) and target.broken is e.value  # the power cycle worked
    assert e.value.console_tail == ("(console command /nonexistent/snp-harness-console bmc1 could not start: "
                                    "No such file or directory)")
