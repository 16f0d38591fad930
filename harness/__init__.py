"""snp-harness: test KVM SEV-SNP / guest_memfd kernel patches end to end."""

__version__ = "0.1.0"
