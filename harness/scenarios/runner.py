"""Run one selftest on a target: exit code, KTAP and assertion block -> a SelftestResult.

Exit codes follow kselftest: 0 pass, 4 (KSFT_SKIP) skip with the test's own
reason, anything else fail. A timeout is its own status. The raw output is
written to the run directory as it arrives, so nothing is lost on a hang.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Sequence

from harness.errors import CommandTimeout, InfraError
from harness.scenarios.ktap import AssertionFailure, TestNode, parse_assertion, parse_ktap, skip_reason
from harness.scenarios.ktap import Status as KtapStatus
from harness.transport.base import Transport

KSFT_SKIP = 4
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


class SelftestStatus(Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class SelftestResult:
    argv: tuple[str, ...]
    status: SelftestStatus
    exit_status: int | None  # None after a timeout
    stdout: str
    stderr: str
    duration_s: float
    reason: str  # the skip reason, or why it failed
    ktap: TestNode | None
    assertion: AssertionFailure | None
    log_path: Path | None

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def log_name(binary: str, args: Sequence[str]) -> str:
    """A file name for one invocation: x86_64/private_mem_conversions_test -s shmem -> x86_64_private..._-s_shmem."""
    return _SLUG.sub("_", " ".join([binary, *args])).strip("_") + ".log"


def run_selftest(transport: Transport, selftests_dir: str, binary: str, args: Sequence[str] = (), *,
                 timeout: float, log_dir: Path | None = None) -> SelftestResult:
    argv = (f"{selftests_dir.rstrip('/')}/{binary}", *args)
    log_path = log_dir / log_name(binary, args) if log_dir else None
    log = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "wb", buffering=0)  # noqa: SIM115 - closed in finally
        log.write(f"$ {shlex.join(argv)}\n".encode())
    try:
        def sink(_stream: str, chunk: bytes) -> None:
            if log is not None:
                log.write(chunk)

        try:
            r = transport.run(list(argv), timeout=timeout, check=False, sink=sink if log else None)
        except CommandTimeout as e:
            tail = e.result.tail()
            return SelftestResult(argv, SelftestStatus.TIMEOUT, None, e.result.stdout, e.result.stderr,
                                  e.result.duration_s, f"timed out after {timeout:g}s and was killed\n{tail}",
                                  None, None, log_path)
    finally:
        if log is not None:
            log.close()
    if r.exit_status in (126, 127):  # the bundle, not the kernel, is wrong
        raise InfraError(f"{transport.name}: cannot run {argv[0]} (exit {r.exit_status}): {r.stderr.strip()}; "
                         "is it in the build's selftests bundle?")
    return classify(argv, r.exit_status, r.stdout, r.stderr, r.duration_s, log_path)


def classify(argv, exit_status: int, stdout: str, stderr: str, duration_s: float,
             log_path: Path | None = None) -> SelftestResult:
    """The verdict from exit status and output (pure)."""
    lines = (stdout + "\n" + stderr).splitlines()
    ktap = parse_ktap(stdout.splitlines())
    has_ktap = ktap.status != KtapStatus.NO_TESTS
    assertion = parse_assertion(lines)
    if exit_status == KSFT_SKIP:
        status, reason = SelftestStatus.SKIP, skip_reason(lines) or "exit 4 (KSFT_SKIP) without a reason"
    elif exit_status == 0 and not (has_ktap and ktap.counts.failed + ktap.counts.crashed):
        status, reason = SelftestStatus.PASS, ""
    else:
        status = SelftestStatus.FAIL
        if assertion is not None:
            reason = str(assertion)
        elif exit_status == 0:
            reason = f"exit 0, but KTAP reports {ktap.counts.failed} failed, {ktap.counts.crashed} crashed"
        else:
            tail = "\n".join(line for line in lines if line.strip())
            reason = f"exit {exit_status}" + (" (killed by a signal)" if exit_status < 0 else "")
            reason += ("\n" + "\n".join(tail.splitlines()[-10:])) if tail else ""
    return SelftestResult(tuple(argv), status, exit_status, stdout, stderr, duration_s, reason,
                          ktap if has_ktap else None, assertion, log_path)
