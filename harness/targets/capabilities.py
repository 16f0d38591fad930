"""Preflight verdicts: HostFacts (+ kvm_caps_probe facts) -> SNP checks and named capabilities.

evaluate() and Capabilities are pure; collect_hostcheck()/run_kvm_probe()/
capabilities() at the bottom are the only part that does I/O.

Two sources: the preflight script reads config, sysfs and dmesg (works on
any kernel, no build needed); guests/kvm_caps_probe asks KVM itself (VM
creation, guest_memfd folio sizes) once the build's selftests are on the
target. Where the probe ran, its answer overrides what config suggests.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from harness.targets.hostcheck import (COLLECT_SCRIPT, DMESG_UNREADABLE, RMP_PROBE_FAILED, SNP_MIN_API, HostFacts,
                                       SnpHardware, parse_hostcheck, snp_hardware)

if TYPE_CHECKING:  # pragma: no cover
    from harness.transport.base import Transport

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str


# What an SNP host kernel needs; "ym" accepts built-in or module.
_CONFIG_NEEDED = {"KVM": "ym", "KVM_AMD": "ym", "KVM_AMD_SEV": "y", "CRYPTO_DEV_CCP_DD": "ym",
                  "CRYPTO_DEV_SP_PSP": "y", "AMD_IOMMU": "y"}
_NO_CONFIG = "kernel config unreadable: no /proc/config.gz and no /boot/config-<release>"


def _check_cpu(f: HostFacts) -> Check:
    """The machine can do SEV-SNP at all (hostcheck.snp_hardware); every other check is its setup."""
    fix = ("run on an SNP-capable EPYC host: 7003 (Milan), 9004 (Genoa/Bergamo/Siena) "
           "or 9005 (Turin), bare metal")
    hw = snp_hardware(f)
    return Check("cpu", hw.capable, hw.evidence, fix)


def _check_flag(f: HostFacts) -> Check:
    fix = ("enable SMEE, SEV-SNP and SNP Memory Coverage in the BIOS setup (AMD CBS > CPU "
           "Common Options), on the bare-metal host")
    if "sev_snp" in f.cpu_flags:
        return Check("sev_snp_flag", True, "sev_snp in /proc/cpuinfo flags", fix)
    if "hypervisor" in f.cpu_flags:
        why = "'hypervisor' flag: this is a VM, and the kernel never enables host SNP in a guest"
    elif any(k in e for e in f.snp_errors for k in RMP_PROBE_FAILED):
        why = "the kernel hid sev_snp because the BIOS set up no valid RMP table"
    elif "sev" in f.cpu_flags:
        why = "sev is present but sev_snp is not"
    else:
        why = "no sev/sev_snp flags: SEV is off in the BIOS or not supported"
    return Check("sev_snp_flag", False, f"no sev_snp in /proc/cpuinfo flags: {why}", fix)


def _check_rmp(f: HostFacts) -> Check:
    fix = "reserve the RMP table in the BIOS: 'SNP Memory Coverage' Enabled, with 'SEV-SNP Support'"
    errors = [e for e in f.snp_errors if "RMP" in e]
    if not f.dmesg_readable:
        return Check("rmp_reserved", False, DMESG_UNREADABLE, fix)
    if errors:
        return Check("rmp_reserved", False, "; ".join(errors), fix)
    if f.rmp_range:
        lo, hi = f.rmp_range
        return Check("rmp_reserved", True, f"RMP table physical range [{lo:#018x} - {hi:#018x}]"
                     f" ({(hi - lo + 1) >> 20} MiB)", fix)
    if f.snp_api:  # SNP_INIT only runs once the RMP was probed
        return Check("rmp_reserved", True, "RMP line gone from dmesg, but SNP firmware is up", fix)
    gone = "" if f.dmesg_from_boot else " (and dmesg no longer starts at boot)"
    return Check("rmp_reserved", False,
                 f"no 'SEV-SNP: RMP table physical range' in dmesg{gone}", fix)


def _check_firmware(f: HostFacts) -> Check:
    fix = ("update the SEV firmware to SNP API >= 1.51: a BIOS update, or linux-firmware's "
           "amd/amd_sev_fam19h_model{0,1}xh.sbin, which ccp loads when it probes")
    if not f.dmesg_readable:
        return Check("snp_firmware", False, DMESG_UNREADABLE, fix)
    if f.snp_api:
        ok = f.snp_api[:2] >= SNP_MIN_API
        return Check("snp_firmware", ok, "SEV-SNP API:%d.%d build:%d" % f.snp_api
                     + ("" if ok else " is below 1.51"), fix)
    errors = [e for e in f.snp_errors if "RMP" not in e]
    if any("failed to INIT rc -95" in e for e in errors):  # -EOPNOTSUPP: the version gate
        why = "SNP_INIT refused with rc -95 (EOPNOTSUPP): firmware older than SNP API 1.51"
    elif f.kvm_amd_params.get("sev_snp") == "Y" and not f.dmesg_from_boot:
        return Check("snp_firmware", True, "version line gone from dmesg; kvm_amd sev_snp=Y "
                     "means SNP_INIT succeeded", fix)
    else:
        why = "no 'SEV-SNP API:' line in dmesg: SNP firmware not initialised"
        if f.sev_api:
            why += " (SEV API:%d.%d build:%d)" % f.sev_api
        if "modules" in f.sections and "kvm_amd" not in f.modules:
            why += "; 6.12 runs SNP_INIT when kvm_amd loads, and it is not loaded"
    return Check("snp_firmware", False, "; ".join([why, *errors]), fix)


def _check_dev_sev(f: HostFacts) -> Check:
    fix = "load the ccp driver (modprobe ccp) with SEV enabled in the BIOS"
    return Check("dev_sev", f.dev_sev, "/dev/sev present" if f.dev_sev else "/dev/sev missing", fix)


def _check_kvm_amd(f: HostFacts) -> Check:
    fix = ("load kvm_amd with SNP on: modprobe -r kvm_amd; modprobe kvm_amd sev_snp=1 (or boot "
           "with kvm_amd.sev_snp=1); KVM turns it off itself while the checks above fail")
    if "kvm_amd" not in f.modules and not f.kvm_amd_params:
        return Check("kvm_amd_sev_snp", False, "kvm_amd is not loaded", fix)
    value = f.kvm_amd_params.get("sev_snp", "absent")
    said = [x for x in f.kvm_sev_lines if "SEV-SNP" in x]
    detail = "; ".join([f"kvm_amd sev_snp={value}", *said])
    return Check("kvm_amd_sev_snp", value == "Y", detail, fix)


def _check_dev_kvm(f: HostFacts) -> Check:
    fix = "modprobe kvm_amd, with SVM enabled in the BIOS"
    return Check("dev_kvm", f.dev_kvm, "/dev/kvm present" if f.dev_kvm else "/dev/kvm missing", fix)


def _check_config(f: HostFacts) -> Check:
    fix = ("build with " + ", ".join(f"CONFIG_{k}={'|'.join(v)}" for k, v in _CONFIG_NEEDED.items())
           + " (kernel-patches/configs/); CONFIG_IKCONFIG_PROC=y exposes the config")
    if not f.config:
        return Check("kernel_config", False, _NO_CONFIG, fix)
    bad = [f"CONFIG_{k}={f.config.get(k, 'n')}" for k, want in _CONFIG_NEEDED.items()
           if f.config.get(k, "n") not in want]
    detail = f"not as needed: {', '.join(bad)}" if bad else "SNP host options set"
    return Check("kernel_config", not bad, f"{detail} ({f.config_source})", fix)


_SNP_CHECKS: tuple[Callable[[HostFacts], Check], ...] = (
    _check_cpu, _check_flag, _check_rmp, _check_firmware, _check_dev_sev, _check_kvm_amd,
    _check_dev_kvm, _check_config)


def evaluate(facts: HostFacts) -> Capabilities:
    return Capabilities(facts=facts, checks=tuple(check(facts) for check in _SNP_CHECKS))


KNOWN_CAPS = {
    "kvm": "/dev/kvm from kvm_amd or kvm_intel, able to run ordinary VMs",
    "snp": "SEV-SNP host ready: every preflight check passes",
    "sev": "SEV VMs: kvm_amd sev=Y",
    "sev_es": "SEV-ES VMs: kvm_amd sev_es=Y",
    "sw_protected_vm": "KVM_X86_SW_PROTECTED_VM: CONFIG_KVM_SW_PROTECTED_VM=y, TDP MMU, /dev/kvm",
    "guest_memfd": "guest_memfd: CONFIG_KVM_PRIVATE_MEM (KVM_GENERIC_PRIVATE_MEM), /dev/kvm",
    "thp": "transparent hugepages: enabled is always or madvise",
    "hugetlb_2m": "2 MiB hugetlb pages (hugepages-2048kB)",
    "debugfs": "debugfs mounted at /sys/kernel/debug",
    "split_huge_pages": "debugfs split_huge_pages, for forced THP splits",
    "tracefs": "tracefs mounted, for tracepoints",
    "kvm_rmp_fault": "the kvm:kvm_rmp_fault tracepoint",
    "gmem_hugepages": "guest_memfd backed by 2 MiB folios (measured by guests/kvm_caps_probe)",
    "gmem_mmap": "a KVM_X86_SW_PROTECTED_VM guest_memfd with GUEST_MEMFD_FLAG_MMAP can be created and "
                 "mmap()ed (kvm_caps_probe)",
    "gmem_init_shared": "a KVM_X86_SW_PROTECTED_VM guest_memfd with GUEST_MEMFD_FLAG_MMAP|INIT_SHARED: the host "
                        "faults in and uses its pages (kvm_caps_probe)",
}
Gap = tuple[str, str]  # (what is missing, how to get it)


def _kvm_gap(c: Capabilities) -> Gap | None:
    f = c.facts
    real = f.modules & {"kvm_amd", "kvm_intel"}
    if not f.dev_kvm:
        return "/dev/kvm is missing", "modprobe kvm_amd, with SVM enabled in the BIOS"
    if "kvm_pvm" in f.modules and not real:
        return ("/dev/kvm comes from kvm_pvm, which runs only PVM guests",
                "use the local QEMU target (TCG with nested SVM: -cpu EPYC-Milan,+svm,+npt)")
    if "modules" in f.sections and not real:
        return "/dev/kvm exists but neither kvm_amd nor kvm_intel is loaded", "modprobe kvm_amd"
    return None


def _param_gap(name: str, how: str) -> Callable[[Capabilities], Gap | None]:
    def gap(c: Capabilities) -> Gap | None:
        value = c.facts.kvm_amd_params.get(name)
        if value == "Y":
            return None
        return (f"kvm_amd {name}={value}" if value else "kvm_amd is not loaded"), how
    return gap


def _config_gap(c: Capabilities, names: tuple[str, ...], how: str) -> Gap | None:
    if not c.facts.config:
        return _NO_CONFIG, "build with CONFIG_IKCONFIG_PROC=y or install /boot/config-<release>"
    if any(c.facts.config.get(n) == "y" for n in names):
        return None
    return " and ".join(f"CONFIG_{n}={c.facts.config.get(n, 'n')}" for n in names), how


def _probe_vm_gap(c: Capabilities, vm_type: str, how: str) -> Gap | None:
    """The probe's own KVM_CREATE_VM answer for vm_type, where the probe ran."""
    result = c.kvm.get(f"create_vm_{vm_type}") if c.kvm is not None else None
    if result is None or result == "ok":
        return None
    return f"kvm_caps_probe: KVM_CREATE_VM({vm_type}) returned {result}", how


