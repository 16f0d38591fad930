"""Run directories: everything a run produced, kept together and written as it arrives,
and the disk they live on (a reserve set aside so a full disk still lets a run finish)."""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from pathlib import Path

from harness.errors import InfraError

log = logging.getLogger(__name__)

_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")


def new_run_dir(root: Path, label: str) -> Path:
    """A fresh `<root>/<utc>-<label>/` (a numeric suffix keeps two runs in one second apart)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{stamp}-{_LABEL.sub('-', label).strip('-') or 'run'}"
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        path = root / (name if n == 0 else f"{name}.{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run directory name under {root} for {name}")


# Set aside when a run starts and freed once its tests end, so that junit.xml, metadata.json
# and the summary still fit on a disk that filled up meanwhile.
RESERVE = ".disk-reserve"
RESERVE_BYTES = 8 << 20
_FREE_AT_END = ".disk-free-at-end"  # bytes free just before the reserve went, by whoever freed it
FULL_BELOW = 1 << 20  # less free than this when the tests ended: the disk was full
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# How an OSError of ours reads in a message (a selftest's own ENOSPC, a failure, is no sign)
_DISK_FULL_TEXT = tuple(f"[Errno {n}] {os.strerror(n)}" for n in _DISK_FULL)


class ArtifactDiskFull(InfraError):
    """The disk holding the run directory is full."""

    def __init__(self, run_dir: Path, detail: str = "") -> None:
        self.run_dir = Path(run_dir)
        super().__init__(
            f"artifact disk full at {self.run_dir}{f' ({detail})' if detail else ''}: what was written "
            "is kept there; free space on that disk (or point [artifacts] root at another) and run again")


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _DISK_FULL


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def hold_reserve(run_dir: Path) -> None:
    """Set RESERVE_BYTES aside in the run directory (ArtifactDiskFull when even that does not fit)."""
    path = Path(run_dir) / RESERVE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
    except OSError as e:
        path.unlink(missing_ok=True)
        if is_disk_full(e):
            raise ArtifactDiskFull(run_dir, f"not even {RESERVE_BYTES >> 20} MiB free when the run began") from e
        log.warning("%s: no disk reserve for this run: %s", path, e)  # a filesystem that can't: run without


def release_reserve(run_dir: Path) -> None:
    """Free the reserve (if held), noting how full the disk was just before."""
    path = Path(run_dir) / RESERVE
    try:
        if not path.exists():
            return
        free = free_bytes(run_dir)
        path.unlink()
        (Path(run_dir) / _FREE_AT_END).write_text(str(free))
    except OSError as e:  # never in the way of what the run still has to write
        log.warning("%s: %s", path, e)


def free_at_end(run_dir: Path) -> int | None:
    release_reserve(run_dir)  # the child died before it could
    marker = run_dir / _FREE_AT_END
    try:
        free = int(marker.read_text())
    except (OSError, ValueError):
        return None
    marker.unlink(missing_ok=True)
    return free


def says_disk_full(text: str) -> bool:
    """Whether a message carries one of our own disk-full OSErrors (a selftest's ENOSPC is no sign)."""
    return any(t in (text or "") for t in _DISK_FULL_TEXT)
