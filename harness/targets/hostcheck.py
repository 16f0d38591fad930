"""Preflight: is this target ready for SEV-SNP testing, and what else can it do?

COLLECT_SCRIPT runs on the target (plain POSIX sh: busybox, dash; there is no
Python there) and prints delimited sections.  parse_hostcheck() turns that text
into HostFacts; harness.targets.capabilities turns those into Capabilities.
Everything here is pure: no I/O, and malformed input is recorded in
`problems`, never raised.

The dmesg texts matched below are the kernel's own format strings (6.12 and 7.x), from
arch/x86/virt/svm/sev.c, arch/x86/kvm/svm/sev.c, drivers/crypto/ccp/sev-dev.c,
drivers/iommu/amd/init.c and arch/x86/mm/mem_encrypt.c; host_messages.KERNEL_MESSAGES names each one's
source for the format-drift check (harness/evidence/format_drift.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from harness.targets.host_messages import (IOMMU_SNP_OK, KVM_SEV, MEM_ENCRYPT, RMP_RANGE, SEV_API, SNP_API, SNP_ERRORS,
                                           TIMESTAMP)

# Every command tolerates absence, so a bare busybox initramfs still exits 0.
# A line "@@snp-harness:<section>@@" starts each section; "end" proves we got it all.
COLLECT_SCRIPT = r"""
m() { printf '@@snp-harness:%s@@\n' "$1"; }
kv() { printf '%s=%s\n' "$1" "$2"; }
m meta
kv format 2
kv uid "$(id -u 2>/dev/null)"
m uname-r
uname -r 2>/dev/null
m version
cat /proc/version 2>/dev/null
m cmdline
cat /proc/cmdline 2>/dev/null
m cpuinfo
sed '/^[[:space:]]*$/q' /proc/cpuinfo 2>/dev/null
m cpuid
# CPUID Fn8000_001F (eax ebx ecx edx) through the cpuid driver, where it is loaded and readable
if [ -r /dev/cpu/0/cpuid ]; then
  dd if=/dev/cpu/0/cpuid bs=16 count=1 skip=2147483679 iflag=skip_bytes 2>/dev/null | od -An -tx4 2>/dev/null
fi
m modules
for x in kvm kvm_amd kvm_intel kvm_pvm ccp; do
  if [ -d /sys/module/$x ]; then echo $x; fi
done
for x in kvm_amd kvm; do
  m params:$x
  for f in /sys/module/$x/parameters/*; do
    if [ -f "$f" ]; then kv "${f##*/}" "$(cat "$f" 2>/dev/null)"; fi
  done
done
m dmesg
d=$(dmesg 2>&1); rc=$?
if [ "$rc" = 0 ]; then printf '%s\n' "$d"; fi
m dmesg-status
kv rc "$rc"
if [ "$rc" != 0 ]; then printf '%s\n' "$d"; fi
m devices
for x in /dev/kvm /dev/sev; do
  if [ -c $x ]; then kv $x char; elif [ -e $x ]; then kv $x other; else kv $x missing; fi
done
m config
re='^(# )?CONFIG_(KVM|HAVE_KVM|CRYPTO_DEV_CCP|CRYPTO_DEV_SP_PSP|AMD_IOMMU|AMD_MEM_ENCRYPT'
re="$re|ARCH_HAS_CC_PLATFORM|TRANSPARENT_HUGEPAGE|HUGETLB|DEBUG_FS|FTRACE|EVENT_TRACING"
re="$re|IKCONFIG|KEXEC|EXPERT|USERFAULTFD|DYNAMIC_DEBUG)"
r=$(uname -r 2>/dev/null)
if zcat /proc/config.gz >/dev/null 2>&1; then
  kv source /proc/config.gz; zcat /proc/config.gz 2>/dev/null | grep -E "$re"
elif [ -r "/boot/config-$r" ]; then
  kv source "/boot/config-$r"; grep -E "$re" "/boot/config-$r"
else
  kv source none
fi
m thp
t=/sys/kernel/mm/transparent_hugepage
for k in enabled defrag shmem_enabled khugepaged/defrag; do
  if [ -r $t/$k ]; then kv $k "$(cat $t/$k 2>/dev/null)"; fi
done
m hugepages
kv nr_hugepages "$(cat /proc/sys/vm/nr_hugepages 2>/dev/null)"
for h in /sys/kernel/mm/hugepages/hugepages-*; do
  if [ -d "$h" ]; then echo "${h##*/}"; fi