def _sw_protected_gap(c: Capabilities) -> Gap | None:
    how = "build with CONFIG_EXPERT=y CONFIG_KVM_SW_PROTECTED_VM=y (kernel-patches/configs/)"
    return (_kvm_gap(c) or _config_gap(c, ("KVM_SW_PROTECTED_VM",), how)
            or (("kvm tdp_mmu=N: KVM offers SW_PROTECTED_VM only with the TDP MMU",
                 "use NPT (kvm_amd npt=1) and load kvm with tdp_mmu=1")
                if c.facts.kvm_params.get("tdp_mmu") == "N" else None)
            or _probe_vm_gap(c, "sw_protected", how))


def _snp_gap(c: Capabilities) -> Gap | None:
    bad = [x for x in c.checks if not x.ok]
    if not bad:
        return _probe_vm_gap(c, "snp", "check dmesg for SEV-SNP init errors; `snp-harness check`")
    # The first failing check is the one to fix first; `snp-harness check` lists them all.
    return (f"SEV-SNP host not ready ({len(bad)} check(s) failed, first {bad[0].name}: {bad[0].detail})",
            f"{bad[0].fix}; `snp-harness check` shows every missing piece")


def _no_probe_gap(c: Capabilities) -> Gap | None:
    if c.kvm is None:
        return ("kvm_caps_probe has not run: the build's selftests are not on the target",
                "install the build on the target (--snp-install; the QEMU target always has it)")
    return None


