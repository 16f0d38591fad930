"""Turn command-line choices into targets: the one place that knows every kind."""

from __future__ import annotations

from pathlib import Path

from harness.config import HarnessConfig
from harness.errors import ConfigError
from harness.targets.base import Target

TARGET_KINDS = ("qemu", "local")  # where no --snp-host is given; the first is the default


def target_ids(config: HarnessConfig, hosts: list[str], kind: str | None) -> list[str]:
    """The pytest ids of the targets a run uses, validated against the inventory."""
    if hosts and kind:
        raise ConfigError("give either --snp-host or --snp-target, not both")
    if hosts:
        return [f"ssh://{config.host(h).name}" for h in dict.fromkeys(hosts)]
    kind = kind or TARGET_KINDS[0]
    if kind not in TARGET_KINDS:
        raise ConfigError(f"unknown target kind {kind!r}; expected one of {', '.join(TARGET_KINDS)}")
    return [f"{kind}://"]


def open_target(config: HarnessConfig, target_id: str, *, trust_new_host_key: bool = False,
                workdir: Path | None = None, for_guests: bool = False) -> Target:
    """workdir: where a target keeps its files (console log, keys); needed for qemu.

    for_guests: L2 guests will run on it. The QEMU target then carries QEMU and boots with
    one vCPU: with two, L2 guests deadlock under TCG's nested SVM (shared/notes/l2-guest-*).
    """
    scheme, _, rest = target_id.partition("://")
    if scheme == "qemu":
        from harness.targets.qemu import QemuConfig, QemuTarget

        if workdir is None:
            raise ConfigError("the qemu target needs a work directory")
        if for_guests:
            return QemuTarget(workdir, QemuConfig(cpus=1), hosts_guests=True)
        return QemuTarget(workdir)
    if scheme == "ssh":
        from harness.targets.host import HostTarget

        return HostTarget(config.host(rest), trust_new_host_key=trust_new_host_key, workdir=workdir)
    if scheme == "local":
        from harness.targets.local import LocalTarget

        return LocalTarget()
    raise ConfigError(f"unknown target {target_id!r}")