done
m debugfs
if grep -q ' /sys/kernel/debug debugfs ' /proc/mounts 2>/dev/null; then kv mounted yes
else kv mounted no; fi
if [ -e /sys/kernel/debug/split_huge_pages ]; then kv split_huge_pages yes
elif [ -d /sys/kernel/debug ] && [ ! -x /sys/kernel/debug ]; then kv split_huge_pages denied
else kv split_huge_pages no; fi
m tracefs
p=
for x in /sys/kernel/tracing /sys/kernel/debug/tracing; do
  if [ -z "$p" ] && [ -d $x/events ]; then p=$x; fi
done
kv path "$p"
m kvm-events
if [ -n "$p" ]; then
  for e in "$p"/events/kvm/*; do
    if [ -d "$e" ]; then echo "${e##*/}"; fi
  done
fi
m end
"""

SECTIONS = ("meta", "uname-r", "version", "cmdline", "cpuinfo", "cpuid", "modules", "params:kvm_amd",
            "params:kvm", "dmesg", "dmesg-status", "devices", "config", "thp", "hugepages",
            "debugfs", "tracefs", "kvm-events")
_SINCE_FORMAT = {"cpuid": 2}  # sections an older script (meta format) did not print
_MARKER = re.compile(r"@@snp-harness:([\w:.-]+)@@")

SNP_MIN_API = (1, 51)  # SNP_MIN_API_MAJOR/MINOR in drivers/crypto/ccp/sev-dev.c
DMESG_UNREADABLE = "dmesg unreadable (not root / dmesg_restrict)"

Version = tuple[int, int, int]


@dataclass(frozen=True)
class CpuInfo:
    vendor: str = ""
    family: int | None = None
    model: int | None = None
    model_name: str = ""
    microcode: str = ""
    flags: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class SnpHardware:
    """Can this machine run SEV-SNP at all, whatever its BIOS and kernel say? `evidence`: why."""

    capable: bool
    evidence: str


@dataclass(frozen=True)
class DmesgFacts:
    snp_api: Version | None = None
    sev_api: Version | None = None
    rmp_range: tuple[int, int] | None = None
    snp_errors: tuple[str, ...] = ()
    kvm_sev_lines: tuple[str, ...] = ()
    kvm_sev: dict[str, str] = field(default_factory=dict)  # "SEV-SNP" -> "enabled"
    iommu_snp_enabled: bool = False
    mem_encrypt: str = ""
    dmesg_from_boot: bool = False  # the ring buffer still starts with the boot banner


@dataclass(frozen=True)
class HostFacts:
    kernel_release: str = ""
    proc_version: str = ""
    cmdline: str = ""
    uid: int | None = None
    cpu_vendor: str = ""
    cpu_family: int | None = None
    cpu_model: int | None = None
    cpu_model_name: str = ""
    microcode: str = ""
    cpu_flags: frozenset[str] = frozenset()
    cpuid_snp: bool | None = None  # CPUID Fn8000_001F EAX bit 4 as the CPU reports it; None: not read
    modules: frozenset[str] = frozenset()  # of kvm, kvm_amd, kvm_intel, kvm_pvm, ccp
    kvm_amd_params: dict[str, str] = field(default_factory=dict)
    kvm_params: dict[str, str] = field(default_factory=dict)
    dmesg_readable: bool = False
    dmesg_error: str = ""
    dmesg_from_boot: bool = False
    snp_api: Version | None = None
    sev_api: Version | None = None
    rmp_range: tuple[int, int] | None = None
    snp_errors: tuple[str, ...] = ()
    kvm_sev_lines: tuple[str, ...] = ()
    kvm_sev: dict[str, str] = field(default_factory=dict)
    iommu_snp_enabled: bool = False
    mem_encrypt: str = ""
    dev_kvm: bool = False
    dev_sev: bool = False
    config_source: str = ""
    config: dict[str, str] = field(default_factory=dict)  # "KVM_AMD_SEV" -> "y"; "n" if not set
    thp: dict[str, str] = field(default_factory=dict)  # knob -> selected mode, or raw value
    nr_hugepages: int | None = None
    hugepage_sizes_kb: frozenset[int] = frozenset()
    debugfs_mounted: bool = False
    split_huge_pages: str = "no"  # yes | no | denied
    tracefs_path: str = ""
    kvm_trace_events: frozenset[str] = frozenset()
    sections: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()


def split_sections(text: str) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """Cut COLLECT_SCRIPT output into sections; text before the first marker is ignored."""
    found: dict[str, list[str]] = {}
    problems: list[str] = []
    current: list[str] | None = None
    ended = False
    for line in text.splitlines():
        line = line.rstrip("\r")
        m = _MARKER.fullmatch(line)
        if not m:
            if current is not None:
                current.append(line)
            continue
        name = m.group(1)
        ended = name == "end"
        if ended:
            current = None
        elif name in found:
            problems.append(f"section {name!r} appears twice; kept the first")
            current = None
        else:
            current = found[name] = []
    if not found:
        return {}, ("no @@snp-harness sections found: not COLLECT_SCRIPT output",)
    problems += [f"section {s!r} missing" for s in SECTIONS if s not in found]
    if not ended:
        problems.append("no end marker: output truncated")
    return {k: tuple(v) for k, v in found.items()}, tuple(problems)


def parse_key_values(lines: Iterable[str], where: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """`name=value` lines (module parameters, knobs); a line without `=` is a problem."""
    out: dict[str, str] = {}
    problems = []
    for line in lines:
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if sep and name:
            out[name.strip()] = value.strip()
        else:
            problems.append(f"{where}: not name=value: {line!r}")
    return out, tuple(problems)


def parse_cpuinfo(lines: Iterable[str]) -> CpuInfo:
    """The first processor block of /proc/cpuinfo (`key<tabs>: value`)."""
    fields: dict[str, str] = {}
    problems: list[str] = []
    for line in lines:
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if not sep:
            problems.append(f"cpuinfo: no ':' in {line!r}")
            continue
        fields.setdefault(key.strip(), value.strip())
    for key in ("vendor_id", "cpu family", "model", "model name", "flags"):
        if key not in fields:
            problems.append(f"cpuinfo: no {key!r} line")
    return CpuInfo(vendor=fields.get("vendor_id", ""),
                   family=_to_int(fields.get("cpu family"), "cpuinfo cpu family", problems),
                   model=_to_int(fields.get("model"), "cpuinfo model", problems),
                   model_name=fields.get("model name", ""), microcode=fields.get("microcode", ""),
                   flags=frozenset(fields.get("flags", "").split()), problems=tuple(problems))


def parse_cpuid_snp(lines: Iterable[str]) -> bool | None:
    """SEV-SNP (EAX bit 4) from `od -An -tx4` of leaf 0x8000001F; None unless it is four words."""
    words = " ".join(lines).split()
    if len(words) != 4 or not all(re.fullmatch(r"[0-9a-fA-F]{1,8}", w) for w in words):
        return None
    return bool(int(words[0], 16) & (1 << 4))


def cpu_generation(family: int | None, model: int | None) -> str | None:
    """The EPYC generation a family/model names (model ranges as in amd.c), or None."""
    if family == 0x19 and model is not None:
        if model <= 0x0F:
            return "Zen 3 (Milan)"
        if 0x10 <= model <= 0x1F:
            return "Zen 4 (Genoa)"
        if 0xA0 <= model <= 0xAF:
            return "Zen 4c (Bergamo/Siena)"
    if family == 0x1A and model is not None and model <= 0x1F:
        return "Zen 5 (Turin)"
    return None


# snp_probe_rmptable_info() failures: printed only where the CPU has SNP (bsp_determine_snp() probes
# the RMP on family >= 19h, bare metal), after which amd.c clears the sev_snp flag.
RMP_PROBE_FAILED = ("has not been reserved by BIOS", "RMP configuration not valid")


def snp_hardware(f: HostFacts) -> SnpHardware:
    """Whether the machine itself can do SEV-SNP. Only a VM, another vendor's CPU or an AMD part
    without SNP cannot; a capable CPU whose BIOS or kernel left SNP off (the kernel then clears
    the sev_snp flag) is capable, and what it lacks is a misconfiguration, not a reason to skip."""
    fam, model = f.cpu_family, f.cpu_model
    what = f"{f.cpu_model_name or '?'}, family {fam if fam is None else f'{fam:x}h'} model " \
           f"{model if model is None else f'{model:02x}h'}"
    if "hypervisor" in f.cpu_flags:
        return SnpHardware(False, "a VM ('hypervisor' flag): the kernel never enables host SEV-SNP in a guest")
    if f.cpu_vendor and f.cpu_vendor != "AuthenticAMD":
        return SnpHardware(False, f"{f.cpu_vendor} CPU ({what}): SEV-SNP is AMD's")
    gen = cpu_generation(fam, model)
    if gen:
        return SnpHardware(True, f"{what}: {gen}")
    if f.cpuid_snp:
        return SnpHardware(True, f"{what}: CPUID Fn8000_001F EAX bit 4 (SEV-SNP) is set")
    if "sev_snp" in f.cpu_flags or f.rmp_range or f.snp_api:
        return SnpHardware(True, f"{what}: the kernel found SEV-SNP (sev_snp flag, RMP or SNP firmware)")
    if probed := [e for e in f.snp_errors if any(k in e for k in RMP_PROBE_FAILED)]:
        return SnpHardware(True, f"{what}: the kernel probed the RMP ({probed[0]})")
    if fam in (0x19, 0x1A) and "EPYC" in f.cpu_model_name:
        return SnpHardware(True, f"{what}: model not recognised, but an EPYC of an SNP family")
    if not f.cpu_vendor or fam is None:
        return SnpHardware(True, f"CPU not identified ({what}): taken as capable, so nothing is skipped")
    cpuid = "" if f.cpuid_snp is None else "; CPUID Fn8000_001F EAX bit 4 is clear"
    return SnpHardware(False, f"{what}: no SNP-capable EPYC (family 19h or 1Ah){cpuid}")


def parse_bracketed_mode(text: str) -> str | None:
    """'always [madvise] never' -> 'madvise'; None when nothing is selected."""
    m = re.search(r"\[([^\]\s]+)\]", text)
    return m.group(1) if m else None


def parse_sev_firmware(lines: Iterable[str]) -> tuple[Version | None, Version | None]:
    """(SNP API, SEV API) from ccp's "SEV-SNP API:%d.%d build:%d" and "SEV API:..."; last wins."""
    snp = sev = None
    for line in lines:
        if m := SNP_API.search(line):
            snp = (int(m[1]), int(m[2]), int(m[3]))
        elif m := SEV_API.search(line):
            sev = (int(m[1]), int(m[2]), int(m[3]))
    return snp, sev


