"""What the tree's KVM selftest library offers guests/, read from the tree's own headers.

Trees differ in the library our programs link against: SNP launch helpers
appeared in sev.h, kvm_arch_vm_post_create() grew a parameter, the arch
headers moved from include/x86_64/ to include/x86/. None of that is looked
up by version. detect() scans the headers the selftests compile against and
returns a SelftestApi: the facts (recorded in the selftests manifest) and
the -DSNPH_* macros guests/snph_api.h turns into API choices, or into a
KSFT_SKIP with the reason when a program cannot run on this library.

The scan is textual: comments are dropped, then every declaration,
definition or function-like macro of a name we care about is found and its
parameters counted. scan() is pure (header texts in, facts out) and never
raises; detect() only reads files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

SELFTESTS_INCLUDE = "tools/testing/selftests/kvm/include"
UAPI_HEADERS = ("include/uapi/linux/kvm.h", "arch/x86/include/uapi/asm/kvm.h")
API_FORMAT = 1  # SNPH_API: the shape of the macro set guests/snph_api.h expects

# Library functions (and function-like macros) guests/ call whose shape has changed or may change.
FUNCTIONS = (
    "vm_mem_add", "vm_create_guest_memfd", "__vm_set_user_memory_region2", "vm_set_user_memory_region2",
    "vm_create_shape_with_one_vcpu", "vm_create_barebones_type", "vm_guest_mem_fallocate",
    "vm_set_memory_attributes", "vm_mem_set_private", "____vm_create", "__vm_create_with_vcpus",
    "kvm_arch_vm_post_create", "kvm_vm_elf_load", "vm_vcpu_add", "open_sev_dev_path_or_exit",
    "vm_sev_ioctl", "__vm_sev_ioctl",
    "snp_vm_launch_start", "snp_vm_launch_update", "snp_vm_launch_finish", "snp_default_policy",
)
# The library's own SNP VM launch (with the parameter counts guests/snp_util.h calls them with).
SNP_LIB = {"snp_vm_launch_start": 2, "snp_vm_launch_update": 1, "snp_vm_launch_finish": 1,
           "snp_default_policy": 0}
# Struct members guests/ touch: struct -> members.
MEMBERS = {"vm_shape": ("type",), "kvm_vm": ("gpa_tag_mask",),
           "kvm_vm_arch": ("sev_fd", "c_bit", "is_pt_protected")}
UAPI_NAMES = ("KVM_CAP_GUEST_MEMFD", "KVM_CAP_GUEST_MEMFD_FLAGS", "KVM_CAP_MEMORY_ATTRIBUTES",
              "GUEST_MEMFD_FLAG_MMAP", "GUEST_MEMFD_FLAG_INIT_SHARED", "KVM_X86_SW_PROTECTED_VM",
              "KVM_X86_SNP_VM")
# Only x86 has SEV: its arch include directory is the one with these (x86_64/ or x86/, whichever).
_X86_MARKERS = ("sev.h", "svm_util.h")

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_NOT_A_TYPE = {"return", "sizeof", "if", "while", "for", "switch", "case", "else", "do", "typeof",
               "__typeof__", "goto"}


@dataclass(frozen=True)
class SelftestApi:
    arch_include: str | None  # include/<dir> of the x86 headers, e.g. "x86_64" or "x86"
    sev_h: bool
    functions: dict[str, int | None]  # parameter count of each FUNCTIONS entry; None: not declared
    members: dict[str, tuple[str, ...]]  # MEMBERS entries the headers have, per struct
    uapi: tuple[str, ...]  # UAPI_NAMES the tree's UAPI headers define
    problems: tuple[str, ...] = ()

    @property
    def snp_lib(self) -> bool:
        return self.sev_h and all(self.functions.get(f) == n for f, n in SNP_LIB.items())

    def has_member(self, struct: str, member: str) -> bool:
        return member in self.members.get(struct, ())

    def macros(self) -> dict[str, int]:
        """-D names and values for guests/snph_api.h: parameter counts (-1: not declared) and 0/1 facts."""
        out = {"SNPH_API": API_FORMAT}
        out.update({f"SNPH_{name.upper()}_ARGS": -1 if n is None else n for name, n in self.functions.items()})
        out["SNPH_HAVE_SEV_H"] = int(self.sev_h)
        out["SNPH_HAVE_SNP_LIB"] = int(self.snp_lib)
        for struct, wanted in MEMBERS.items():
            for member in wanted:
                out[f"SNPH_HAVE_{struct.upper()}_{member.upper()}"] = int(self.has_member(struct, member))
        return out

    def cflags(self) -> list[str]:
        return [f"-D{k}={v}" for k, v in self.macros().items()]

    def to_dict(self) -> dict[str, Any]:
        return {"arch_include": self.arch_include, "sev_h": self.sev_h, "snp_lib": self.snp_lib,
                "functions": dict(self.functions), "members": {k: list(v) for k, v in self.members.items()},
                "uapi": list(self.uapi), "problems": list(self.problems), "macros": self.macros()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SelftestApi:
        return cls(data.get("arch_include"), bool(data.get("sev_h")),
                   {str(k): (None if v is None else int(v)) for k, v in dict(data.get("functions", {})).items()},
                   {str(k): tuple(v) for k, v in dict(data.get("members", {})).items()},
                   tuple(data.get("uapi", ())), tuple(data.get("problems", ())))


def strip_comments(text: str) -> str:
    """C comments removed, backslash-continued lines joined (so macros read as one line)."""
    return _COMMENT.sub(" ", text.replace("\\\n", " "))


def _balanced(text: str, open_at: int) -> str | None:
    """The text between the bracket at open_at and its match, or None if unbalanced."""
    pairs = {"(": ")", "{": "}"}
    close, depth = pairs[text[open_at]], 0
    for i in range(open_at, len(text)):
        if text[i] == text[open_at]:
            depth += 1
        elif text[i] == close:
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i]
    return None


def _count_params(params: str) -> int:
    params = params.strip()
    if params in ("", "void"):
        return 0
    depth, count = 0, 1
    for ch in params:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            count += 1
    return count


def param_counts(text: str, name: str) -> list[int]:
    """Parameter counts of each declaration, definition or function-like macro of `name` in
    comment-free text. Calls are told apart by what precedes the name: a type (an identifier
    other than a keyword like `return`, or a `*`) or `#define`."""
    found = []
    for m in re.finditer(rf"(?<![\w.>]){re.escape(name)}(\s*)\(", text):
        before = text[:m.start()].rstrip()
        word = re.search(r"(\w+)$", before)
        if word and word.group(1) == "define":
            if m.group(1):  # "#define name (x)" is an object-like macro
                continue
        elif not (before.endswith("*") or (word and word.group(1) not in _NOT_A_TYPE)):
            continue
        params = _balanced(text, m.end() - 1)
        if params is not None:
            found.append(_count_params(params))
    return found


def struct_members(text: str, struct: str) -> set[str] | None:
    """Member names of `struct <struct> { ... }` in comment-free text (nested bodies skipped)."""
    m = re.search(rf"\bstruct\s+{re.escape(struct)}\s*\{{", text)
    if not m:
        return None
    body = _balanced(text, m.end() - 1)
    if body is None:
        return None
    flat = re.sub(r"\{[^{}]*\}", " ", body)
    while "{" in flat:  # deeper nesting: peel one level at a time
        flat = re.sub(r"\{[^{}]*\}", " ", flat)
    return {d.group(1) for d in re.finditer(r"(\w+)\s*(?:\[[^\]]*\]\s*)*(?::\s*\w+\s*)?;", flat)}


def arch_include_dir(names: set[str]) -> str | None:
    """The include/ subdirectory with x86's headers, from the relative paths that exist."""
    dirs = sorted({p.split("/")[1] for p in names if p.count("/") == 2 and p.startswith("include/")
                   and p.rsplit("/", 1)[1] in _X86_MARKERS})
    return dirs[0] if dirs else None


