"""Why an option did not stick: the tree's Kconfig files read in Python.

Pure except for reading Kconfig files, and only used once something was dropped:
unmet_symbols, kconfig_index, kconfig_dependencies, explain_dropped.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping, Sequence


@dataclass(frozen=True)
class Dropped:
    option: str
    wanted: str
    got: str


# ---- depends-on expressions ---------------------------------------------------------------

_TOKEN = re.compile(r"\s*(&&|\|\||!=|<=|>=|[!()=<>]|\"[^\"]*\"|'[^']*'|[A-Za-z0-9_.$-]+|.)")
_NUMBER = r"-?[0-9]+|0[xX][0-9a-fA-F]+"
_LITERAL = re.compile(_NUMBER + "|[ymn]")
_COMPARE = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}


def _is_symbol(tok: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_]+", tok) is not None and not _LITERAL.fullmatch(tok)


def _parse_expr(tokens: list[str]):
    """Recursive descent over || && ! ( ) and comparisons; tolerant of junk and a missing ')'."""
    pos = 0

    def peek(k: int = 0) -> str:
        return tokens[pos + k] if pos + k < len(tokens) else ""

    def binary(op: str, sub):
        nonlocal pos
        node = sub()
        while peek() == op:
            pos += 1
            node = (op, node, sub())
        return node

    def unary():
        nonlocal pos
        tok, pos = peek(), pos + 1
        if tok == "!":
            return ("!", unary())
        if tok == "(":
            node = binary("||", lambda: binary("&&", unary))
            pos += peek() == ")"
            return node
        if peek() in _COMPARE:
            pos += 2
            return ("cmp", peek(-2), tok, peek(-1))
        return ("atom", tok)

    return binary("||", lambda: binary("&&", unary))


def _value(tok: str, final: Mapping[str, str]) -> str:
    v = final.get(tok, "n") if _is_symbol(tok) else tok
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'" else v


def _true(node, final: Mapping[str, str]) -> bool:
    if node[0] == "atom":
        return _value(node[1], final) not in ("n", "")
    if node[0] == "!":
        return not _true(node[1], final)
    if node[0] == "cmp":
        a, b = _value(node[2], final), _value(node[3], final)
        if node[1] not in ("=", "!=") and re.fullmatch(_NUMBER, a) and re.fullmatch(_NUMBER, b):
            a, b = int(a, 0), int(b, 0)  # type: ignore[assignment]
        return _COMPARE[node[1]](a, b)
    left, right = _true(node[1], final), _true(node[2], final)
    return (left and right) if node[0] == "&&" else (left or right)


def _blame(node, final: Mapping[str, str], want: bool) -> list[str]:
    """The symbols that make `node` evaluate to (not want)."""
    if _true(node, final) == want:
        return []
    if node[0] in ("atom", "cmp"):
        return [t for t in node[1:] if _is_symbol(t)]
    if node[0] == "!":
        return _blame(node[1], final, not want)
    return _blame(node[1], final, want) + _blame(node[2], final, want)


def unmet_symbols(expr: str, final: Mapping[str, str]) -> list[str]:
    """Symbols that keep a depends-on expression from being true: `FOO` when FOO is n/absent,
    `!FOO` when FOO is y/m, `FOO=m` when FOO is not m. Tristates count as booleans."""
    tokens = [t for t in _TOKEN.findall(expr) if t.strip()]
    if not tokens:
        return []
    return list(dict.fromkeys(_blame(_parse_expr(tokens), final, True)))


# ---- Kconfig files ---------------------------------------------------------------------------
#
# Covered: `depends on` and prompt `if` conditions of the entry itself, and the `if`/`menu`/
# `choice` blocks around it, also across `source` (with $(SRCARCH) = arch). Not covered: a
# choice member that lost to a sibling, `default`/`def_bool` conditions, `select ... if`,
# `imply`, `visible if`, and Kconfig macros other than $(SRCARCH)/$(ARCH).

_KEYWORD = re.compile(r"(menuconfig|config|choice|endchoice|menu|endmenu|if|endif|comment|"
                      r"o?r?source|depends\s+on|select|help|---help---|bool|tristate|string|int|"
                      r"hex|prompt)(?:\s+(.*))?")
_COMMENT = re.compile(r"""^((?:[^"'#]|"[^"]*"|'[^']*')*)#.*$""")  # a '#' outside quotes
_TYPES = ("bool", "tristate", "string", "int", "hex", "prompt")
_PROMPT = re.compile(r"(\"(?:[^\"\\]|\\.)*\"|'[^']*')\s*(?:if\s+(.+))?")


@dataclass(frozen=True)
class KconfigEntry:
    option: str
    path: str  # relative to the tree
    line: int
    depends: tuple[str, ...]  # its own `depends on` lines and prompt conditions
    inherited: tuple[str, ...]  # from the enclosing if/menu/choice blocks, innermost first
    has_prompt: bool


@dataclass
class KconfigIndex:
    entries: dict[str, list[KconfigEntry]] = field(default_factory=dict)
    selected_by: dict[str, list[str]] = field(default_factory=dict)


def _source_path(cur: str, kw: str, arg: str, arch: str) -> str | None:
    path = arg.strip('"').replace("$(SRCARCH)", arch).replace("$(ARCH)", arch)
    if not path or "$(" in path:
        return None
    return str(PurePosixPath(cur).parent / path) if kw in ("rsource", "orsource") else path


def _walk(root: Path, rel: str, outer: tuple[str, ...], arch: str, idx: KconfigIndex,
          chain: tuple[str, ...] = ()) -> None:
    try:
        lines = (root / rel).read_text(errors="replace").splitlines()
    except OSError:  # a missing osource, or a file cut from a test tree
        return
    blocks: list[tuple[str, list[str]]] = []  # (kind, deps), outermost first
    target: list[str] | None = None  # where `depends on` lines go
    cur: dict | None = None  # the config entry being read
    built: list[dict] = []
    in_help, help_indent, i = False, None, 0

    def context() -> tuple[str, ...]:
        return tuple(d for _, deps in reversed(blocks) for d in deps) + outer

    while i < len(lines):
        raw, lineno = lines[i], i + 1
        i += 1
        while raw.endswith("\\") and i < len(lines):
            raw, i = raw[:-1].rstrip() + " " + lines[i].strip(), i + 1
        if in_help:
            s = raw.expandtabs(8)
            if not s.strip():
                continue
            ind = len(s) - len(s.lstrip())
            if help_indent is None and ind > 0:  # the first help line sets the indent
                help_indent = ind
            if help_indent is not None and ind >= help_indent:
                continue
            in_help = False
        m = _KEYWORD.fullmatch(_COMMENT.sub(r"\1", raw).strip() if "#" in raw else raw.strip())
        if not m:
            continue
        kw, arg = m[1].split()[0], (m[2] or "").strip()
        if kw in ("config", "menuconfig"):
            cur = {"option": arg, "path": rel, "line": lineno, "depends": [],
                   "inherited": context(), "has_prompt": False}
            built.append(cur)
            target = cur["depends"]
        elif kw in ("choice", "menu", "if"):
            blocks.append((kw, [arg] if kw == "if" else []))
            target, cur = (None if kw == "if" else blocks[-1][1]), None
        elif kw in ("endchoice", "endmenu", "endif"):
            want = kw[3:]
            while blocks and blocks.pop()[0] != want:
                pass
            target, cur = None, None
        elif kw == "comment":
            target, cur = [], None
        elif kw.endswith("source"):
            target, cur = None, None
            path = _source_path(rel, kw, arg, arch)
            if path and path != rel and path not in chain:
                _walk(root, path, context(), arch, idx, chain + (rel,))
        elif kw == "depends" and target is not None:
            target.append(arg)
        elif kw == "select" and cur is not None and arg:
            idx.selected_by.setdefault(arg.split()[0], []).append(cur["option"])
        elif kw in ("help", "---help---"):
            in_help, help_indent = True, None
        elif kw in _TYPES and cur is not None and (p := _PROMPT.fullmatch(arg)):
            cur["has_prompt"] = True
            if p[2]:
                cur["depends"].append(p[2].strip())
    for b in built:
        entry = KconfigEntry(**{**b, "depends": tuple(b["depends"])})
        idx.entries.setdefault(entry.option, []).append(entry)


def kconfig_index(srctree: Path, arch: str = "x86") -> KconfigIndex:
    """Every entry reachable from the tree's top-level Kconfig for `arch`, in one pass."""
    idx = KconfigIndex()
    _walk(Path(srctree), "Kconfig", (), arch, idx)
    return idx


def _conjuncts(defs: Sequence[KconfigEntry]) -> list[str]:
    """The dependencies as a list of expressions that must all hold."""
    if len(defs) <= 1:
        return [*defs[0].depends, *defs[0].inherited] if defs else []
    alts = [_and((*e.depends, *e.inherited)) for e in defs]
    if not all(alts):  # one definition without dependencies makes the option always available
        return []
    return [" || ".join(f"({a})" if "&" in a or "|" in a else a for a in alts)]


def _and(exprs: Iterable[str]) -> str:
    return " && ".join(f"({e})" if "||" in e else e for e in exprs)


def kconfig_dependencies(srctree: Path, option: str, *, arch: str = "x86") -> list[str]:
    """The depends-on expressions of `option`: its own first, then its enclosing blocks'.
    Several definitions are OR-ed into one expression, as Kconfig does. [] if undefined."""
    return _conjuncts(kconfig_index(srctree, arch).entries.get(option, []))


def explain_one(d: Dropped, final: Mapping[str, str], idx: KconfigIndex, arch: str) -> str:
    head = f"CONFIG_{d.option}={d.wanted} was dropped (now {d.got})"
    defs = idx.entries.get(d.option, [])
    if not defs:
        return f"{head}: CONFIG_{d.option} does not exist in this tree (a typo or a removed option)"
    if d.wanted == "n" or (d.wanted == "m" and d.got == "y"):
        on = [s for s in idx.selected_by.get(d.option, ()) if final.get(s, "n") != "n"]
        return f"{head}: selected by {', '.join(on) or 'something this reader does not follow'}"
    deps = _conjuncts(defs)
    parts = [f"{head}: depends on {_and(deps)}" if deps else f"{head}: no depends on"]
    unmet = list(dict.fromkeys(s for e in deps for s in unmet_symbols(e, final)))
    if unmet:
        parts.append("unmet: " + ", ".join(s if s in idx.entries else f"{s} (not in {arch}'s Kconfig)"
                                           for s in unmet))
        seen, deeper = set(unmet) | {d.option}, []
        frontier = [s for s in unmet if final.get(s, "n") == "n"]
        while frontier:  # follow unmet options that are off down to ones that can be set
            sym = frontier.pop(0)
            for s in (s for e in _conjuncts(idx.entries.get(sym, [])) for s in unmet_symbols(e, final)):
                if s in idx.entries and s not in seen:
                    seen.add(s)
                    deeper.append(s)
                    if final.get(s, "n") == "n":
                        frontier.append(s)
        if deeper:
            parts.append("unmet further down: " + ", ".join(deeper))
    elif not any(e.has_prompt for e in defs):
        by = sorted(set(idx.selected_by.get(d.option, ())))
        parts.append("it has no prompt, so only a select can turn it on"
                     + (f"; selected by {', '.join(by)}: request one of them" if by else ""))
    else:
        parts.append("no unmet dependency found (one may be =m, or a choice, range or select decided it)")
    return "; ".join(parts)


def explain_dropped(dropped: Sequence[Dropped], srctree: Path, final: Mapping[str, str], *,
                    arch: str = "x86") -> str:
    """One line per dropped option, naming its dependencies and the unmet ones."""
    idx = kconfig_index(Path(srctree), arch)
    return "\n".join(explain_one(d, final, idx, arch) for d in dropped)
