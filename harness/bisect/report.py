"""A bisect directory's report: bisect.md for people, junit.xml for CI.

Both are built from bisect.json (the plan and, once known, its result) and steps.jsonl
(one record per tested commit), and can be rewritten after every step. The Markdown
goes through the run summary's renderer, so subjects and compiler messages are escaped
the same way (`\\|` in table cells). Nothing here raises on a missing or torn input.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from junitparser import Error, Failure, Skipped
from junitparser.xunit2 import JUnitXml, TestCase, TestSuite

from harness.bisect.confidence import confidence
from harness import redact
from harness.report.summary import Code, Link, scrub_blocks, render_markdown

SUITE = "snp-harness bisect"
SUITE_KEYS = ("tree", "good", "bad", "good_commit", "bad_commit", "selection", "repeat")
STEP_PROPS = ("commit", "outcome", "runs", "failed_runs", "build_key", "build_hit", "run_dir")
RESULT_PROPS = ("status", "culprit", "confirmed", "revert_verified", "bisect_steps", "skipped_steps")
_STEP_RESULT = {"bad": Failure, "skip": Skipped, "infra": Error}  # good: no result element
_CSS = {"good": "passed", "bad": "failed", "skip": "skipped", "infra": "error"}
# Characters XML 1.0 cannot hold: a compiler's colour codes would make junit.xml unparseable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def read_steps(path: Path) -> list[dict]:
    """The records of a steps.jsonl, in file order; [] without the file. A line that does
    not parse is skipped: the writer may have been killed halfway through its last line."""
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return []
    steps = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            steps.append(record)
    return steps


def write_report(bisect_dir: Path) -> tuple[Path, Path]:
    """bisect.md and junit.xml of a bisect directory, from its bisect.json and steps.jsonl."""
    bisect_dir = Path(bisect_dir)
    plan = _read_plan(bisect_dir / "bisect.json")
    steps = read_steps(bisect_dir / "steps.jsonl")
    return write_markdown(bisect_dir, plan, steps), write_junit(bisect_dir, plan, steps)


def write_markdown(bisect_dir: Path, plan: dict, steps: list[dict]) -> Path:
    path = Path(bisect_dir) / "bisect.md"
    tmp = path.with_name(path.name + ".tmp")  # write beside and rename: never half a report
    tmp.write_text(redact.scrub(render_markdown(scrub_blocks(build(Path(bisect_dir), plan, steps)))))
    os.replace(tmp, path)
    return path


def write_junit(bisect_dir: Path, plan: dict, steps: list[dict]) -> Path:
    """One testsuite: a testcase per step (bad fails, skip skips, infra errors) and a final
    `culprit` case that passes only for a found and confirmed culprit."""
    bisect_dir, result = Path(bisect_dir), _result(plan)
    suite = TestSuite(SUITE)
    for key, value in [*((k, plan.get(k)) for k in SUITE_KEYS), *((k, result.get(k)) for k in RESULT_PROPS[:2])]:
        if value is not None:
            suite.add_property(key, _xml(_text(value)))
    for i, step in enumerate(steps, 1):
        suite.add_testcase(_step_case(step, i))
    suite.add_testcase(_culprit_case(bisect_dir, result, steps))
    xml = JUnitXml(SUITE)
    xml.add_testsuite(suite)
    xml.update_statistics()
    if _is_num(result.get("wall_s")):  # the steps' times leave out the driver's own work
        suite.time = xml.time = round(result["wall_s"], 3)
    path = bisect_dir / "junit.xml"
    tmp = path.with_name(path.name + ".tmp")
    xml.write(str(tmp))
    tmp.write_text(redact.scrub(tmp.read_text()))  # a secret in a reason or a command line
    os.replace(tmp, path)
    return path


# --- Markdown content ------------------------------------------------------------------------

def build(bisect_dir: Path, plan: dict, steps: list[dict]) -> list:
    """The report as the run summary's blocks (see harness.report.summary.build)."""
    result = _result(plan)
    b: list = [("h", 1, [f"snp-harness bisect: {result.get('status') or 'unknown'}"])]
    b += _verdict(result, _subjects(steps))
    b += [("h", 2, ["Plan"]), ("table", ["", ""], _plan_rows(plan, result)), ("h", 2, [f"Steps ({len(steps)})"])]
    b.append(("table", ["n", "phase", "commit", "subject", "outcome", "reason", "runs failed/total",
                        "build", "test", "run dir"], [_step_row(bisect_dir, s) for s in steps])
             if steps else ("p", ["No step has been recorded."]))
    b += [("h", 2, ["Confidence"]), ("p", [confidence(steps, _repeat(plan, steps)).sentence()])]
    reproduce: list = []
    for key, intro in (("reproducer", "Re-run this bisect:"),
                       ("run_reproducer", "Run the selection alone:")):
        if plan.get(key):
            reproduce += [("p", [intro]), ("pre", str(plan[key]))]
    return b + ([("h", 2, ["Reproduce"]), *reproduce] if reproduce else [])


