"""pytest-xdist scheduling by target: every test of one target runs on one worker.

A target is a session resource (a booted VM, a leased host); two workers sharing
one would boot it twice or fight over its lease. Imported only under xdist.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling


def target_of(nodeid: str, targets: list[str]) -> str | None:
    """The target id in a test id's parameters (`test_x[4k-ssh://epyc1-run2]`), if any."""
    params = nodeid[nodeid.find("[") + 1:-1] if nodeid.endswith("]") and "[" in nodeid else ""
    if not params:
        return None
    # Longest first: ssh://epyc1 must not claim ssh://epyc10's tests.
    for t in sorted(targets, key=len, reverse=True):
        at = params.find(t)
        while at != -1:
            end = at + len(t)
            if (at == 0 or params[at - 1] == "-") and (end == len(params) or params[end] == "-"):
                return t
            at = params.find(t, at + 1)
    return None


class TargetScheduling(LoadScopeScheduling):
    """LoadScopeScheduling whose scope is the target; other tests keep xdist's own grouping."""

    def __init__(self, config, log=None, *, targets: list[str]) -> None:
        super().__init__(config, log)
        self._targets = list(targets)
        self._by_module = config.getoption("dist") == "loadscope"

    def _split_scope(self, nodeid: str) -> str:
        target = target_of(nodeid, self._targets)
        if target is not None:
            return f"target:{target}"
        return super()._split_scope(nodeid) if self._by_module else nodeid
