"""Format drift: do our patterns still match what a kernel tree prints?

Every pattern we match against kernel output names the format strings it stands for
(splat_patterns.Fmt: a file of the tree and a literal of its C source). For one unpacked
tree, `check_tree()` reports:

- a format string the pattern claims for this tree that is not in the file any more
  (reworded, moved or removed). A Fmt is claimed unless it is `old` (only older kernels
  print it) or its `when` regex is not found in the file (the tree lacks the feature).
  Forms sharing an `alt` family replace each other (6.12's WARNING line and 7.x's): the
  tree must print at least one of them, whichever it is;
- a pattern that does not match a sample rendered from its own format string (`%d` ->
  123, `%pS` -> func+0x1c/0x50, ...), whatever the tree: `check_samples()`.

Literals are read the way the compiler joins them: adjacent string literals concatenate,
comments and character literals are skipped; a literal is found if it is a substring of
one such string (escapes compared as written in the source). Claims are decided by the
tree's content, never by its version. Pure apart from reading the tree's files; never
raises on an odd tree (an unreadable file is a problem, like a missing one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from harness.evidence.splat_patterns import Fmt


@dataclass(frozen=True)
class Entry:
    """Something we match against kernel output: a catalogue pattern or a hostcheck regex."""

    name: str
    fmts: tuple[Fmt, ...]
    matches: Callable[[str], bool]


@dataclass(frozen=True)
class Problem:
    entry: str
    path: str
    text: str
    what: str

    def __str__(self) -> str:
        return f"{self.entry}: {self.path}: {self.text!r}: {self.what}"


# --- rendering a printf format --------------------------------------------------------

_CONV = re.compile(r"%(?P<flags>[-+ #0]*)(?P<width>\*|[0-9]+)?(?:\.(?:\*|[0-9]+))?"
                   r"(?:hh|h|ll|l|z|t|j|L)?(?P<conv>p[A-Za-z]*|[diouxXcs%])")
_ESCAPES = {"n": "", "t": "\t", '"': '"', "\\": "\\", "'": "'"}


def render(fmt: str, args: Iterable[str] = ()) -> str:
    """A line the kernel could print for `fmt`: %s takes `args` in order ("word" after them)."""
    strings = iter(args)

    def one(m: re.Match[str]) -> str:
        conv, flags, width = m["conv"], m["flags"], m["width"]
        if conv == "%":
            return "%"
        if conv == "s":
            return next(strings, "word")
        if conv in "di":
            return "123"
        if conv in "ou":
            return "123" if conv == "u" else "17"
        if conv == "c":
            return "+"
        if conv in "xX":
            digits = "1c"
            if "0" in flags and width and width != "*":
                digits = digits.rjust(int(width), "0")
            return ("0x" if "#" in flags else "") + digits
        ext = conv[1:2]        # %p and its extensions (lib/vsprintf.c)
        if ext in ("S", "B", "F"):        # a module's symbol: the harder case, its "[mod]" follows
            return "kvm_gmem_get_pfn+0x1c/0x50 [kvm]"
        if ext in ("s", "f"):
            return "kvm_gmem_get_pfn [kvm]"
        if ext in ("d", "D"):
            return "name"
        if ext == "V":
            return "Poison overwritten"
        if ext == "b":
            return "0-3"
        if ext == "a":
            return "0x0000000012340000"
        return "ffff888012340000"
    text = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e[1], e[0]), fmt)
    return _CONV.sub(one, text)


def sample(f: Fmt) -> str:
    return f.prefix + render(f.sample or f.text, f.args)


# --- reading C string literals --------------------------------------------------------

_TOKENS = re.compile(r'//[^\n]*|/\*.*?\*/|\'(?:[^\'\\\n]|\\.)*\'|"(?P<s>(?:[^"\\\n]|\\.)*)"', re.S)


def c_strings(source: str) -> list[str]:
    """The string literals of a C file, adjacent ones joined as the compiler joins them."""
    out: list[str] = []
    joinable, last = False, 0
    for m in _TOKENS.finditer(source):
        blank = source[last:m.start()].strip() == ""
        last = m.end()
        if m["s"] is None:      # a comment keeps two literals adjacent, a character literal does not
            joinable = joinable and blank and not m[0].startswith("'")
        elif joinable and blank:
            out[-1] += m["s"]
        else:
            out.append(m["s"])
            joinable = True
    return out


class _Tree:
    """One tree's files, read once each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, tuple[str, list[str]] | str] = {}

    def file(self, path: str) -> tuple[str, list[str]] | str:
        """(source, literals), or why there is none."""
        if path not in self._files:
            p = self.root / path
            try:
                text = p.read_text(encoding="utf-8", errors="replace")
                self._files[path] = (text, c_strings(text))
            except FileNotFoundError:
                self._files[path] = "file not in this tree"
            except OSError as e:
                self._files[path] = f"unreadable: {type(e).__name__}: {e}"
        return self._files[path]


