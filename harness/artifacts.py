"""Run directories: everything a run produced, kept together and written as it arrives."""

from __future__ import annotations

import re
import time
from pathlib import Path

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
