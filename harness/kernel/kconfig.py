"""Kernel config: a base config plus fragments, every requested option checked after olddefconfig.

olddefconfig drops options with unmet dependencies silently; here that is a KconfigError
naming them (kconfig_deps reads the tree's Kconfig to say why). Pure: parse_config,
parse_fragment, find_dropped, config_commands. make_config runs the commands through an
injectable runner.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from harness.errors import ConfigError
from harness.kernel.kconfig_deps import (Dropped, explain_one, explain_dropped, kconfig_dependencies,
                                         kconfig_index, unmet_symbols)

__all__ = ["ConfigRequest", "Dropped", "KconfigError", "config_commands", "explain_dropped", "find_dropped",
           "kconfig_dependencies", "make_config", "parse_config", "parse_fragment", "unmet_symbols"]

MAKE_TARGETS = ("tinyconfig", "x86_64_defconfig", "defconfig", "allnoconfig")
RUN_TIMEOUT_S = 900.0

_SET = re.compile(r"CONFIG_([A-Za-z0-9_]+)=(.*)")
_NOT_SET = re.compile(r"# CONFIG_([A-Za-z0-9_]+) is not set")
_NOT_SET_LOOSE = re.compile(r"#\s*CONFIG_[A-Za-z0-9_]+\s+is\s+not\s+set\b.*")

Runner = Callable[[Sequence[str], Path], None]  # run(argv, cwd): returns nothing, raises on failure


class KconfigError(ConfigError):
    """The config could not be made, or an option a fragment asked for did not stick."""

    def __init__(self, message: str, dropped: Iterable[Dropped] = ()) -> None:
        super().__init__(message)
        self.dropped = tuple(dropped)


@dataclass(frozen=True)
class FragmentResult:
    options: dict[str, str]
    problems: tuple[str, ...] = ()


def _lines(lines: Iterable[str] | str) -> Iterable[str]:
    return lines.splitlines() if isinstance(lines, str) else lines


def parse_config(lines: Iterable[str] | str) -> dict[str, str]:
    """`.config` text -> {"KVM": "y", "NR_CPUS": "8", "KVM_INTEL": "n"}; values keep their quotes."""
    out: dict[str, str] = {}
    for raw in _lines(lines):
        line = raw.strip()
        if m := _SET.fullmatch(line):
            out[m[1]] = m[2]
        elif m := _NOT_SET.fullmatch(line):
            out[m[1]] = "n"
    return out


def parse_fragment(lines: Iterable[str] | str) -> FragmentResult:
    """Like parse_config, but every line that is not an option, a comment or blank is a problem."""
    options: dict[str, str] = {}
    problems: list[str] = []
    for no, raw in enumerate(_lines(lines), 1):
        line = raw.strip()
        if m := _SET.fullmatch(line):
            value = m[2]
            if not value or (value[0] != '"' and re.search(r"\s", value)):
                problems.append(f"line {no}: bad value for CONFIG_{m[1]}: {line!r}")
                continue
        elif m := _NOT_SET.fullmatch(line):
            value = "n"
        else:
            if _NOT_SET_LOOSE.fullmatch(line):
                problems.append(f"line {no}: not the exact '# CONFIG_X is not set' form, "
                                f"merge_config.sh ignores it: {line!r}")
            elif line and not line.startswith("#"):
                problems.append(f"line {no}: not a CONFIG_ assignment: {line!r}")
            continue
        if options.get(m[1], value) != value:
            problems.append(f"line {no}: CONFIG_{m[1]} set again ({options[m[1]]} -> {value})")
        options[m[1]] = value
    return FragmentResult(options, tuple(problems))


def find_dropped(requested: Mapping[str, str], final: Mapping[str, str]) -> list[Dropped]:
    """Options whose final value differs from the requested one; absent counts as "n"."""
    return [Dropped(k, v, final.get(k, "n")) for k, v in requested.items() if final.get(k, "n") != v]


def implied_selectors(dropped: Iterable[Dropped], requested: Mapping[str, str], idx) -> dict[str, str]:
    """{selector: value} that would set the dropped y/m options having no prompt in this tree.

    Kconfig turns such an option on only through a `select` (6.12's SYSCTL is selected by
    PROC_SYSCTL; 7.x gives SYSCTL a prompt and drops PROC_SYSCTL). So a fragment names what it
    needs, and when exactly one prompted option selects it here, that one is requested too: one
    fragment holds on both trees and the check after olddefconfig stays exact. With several
    candidates nothing is guessed (the option stays dropped and the error names them).
    """
    out: dict[str, str] = {}
    for d in dropped:
        defs = idx.entries.get(d.option)
        if d.wanted not in ("y", "m") or not defs or any(e.has_prompt for e in defs):
            continue
        selectors = sorted({s for s in idx.selected_by.get(d.option, ())
                            if any(e.has_prompt for e in idx.entries.get(s, ()))})
        if len(selectors) == 1 and selectors[0] not in requested:
            out[selectors[0]] = d.wanted
    return out


# ---- running make ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ConfigRequest:
    """base: a make target (MAKE_TARGETS), "file:<path>", or "running" (text in running_config)."""

    base: str
    fragments: tuple[Path, ...] = ()
    running_config: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fragments", tuple(Path(f) for f in self.fragments))
        if self.base not in MAKE_TARGETS and self.base != "running" and not (
                self.base.startswith("file:") and len(self.base) > 5):
            raise KconfigError(f"unknown config base {self.base!r}: use one of "
                               f"{', '.join(MAKE_TARGETS)}, file:<path> or running")
        if self.base == "running" and self.running_config is None:
            raise KconfigError("config base 'running' needs the running config's text")

    def base_text(self) -> bytes | None:
        """The base config's content, or None when a make target produces it."""
        if self.base == "running":
            return (self.running_config or "").encode()
        if self.base.startswith("file:"):
            return _read_bytes(Path(self.base[5:]), "base config")
        return None

    def inputs_digest(self) -> str:
        """sha256 over the base's identity and the contents (not paths) of every input, in order."""
        h = hashlib.sha256()

        def put(tag: str, data: bytes) -> None:
            h.update(f"{tag} {len(data)}\n".encode())
            h.update(data)

        put("base", self.base.split(":", 1)[0].encode())
        if (text := self.base_text()) is not None:
            put("base-content", text)
        for frag in self.fragments:
            put("fragment", _read_bytes(frag, "config fragment"))
        return h.hexdigest()


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise KconfigError(f"cannot read {what} {path}: {e.strerror or e}") from e


