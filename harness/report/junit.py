"""pytest's JUnit XML (xunit2) through junitparser: enrich, merge, read back.

- `enrich` adds the run's metadata as suite properties and `[[ATTACHMENT|path]]` lines
  (Jenkins' junit-attachments plugin and GitLab read them from system-out);
- `merge` puts several hosts' reports into one file without their identical tests colliding;
- `read_report` / `read_cases` turn testcases into frozen `Case`s for the summary.

Nothing here raises on a missing or malformed file: problems come back as strings.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Sequence
from xml.etree import ElementTree as ET

from junitparser import Error, Failure, JUnitXmlError, Properties, Property, Skipped, SystemOut
from junitparser.xunit2 import JUnitXml

from harness import redact

# metadata.json key -> suite property; only the keys a run recorded are added.
SUITE_KEYS = ("kernel_release", "tree_id", "series", "patch_ids", "config_sha256", "build")
# testcase properties that name files worth attaching (rmp_dump also brings its .bin).
ATTACH_PROPS = ("attachment", "dmesg", "selftest_log", "rmp_dump")


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Case:
    name: str
    classname: str
    outcome: Outcome
    message: str = ""
    properties: tuple[tuple[str, str], ...] = ()
    time: float = 0.0

    def props(self, name: str) -> list[str]:
        return [v for k, v in self.properties if k == name]

    def prop(self, name: str, default: str = "") -> str:
        return next((v for k, v in self.properties if k == name), default)

    @property
    def nodeid(self) -> str:
        return self.prop("nodeid") or _nodeid(self.classname, self.name)

    @property
    def target(self) -> str:
        return self.prop("target") or self.prop("host")

    @property
    def scenario(self) -> str:
        """The test function's name, without the parametrize id (or a merge's host suffix)."""
        m = re.match(r"[^\[\s]+", self.name)
        return m.group(0) if m else self.name


@dataclass(frozen=True)
class JunitReport:
    cases: tuple[Case, ...] = ()
    suite_properties: tuple[tuple[str, str], ...] = ()
    problems: tuple[str, ...] = ()


def read_metadata(run_dir: Path) -> tuple[dict, list[str]]:
    """metadata.json of a run directory, or {} and the reason it could not be read."""
    path = Path(run_dir) / "metadata.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, [f"{path}: no such file"]
    except (OSError, ValueError) as e:
        return {}, [f"{path}: unreadable: {e}"]
    if not isinstance(data, dict):
        return {}, [f"{path}: not a JSON object"]
    return data, []


def read_report(junit_path: Path) -> JunitReport:
    xml, problem = _load(junit_path)
    if xml is None:
        return JunitReport(problems=(problem,))
    cases, suite_props, problems = [], [], []
    for suite in xml:
        for p in suite.properties():
            if (p.name or "", p.value or "") not in suite_props:
                suite_props.append((p.name or "", p.value or ""))
        for tc in suite:
            cases.append(_case(tc, problems))
    return JunitReport(tuple(cases), tuple(suite_props), tuple(problems))


def read_cases(junit_path: Path) -> list[Case]:
    """Every testcase of a JUnit file; [] when it is missing or unreadable (see read_report)."""
    return list(read_report(junit_path).cases)


def enrich(junit_path: Path, run_dir: Path, metadata: dict | None = None, *,
           relative_to: Path | None = None) -> list[str]:
    """Add run metadata and attachment lines to a JUnit file, in place; idempotent.

    `metadata` defaults to the run directory's metadata.json. Attachment paths are
    absolute (Jenkins) unless `relative_to` is given (GitLab resolves them against the
    project directory).
    """
    junit_path, run_dir = Path(junit_path), Path(run_dir)
    xml, problem = _load(junit_path)
    if xml is None:
        return [problem]
    problems: list[str] = []
    if metadata is None:
        metadata, problems = read_metadata(run_dir)
    suite_props = _suite_properties(metadata)
    for suite in xml:
        for name, value in suite_props:
            _set_property(suite, name, value)
        for tc in suite:
            problems += _attach(tc, run_dir, relative_to)
            _name_infra_errors(tc)
    problems += _write(xml, junit_path)
    return problems


_SETUP_PREFIX = 'failed on setup with "'


def _name_infra_errors(tc) -> None:
    """An infrastructure error the plugin relabelled in a test body reads as one, not as "setup"."""
    if not any(p.name == "infrastructure_error" for p in tc.properties()):
        return
    for err in tc._elem.findall("error"):
        message = err.get("message", "")
        if message.startswith(_SETUP_PREFIX):
            err.set("message", "infrastructure error in the test body: " + message[len(_SETUP_PREFIX):-1])


def merge(inputs: Sequence[tuple[str, Path]], out: Path) -> list[str]:
    """One JUnit file from several hosts' files: (host label, junit path) pairs.

    Each testcase gets a `host` property (its `target`, else the label) and the host in
    its name, so identical tests from two hosts stay apart; suites get the label.
    """
    problems: list[str] = []
    merged = JUnitXml("snp-harness")
    seen: set[tuple[str, str]] = set()
    for label, path in inputs:
        xml, problem = _load(path)
        if xml is None:
            problems.append(f"{label}: {problem}")
            continue
        for suite in xml:
            base = suite.name or "pytest"
            if label not in base:
                suite.name = f"{base} [{label}]"
            _set_property(suite, "host", label)
            for tc in suite:
                props = {}
                for p in tc.properties():
                    props.setdefault(p.name, p.value)
                host = props.get("target") or props.get("host") or label
                _set_property(tc, "host", host)
                name = tc.name or ""
                if host not in name:
                    name = f"{name} [{host}]"
                # Two inputs with the same target (say two CI machines' qemu://) still differ by label.
                if (tc.classname, name) in seen and label not in name:
                    name = f"{name} [{label}]"
                if (tc.classname, name) in seen:
                    problems.append(f"{label}: duplicate testcase {tc.classname}::{name}")
                seen.add((tc.classname, name))
                tc.name = name
            merged.append(suite)
    _total(merged)
    problems += _write(merged, Path(out))
    return problems


def sidecar_bin(sidecar: Path) -> Path:
    """The raw dump next to an RMP sidecar: its "dump" field, else <sidecar>.bin."""
    try:
        dump = json.loads(Path(sidecar).read_text()).get("dump")
    except (OSError, ValueError, AttributeError):
        dump = None
    return Path(sidecar).parent / dump if isinstance(dump, str) and dump else Path(sidecar).with_suffix(".bin")


def resolve(run_dir: Path, value: str) -> Path:
    """A path property: relative ones are relative to the run directory."""
    p = Path(value)
    return Path(os.path.abspath(p if p.is_absolute() else Path(run_dir) / p))


# --- internals -------------------------------------------------------------------------------

def _load(path: Path) -> tuple[JUnitXml | None, str]:
    path = Path(path)
    if not path.is_file():
        return None, f"{path}: no such file"
    try:
        return JUnitXml.fromfile(str(path)), ""
    except (ET.ParseError, JUnitXmlError, OSError, ValueError) as e:
        return None, f"{path}: not a JUnit XML file: {e}"


def _write(xml: JUnitXml, path: Path) -> list[str]:
    _scrub_tree(xml._elem)
    # Write beside and rename, so an interrupted write never leaves half a junit.xml.
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        xml.write(str(tmp))
        os.replace(tmp, path)
    except OSError as e:
        return [f"{path}: cannot write: {e}"]
    return []


def _scrub_tree(root: ET.Element) -> None:
    """Registered secrets out of every text and attribute (a captured log, a failure message),
    before XML escaping could hide them from a scrub of the file's text."""
    for elem in root.iter():
        if elem.text:
            elem.text = redact.scrub(elem.text)
        if elem.tail:
            elem.tail = redact.scrub(elem.tail)
        for name, value in list(elem.attrib.items()):
            elem.set(name, redact.scrub(value))