def _gmem_huge_gap(c: Capabilities) -> Gap | None:
    if c.kvm is None:
        return _no_probe_gap(c)
    if c.kvm.get("gmem_huge_flags", "none") != "none":
        return None
    return (f"guest_memfd allocates only 4K folios on {c.kvm.get('kernel_release', 'this kernel')} "
            f"(fallocate of 4 MiB: {c.kvm.get('gmem_huge_kb', '?')} kB in huge pages; mainline 6.12 has none)",
            "apply a series that adds huge guest_memfd folios (kernel-patches/), "
            "with CONFIG_TRANSPARENT_HUGEPAGE=y")


def _gmem_use_gap(key: str, flag: str, usable: Callable[[str], bool], how: str):
    """kvm_caps_probe's "use" answer for a sw_protected guest_memfd with `flag` (see the probe)."""
    def gap(c: Capabilities) -> Gap | None:
        if found := _PROBES["sw_protected_vm"](c) or _no_probe_gap(c):
            return found
        value = c.kvm.get(f"{key}_sw_protected")
        if value is not None and usable(value):
            return None
        if value is None:
            made = c.kvm.get("gmem_create_2m_sw_protected", "not reported")
            return (f"kvm_caps_probe reported no {key}_sw_protected (sw_protected guest_memfd: {made}; "
                    "or the probe predates these facts)", how)
        if value == "undefined":
            return f"the tree's UAPI headers have no {flag}: the kernel predates it", how
        return (f"kvm_caps_probe: {key}_sw_protected: {value} (KVM_CAP_GUEST_MEMFD_FLAGS of a sw_protected "
                f"VM: {c.kvm.get('guest_memfd_flags_sw_protected', 'not reported')})", how)
    return gap