def _verdict(result: dict, subjects: dict[str, str]) -> list:
    out: list = []
    culprit = result.get("culprit")
    if culprit:
        subject = result.get("culprit_subject") or subjects.get(culprit, "")
        out.append(("p", ["Culprit: ", Code(culprit), f" {subject}".rstrip(),
                          f" (confirmed: {_checked(result.get('confirmed'))}; "
                          f"revert verified: {_checked(result.get('revert_verified'))})"]))
    candidates = [str(c) for c in result.get("candidates") or ()]
    if candidates and candidates != [culprit]:
        out += [("p", [f"{len(candidates)} candidate commits:"]),
                ("table", ["commit", "subject"], [[([Code(c)], ""), ([subjects.get(c, "")], "")] for c in candidates])]
    if result.get("message"):
        out.append(("p", [str(result["message"])]))
    return out


def _plan_rows(plan: dict, result: dict) -> list:
    def named(ref, sha):  # "v6.12 (a1b2c3d4e5f6)": the name given and the commit it meant
        return f"{ref} ({str(sha)[:12]})" if ref and sha and str(ref) != str(sha) else ref or sha

    rows = [("tree", plan.get("tree")), ("good", named(plan.get("good"), plan.get("good_commit"))),
            ("bad", named(plan.get("bad"), plan.get("bad_commit"))), ("selection", plan.get("selection")),
            ("repeat", plan.get("repeat")), ("hosts", plan.get("hosts") or "local"),
            ("series", plan.get("series") or "none"), *((label, _checked(plan[key])) for label, key in
                                                        (("install", "install"), ("verify revert", "verify_revert"))
                                                        if plan.get(key) is not None),
            ("started", plan.get("started")),
            ("wall time", _duration(result.get("wall_s"))), ("bisect steps", result.get("bisect_steps")),
            ("skipped steps", result.get("skipped_steps"))]
    return [[([k], ""), ([Code(_text(v))] if k in ("tree", "selection") else [_text(v, ", ")], "")]
            for k, v in rows if v not in (None, "", [])]


def _step_row(bisect_dir: Path, s: dict) -> list:
    outcome, runs, run_dir = str(s.get("outcome") or "?"), s.get("runs") or 0, s.get("run_dir")
    build = ", ".join(x for x in ({True: "hit", False: "built"}.get(s.get("build_hit"), ""),
                                  _seconds(s.get("build_s"))) if x)
    return [([str(s.get("n", ""))], ""), ([str(s.get("phase") or "")], ""),
            ([Code(str(s.get("commit") or "")[:12])], ""), ([_line(s.get("subject"))], ""),
            ([outcome], _CSS.get(outcome, "")), ([_line(s.get("reason"))], ""),
            ([f"{s.get('failed_runs') or 0}/{runs}" if runs else "—"], ""), ([build or "—"], ""),
            ([_seconds(s.get("test_s")) or "—"], ""),
            ([Link(str(run_dir), _relative(bisect_dir, str(run_dir)))] if run_dir else ["—"], "")]


# --- JUnit content ---------------------------------------------------------------------------

def _step_case(step: dict, index: int) -> TestCase:
    n = step["n"] if isinstance(step.get("n"), int) else index
    name = f"{n:02d} {str(step.get('commit') or '?')[:12]} {_line(step.get('subject'))}".rstrip()
    tc = TestCase(_xml(name), _xml(f"bisect.{step.get('phase') or 'unknown'}"),
                  round(sum(step[k] for k in ("build_s", "test_s") if _is_num(step.get(k))), 3))
    for key in STEP_PROPS:
        if step.get(key) is not None:
            tc.add_property(key, _xml(_text(step[key])))
    outcome, reason = step.get("outcome"), _xml(_line(step.get("reason")))
    if outcome in _STEP_RESULT:
        verdict = _STEP_RESULT[outcome](reason)
        if outcome == "bad" and step.get("failed_tests"):  # the reason names only the first
            verdict.text = _xml("\n".join(map(str, step["failed_tests"])))
        tc.result = [verdict]
    elif outcome != "good":
        tc.result = [Error(_xml(f"unknown outcome {outcome!r}: {reason}"))]
    return tc


