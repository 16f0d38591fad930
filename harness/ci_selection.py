"""A CI variable's pytest selection (BISECT_SELECTION), checked before pytest sees it.

Anyone who can start a pipeline or a Jenkins build sets it, and the bisect hands it to
pytest on the lab runner: `--basetemp=$HOME` would make pytest delete the runner's home,
`-p` load any module, `--rootdir`/`-c` read another configuration. So only these words
pass, after shell-like splitting:

    tests/DIR/test_x.py[::Class]::test_name[param id]   a node id (or a module) under tests/
    -k EXPR   -m EXPR                                   pytest's own expressions

`python -m harness.ci_selection SELECTION` prints the words, one per line;
`python -m harness.ci_selection SELECTION -- COMMAND...` runs COMMAND with them appended,
as separate arguments (no shell reads them again). A refused selection exits 2, naming why.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from typing import Sequence

from harness.errors import ConfigError

EXPRESSION_OPTIONS = ("-k", "-m")
# tests/<dirs>/<module>.py: plain path words, no absolute path, no `..`, no empty component.
_MODULE = re.compile(r"tests(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*/[A-Za-z0-9_][A-Za-z0-9_.-]*\.py")
_NAMES = re.compile(r"(?:::[A-Za-z_][A-Za-z0-9_]*)+")
_PARAM = re.compile(r"\[[^\[\]\x00-\x1f\x7f]*\]")  # pytest's parameter id: any printable text
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SelectionError(ConfigError):
    """The selection holds something other than node ids, -k EXPR and -m EXPR."""


def parse_selection(text: str) -> list[str]:
    """The selection's words, each checked; SelectionError names the first refused one."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise SelectionError(f"cannot split the selection into words: {e}") from None
    if not words:
        raise SelectionError("the selection is empty: give node ids (tests/...py::name), -k EXPR or -m EXPR")
    i = 0
    while i < len(words):
        word = words[i]
        if word in EXPRESSION_OPTIONS:
            if i + 1 == len(words):
                raise SelectionError(f"{word} needs an expression after it")
            _check_expression(word, words[i + 1])
            i += 2
            continue
        if word.startswith("-"):
            raise SelectionError(f"option {word!r} is not allowed: only -k EXPR and -m EXPR "
                                 "(as separate words) may go to pytest")
        _check_node_id(word)
        i += 1
    return words


def _check_expression(option: str, expr: str) -> None:
    if not expr.strip() or expr.startswith("-"):
        raise SelectionError(f"{option} needs an expression after it, found {expr!r}")
    if _CONTROL.search(expr):
        raise SelectionError(f"{option} {expr!r}: control characters are not allowed")


def _check_node_id(word: str) -> None:
    path, sep, rest = word.partition("::")
    if ".." in path.split("/"):
        raise SelectionError(f"{word!r}: '..' is not allowed in a test path")
    if not _MODULE.fullmatch(path):
        raise SelectionError(f"{word!r} is not a test module under tests/ (tests/.../test_x.py), "
                             "nor -k EXPR or -m EXPR")
    if not sep:
        return
    names = re.match(_NAMES, "::" + rest)
    tail = ("::" + rest)[names.end():] if names else "::" + rest
    if names is None or (tail and not _PARAM.fullmatch(tail)):
        raise SelectionError(f"{word!r} is not a node id (tests/...py::name or ::Class::name, then "
                             "an optional [parameter id])")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, command = args[:cut], args[cut + 1:]
    if len(args) != 1:
        print("usage: python -m harness.ci_selection SELECTION [-- COMMAND...]", file=sys.stderr)
        return 2
    try:
        words = parse_selection(args[0])
    except SelectionError as e:
        print(f"refused selection {args[0]!r}: {e}", file=sys.stderr)
        return 2
    if not command:
        print("\n".join(words))
        return 0
    print(f"selection: {shlex.join(words)}", file=sys.stderr, flush=True)
    os.execvp(command[0], [*command, *words])
    return 127  # pragma: no cover - execvp returns only by raising


if __name__ == "__main__":
    sys.exit(main())
