"""The machine the harness runs on, used as it is (no install, no reboot)."""

from __future__ import annotations

from harness.targets.base import ProbedTarget
from harness.transport.local import LocalTransport


class LocalTarget(ProbedTarget):
    def __init__(self) -> None:
        self.transport = LocalTransport()
        self.name = self.transport.name