def _culprit_case(bisect_dir: Path, result: dict, steps: list[dict]) -> TestCase:
    status, culprit = result.get("status") or "unknown", result.get("culprit")
    message = str(result.get("message") or f"bisect status: {status}")
    tc = TestCase("culprit", "bisect.result")
    for key in RESULT_PROPS:
        if result.get(key) is not None:
            tc.add_property(key, _xml(_text(result[key])))
    if status == "found" and result.get("confirmed") is not True:
        tc.result = [Failure(_xml(f"culprit {str(culprit)[:12]} found but not confirmed "
                                  f"({_checked(result.get('confirmed'))}): {message}"))]
    elif status in ("inconclusive", "refused"):
        tc.result = [Failure(_xml(message))]
    elif status == "running":
        tc.result = [Skipped(_xml(message))]
    elif status != "found":  # aborted, or a bisect.json without a known status
        tc.result = [Error(_xml(message))]
    lines = [f"status: {status}"]
    if culprit:
        subject = result.get("culprit_subject") or _subjects(steps).get(culprit, "")
        lines += [f"culprit: {culprit} {subject}".rstrip(), f"confirmed: {_checked(result.get('confirmed'))}",
                  f"revert verified: {_checked(result.get('revert_verified'))}"]
    candidates = [str(c) for c in result.get("candidates") or ()]
    lines += [f"candidate: {c}" for c in candidates if candidates != [culprit]]
    lines += [message, f"[[ATTACHMENT|{os.path.abspath(bisect_dir / 'bisect.md')}]]"]
    tc.system_out = _xml("\n".join(lines) + "\n")
    return tc


# --- helpers ---------------------------------------------------------------------------------

def _read_plan(path: Path) -> dict:
    """bisect.json; when unreadable, a plan whose result says why (so both reports show it)."""
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return {"result": {"status": "unknown", "message": f"{path}: unreadable: {e}"}}
    return plan if isinstance(plan, dict) else {"result": {"status": "unknown",
                                                           "message": f"{path}: not a JSON object"}}


def _result(plan: dict) -> dict:
    return plan["result"] if isinstance(plan.get("result"), dict) else {}


def _repeat(plan: dict, steps: list[dict]) -> int:
    # A plan without a usable repeat: the most runs any step made is the next best guess.
    repeat = plan.get("repeat")
    if isinstance(repeat, int) and not isinstance(repeat, bool) and repeat >= 1:
        return repeat
    return max([s["runs"] for s in steps if isinstance(s.get("runs"), int) and s["runs"] >= 1] or [1])


def _subjects(steps: list[dict]) -> dict[str, str]:
    return {str(s["commit"]): _line(s.get("subject")) for s in steps if s.get("commit") and s.get("subject")}


def _relative(bisect_dir: Path, run_dir: str) -> str:
    p = Path(run_dir)
    try:  # the steps' records hold relative paths; an absolute one inside the directory is made so
        return p.relative_to(Path(os.path.abspath(bisect_dir))).as_posix() if p.is_absolute() else p.as_posix()
    except ValueError:
        return p.as_posix()


def _text(value, sep: str = " ") -> str:
    if isinstance(value, bool):  # JSON's spelling, for CI tools that read properties
        return "true" if value else "false"
    return sep.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _xml(text: str) -> str:
    return _NOT_XML.sub("", text)


def _line(value) -> str:
    return " ".join(str(value or "").split())


def _checked(value) -> str:
    return {True: "yes", False: "no"}.get(value, "not checked")


def _is_num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _seconds(value) -> str:
    return f"{value:.1f} s" if _is_num(value) else ""


def _duration(value) -> str | None:
    if not _is_num(value):
        return None
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    human = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s" if minutes else ""
    return f"{value:.1f} s" + (f" ({human})" if human else "")