def _split_gap(c: Capabilities) -> Gap | None:
    f = c.facts
    if f.split_huge_pages == "yes":
        return None
    if f.split_huge_pages == "denied":
        return f"/sys/kernel/debug is not readable as uid {f.uid}", "run the probe as root"
    return _PROBES["debugfs"](c) or ("/sys/kernel/debug/split_huge_pages is missing",
                                     "build with CONFIG_TRANSPARENT_HUGEPAGE=y, CONFIG_DEBUG_FS=y")


def _rmp_fault_gap(c: Capabilities) -> Gap | None:
    events = c.facts.kvm_trace_events
    return (_PROBES["tracefs"](c) or (None if "kvm_rmp_fault" in events else
            ("no kvm trace events", "load kvm (modprobe kvm_amd)") if not events else
            ("kvm:kvm_rmp_fault is missing", "use a kernel >= 6.11 (KVM's SNP host support)")))


_PROBES: dict[str, Callable[[Capabilities], Gap | None]] = {
    "kvm": _kvm_gap,
    "snp": _snp_gap,
    "sev": _param_gap("sev", "enable SEV in the BIOS, then modprobe kvm_amd sev=1"),
    "sev_es": _param_gap("sev_es", "set BIOS 'SEV-ES ASID Space Limit' > 1, then modprobe "
                         "kvm_amd sev_es=1"),
    "sw_protected_vm": _sw_protected_gap,
    "guest_memfd": lambda c: _kvm_gap(c) or _config_gap(
        c, ("KVM_PRIVATE_MEM", "KVM_GENERIC_PRIVATE_MEM", "KVM_GUEST_MEMFD"),
        "enable CONFIG_KVM_SW_PROTECTED_VM=y or CONFIG_KVM_AMD_SEV=y, which select it"),
    "thp": lambda c: None if c.facts.thp.get("enabled") in ("always", "madvise") else (
        f"THP enabled={c.facts.thp.get('enabled') or 'absent'}",
        "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled "
        "(CONFIG_TRANSPARENT_HUGEPAGE=y)"),
    "hugetlb_2m": lambda c: None if 2048 in c.facts.hugepage_sizes_kb else (
        "no hugepages-2048kB in /sys/kernel/mm/hugepages",
        "build with CONFIG_HUGETLBFS=y, then: echo 64 > /proc/sys/vm/nr_hugepages"),
    "debugfs": lambda c: None if c.facts.debugfs_mounted else (
        "debugfs is not mounted", "mount -t debugfs none /sys/kernel/debug (CONFIG_DEBUG_FS=y)"),
    "split_huge_pages": _split_gap,
    "tracefs": lambda c: None if c.facts.tracefs_path else (
        "no tracefs events/ under /sys/kernel/tracing or /sys/kernel/debug/tracing",
        "mount -t tracefs nodev /sys/kernel/tracing as root (CONFIG_FTRACE=y)"),
    "kvm_rmp_fault": _rmp_fault_gap,
    "gmem_hugepages": lambda c: _PROBES["guest_memfd"](c) or _gmem_huge_gap(c),
    # Created and mmap()ed; faulting in may be refused (the pages start private).
    "gmem_mmap": _gmem_use_gap("gmem_mmap", "GUEST_MEMFD_FLAG_MMAP",
                               lambda v: v == "ok" or v.split(" ", 1)[0] in ("fault", "data"),
                               "use a kernel whose guest_memfd can be mmap()ed (KVM_CAP_GUEST_MEMFD_FLAGS)"),
    "gmem_init_shared": _gmem_use_gap(
        "gmem_init_shared", "GUEST_MEMFD_FLAG_INIT_SHARED", lambda v: v == "ok",
        "mainline KVM offers INIT_SHARED only to VMs without private memory "
        "(kvm_arch_supports_gmem_init_shared); apply a series that tracks shared state in guest_memfd"),
}


