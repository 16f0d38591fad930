"""How the harness runs commands on a target: locally or over SSH."""

from harness.transport.base import CommandResult, Sink, Transport, boot_id

__all__ = ["CommandResult", "Sink", "Transport", "boot_id"]
