"""A target held exclusively for a session: our flock lease, or a labgrid place reservation.

A local or QEMU target needs no lease. An inventory host gets one before any test
touches it; what happens when someone else holds it is the caller's choice
(wait up to a limit, or give up at once and let the caller skip the host).
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from harness.config import HarnessConfig
from harness.targets.base import Target
from harness.targets.select import open_target

log = logging.getLogger(__name__)


@contextmanager
def held_target(config: HarnessConfig, target_id: str, *, run_id: str, wait_s: int, workdir: Path | None,
                trust_new_host_key: bool = False, for_guests: bool = False) -> Iterator[Target]:
    """The opened target, leased while the block runs; closed (then released) afterwards.

    wait_s: how long to wait for a busy host; 0 raises LeaseError at once, naming the holder.
    """
    scheme, _, name = target_id.partition("://")
    host = config.host(name) if scheme == "ssh" else None
    with ExitStack() as stack:
        if host is not None and host.labgrid_place:
            from harness.targets.labgrid import LabgridPlace

            place = LabgridPlace(host.labgrid_place, coordinator=host.labgrid_coordinator)
            reservation = stack.enter_context(place.acquire(wait_s))
            host = dataclasses.replace(host, address=reservation.address or host.address,
                                       port=reservation.port or host.port,
                                       user=reservation.username or host.user)
            log.info("%s: labgrid place %s reserved and locked (%s)", host.name, host.labgrid_place, host.address)
        leases: list = []  # released last, after the target is closed (LIFO below)
        stack.callback(lambda: [lease.release() for lease in leases])
        t = open_target(config, target_id, trust_new_host_key=trust_new_host_key, workdir=workdir,
                        for_guests=for_guests, host=host)
        stack.callback(t.close)
        if host is not None and not host.labgrid_place:
            from harness.targets.lease import acquire

            lease = acquire(t.transport, run_id, lock_path=host.lease_file, wait_s=wait_s)
            leases.append(lease)
            # A reboot or a dropped link ends the SSH channel that held the flock. The transport
            # retakes it on reconnect (acquire registered that); after a boot it is checked once
            # more. A run that slipped in meanwhile makes this a LeaseError naming it, and the
            # target is broken: never a shared host.
            t.after_boot.append(lease.ensure)
        yield t
