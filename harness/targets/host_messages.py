"""The kernel's dmesg messages that the host check reads, with the sources that print them.

Each regex names the format strings (file, text) it stands for: format_drift.py checks
every one against each supported tree, so a rewording shows up in CI before a lab host
is misjudged.
"""

from __future__ import annotations

import re

# Where the dmesg texts below come from: format_drift.py checks each against every supported
# tree (keys: harness.evidence.splat_patterns.Fmt), so a rewording shows up in CI first.
def _src(path: str, prefix: str = ""):
    return lambda text, **kw: dict(path=path, text=text, prefix=prefix, **kw)


_host, _kvm = _src("arch/x86/virt/svm/sev.c", "SEV-SNP: "), _src("arch/x86/kvm/svm/sev.c", "kvm_amd: ")
_ccp, _iommu = _src("drivers/crypto/ccp/sev-dev.c", "ccp 0000:01:00.5: "), _src("drivers/iommu/amd/init.c", "AMD-Vi: ")
_SEGMENTED = r"\bsetup_segmented_rmptable\("    # 6.14+: the RMP may be split into segments

# dmesg lines that say SNP is unusable, by the source file that prints them: (regex, sources).
_SNP_ERROR_SOURCES: tuple[tuple[str, tuple[dict, ...]], ...] = (
    # arch/x86/virt/svm/sev.c (pr_fmt "SEV-SNP: ")
    (r"SEV-SNP: Memory for the RMP table has not been reserved by BIOS",
     (_host("Memory for the RMP table has not been reserved by BIOS"),)),
    (r"SEV-SNP: RMP configuration not valid", (_host("RMP configuration not valid: base=%#llx, end=%#llx"),)),
    (r"SEV-SNP: (?:Memory reserved for the RMP table|Segmented RMP) does not cover full system RAM",
     (_host("Memory reserved for the RMP table does not cover full system RAM (expected 0x%llx got 0x%llx)"),
      _host("Segmented RMP does not cover full system RAM (expected 0x%llx got 0x%llx)", when=_SEGMENTED))),
    # 6.12 maps one table; 6.14+ maps segments and a bookkeeping area
    (r"SEV-SNP: Failed to map RMP (?:table|segment|bookkeeping)",
     (_host("Failed to map RMP table", alt="rmp_map"),
      _host("Failed to map RMP segment addr 0x%llx size 0x%llx", alt="rmp_map"),
      _host("Failed to map RMP bookkeeping area", alt="rmp_map"))),
    (r"SEV-SNP: (?:Invalid RMP (?:size|segment base address)|RMP segment descriptor already exists"
     r"|RMP segment size \(\d+\) is not within advertised bounds)",
     tuple(_host(t, when=_SEGMENTED) for t in (
         "Invalid RMP size 0x%llx for configured segment size 0x%llx",
         "Invalid RMP segment base address 0x%llx for configured segment size 0x%llx",
         "RMP segment descriptor already exists at index %llu",
         "RMP segment size (%u) is not within advertised bounds (min=%u, max=%u)"))),
    (r"SEV-SNP: SNP init failed: not all CPUs online",
     (_host("SNP init failed: not all CPUs online. (%*pbl online <-> %*pbl present masks).",
            when=r"\bsnp_prepare\("),)),
    # drivers/iommu/amd/init.c: "AMD-Vi: SNP: ..., SNP cannot be supported."
    (r"SNP cannot be supported", (_iommu("SNP: IOMMU SNP feature not enabled, SNP cannot be supported."),
                                  _iommu("SNP: RMP initialization failed, SNP cannot be supported."))),
    # drivers/crypto/ccp/sev-dev.c; the firmware-version one is dev_dbg (dyndbg only)
    (r"SEV-SNP support requires firmware version", (_ccp("SEV-SNP support requires firmware version >= %d:%d"),)),
    # 6.12's _sev_platform_init_locked(); 7.x returns the error without a word. The SNP host
    # series before its merge (sev_pci_init(), in vendor and distro kernels) printed no rc.
    (r"SEV-SNP: failed to INIT (?:rc -?\d+, )?error ", (_ccp("SEV-SNP: failed to INIT rc %d, error %#x", old=True),
                                                      _ccp("SEV-SNP: failed to INIT error %#x", old=True))),
    (r"SEV-SNP: SNP_INIT(_EX)? failed", (_ccp("SEV-SNP: %s failed rc %d, error %#x", args=("SNP_INIT",)),)),
    (r"SEV-SNP: SNP_DF_FLUSH failed", (_ccp("SEV-SNP: SNP_DF_FLUSH failed rc %d, error %#x"),)),
    (r"SEV: SNP_INIT_EX ", (_ccp("SEV: SNP_INIT_EX range list memory allocation failed"),
                            _ccp("SEV: SNP_INIT_EX walk_iomem_res_desc failed rc = %d"))),
    (r"SEV: memory encryption not enabled by BIOS", (_ccp("SEV: memory encryption not enabled by BIOS"),)),
    (r"sev initialization failed", (_ccp("sev initialization failed"),)),
    # arch/x86/kvm/svm/sev.c
    (r"SEV: SNP_PLATFORM_STATUS failed", (_kvm("SEV: SNP_PLATFORM_STATUS failed ret=%d, fw_error=%d (%#x)"),)),
)
SNP_ERRORS = re.compile("|".join(rx for rx, _ in _SNP_ERROR_SOURCES))
# dmesg time and caller id ("[  12.3][ T123] "), as printk prints them
TIMESTAMP = re.compile(r"^(<\d+>)?(\[\s*\d+\.\d+\]\s?)?(\[\s*[CT]\d+\])?\s?")
SNP_API = re.compile(r"SEV-SNP API:(\d+)\.(\d+) build:(\d+)")
SEV_API = re.compile(r"(?<![\w-])SEV API:(\d+)\.(\d+) build:(\d+)")
# 6.14+ hosts with a segmented RMP print the base table's range instead
RMP_RANGE = re.compile(r"RMP (?:base )?table physical range \[0x([0-9a-fA-F]+) - 0x([0-9a-fA-F]+)\]")
KVM_SEV = re.compile(r"kvm_amd: (SEV|SEV-ES|SEV-SNP) (enabled|disabled|unusable) \(ASIDs")
MEM_ENCRYPT = re.compile(r"Memory Encryption Features active: (.*)")
IOMMU_SNP_OK = "AMD-Vi: IOMMU SNP support enabled."

