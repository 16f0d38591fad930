"""Turn command-line choices into targets: the one place that knows every kind."""

from __future__ import annotations

from pathlib import Path

from harness.config import HarnessConfig, HostConfig
from harness.errors import ConfigError
from harness.targets.base import Target

TARGET_KINDS = ("qemu", "local")  # where no --snp-host is given; the first is the default


def target_ids(config: HarnessConfig, hosts: list[str], kind: str | None, *, tags: list[str] = ()) -> list[str]:
    """The pytest ids of the targets a run uses, validated against the inventory.

    tags: every host carrying one of them joins the named hosts (in inventory order).
    """
    names = [config.host(h).name for h in hosts]
    for tag in tags:
        tagged = [h.name for h in config.hosts_with_tag(tag)]
        if not tagged:
            known = sorted({t for h in config.hosts.values() for t in h.tags})
            raise ConfigError(f"{config.path or 'the inventory'}: no host is tagged {tag!r} "
                              f"(tags in use: {', '.join(known) or 'none'})")
        names += tagged
    if names and kind:
        raise ConfigError("give either --snp-host/--snp-host-tag or --snp-target, not both")
    if names:
        return [f"ssh://{n}" for n in dict.fromkeys(names)]
    kind = kind or TARGET_KINDS[0]
    if kind not in TARGET_KINDS:
        raise ConfigError(f"unknown target kind {kind!r}; expected one of {', '.join(TARGET_KINDS)}")
    return [f"{kind}://"]


def open_target(config: HarnessConfig, target_id: str, *, trust_new_host_key: bool = False,
                workdir: Path | None = None, for_guests: bool = False, host: HostConfig | None = None) -> Target:
    """workdir: where a target keeps its files (console log, keys); needed for qemu.

    host: the inventory entry to use for an ssh:// id, when the caller changed it (labgrid's address).
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

        host = host or config.host(rest)
        if not host.address:
            raise ConfigError(f"host {host.name} has no address: it comes from its labgrid place "
                              f"{host.labgrid_place!r}, which only a leased run reserves "
                              "(pytest --snp-host, snp-harness boot); or set its address in the inventory")
        return HostTarget(host, trust_new_host_key=trust_new_host_key, workdir=workdir, stage_root=host.stage_dir,
                          power_cycle_timeout_s=host.power_cycle_timeout_s)
    if scheme == "local":
        from harness.targets.local import LocalTarget

        return LocalTarget()
    raise ConfigError(f"unknown target {target_id!r}")