def parse_rmp_range(line: str) -> tuple[int, int] | None:
    m = RMP_RANGE.search(line)
    return (int(m[1], 16), int(m[2], 16)) if m else None


def parse_dmesg(lines: Iterable[str]) -> DmesgFacts:
    msgs = [TIMESTAMP.sub("", line) for line in lines if line.strip()]
    snp, sev = parse_sev_firmware(msgs)
    kvm_lines = tuple(x[x.index("kvm_amd: "):] for x in msgs if KVM_SEV.search(x))
    rmp = [r for r in map(parse_rmp_range, msgs) if r]
    mem = [m[1].strip() for m in map(MEM_ENCRYPT.search, msgs) if m]
    return DmesgFacts(
        snp_api=snp, sev_api=sev, rmp_range=rmp[-1] if rmp else None,
        snp_errors=tuple(x for x in msgs if SNP_ERRORS.search(x)),
        kvm_sev_lines=kvm_lines,
        kvm_sev={m[1]: m[2] for m in map(KVM_SEV.search, kvm_lines) if m},
        iommu_snp_enabled=any(IOMMU_SNP_OK in x for x in msgs),
        mem_encrypt=mem[-1] if mem else "",
        dmesg_from_boot=bool(msgs) and "Linux version" in msgs[0])