def run_captured(argv: Sequence[str], cwd: Path) -> None:
    """The default runner: output captured, a failure raises with its tail."""
    try:
        proc = subprocess.run(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace",
                              timeout=RUN_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KconfigError(f"{shlex.join(argv)}: {e}") from e
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-20:])
        raise KconfigError(f"{shlex.join(argv)} exited {proc.returncode}:\n{tail}".rstrip())


def config_commands(srctree: Path, build_dir: Path, request: ConfigRequest, *,
                    make_args: Sequence[str] = (), extra: Sequence[Path] = ()) -> list[list[str]]:
    """The commands make_config runs, in order (a file or running base is written, not made).
    `extra`: fragments merged after the request's own (the selectors make_config adds)."""
    srctree, build_dir = Path(srctree).absolute(), Path(build_dir).absolute()
    make = ["make", "-C", str(srctree), f"O={build_dir}", *make_args]
    cmds = [[*make, request.base]] if request.base_text() is None else []
    fragments = [*request.fragments, *extra]
    if fragments:
        # merge_config.sh makes its temporary files in the current directory: never the srctree.
        cmds.append(["sh", str(srctree / "scripts" / "kconfig" / "merge_config.sh"), "-m", "-O",
                     str(build_dir), str(build_dir / ".config"), *(str(Path(f).absolute()) for f in fragments)])
    cmds.append([*make, "olddefconfig"])
    return cmds


def make_config(srctree: Path, build_dir: Path, request: ConfigRequest, *,
                make_args: Sequence[str] = (), run: Runner = run_captured,
                arch: str = "x86") -> dict[str, str]:
    """Base config, merge the fragments, olddefconfig, then check every requested option.

    Returns the final config; raises KconfigError naming each dropped option's fragment and
    unmet dependencies.
    """
    srctree, build_dir = Path(srctree).absolute(), Path(build_dir).absolute()
    fragments = [Path(f).absolute() for f in request.fragments]
    requested: dict[str, str] = {}
    origin: dict[str, str] = {}
    for frag in fragments:  # read them all first: a bad fragment fails before make runs
        parsed = parse_fragment(_read_bytes(frag, "config fragment").decode(errors="replace"))
        if parsed.problems:
            raise KconfigError(f"config fragment {frag}:\n  " + "\n  ".join(parsed.problems))
        for k, v in parsed.options.items():  # the last fragment wins, as in merge_config.sh
            requested[k], origin[k] = v, frag.name
    base_text = request.base_text()
    build_dir.mkdir(parents=True, exist_ok=True)
    config = build_dir / ".config"
    extra: list[Path] = []
    idx = None
    for _ in range(2):  # a second round only when a promptless option needs its selector
        if base_text is not None:
            config.write_bytes(base_text)
        for argv in config_commands(srctree, build_dir, request, make_args=make_args, extra=extra):
            run(argv, build_dir)
        final = parse_config(_read_bytes(config, "final config").decode(errors="replace"))
        dropped = find_dropped(requested, final)
        if not dropped or extra:
            break
        idx = kconfig_index(srctree, arch)
        implied = implied_selectors(dropped, requested, idx)
        if not implied:
            break
        by = {d.option: d for d in dropped}
        for sel, value in implied.items():
            option = next(o for o in by if sel in idx.selected_by.get(o, ()))
            requested[sel], origin[sel] = value, f"{origin[option]} (selects CONFIG_{option}, which has no prompt here)"
        extra = [build_dir / "snp-harness-selectors.config"]
        extra[0].write_text("".join(f"CONFIG_{s}={v}\n" for s, v in implied.items()))
    if dropped:
        idx = idx or kconfig_index(srctree, arch)
        lines = [f"  {origin[d.option]}: {explain_one(d, final, idx, arch)}" for d in dropped]
        raise KconfigError(f"{len(dropped)} requested option(s) did not survive olddefconfig "
                           f"in {config}:\n" + "\n".join(lines), dropped)
    return final