def _case(tc, problems: list[str]) -> Case:
    results = tc.result
    kinds = {type(r) for r in results}
    outcome = (Outcome.ERROR if Error in kinds else Outcome.FAILED if Failure in kinds
               else Outcome.SKIPPED if Skipped in kinds else Outcome.PASSED)
    deciding = {Outcome.ERROR: Error, Outcome.FAILED: Failure, Outcome.SKIPPED: Skipped}.get(outcome)
    message = ""
    for r in results:
        if type(r) is deciding:
            message = r.message or next((ln for ln in (r.text or "").splitlines() if ln.strip()), "")
            break
    try:
        time = tc.time or 0.0
    except ValueError:
        problems.append(f"{_where(tc)}: bad time attribute")
        time = 0.0
    props = tuple((p.name or "", p.value or "") for p in tc.properties())
    return Case(tc.name or "", tc.classname or "", outcome, message, props, time)


def _where(tc) -> str:
    return f"{tc.classname or '?'}::{tc.name or '?'}"


def _nodeid(classname: str, name: str) -> str:
    """pytest's node id from a JUnit classname (`tests.snp.test_gmem[.TestClass]`) and name."""
    parts = classname.split(".") if classname else []
    classes: list[str] = []
    while len(parts) > 1 and parts[-1][:1].isupper():  # CapWords components are test classes
        classes.insert(0, parts.pop())
    module = ["/".join(parts) + ".py"] if parts else []
    return "::".join([*module, *classes, name])


