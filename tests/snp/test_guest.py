"""A guest on the target: boot it, drive private<->shared conversions from its kernel, with and
without forced THP splits/collapses of the VMM's memory on the host side.

On SNP hosts the guest is an SNP guest (AMDSEV-style QEMU line, verified from inside); the
host-side evidence (dmesg slice and splats, kvm_rmp_fault counts, the RMP check after the guest
is gone) comes from the plugin around each test. On the local QEMU target the same launcher,
workload and evidence run with a plain L2 guest under nested SVM, and the RMP parts say why
they are skipped. The guest boots in a fixture (a boot failure is an error, not a test failure)
and each test shuts it down at the end of its own body, so that the evidence collected after
the body covers the guest's whole life and its teardown.
"""

from __future__ import annotations

import re
import threading

import pytest

from harness.scenarios.ktap import parse_ktap
from harness.scenarios.subtests import NO_SKIPS, review_subtests
from harness.scenarios.thp import KHUGEPAGED_EAGER, split_huge_pages
from harness.targets.guest import WORKLOAD_MODULE, Guest, GuestConfig, build_guest_image

pytestmark = [pytest.mark.snp_guest, pytest.mark.needs("kvm")]


@pytest.fixture(scope="module")
def guest_image(snp_build, snp_run_dir):
    return build_guest_image(snp_build, snp_run_dir / "guest-image")


def _guest_config(target, harness_config) -> GuestConfig:
    caps = target.capabilities()
    if caps.has("snp"):
        host = harness_config.host(target.name.removeprefix("ssh://"))
        return GuestConfig(qemu=host.guest.qemu, firmware=host.guest.firmware, snp=True, memory_mb=2048,
                           cpu="EPYC-v4")
    if caps.misconfigured("snp"):  # SNP-capable hardware, not set up: a fault, not a skip
        pytest.fail(f"{target.name}: {caps.missing('snp')}", pytrace=False)
    if target.name.startswith("ssh://"):
        pytest.skip(f"{target.name}: {caps.missing('snp')} (guests on lab hosts are SNP guests)")
    return GuestConfig()


@pytest.fixture
def guest(target, harness_config, snp_build, guest_image, snp_run_dir, request):
    g = Guest(target, snp_run_dir / "guests" / request.node.name.split("[")[0],
              _guest_config(target, harness_config))
    try:
        g.boot(snp_build.bzimage, guest_image)
        yield g
    finally:
        g.close()  # idempotent: the tests end it themselves, inside the evidence window


def _check_rmp_while_running(guest, target_evidence, request) -> None:
    """On SNP hosts: with the guest up, its RMP entries are 2M-aligned where 2M, unique per GPA,
    and inside its RAM (q35: below 4 GiB, and above it for the rest). Elsewhere: why not."""
    if target_evidence.rmp is None:
        request.node.user_properties.append(("rmp_verdict_running", f"skipped: {target_evidence.rmp_skip}"))
        return
    from harness.evidence.rmp import ANY_ASID, Expectation

    mem = guest.cfg.memory_mb << 20
    # RAM (q35: below 2 GiB, the rest above 4 GiB) and the flash just below 4 GiB, where QEMU
    # puts OVMF as private guest_memfd memory (at most 16 MiB).
    ram = ((0, min(mem, 2 << 30)), ((4 << 30) - (16 << 20), 4 << 30),
           (4 << 30, (4 << 30) + max(0, mem - (2 << 30))))
    props, verdict = target_evidence.rmp_check(request.node.nodeid, "running",
                                               Expectation(asid=ANY_ASID, allowed_gpas=ram), (0, min(mem, 2 << 30)))
    request.node.user_properties.extend(props)
    assert verdict.ok, f"RMP while the guest runs: {verdict.summary()}"


def _workload(guest, request, rounds: int = 20):
    r = guest.transport.run(["/selftests/guests/guest_conversion_workload", WORKLOAD_MODULE, f"rounds={rounds}"],
                            timeout=600, check=False)
    request.node.user_properties.append(("guest_workload", r.stdout.strip()[-2000:]))
    if r.exit_status == 4:
        pytest.skip(f"guest workload: {r.stdout.strip().splitlines()[-1]}")
    review = review_subtests(parse_ktap(r.stdout.splitlines()), NO_SKIPS)  # all three cases, each passed
    request.node.user_properties += [*review.properties(), ("subtests", review.summary())]
    assert r.exit_status == 0 and review.ok and len(review.passed) == 3, \
        "\n".join([*review.problems, r.stdout + r.stderr])
    return r.stdout


def test_guest_boots_and_converts(guest, target_evidence, request):
    try:
        out = _workload(guest, request)
        _check_rmp_while_running(guest, target_evidence, request)
    finally:  # before the plugin's after-test RMP check, whatever happened (a skip too)
        guest.close()
    assert guest.clean_exit, "the guest powered off, but QEMU did not exit by itself"
    rounds = [int(n) for n in re.findall(r"# \w+: (\d+) conversion rounds", out)]
    assert rounds == [20, 20, 20]


@pytest.mark.needs("thp", "split_huge_pages")
def test_guest_converts_while_the_host_splits_and_collapses_its_memory(guest, target, target_evidence, request,
                                                                       thp):
    # THP always + eager khugepaged collapse the VMM's guest RAM (anonymous in plain mode, a
    # memfd, i.e. shmem, for SNP's shared half); debugfs splits it again. 6.12's guest_memfd
    # (the private half) has no huge folios to split: that part needs a huge-folio series.
    thp.set(enabled="always", shmem_enabled="always", **KHUGEPAGED_EAGER)
    stop, splits, errors, pid = threading.Event(), [0], [], guest.qemu_pid

    def split_loop():
        while not stop.wait(0.25):
            try:
                split_huge_pages(target.transport, pid, 0, 0x7FFFFFFFF000)
                splits[0] += 1
            except Exception as e:  # reported below; the workload's verdict still counts
                errors.append(e)
                return

    t = threading.Thread(target=split_loop, daemon=True)
    t.start()
    try:
        _workload(guest, request, rounds=50)
    finally:
        stop.set()
        t.join(30)
    try:
        _check_rmp_while_running(guest, target_evidence, request)
    finally:
        guest.close()
    request.node.user_properties.append(("host_forced_splits", str(splits[0])))
    assert not errors, f"forcing splits of QEMU's memory (pid {pid}) failed: {errors[0]}"
    assert splits[0] > 0
