"""Per-command latency of SshTransport.run(["true"]) against two OpenSSH baselines.

A test run sends hundreds of small commands (cat a sysfs file, write a knob),
so what one round trip costs decides how long a suite takes. Three ways of
running `true` on the same loopback sshd are timed:

  harness        SshTransport.run(["true"]): one persistent paramiko
                 connection, a new session channel per command;
  controlmaster  `ssh ... true` multiplexed over an already-open OpenSSH
                 master (ControlMaster=auto, ControlPath, ControlPersist);
  fresh ssh      a new `ssh ... true` per command: TCP, key exchange and
                 authentication every time.

Goals: the harness takes at most 0.5x the ControlMaster median and is at least
30x faster than a fresh ssh.

Commands run as a temporary user whose login shell is /bin/sh: root's shell
here is bash, which sources .bashrc (and pyenv) under sshd and adds ~100 ms to
every command, drowning what the transports themselves cost. Creating that
user needs root. Everything the benchmark sets up (user, sshd, master,
temporary directory) is torn down again on exit, Ctrl-C or SIGTERM.

    PYTHONPATH=. python bench/ssh_latency.py [--runs 200]

The last line of stdout is one JSON object with the medians and ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError
from harness.testing.sshd import LoopbackSshd
from harness.transport.hostkeys import KnownHosts, host_id
from harness.transport.ssh import SshTransport

MAX_VS_CONTROLMASTER = 0.5  # harness median / ControlMaster median
MIN_SPEEDUP_VS_FRESH = 30.0  # fresh-ssh median / harness median
COMMAND_TIMEOUT_S = 30


def time_runs(label: str, call: Callable[[], None], runs: int, warmup: int, progress: bool = False) -> list[float]:
    """Milliseconds each of `runs` calls took, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for i in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
        if progress and (i + 1) % 25 == 0:
            print(f"  {label}: {i + 1}/{runs} (median so far {statistics.median(times):.1f} ms)",
                  file=sys.stderr, flush=True)
    return times


# -- the temporary user ------------------------------------------------------


USER_COMMENT = "snp-harness ssh_latency benchmark (temporary)"


def create_user(name: str, home: Path) -> pwd.struct_passwd:
    # -p '*': no usable password, but not the '!' that sshd (without PAM) reads as a locked account.
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", "-p", "*", "-c", USER_COMMENT, name],
                   check=True, stdout=subprocess.DEVNULL)
    user = pwd.getpwnam(name)
    home.mkdir(mode=0o700)
    os.chown(home, user.pw_uid, user.pw_gid)
    return user


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def remove_user(name: str) -> None:
    """userdel, if the user is ours; retried for a few seconds, as its last sshd session may still be exiting."""
    if not user_exists(name) or pwd.getpwnam(name).pw_gecos != USER_COMMENT:
        return  # useradd never got that far, or the user is not ours
    deadline = time.monotonic() + 5
    while True:
        r = subprocess.run(["userdel", name], capture_output=True, text=True)
        if r.returncode == 0:
            return
        if time.monotonic() > deadline:
            print(f"WARNING: could not remove temporary user {name}: {r.stderr.strip()}; "
                  f"remove it with `userdel {name}`", file=sys.stderr)
            return
        time.sleep(0.2)


def check_readable_as(user: pwd.struct_passwd, path: Path) -> None:
    """sshd opens AuthorizedKeysFile with the user's uid; make sure that user can read it."""
    r = subprocess.run(["test", "-r", str(path)], user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    if r.returncode != 0:
        raise RuntimeError(f"{path} is not readable by {user.pw_name}; sshd would refuse the key")


# -- the three ways of running `true` ------------------------------------------


def harness_transport(server: LoopbackSshd, workdir: Path) -> SshTransport:
    """An SshTransport with the server's host key already trusted (as conftest's enrolled_transport)."""
    known_hosts = workdir / "known_hosts"
    KnownHosts(known_hosts).add(host_id("127.0.0.1", server.port), server.public_host_key())
    return SshTransport("bench", "127.0.0.1", port=server.port, user=server.user,
                        identity_file=server.client_key, known_hosts=known_hosts, connect_timeout=10)


def ssh_true(argv: list[str]) -> Callable[[], None]:
    def call() -> None:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT_S)
    return call


def start_master(server: LoopbackSshd, control_path: Path, stack: contextlib.ExitStack) -> None:
    """An OpenSSH ControlMaster in the foreground (ControlPersist=no), so its PID is ours to end."""
    master = subprocess.Popen(server.ssh_argv("-M", "-N", "-o", f"ControlPath={control_path}",
                                              "-o", "ControlPersist=no"),
                              stdin=subprocess.DEVNULL, start_new_session=True)
    stack.callback(stop_master, server, master, control_path)
    deadline = time.monotonic() + 10
    while not control_path.exists():
        if master.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ssh ControlMaster did not come up (exit status {master.poll()})")
        time.sleep(0.02)


