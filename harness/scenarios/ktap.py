"""KTAP / kselftest TAP output, and the KVM selftest library's assertion and skip lines -> data (pure).

Shaped after kunit_tool's kunit_parser.py, but silent: problems go to `TestNode.errors`, and no input
makes it raise. Nesting: `# Subtest:` headers, indented `KTAP version 1` lines, and the kselftest
runner's whole `TAP version 13` document prefixed `# `. Counts are over leaf tests, as in kunit; a
parent whose own line says `not ok` (or is missing) while its subtests look fine adds one failed
(crashed) test. Planned tests that never reported count as crashed: "expected N tests, got M".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Iterator


class Status(Enum):
    PASS = "pass"
    FAIL = "fail"  # also `# TIMEOUT`, and kselftest's `ok N # XPASS` (ksft_finished() fails on it)
    SKIP = "skip"
    XFAIL = "xfail"  # `# XFAIL`, or `not ok ... # TODO`: an expected failure, counted as passed
    ERROR = "error"  # `not ok N # error ...` (ksft_test_result_error), counted as failed
    CRASHED = "crashed"  # never reported: truncated output, a kernel panic, a missing result line
    NO_TESTS = "no_tests"


_COUNTED_AS = {Status.PASS: "passed", Status.XFAIL: "passed", Status.FAIL: "failed", Status.ERROR: "failed",
               Status.SKIP: "skipped", Status.CRASHED: "crashed"}


@dataclass
class Counts:
    """Leaf-test verdicts under a node, plus `errors`: how many parse problems were recorded there."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    crashed: int = 0
    errors: int = 0

    def total(self) -> int:
        return self.passed + self.failed + self.skipped + self.crashed

    def add(self, other: Counts) -> None:
        for name in ("passed", "failed", "skipped", "crashed", "errors"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def add_status(self, status: Status) -> None:
        if status in _COUNTED_AS:
            setattr(self, _COUNTED_AS[status], getattr(self, _COUNTED_AS[status]) + 1)

    def status(self) -> Status:
        if self.total() == 0:
            return Status.NO_TESTS
        if self.crashed:  # "Crashes should take priority." (kunit)
            return Status.CRASHED
        return Status.FAIL if self.failed else Status.PASS if self.passed else Status.SKIP


@dataclass
class TestNode:
    """One test: the document root ("main"), a subtest block, or a leaf result line."""

    __test__ = False  # not a pytest test class

    name: str = ""
    status: Status = Status.NO_TESTS
    children: list[TestNode] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)  # its non-result lines, indentation stripped
    directive: str | None = None  # SKIP, TODO, XFAIL, XPASS, TIMEOUT or ERROR
    reason: str = ""  # the text after the directive (after `#` when there is none)
    errors: list[str] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    number: int | None = None  # from its result line
    plan: int | None = None  # N of `1..N`
    totals: dict[str, int] = field(default_factory=dict)  # kselftest's `# Totals: pass:3 fail:0 ...`


_VERSION_ANYWHERE = re.compile(r"K?TAP version (\d{1,9})\s*$")
_VERSION = re.compile(r"^\s*(K?TAP) version (\d{1,9})\s*$")
_PREFIXED_VERSION = re.compile(r"^\s*# K?TAP version \d{1,9}\s*$")  # the kselftest runner's nesting
_SUBTEST = re.compile(r"^\s*# Subtest: (.*)$")
_PLAN = re.compile(r"^\s*1\.\.(\d{1,9})\s*(?:#(.*))?$")
_RESULT = re.compile(r"^\s*(not ok|ok)\s+(\d{1,9})(?:\s+(.*))?$")
_DIRECTIVE = re.compile(r"^\s*(SKIP|TODO|XFAIL|XPASS|TIMEOUT|ERROR)\b(.*)$", re.IGNORECASE)
_BAIL_OUT = re.compile(r"^\s*Bail out!")
_TOTALS = re.compile(r"^# Totals:(.*)$")
_KV = re.compile(r"^#\s*([A-Za-z0-9_][\w.-]*):(?:\s+(.*))?$")
_END = re.compile(r"List of all partitions:|Kernel panic - not syncing: VFS:|reboot: System halted")  # kunit
_STAMP = re.compile(r"^(?:<\d+>)?(?:\[\s*\d+\.\d+\]|\[\s*[CT]\d+\])+ ?")
_STRUCTURAL = (_VERSION, _PREFIXED_VERSION, _SUBTEST, _PLAN, _RESULT)
_MAX_DEPTH = 64


