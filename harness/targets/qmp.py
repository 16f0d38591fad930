"""A minimal QMP client: enough to reset or power off a QEMU VM from outside.

Used as the power-cycle command of a QEMU VM that stands in for a lab host:
    python -m harness.targets.qmp /path/qmp.sock system_reset
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path


def qmp_command(sock_path: Path, command: str, timeout: float = 10.0) -> dict:
    """Run one QMP command; returns its `return` value, raises OSError/RuntimeError on failure."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        f = s.makefile("rwb")
        _read(f)  # greeting
        for cmd in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": cmd}).encode() + b"\n")
            f.flush()
            reply = _read(f)
            if "error" in reply:
                raise RuntimeError(f"QMP {cmd}: {reply['error']}")
        return reply.get("return", {})


def _read(f) -> dict:
    while True:  # skip asynchronous events until a reply or the greeting arrives
        line = f.readline()
        if not line:
            raise RuntimeError("QMP socket closed")
        msg = json.loads(line)
        if "event" not in msg:
            return msg


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m harness.targets.qmp SOCKET COMMAND", file=sys.stderr)
        return 2
    try:
        qmp_command(Path(args[0]), args[1])
    except (OSError, RuntimeError, ValueError) as e:
        print(f"qmp {args[1]} via {args[0]} failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
