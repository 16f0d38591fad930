"""Selftest programs by name, found through the build's manifest (what the tree's Makefile built).

Trees put the x86 programs in different directories (`x86_64/` before 6.13, `x86/` after), so a
suite names a program (`private_mem_conversions_test`) and the bundle's manifest.json says where
it is. Never hard-code the directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from harness.errors import InfraError
from harness.kernel.selftests_build import find_program
from harness.transport.base import Transport

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Programs:
    paths: tuple[str, ...]  # relative to the bundle root, as the manifest lists them

    def find(self, name: str) -> str | None:
        """The path of `name`: an exact path, else the one program with that file name.
        Two programs sharing a file name (one per arch directory) must be named by path."""
        hits = find_program(self.paths, name)
        if len(hits) > 1:
            raise InfraError(f"selftest {name!r} is ambiguous in the build's manifest: {', '.join(hits)}")
        return hits[0] if hits else None


def parse_manifest(text: str, where: str) -> Programs:
    try:
        files = json.loads(text)["files"]
        return Programs(tuple(str(f["path"]) for f in files))
    except (ValueError, KeyError, TypeError) as e:
        raise InfraError(f"{where}: not a selftests manifest ({e}); reinstall the build") from e


def read_programs(transport: Transport, selftests_dir: str) -> Programs:
    """The manifest bundled with the selftests, read from the target."""
    path = f"{selftests_dir.rstrip('/')}/{MANIFEST}"
    r = transport.run(["cat", path], timeout=60, check=False)
    if r.exit_status != 0:
        raise InfraError(f"{transport.name}: cannot read {path} (exit {r.exit_status}): the selftests bundle "
                         "there is incomplete; reinstall the build")
    return parse_manifest(r.stdout, f"{transport.name}:{path}")
