"""A real host from the inventory, reached over SSH.

Installing and booting a built kernel on it comes with the targets work;
for now it is used with the kernel it is running.
"""

from __future__ import annotations

from harness.config import HostConfig
from harness.targets.base import ProbedTarget
from harness.transport.ssh import SshTransport


class HostTarget(ProbedTarget):
    def __init__(self, host: HostConfig, *, trust_new_host_key: bool = False) -> None:
        self.host = host
        self.transport = SshTransport.from_host(host, trust_new_host_key=trust_new_host_key)
        self.name = self.transport.name
