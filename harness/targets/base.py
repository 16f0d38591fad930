"""The Target protocol: somewhere a kernel under test runs, reached through a Transport."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from harness.targets.capabilities import Capabilities
    from harness.transport.base import Transport


class Target(Protocol):
    name: str  # "local://", "ssh://epyc1"; also the pytest id
    transport: Transport
    selftests_dir: str | None  # the build's selftests on the target (None: not installed)

    def capabilities(self, refresh: bool = False) -> Capabilities:
        """What this target can do (SNP, VM types, THP, debugfs...), probed once and cached."""
        ...

    def close(self) -> None: ...


class ProbedTarget:
    """Shared by targets whose capabilities come from the preflight probe."""

    name: str
    transport: Transport
    selftests_dir: str | None = None  # where the build's selftests are on the target, once installed
    _caps: Capabilities | None = None

    def capabilities(self, refresh: bool = False) -> Capabilities:
        if self._caps is None or refresh:
            from harness.targets.capabilities import capabilities

            self._caps = capabilities(self.transport, self.selftests_dir)
        return self._caps

    def close(self) -> None:
        self.transport.close()