def scan(headers: Mapping[str, str], uapi: Mapping[str, str]) -> SelftestApi:
    """Facts from the selftests' headers ("include/kvm_util.h", "include/x86/sev.h": text) and
    the tree's UAPI headers (path: text). Pure; problems are recorded, never raised."""
    problems = []
    arch = arch_include_dir(set(headers))
    if not any(p.count("/") == 1 for p in headers):
        problems.append(f"no headers in the selftests' include/ ({SELFTESTS_INCLUDE})")
    if arch is None:
        problems.append("no include/<arch>/ with sev.h or svm_util.h: x86 headers not found")
    used = {p: strip_comments(t) for p, t in headers.items()
            if p.count("/") == 1 or (arch is not None and p.startswith(f"include/{arch}/"))}
    text = "\n".join(used[p] for p in sorted(used))
    functions: dict[str, int | None] = {}
    for name in FUNCTIONS:
        counts = sorted(set(param_counts(text, name)))
        functions[name] = counts[0] if counts else None
        if len(counts) > 1:
            problems.append(f"{name}() is declared with {' and '.join(map(str, counts))} parameters; "
                            f"taking {counts[0]}")
    members = {}
    for struct, wanted in MEMBERS.items():
        have = struct_members(text, struct)
        if have is None:
            problems.append(f"struct {struct} not found")
        members[struct] = tuple(m for m in wanted if m in (have or ()))
    uapi_text = "\n".join(strip_comments(t) for t in uapi.values())
    defined = tuple(n for n in UAPI_NAMES if re.search(rf"^\s*#\s*define\s+{n}\b", uapi_text, re.M))
    sev_h = arch is not None and f"include/{arch}/sev.h" in headers
    return SelftestApi(arch, sev_h, functions, members, defined, tuple(problems))


def detect(srctree: Path) -> SelftestApi:
    """scan() of the tree's selftest headers (top level and x86's) and its KVM UAPI headers."""
    inc = Path(srctree) / SELFTESTS_INCLUDE
    markers = {p.relative_to(inc.parent).as_posix() for m in _X86_MARKERS for p in inc.glob(f"*/{m}")}
    arch = arch_include_dir(markers)
    paths = sorted(inc.glob("*.h")) + (sorted((inc / arch).glob("*.h")) if arch else [])
    headers = {p.relative_to(inc.parent).as_posix(): _read(p) for p in paths}
    uapi = {rel: _read(Path(srctree) / rel) for rel in UAPI_HEADERS if (Path(srctree) / rel).is_file()}
    return scan(headers, uapi)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")