def _split(lines: Iterable[str] | str) -> Iterator[str]:
    """Lines without their ends; also takes a whole string, bytes, or chunks holding several lines."""
    for item in [lines] if isinstance(lines, (str, bytes)) else lines:
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        yield from (text.splitlines() or [""])


def _error(node: TestNode, message: str) -> None:
    node.errors.append(message)
    node.counts.errors += 1


def _clean(text: str | None) -> str:
    return (text or "").strip().lstrip("-:").strip()


class _View:
    """peek()/pop() through `depth` levels of the runner's `# ` prefix; a line without it ends the view."""

    def __init__(self, lines: list[str], pos: list[int], depth: int) -> None:
        self.lines, self.pos, self.depth, self.done = lines, pos, depth, False  # pos: shared [index]

    def peek(self) -> str | None:
        if self.done or self.pos[0] >= len(self.lines):
            return None
        line = self.lines[self.pos[0]]
        for _ in range(self.depth):
            s = line.lstrip()
            if s != "#" and not s.startswith("# "):
                return None
            line = s[2:]
        return line

    def pop(self) -> None:
        self.pos[0] += 1


def _extract(lines: Iterable[str] | str) -> list[str] | None:
    """The KTAP section: from the first version line to a kernel end marker; None if there is none."""
    out: list[str] = []
    prefix = None
    for raw in _split(lines):
        line = raw.rstrip()
        if prefix is None:
            if m := _VERSION_ANYWHERE.search(line):
                prefix = line[: m.start()]
                out.append(line[m.start():])
        elif _END.search(line):
            break
        elif prefix and _STAMP.fullmatch(prefix):
            out.append(_STAMP.sub("", line, count=1))  # stamps grow wider; kunit cuts a fixed length
        else:
            out.append(line[len(prefix):] if prefix and line.startswith(prefix) else line)
    return out if prefix is not None else None


def _diagnostics(view: _View, node: TestNode) -> list[str]:
    """Consume non-structural lines. `Bail out!` ends the view and is an error of `node`'s block."""
    log: list[str] = []
    while (line := view.peek()) is not None and not any(r.match(line) for r in _STRUCTURAL):
        view.pop()
        if line.strip():
            log.append(line.strip())
        if _BAIL_OUT.match(line):
            _error(node, line.strip())
            view.done = True
    return log


def _split_result(m: re.Match[str]) -> tuple[str, str | None, str]:
    """(name, directive, reason) from a result line's text after the number."""
    name, sep, comment = (m.group(3) or "").partition("#")
    name = name.strip()
    name = name[2:].strip() if name.startswith("- ") or name == "-" else name
    d = _DIRECTIVE.match(comment)
    if not sep or d is None:
        return name, None, comment.strip()
    return name, d.group(1).upper(), _clean(d.group(2))


def _apply_result(node: TestNode, m: re.Match[str], expected: int) -> Status:
    node.name, node.directive, node.reason = _split_result(m)
    node.number = int(m.group(2))
    if node.number != expected:
        _error(node, f"expected test number {expected}, got {node.number}")
    ok, d = m.group(1) == "ok", node.directive
    if d == "SKIP":
        return Status.SKIP
    if d == "XFAIL" or (d == "TODO" and not ok):
        return Status.XFAIL
    if d == "ERROR":
        return Status.ERROR
    return Status.PASS if ok and d not in ("XPASS", "TIMEOUT") else Status.FAIL


