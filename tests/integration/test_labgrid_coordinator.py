"""labgrid place reservations end to end: a real labgrid-coordinator and labgrid-exporter on 127.0.0.1.

Needs labgrid (the `labgrid` extra): its commands are looked for next to sys.executable, then on
PATH; without them the tests skip. Both servers listen on or connect to 127.0.0.1 only, and are
stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import LeaseError
from harness.targets.labgrid import LabgridPlace
from harness.testing.sshd import free_port
from harness.transport.local import stop_process

pytestmark = pytest.mark.slow

PLACE = "snp-epyc"
EXPORTER_CONFIG = """\
snp-host:
  NetworkService:
    address: 127.0.0.1
    username: snptest
    port: {port}
"""


def labgrid_bin() -> Path | None:
    beside = Path(sys.executable).parent / "labgrid-client"
    if os.access(beside, os.X_OK):
        return beside.parent
    found = shutil.which("labgrid-client")
    return Path(found).parent if found else None


def client(bindir: Path, coordinator: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(bindir / "labgrid-client"), "-x", coordinator, *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, env=env)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(bin dir, coordinator address, the NetworkService's port) with place PLACE matching the exporter."""
    bindir = labgrid_bin()
    if bindir is None or not (bindir / "labgrid-coordinator").exists():
        pytest.skip(f"labgrid is not installed (no labgrid-client next to {sys.executable} or on PATH): "
                    "pip install 'snp-harness[labgrid]'")
    work = tmp_path_factory.mktemp("labgrid")
    coordinator = f"127.0.0.1:{free_port()}"
    service_port = free_port()  # nothing listens there: only the address is read
    (work / "exporter.yaml").write_text(EXPORTER_CONFIG.format(port=service_port))
    procs = []
    try:
        with open(work / "coordinator.log", "w") as log:  # it keeps places.yaml in its cwd
            procs.append(subprocess.Popen([str(bindir / "labgrid-coordinator"), "-l", coordinator], cwd=work,
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while client(bindir, coordinator, "places").returncode:
            assert procs[0].poll() is None, (work / "coordinator.log").read_text()
            assert time.monotonic() < deadline, "coordinator did not answer in 30 s"
            time.sleep(0.3)
        with open(work / "exporter.log", "w") as log:
            procs.append(subprocess.Popen(
                [str(bindir / "labgrid-exporter"), "-c", coordinator, "-n", "lab-exp", "--hostname", "127.0.0.1",
                 str(work / "exporter.yaml")], cwd=work, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL))
        while "lab-exp/snp-host/NetworkService" not in client(bindir, coordinator, "resources").stdout:
            assert procs[1].poll() is None, (work / "exporter.log").read_text()
            assert time.monotonic() < deadline, "exporter's resource did not show up in 30 s"
            time.sleep(0.3)
        for args in (["create"], ["add-match", "lab-exp/snp-host/NetworkService"]):
            r = client(bindir, coordinator, "-p", PLACE, *args)
            assert r.returncode == 0, r.stderr
        yield bindir, coordinator, service_port
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def test_acquire_reads_the_address_and_a_second_acquire_is_refused(lab):
    bindir, coordinator, service_port = lab
    place = LabgridPlace(PLACE, coordinator=coordinator, client=str(bindir / "labgrid-client"))
    with place.acquire(0) as lease:  # wait 0: a free place is allocated at once, or this raises
        assert (lease.address, lease.port, lease.username) == ("127.0.0.1", service_port, "snptest")
        assert lease.held
        with pytest.raises(LeaseError) as e:
            place.acquire(0)
        assert "that is you" in str(e.value) and "--wait-lease" in str(e.value)
        shown = client(bindir, coordinator, "-p", PLACE, "show").stdout
        assert f"reservation: {lease.token}" in shown
    assert not lease.held
    assert "acquired: None" in client(bindir, coordinator, "-p", PLACE, "show").stdout
    assert lease.token not in client(bindir, coordinator, "reservations").stdout


WAITER = """
import sys
from harness.targets.labgrid import LabgridPlace
lease = LabgridPlace({place!r}, coordinator={coord!r}, client={client!r}).acquire({wait})
print("GOT", lease.address, lease.port, flush=True)
lease.release()
"""


def test_another_user_is_refused_then_waits_for_the_release(lab):
    bindir, coordinator, service_port = lab
    place = LabgridPlace(PLACE, coordinator=coordinator, client=str(bindir / "labgrid-client"))
    other = {**os.environ, "LG_USERNAME": "other-user", "LG_HOSTNAME": "other-host"}
    code = WAITER.format(place=PLACE, coord=coordinator, client=str(bindir / "labgrid-client"), wait=0)
    lease = place.acquire(0)
    try:
        refused = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=other, timeout=60)
        assert refused.returncode != 0 and "LeaseError" in refused.stderr
        me = f"{os.environ.get('LG_HOSTNAME') or os.uname().nodename}/"
        assert f"is held by {me}" in refused.stderr
        waiter = subprocess.Popen([sys.executable, "-c", code.replace("acquire(0)", "acquire(60)")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=other)
        time.sleep(2)  # it is queued: its reservation waits behind ours
        assert waiter.poll() is None
    finally:
        lease.release()
    out, err = waiter.communicate(timeout=60)  # the coordinator allocates within its 15 s scheduling pass
    assert waiter.returncode == 0, err
    assert out.split() == ["GOT", "127.0.0.1", str(service_port)]