# Capabilities that only the hardware can rule out: on SNP-capable hardware their absence is a setup fault.
_HARDWARE_BOUND = frozenset({"snp"})


@dataclass(frozen=True)
class Capabilities:
    facts: HostFacts
    checks: tuple[Check, ...]
    kvm: dict[str, str] | None = None  # kvm_caps_probe's "# key: value" facts, where it ran

    @property
    def snp_ready(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def snp_hardware(self) -> SnpHardware:
        return snp_hardware(self.facts)

    def has(self, cap: str) -> bool:
        return self.missing(cap) is None

    def misconfigured(self, cap: str) -> bool:
        """`cap` is missing on a machine that can have it: a test needing it fails, never skips."""
        return cap in _HARDWARE_BOUND and self.snp_hardware.capable and self.missing(cap) is not None

    def missing(self, cap: str) -> str | None:
        """None when present; else what is missing and how to get it (a pytest skip reason)."""
        probe = _PROBES.get(cap)
        if probe is None:  # a typo in a needs() marker: fail loudly, never skip quietly
            raise ValueError(f"unknown capability {cap!r}; known: {', '.join(KNOWN_CAPS)}")
        gap = probe(self)
        return None if gap is None else f"needs {cap} ({KNOWN_CAPS[cap]}): {gap[0]}; fix: {gap[1]}"

    def as_dict(self) -> dict:
        return {"snp_ready": self.snp_ready, "checks": [dataclasses.asdict(c) for c in self.checks],
                "capabilities": {k: self.has(k) for k in KNOWN_CAPS},
                "facts": _jsonable(dataclasses.asdict(self.facts)), "kvm_probe": self.kvm}

    @property
    def gmem_huge_flags(self) -> str | None:
        """KVM_CREATE_GUEST_MEMFD flags ("0x...") that give huge folios, or None."""
        flags = (self.kvm or {}).get("gmem_huge_flags", "none")
        return None if flags == "none" else flags

    def properties(self) -> dict[str, str]:
        """Short facts for JUnit suite properties."""
        f = self.facts
        fam, model = f.cpu_family, f.cpu_model
        cpu = f.cpu_model_name or "unknown"
        if fam is not None and model is not None:
            cpu += f" (family {fam:#x}, model {model:#x})"
        fw = ("SEV-SNP API:%d.%d build:%d" % f.snp_api if f.snp_api else
              "SEV API:%d.%d build:%d" % f.sev_api if f.sev_api else
              "unknown" if f.dmesg_readable else "unknown (dmesg unreadable)")
        amd = " ".join(f"{k}={f.kvm_amd_params[k]}" for k in ("sev", "sev_es", "sev_snp", "npt",
                                                              "nested") if k in f.kvm_amd_params)
        props = {"kernel": f.kernel_release or "unknown", "cpu": cpu,
                 "microcode": f.microcode or "unknown", "sev_firmware": fw,
                 "kvm_amd": amd or "not loaded"}
        if self.kvm is not None:
            props["vm_types"] = self.kvm.get("vm_types", "unknown")
            props["gmem_huge_flags"] = self.kvm.get("gmem_huge_flags", "none")
        return props


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def collect_hostcheck(transport: Transport, timeout: float = 60) -> str:
    """COLLECT_SCRIPT's raw output from the target (it always exits 0, so a failure is infra)."""
    return transport.run(["sh", "-c", COLLECT_SCRIPT], timeout=timeout, check=True).stdout


_PROBE_FACT = re.compile(r"^# ([a-z][a-z0-9_]*): ?(.*)$")
KVM_PROBE = "guests/kvm_caps_probe"


def parse_kvm_probe(stdout: str) -> dict[str, str]:
    """kvm_caps_probe's facts (its documented "# key: value" lines; first value wins)."""
    facts: dict[str, str] = {}
    for m in filter(None, map(_PROBE_FACT.match, stdout.splitlines())):
        facts.setdefault(m.group(1), m.group(2).strip())
    return facts


def run_kvm_probe(transport: Transport, selftests_dir: str, timeout: float = 120) -> dict[str, str] | None:
    """The probe's facts; None when it is not installed or /dev/kvm can't be opened (exit 4)."""
    r = transport.run([f"{selftests_dir.rstrip('/')}/{KVM_PROBE}"], timeout=timeout, check=False)
    if r.exit_status in (126, 127) or r.exit_status == 4:
        log.debug("kvm_caps_probe on %s: exit %s", transport.name, r.exit_status)
        return None
    # 0 or 1 (a feature advertised but broken): the facts are valid either way.
    return parse_kvm_probe(r.stdout)


def capabilities(transport: Transport, selftests_dir: str | None = None) -> Capabilities:
    caps = evaluate(parse_hostcheck(collect_hostcheck(transport)))
    for problem in caps.facts.problems:
        log.debug("hostcheck on %s: %s", transport.name, problem)
    if selftests_dir:
        caps = dataclasses.replace(caps, kvm=run_kvm_probe(transport, selftests_dir))
    return caps