def _parse_block(view: _View, node: TestNode, *, bounded: bool, level: int) -> None:
    """Plan and subtests after a header. A bounded block (the root, a `# `-prefixed document) runs to the
    end of its view; any other ends when its plan is met or at a result line with its own name."""
    node.diagnostics += _diagnostics(view, node)
    if (line := view.peek()) is not None and (m := _PLAN.match(line)):
        view.pop()
        node.plan = int(m.group(1))
        if d := _DIRECTIVE.match(m.group(2) or ""):
            node.directive, node.reason = d.group(1).upper(), _clean(d.group(2))
    while bounded or node.plan is None or len(node.children) < node.plan:
        log = _diagnostics(view, node)
        line = view.peek()
        r = _RESULT.match(line) if line is not None else None
        if line is None or (not bounded and r and node.name and _split_result(r)[0] == node.name):
            node.diagnostics += log
            break
        if (m := _PLAN.match(line)) and node.plan is None and node.children:
            view.pop()  # a trailing plan, which TAP allows
            node.plan = int(m.group(1))
            node.diagnostics += log
            continue
        before = view.pos[0]
        node.children.append(_parse_test(view, len(node.children) + 1, log, level + 1))
        if view.pos[0] == before:  # defensive: always make progress
            view.pop()
            _error(node, f"unparsable line: {line!r}")
    got = len(node.children)
    if node.plan is not None and got != node.plan:
        _error(node, f"expected {node.plan} tests, got {got}")
        node.counts.crashed += max(0, node.plan - got)
    for line in node.diagnostics:
        if m := _TOTALS.match(line):
            node.totals = {k: int(v) for k, v in re.findall(r"(\w+):(\d{1,9})", m.group(1))}
            if node.totals and sum(node.totals.values()) != got:
                _error(node, f"'# Totals:' counts {sum(node.totals.values())} results, parsed {got}")


def _parse_test(view: _View, number: int, log: list[str], level: int) -> TestNode:
    """The subtest at view.peek(): header lines, block and result line, or just a result line."""
    node = TestNode(number=number, diagnostics=list(log))
    line = view.peek() or ""
    header = any(r.match(line) for r in (_PREFIXED_VERSION, _VERSION, _SUBTEST, _PLAN))
    if header and level > _MAX_DEPTH:
        view.pop()
        _error(node, "tests nested too deeply")
        _settle(node, Status.CRASHED)
        return node
    if _PREFIXED_VERSION.match(line):
        inner = _View(view.lines, view.pos, view.depth + 1)
        inner.pop()
        _parse_block(inner, node, bounded=True, level=level)
    elif header:
        if _VERSION.match(line):
            view.pop()
            line = view.peek() or ""
        if m := _SUBTEST.match(line):
            view.pop()
            node.name = m.group(1).strip()
        _parse_block(view, node, bounded=False, level=level)
    if header:
        node.diagnostics += _diagnostics(view, node)
    line = view.peek()
    m = _RESULT.match(line) if line is not None else None
    if m is None or (node.name and _split_result(m)[0] != node.name):
        _error(node, f"missing result line for {node.name or f'test {number}'}")
        _settle(node, Status.CRASHED)
    else:
        view.pop()
        _settle(node, _apply_result(node, m, number))
    return node


def _settle(node: TestNode, own: Status | None) -> None:
    """Bubble the children's counts up and set the status; `own` is the verdict of the node's own line."""
    for child in node.children:
        node.counts.add(child.counts)
    if node.counts.total() == 0:  # a leaf, or a block in which nothing ran
        node.status = own or Status.NO_TESTS
        node.counts.add_status(node.status)
        return
    if own is Status.CRASHED and not node.counts.crashed:
        node.counts.crashed += 1
    elif own in (Status.FAIL, Status.ERROR) and not (node.counts.failed or node.counts.crashed):
        node.counts.failed += 1
    node.status = node.counts.status()


def _parse(lines: Iterable[str] | str) -> TestNode:
    root = TestNode(name="main")
    section = _extract(lines)
    if section is None:
        _error(root, "no KTAP output: no 'KTAP version' or 'TAP version' line")
        return root
    view = _View(section, [1], 0)
    m = _VERSION.match(section[0])
    if m and int(m.group(2)) not in ((1,) if m.group(1) == "KTAP" else (13, 14)):
        _error(root, f"unsupported {m.group(1)} version {m.group(2)}")
    _parse_block(view, root, bounded=True, level=0)
    _settle(root, Status.SKIP if root.plan == 0 and root.directive == "SKIP" else None)
    if root.status is Status.NO_TESTS:
        _error(root, "no tests run")
    return root


def parse_ktap(lines: Iterable[str]) -> TestNode:
    """The root test ("main") of the first KTAP/TAP document in `lines`. Never raises."""
    try:
        return _parse(lines)
    except Exception as e:  # noqa: BLE001 - a parser bug must not abort a run; the fuzz test keeps this dead
        root = TestNode(name="main", status=Status.CRASHED, counts=Counts(crashed=1))
        _error(root, f"internal parser error: {type(e).__name__}: {e}")
        return root


