"""Targets: where a built kernel runs (local QEMU, remote EPYC host), and what each can do."""