def parse_hugepages(lines: Iterable[str]) -> tuple[int | None, frozenset[int], tuple[str, ...]]:
    """(nr_hugepages, page sizes in kB from the hugepages-<N>kB names, problems)."""
    nr, sizes, problems = None, set(), []
    for line in (x.strip() for x in lines):
        if m := re.fullmatch(r"hugepages-(\d+)kB", line):
            sizes.add(int(m[1]))
        elif line.startswith("nr_hugepages="):
            nr = _to_int(line.partition("=")[2] or None, "nr_hugepages", problems)
        elif line:
            problems.append(f"hugepages: unexpected entry {line!r}")
    return nr, frozenset(sizes), tuple(problems)


def parse_kconfig(lines: Iterable[str]) -> tuple[str, dict[str, str], tuple[str, ...]]:
    """(source, {"KVM": "y", "KVM_INTEL": "n"}, problems) from the config section."""
    source, config, problems = "", {}, []
    for line in lines:
        if line.startswith("source="):
            source = line[len("source="):].strip()
        elif m := re.fullmatch(r"# CONFIG_(\w+) is not set", line.strip()):
            config[m[1]] = "n"
        elif m := re.fullmatch(r"CONFIG_(\w+)=(.*)", line.strip()):
            config[m[1]] = m[2].strip('"')
        elif line.strip():
            problems.append(f"config: unexpected line {line!r}")
    return ("" if source == "none" else source), config, tuple(problems)


