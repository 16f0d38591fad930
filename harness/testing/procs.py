"""The processes a fault test started, found wherever they ended up.

A process started with tagged_env(tag) hands the tag on to everything it starts: QEMU in
a session of its own, and orphans that init adopted, too. tagged_processes(tag) finds the
ones still running, so a test can say that its run left nothing behind.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, TypeVar

ENV = "SNP_HARNESS_TEST_TAG"
T = TypeVar("T")


def tagged_env(tag: str, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.pop("PYTEST_ADDOPTS", None)  # the outer session's options are not the child's
    env[ENV] = tag
    return env


def running(pid: int) -> bool:
    """True while pid is a live process (a zombie has ended: only its exit status is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment carries the tag (never this one)."""
    needle = f"{ENV}={tag}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes() + b"\0"
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in environ and running(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_until(predicate: Callable[[], T], *, timeout: float, what: str,
               alive: Callable[[], bool] = lambda: True) -> T:
    """Poll predicate until it returns something true, and return that.

    TimeoutError after `timeout` s; RuntimeError once `alive()` says the process that was
    to make it true has ended without doing so.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if not alive():
            value = predicate()  # it may have come true just before the end
            if value:
                return value
            raise RuntimeError(f"the process ended before {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f} s")
        time.sleep(0.05)