def stop_master(server: LoopbackSshd, master: subprocess.Popen, control_path: Path) -> None:
    # `-O exit` ends whichever master holds the socket (also one a client may have started
    # with ControlMaster=auto); the PID we hold is the fallback.
    subprocess.run(server.ssh_argv("-o", f"ControlPath={control_path}", "-O", "exit"),
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    try:
        master.wait(timeout=5)
    except subprocess.TimeoutExpired:
        master.kill()
        master.wait()


def measure(runs: int, warmup: int) -> dict[str, list[float]]:
    with contextlib.ExitStack() as stack:  # undone in reverse order, each step even if another fails
        workdir = Path(tempfile.mkdtemp(prefix="snp-ssh-latency-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        workdir.chmod(0o711)  # the temporary user may traverse it, not list it; private keys stay 0600

        name = f"snpbench{os.getpid()}"
        if user_exists(name):
            raise RuntimeError(f"user {name} already exists; remove it (userdel {name}) if a past run left it")
        stack.callback(remove_user, name)  # first: an interrupted useradd may have created it all the same
        user = create_user(name, workdir / "home")

        server = LoopbackSshd(workdir, user=name)
        stack.callback(server.stop)
        server.start()
        authorized = workdir / "authorized_keys"  # written 0600 root by LoopbackSshd.start
        os.chown(authorized, user.pw_uid, user.pw_gid)
        check_readable_as(user, authorized)
        print(f"sshd on 127.0.0.1:{server.port}, user {name} (/bin/sh), "
              f"{runs} timed runs after {warmup} warm-up runs each", file=sys.stderr)

        times = {}
        transport = harness_transport(server, workdir)
        stack.callback(transport.close)
        print("harness ...", file=sys.stderr, flush=True)
        times["harness"] = time_runs("harness", lambda: transport.run(["true"], timeout=COMMAND_TIMEOUT_S),
                                     runs, warmup)
        transport.close()

        control_path = workdir / "cm.sock"
        start_master(server, control_path, stack)
        mux = ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_path}", "-o", "ControlPersist=60"]
        print("controlmaster ...", file=sys.stderr, flush=True)
        times["controlmaster"] = time_runs("controlmaster", ssh_true([*server.ssh_argv(*mux), "true"]), runs, warmup)

        print("fresh ssh (slow) ...", file=sys.stderr, flush=True)
        times["fresh ssh"] = time_runs("fresh ssh", ssh_true([*server.ssh_argv("-o", "ControlMaster=no"), "true"]),
                                       runs, warmup, progress=True)
        return times


# -- report --------------------------------------------------------------------


def summary(ms: list[float]) -> tuple[float, float, float]:
    """(median, p10, p90) in milliseconds."""
    deciles = statistics.quantiles(ms, n=10, method="inclusive")
    return statistics.median(ms), deciles[0], deciles[-1]


def report(times: dict[str, list[float]], runs: int) -> dict:
    print(f"{'method':<14} {'median':>9} {'p10':>9} {'p90':>9}   (ms, {runs} runs of `true`)")
    for label, ms in times.items():
        med, p10, p90 = summary(ms)
        print(f"{label:<14} {med:9.2f} {p10:9.2f} {p90:9.2f}")
    harness, cm, fresh = (statistics.median(times[k]) for k in ("harness", "controlmaster", "fresh ssh"))
    vs_cm, speedup = harness / cm, fresh / harness
    cm_ok, fresh_ok = vs_cm <= MAX_VS_CONTROLMASTER, speedup >= MIN_SPEEDUP_VS_FRESH
    print(f"harness / ControlMaster = {vs_cm:.2f}x (goal <= {MAX_VS_CONTROLMASTER}x): "
          f"{'met' if cm_ok else 'MISSED'}")
    print(f"fresh ssh / harness     = {speedup:.1f}x (goal >= {MIN_SPEEDUP_VS_FRESH:.0f}x): "
          f"{'met' if fresh_ok else 'MISSED'}")
    return {
        "bench": "ssh_latency",
        "vs_controlmaster": round(vs_cm, 3),
        "speedup_vs_fresh_ssh": round(speedup, 1),
        "harness_ms": round(harness, 2),
        "controlmaster_ms": round(cm, 2),
        "fresh_ssh_ms": round(fresh, 1),
        "runs": runs,
        "goals_met": cm_ok and fresh_ok,
    }


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM tears down like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per method (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs per method first (default 10)")
    args = parser.parse_args(argv)
    if args.runs < 2 or args.warmup < 0:
        parser.error("--runs must be at least 2 and --warmup at least 0")
    if os.geteuid() != 0:
        print("ssh_latency: must run as root: it creates (and removes) a temporary user with /bin/sh as "
              "login shell, so that root's bash start-up does not swamp the measurement", file=sys.stderr)
        return 2
    why = LoopbackSshd.available()
    if why:
        print(f"ssh_latency: {why}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    try:
        times = measure(args.runs, args.warmup)
    except KeyboardInterrupt:
        print("ssh_latency: interrupted; cleaned up", file=sys.stderr)
        return 130
    except (HarnessError, RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"ssh_latency: setup or a command failed (cleaned up): {e}", file=sys.stderr)
        return 3
    print(json.dumps(report(times, args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