def parse_hostcheck(text: str) -> HostFacts:
    """COLLECT_SCRIPT's output -> HostFacts; every oddity lands in .problems."""
    s, problems = split_sections(text)
    p = list(problems)
    get = lambda name: s.get(name, ())  # noqa: E731
    first = lambda name: next((x.strip() for x in get(name) if x.strip()), "")  # noqa: E731

    def kv(name: str) -> dict[str, str]:
        out, pr = parse_key_values(get(name), name)
        p.extend(pr)
        return out

    meta, amd, kvm, devices, knobs = (kv(n) for n in ("meta", "params:kvm_amd", "params:kvm",
                                                      "devices", "thp"))
    fmt = meta.get("format", "")
    fmt = int(fmt) if fmt.isdigit() else 1
    p = [x for x in p if not any(x == f"section {n!r} missing" and fmt < v for n, v in _SINCE_FORMAT.items())]
    cpuid = [x for x in get("cpuid") if x.strip()]
    cpuid_snp = parse_cpuid_snp(cpuid) if cpuid else None
    if cpuid and cpuid_snp is None:
        p.append(f"cpuid: not four 32-bit words: {' '.join(cpuid)!r}")
    cpu = parse_cpuinfo(get("cpuinfo")) if "cpuinfo" in s else CpuInfo()
    status = first("dmesg-status")  # "rc=N", then dmesg's own error output
    if status and not status.startswith("rc="):
        p.append(f"dmesg-status: no rc= line: {status!r}")
    rc = _to_int(status[3:] if status.startswith("rc=") else None, "dmesg-status rc", p)
    dmesg = parse_dmesg(get("dmesg")) if rc == 0 else DmesgFacts()
    source, config, pr = parse_kconfig(get("config"))
    nr, sizes, pr2 = parse_hugepages(get("hugepages"))
    p += [*cpu.problems, *pr, *pr2]
    dbg, trace = (parse_key_values(get(n), n)[0] for n in ("debugfs", "tracefs"))
    return HostFacts(
        kernel_release=first("uname-r"), proc_version=first("version"), cmdline=first("cmdline"),
        uid=_to_int(meta.get("uid") or None, "meta uid", p),
        cpu_vendor=cpu.vendor, cpu_family=cpu.family, cpu_model=cpu.model,
        cpu_model_name=cpu.model_name, microcode=cpu.microcode, cpu_flags=cpu.flags, cpuid_snp=cpuid_snp,
        modules=frozenset(x.strip() for x in get("modules") if x.strip()),
        kvm_amd_params=amd, kvm_params=kvm, dmesg_readable=rc == 0, **vars(dmesg),
        dmesg_error="\n".join(x for x in get("dmesg-status") if x.strip()).partition("\n")[2],
        dev_kvm=devices.get("/dev/kvm") == "char", dev_sev=devices.get("/dev/sev") == "char",
        config_source=source, config=config,
        thp={k: parse_bracketed_mode(v) or v for k, v in knobs.items()},
        nr_hugepages=nr, hugepage_sizes_kb=sizes,
        debugfs_mounted=dbg.get("mounted") == "yes",
        split_huge_pages=dbg.get("split_huge_pages", "no"), tracefs_path=trace.get("path", ""),
        kvm_trace_events=frozenset(x.strip() for x in get("kvm-events") if x.strip()),
        sections=frozenset(s), problems=tuple(p))


def _to_int(value: str | None, what: str, problems: list[str]) -> int | None:
    if value is None:
        return None
    try:
        return int(value, 0) if value.strip().lower().startswith("0x") else int(value)
    except ValueError:
        problems.append(f"{what}: not a number: {value!r}")
        return None
