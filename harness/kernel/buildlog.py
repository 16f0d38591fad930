"""Pure readers of kbuild output: step lines for progress, first errors for BuildError."""

from __future__ import annotations

import re
from typing import Iterable

# kbuild's quiet lines: "  CC      arch/x86/kvm/svm/sev.o", "  LD [M]  ...".
_STEP = re.compile(r"^  ([A-Z][A-Z0-9_]{1,11})(?: \[M\])?\s+\S")
_COMPILER_ERROR = re.compile(r"^\S+:\d+(?::\d+)?: (?:fatal )?error: ")
_LINKER_ERROR = re.compile(r"(?:undefined reference to|multiple definition of|^ld(?:\.\w+)?: .*(?:error|in function))")
_TOOL_ERROR = re.compile(r"^(?:\S+: )?(?:error|ERROR): ")
_MAKE_ERROR = re.compile(r"^make(?:\[\d+\])?: \*\*\* ")


def is_step(line: str) -> bool:
    return bool(_STEP.match(line))


def count_steps(lines: Iterable[str]) -> int:
    return sum(1 for line in lines if _STEP.match(line))


def first_errors(lines: Iterable[str], limit: int = 5) -> list[str]:
    """The first distinct error lines: compiler/linker/tool errors, else make's own, else nothing."""
    errors: list[str] = []
    make_errors: list[str] = []
    for raw in lines:
        line = raw.rstrip()
        if _COMPILER_ERROR.match(line) or _LINKER_ERROR.search(line) or _TOOL_ERROR.match(line):
            if line not in errors:
                errors.append(line)
                if len(errors) >= limit:
                    break
        elif _MAKE_ERROR.match(line) and line not in make_errors:
            make_errors.append(line)
    return errors or make_errors[:limit]