def _claimed(tree: _Tree, f: Fmt) -> bool:
    if f.old:
        return False
    if not f.when:
        return True
    got = tree.file(f.path)
    return isinstance(got, tuple) and re.search(f.when, got[0]) is not None


def _present(tree: _Tree, f: Fmt) -> str | None:
    """None if `f.text` is a literal of its file, else why not."""
    got = tree.file(f.path)
    if isinstance(got, str):
        return got
    return None if any(f.text in s for s in got[1]) else "format string not in the file"


# --- the checks -----------------------------------------------------------------------

def check_samples(entries: Iterable[Entry]) -> list[Problem]:
    """Patterns that miss a line rendered from their own format strings (any tree)."""
    out = []
    for e in entries:
        for f in e.fmts:
            line = sample(f)
            try:
                ok = e.matches(line)
            except Exception as exc:        # a broken matcher is a finding, not a crash
                ok, line = False, f"{line} ({type(exc).__name__}: {exc})"
            if not ok:
                out.append(Problem(e.name, f.path, f.text, f"does not match its own sample {line!r}"))
    return out


def check_tree(tree: Path, entries: Iterable[Entry] | None = None) -> list[Problem]:
    """Every problem of `entries` (default: the catalogue's and hostcheck's) against one tree."""
    entries = list(default_entries() if entries is None else entries)
    t = _Tree(Path(tree))
    out = check_samples(entries)
    if not (t.root / "Makefile").is_file() or not (t.root / "kernel").is_dir():
        return out + [Problem("-", str(tree), "", "not a kernel tree (no Makefile, no kernel/)")]
    families: dict[str, list[tuple[Entry, Fmt, str | None]]] = {}
    for e in entries:
        for f in e.fmts:
            if not _claimed(t, f):
                continue
            why = _present(t, f)
            if f.alt:
                families.setdefault(f.alt, []).append((e, f, why))
            elif why:
                out.append(Problem(e.name, f.path, f.text, why))
    for alt, members in families.items():
        if all(why for _, _, why in members):
            names = ", ".join(sorted({e.name for e, _, _ in members}))
            texts = " | ".join(f.text for _, f, _ in members)
            out.append(Problem(names, members[0][1].path, texts, f"no form of {alt!r} is in this tree"))
    return out


def alt_forms(tree: Path, entries: Iterable[Entry] | None = None) -> dict[str, tuple[str, ...]]:
    """For each `alt` family, the forms this tree prints (which era it is, read from its source)."""
    t = _Tree(Path(tree))
    out: dict[str, list[str]] = {}
    for e in default_entries() if entries is None else entries:
        for f in e.fmts:
            if f.alt:
                forms = out.setdefault(f.alt, [])
                if _claimed(t, f) and _present(t, f) is None and f.text not in forms:
                    forms.append(f.text)
    return {k: tuple(v) for k, v in out.items()}


def catalogue_entries() -> list[Entry]:
    """Catalogue patterns: the sample must start this very pattern, through the whole reader."""
    from harness.evidence.splat_catalogue import CATALOGUE, match_start
    from harness.evidence.splats import classify

    def matcher(p):
        def matches(line: str) -> bool:
            found = match_start(line)
            return found is not None and found[0] is p and bool(classify([line]).splats)
        return matches
    return [Entry(p.name, p.fmts, matcher(p)) for p in CATALOGUE]


def hostcheck_entries() -> list[Entry]:
    """hostcheck's dmesg regexes (searched, not anchored, as parse_dmesg() uses them)."""
    from harness.targets.host_messages import KERNEL_MESSAGES   # data only: evidence does not drive targets
    return [Entry(f"hostcheck:{name}", tuple(Fmt(**d) for d in fmts), lambda s, rx=rx: rx.search(s) is not None)
            for name, rx, fmts in KERNEL_MESSAGES]


def default_entries() -> list[Entry]:
    return catalogue_entries() + hostcheck_entries()
