"""The harness's exception tree (see DESIGN.md, "Errors").

ConfigError and PatchError are the user's to fix; InfraError means the lab or
the tooling broke and must never be reported as a test failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from harness.transport.base import CommandResult


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class ConfigError(HarnessError):
    """Bad inventory, unknown host, missing file: the user can fix it."""


class PatchError(HarnessError):
    """A patch of the series does not apply."""


class InfraError(HarnessError):
    """The lab or the tooling broke; never a test failure."""


class TransportError(InfraError):
    """The connection to a target failed or dropped."""


class HostKeyError(TransportError):
    """A host key is unknown or changed; never accepted silently."""


class CommandFailed(TransportError):
    """A command exited non-zero and the caller asked for check=True."""

    def __init__(self, result: CommandResult, where: str = "") -> None:
        self.result = result
        self.where = where
        super().__init__(self._message())

    def _message(self) -> str:
        r = self.result
        at = f" on {self.where}" if self.where else ""
        return f"command{at} exited {r.exit_status}: {r.command}\n{r.tail()}".rstrip()


class CommandTimeout(TransportError):
    """A command outlived its timeout; the process was ended."""

    def __init__(self, result: CommandResult, timeout: float, where: str = "") -> None:
        self.result = result
        self.timeout = timeout
        self.where = where
        at = f" on {where}" if where else ""
        super().__init__(
            f"command{at} timed out after {timeout:g}s and was killed: "
            f"{result.command}\n{result.tail()}".rstrip()
        )


class BuildError(InfraError):
    """make failed; carries the log and the first compiler errors found in it.

    An infrastructure error for a run, and `skip` (125) for a bisect step.
    """

    def __init__(self, message: str, log_path=None, first_errors=()) -> None:
        self.log_path = log_path
        self.first_errors = tuple(first_errors)
        text = message
        if self.first_errors:
            text += "\nfirst errors:\n  " + "\n  ".join(self.first_errors)
        if log_path is not None:
            text += f"\nfull log: {log_path}"
        super().__init__(text)


class BuildTimeout(BuildError):
    """make ran past its time limit: the machine, not the commit, is the likely cause (bisect: abort)."""


class BootError(InfraError):
    """A kernel did not come up on a target; carries the console's last lines."""

    def __init__(self, message: str, console_tail: str = "") -> None:
        self.console_tail = console_tail
        text = message
        if console_tail:
            text += "\n--- console (last lines) ---\n" + console_tail
        super().__init__(text)


class BootTimeout(BootError):
    """No sign of life within the boot timeout."""


class LeaseError(InfraError):
    """The host is held by another run."""