# Every regex above that matches a kernel message, with its sources, for format_drift.py.
KERNEL_MESSAGES: tuple[tuple[str, re.Pattern[str], tuple[dict, ...]], ...] = (
    *((f"snp_errors /{rx}/", re.compile(rx), srcs) for rx, srcs in _SNP_ERROR_SOURCES),
    ("snp_api", SNP_API, (_ccp("SEV-SNP API:%d.%d build:%d"),)),
    ("sev_api", SEV_API, (_ccp("SEV API:%d.%d build:%d"),)),
    ("rmp_range", RMP_RANGE, (_host("RMP table physical range [0x%016llx - 0x%016llx]"),
                               _host("Segmented RMP base table physical range [0x%016llx - 0x%016llx]",
                                     when=_SEGMENTED))),
    ("kvm_sev", KVM_SEV, tuple(_kvm(f"{kind} %s (ASIDs %u - %u)", args=("enabled",))
                                for kind in ("SEV", "SEV-ES", "SEV-SNP"))),
    ("mem_encrypt", MEM_ENCRYPT, (_src("arch/x86/mm/mem_encrypt.c")(
        "Memory Encryption Features active: ", sample="Memory Encryption Features active: AMD SEV SEV-SNP"),)),
    ("iommu_snp_ok", re.compile(re.escape(IOMMU_SNP_OK)), (_iommu("IOMMU SNP support enabled."),)),
)