def _suite_properties(metadata: dict) -> list[tuple[str, str]]:
    out = []
    for key in SUITE_KEYS:
        value = metadata.get(key)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = "; ".join(str(v) for v in value)
        out.append((key, str(value)))
    return out


def _set_property(elem, name: str, value: str) -> None:
    """Exactly one property `name` = `value` on a suite or testcase (so enriching twice is a no-op)."""
    if elem.child(Properties) is None:
        elem._elem.insert(0, Properties()._elem)  # the schema wants <properties> first
    existing = [p for p in elem.properties() if p.name == name]
    if len(existing) == 1 and existing[0].value == value:
        return
    props = elem.child(Properties)
    for p in existing:
        props._elem.remove(p._elem)
    props.add_property(Property(name, value))


def _attach(tc, run_dir: Path, relative_to: Path | None) -> list[str]:
    problems: list[str] = []
    paths: list[Path] = []
    for p in tc.properties():
        if p.name not in ATTACH_PROPS or not p.value:
            continue
        path = resolve(run_dir, p.value)
        found = [path, sidecar_bin(path)] if p.name == "rmp_dump" and path.is_file() else [path]
        for f in found:
            if f.is_file():
                paths.append(f)
            else:
                problems.append(f"{_where(tc)}: {p.name} {f}: no such file")
    lines = []
    for path in dict.fromkeys(paths):
        shown = os.path.relpath(path, relative_to) if relative_to is not None else str(path)
        if "\n" in shown or "]]" in shown:
            problems.append(f"{_where(tc)}: cannot attach {shown!r}")
            continue
        lines.append(f"[[ATTACHMENT|{shown}]]")
    outs = tc._elem.findall("system-out")
    # pytest may write two <system-out>s (a skip during the call): look in all of them.
    present = {ln for o in outs for ln in (o.text or "").splitlines()}
    new = [ln for ln in lines if ln not in present]
    if not new:
        return problems
    if outs:
        text = outs[0].text or ""
        if text and not text.endswith("\n"):
            text += "\n"
        outs[0].text = text + "\n".join(new) + "\n"
    else:
        out = SystemOut("\n".join(new) + "\n")._elem
        err = tc._elem.find("system-err")
        if err is None:
            tc._elem.append(out)
        else:
            tc._elem.insert(list(tc._elem).index(err), out)
    return problems


def _total(xml: JUnitXml) -> None:
    # Totals on <testsuites> only: the suites keep pytest's own counts and wall time.
    tests = failures = errors = 0
    time = 0.0
    for suite in xml:
        for tc in suite:
            tests += 1
            kinds = {type(r) for r in tc.result}
            failures += Failure in kinds
            errors += Error in kinds
        try:
            time += float(suite._elem.get("time") or 0)
        except ValueError:
            pass
    xml.tests, xml.failures, xml.errors, xml.time = tests, failures, errors, round(time, 3)
