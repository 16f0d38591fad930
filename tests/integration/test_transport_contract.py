"""One contract, every transport: LocalTransport and SshTransport to a real sshd."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from harness.errors import CommandFailed, CommandTimeout
from harness.transport.local import LocalTransport


@pytest.fixture(params=["local", "ssh"])
def transport(request):
    if request.param == "local":
        return LocalTransport()
    return request.getfixturevalue("ssh_transport")


INJECTIONS = [
    "; touch {canary}",
    "$(touch {canary})",
    "`touch {canary}`",
    "a\nb; touch {canary}\n",
    "'; touch {canary}; '",
    '"; touch {canary}; "',
    "* ? [a] ~ {{a,b}} | & > {canary}",
    "ünïcødé ✓ 日本",
    "",
]


@pytest.mark.parametrize("text", INJECTIONS, ids=range(len(INJECTIONS)))
def test_arguments_reach_the_program_literally(transport, tmp_path, text):
    canary = tmp_path / "canary"
    arg = text.format(canary=canary)
    r = transport.run(["printf", "%s", arg], timeout=30)
    assert r.stdout == arg
    assert not canary.exists()


def test_missing_command_is_127(transport):
    r = transport.run(["/nonexistent/snp-harness-cmd"], timeout=30, check=False)
    assert r.exit_status == 127
    with pytest.raises(CommandFailed) as e:
        transport.run(["/nonexistent/snp-harness-cmd"], timeout=30)
    assert e.value.result.exit_status == 127
    assert "exited 127" in str(e.value)


def test_stderr_is_kept_apart(transport):
    r = transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=30, check=False)
    assert (r.exit_status, r.stdout) == (3, "out\n")
    assert r.stderr.endswith("err\n") and "out" not in r.stderr


def test_failure_message_carries_the_output_tail(transport):
    with pytest.raises(CommandFailed) as e:
        transport.run(["sh", "-c", "for i in $(seq 1 30); do echo line$i; done; exit 2"], timeout=30)
    msg = str(e.value)
    assert "line30" in msg and "line20" not in msg  # a 10-line tail, not the whole output


def test_large_output_on_both_streams_does_not_deadlock(transport):
    size = 9 * 1024 * 1024
    script = f"head -c {size} /dev/zero | tr '\\0' e >&2; head -c {size} /dev/zero | tr '\\0' o"
    r = transport.run(["sh", "-c", script], timeout=120)
    assert len(r.stdout) == size and set(r.stdout) == {"o"}
    assert r.stderr.count("e") == size


def test_stdin_and_env(transport):
    r = transport.run(["cat"], timeout=30, stdin="hello\nworld")
    assert r.stdout == "hello\nworld"
    value = "a b; $(id) `id` 'q'"
    r = transport.run(["sh", "-c", 'printf %s "$SNP_VALUE"'], timeout=30, env={"SNP_VALUE": value})
    assert r.stdout == value
    with pytest.raises(ValueError):
        transport.run(["true"], timeout=30, env={"BAD NAME": "x"})


def test_shell_strings_are_refused(transport):
    with pytest.raises(TypeError):
        transport.run("echo hi", timeout=30)


def test_sink_sees_output_as_it_arrives(transport):
    seen: list[tuple[str, bytes, float]] = []
    start = time.monotonic()
    r = transport.run(["sh", "-c", "echo first; sleep 1; echo second >&2"], timeout=30,
                      sink=lambda stream, chunk: seen.append((stream, chunk, time.monotonic() - start)))
    assert r.stdout == "first\n"
    first = [t for s, c, t in seen if s == "stdout" and b"first" in c]
    second = [t for s, c, t in seen if s == "stderr" and b"second" in c]
    assert first and second and first[0] < second[0] - 0.5


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_timeout_ends_the_process_and_its_children(transport, tmp_path):
    pids, done = tmp_path / "pids", tmp_path / "done"
    script = f'sleep 300 & echo $! > {pids}; echo $$ >> {pids}; echo started; wait; echo waited > {done}'
    with pytest.raises(CommandTimeout) as e:
        transport.run(["sh", "-c", script], timeout=2)
    # run() returned by ending the command, not by waiting it out (pytest-timeout guards a hang).
    assert not done.exists(), "run() returned only after the command finished by itself"
    assert "started" in e.value.result.stdout
    assert "timed out after 2s" in str(e.value)
    numbers = [int(p) for p in pids.read_text().split()]
    assert len(numbers) == 2
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in numbers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in numbers if _alive(p)], "timed-out command left processes running"
    # The transport is still usable afterwards.
    assert transport.run(["echo", "ok"], timeout=30).stdout == "ok\n"


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024 + 7, 50 * 1024 * 1024], ids=["empty", "1B", "1M", "50M"])
def test_put_and_get_keep_every_byte(transport, tmp_path, size):
    src = tmp_path / "src.bin"
    with open(src, "wb") as f:
        f.write(os.urandom(size))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    remote = str(tmp_path / "remote.bin")
    transport.put(src, remote)
    r = transport.run(["sha256sum", remote], timeout=60)
    assert r.stdout.split()[0] == digest
    back = tmp_path / "back.bin"
    transport.get(remote, back)
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest


def test_boot_id_is_the_kernels(transport):
    from harness.transport import boot_id

    first = boot_id(transport)
    assert first == Path("/proc/sys/kernel/random/boot_id").read_text().strip()  # both reach this machine
    assert boot_id(transport) == first