def diagnostics_kv(node: TestNode | None) -> dict[str, str]:
    """The tree's `# key: value` diagnostic lines (parents first; a key's first value wins)."""
    facts: dict[str, str] = {}
    stack = [node] if node is not None else []
    while stack:
        stack.extend(reversed((n := stack.pop()).children))
        for m in filter(None, map(_KV.match, n.diagnostics)):
            if m.group(1) != "Totals":
                facts.setdefault(m.group(1), (m.group(2) or "").strip())
    return facts


@dataclass(frozen=True)
class AssertionFailure:
    """The selftest library's `==== Test Assertion Failure ====` block (tools/testing/selftests/kvm/lib/assert.c)."""

    file: str
    line: int
    expression: str
    errno: int | None
    message: str
    backtrace: list[str]
    strerror: str = ""

    def __str__(self) -> str:
        text = (f"{self.file}:{self.line}: " if self.file else "") + (self.expression or "Test Assertion Failure")
        text += f": {self.message}" if self.message else ""
        if self.errno:
            text += f" (errno {self.errno}: {self.strerror})" if self.strerror else f" (errno {self.errno})"
        return text


_ASSERT_HEAD = re.compile(r"==== Test Assertion Failure ====\s*$")
_LOCATION = re.compile(r"^\s*(\S[^:]*):(\d{1,9}):\s?(.*)$")
_PID = re.compile(r"^\s*pid=\d+ tid=\d+ errno=(-?\d{1,9})(?: - ?(.*))?$")
_BACKTRACE = re.compile(r"^\s*(?:\d+\t|\(stack trace empty\)|.*\baddr2line\b)")  # `addr2line ... | cat -n`
_NOT_MESSAGE = re.compile(r"^\s*(?:(?:not )?ok \d|#|1\.\.\d|Bail out!|K?TAP version)|.*" + _ASSERT_HEAD.pattern)


def parse_assertion(lines: Iterable[str]) -> AssertionFailure | None:
    """The first assertion block in `lines`, or None. A mangled block still yields what it holds."""
    it = iter(_split(lines))
    for raw in it:
        if m := _ASSERT_HEAD.search(raw):
            prefix = raw[: m.start()]  # e.g. "# " under the kselftest runner
            break
    else:
        return None
    body: list[str] = []
    for raw in it:
        if prefix and not raw.startswith(prefix):
            break
        body.append(raw[len(prefix):].rstrip())
    file, number, expression, errno, strerror = "", 0, "", None, ""
    if body and (loc := _LOCATION.match(body[0])):
        file, number, expression = loc.group(1).strip(), int(loc.group(2)), loc.group(3).strip()
        body.pop(0)
    if body and (pid := _PID.match(body[0])):
        errno, strerror = int(pid.group(1)), (pid.group(2) or "").strip()
        body.pop(0)
    backtrace: list[str] = []
    while body and _BACKTRACE.match(body[0]):
        backtrace.append(body.pop(0).strip())
    message: list[str] = []
    for text in body:  # the message may span lines; it ends at a blank line or at TAP output
        if not text.strip() or _NOT_MESSAGE.match(text):
            break
        message.append(text.strip())
    return AssertionFailure(file, number, expression, errno, "\n".join(message), backtrace, strerror)


_SKIP_ALL = re.compile(r"^[\s#]*1\.\.0\s*#\s*SKIP\b(.*)$", re.IGNORECASE)
_PRINT_SKIP = re.compile(r"^\s*(.*\S), skipping test\s*$")  # print_skip() in kvm/lib/test_util.c


def skip_reason(lines: Iterable[str]) -> str | None:
    """Why a selftest exited KSFT_SKIP: the first `1..0 # SKIP <reason>` (ksft_exit_skip(), TEST_REQUIRE()),
    else print_skip()'s last `<reason>, skipping test`, else the last `ok N ... # SKIP <reason>`."""
    skip_all = printed = last_result = None
    for raw in _split(lines):
        if m := _SKIP_ALL.match(raw):
            skip_all = skip_all or _clean(m.group(1)) or None
        elif m := _PRINT_SKIP.match(raw):
            printed = _clean(m.group(1)) or printed
        elif (m := _RESULT.match(raw.lstrip("# \t"))) and m.group(1) == "ok":
            _, directive, reason = _split_result(m)
            last_result = reason if directive == "SKIP" and reason else last_result
    return skip_all or printed or last_result
