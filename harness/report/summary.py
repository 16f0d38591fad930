"""A run directory's summary: summary.md, a self-contained summary.html, RMP map PNGs.

The content is built once as a small list of blocks (headings, paragraphs, tables,
code, images) and rendered twice, so the Markdown and the HTML never disagree. Every
piece of text from the run (a patch subject from lore, a skip reason, a splat title)
is escaped by the renderer, so it can add no link, image, heading or table cell:
html.escape in HTML; in Markdown, a backslash before CommonMark's punctuation, one
line only, and an invisible word joiner where GitLab's and GFM's autolinkers would
start (before `://`, after `www` and `@`): they do not match across it. Code spans
stay raw, as Markdown shows them literally; in table cells their `|` is escaped, as
GFM splits cells even there.
Registered secrets (harness.redact) are scrubbed from everything written.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import re
import shlex
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from harness import redact
from harness.evidence import rmp
from harness.report.junit import Case, Outcome, read_metadata, read_report, resolve, sidecar_bin
from harness.report.rmp_map import draw_rmp_map

DEFAULT_REPRODUCER = ("snp-harness", "run")
_LABEL = {Outcome.FAILED: "FAIL", Outcome.ERROR: "ERROR", Outcome.PASSED: "pass", Outcome.SKIPPED: "skip"}
_ORDER = (Outcome.FAILED, Outcome.ERROR, Outcome.PASSED, Outcome.SKIPPED)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_SKIP_LISTED = 30  # tests named per skip reason; the rest are counted
_MAP_MAX_BYTES = 16 << 30  # a larger GPA window is a broken sidecar, not a guest we would draw


@dataclass(frozen=True)
class SummaryResult:
    written: tuple[Path, ...]
    problems: tuple[str, ...]


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Link:
    text: str
    href: str


@dataclass(frozen=True)
class RmpMap:
    nodeid: str
    target: str
    phase: str
    verdict: str
    ok: bool
    png: Path | None  # None: nothing to draw (a teardown dump: the guest's GPA space is gone)


def write_summary(run_dir: Path) -> SummaryResult:
    run_dir = Path(run_dir)
    problems: list[str] = []
    meta, p = read_metadata(run_dir)
    problems += p
    report = read_report(run_dir / "junit.xml")
    problems += report.problems
    maps, p = rmp_maps(run_dir)
    problems += p
    blocks = scrub_blocks(build(run_dir, meta, report.cases, report.suite_properties, maps, problems))
    written = [m.png for m in maps if m.png is not None]
    for name, text in (("summary.md", render_markdown(blocks)), ("summary.html", render_html(blocks))):
        try:
            (run_dir / name).write_text(redact.scrub(text))  # again: a secret in a link's path
            written.append(run_dir / name)
        except OSError as e:
            problems.append(f"{run_dir / name}: cannot write: {e}")
    return SummaryResult(tuple(written), tuple(problems))


def reproducer(meta: dict, nodeid: str) -> str:
    argv = meta.get("reproducer_argv")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        argv = list(DEFAULT_REPRODUCER)
    return shlex.join([*argv, "--", nodeid])


# --- RMP maps --------------------------------------------------------------------------------

def rmp_maps(run_dir: Path) -> tuple[list[RmpMap], list[str]]:
    """Check and draw every rmp/<test>/<phase>.json sidecar: rmp-map-<test>-<phase>.png."""
    sidecars = sorted((run_dir / "rmp").glob("*/*.json"))
    if not sidecars:
        return [], []
    maps, problems = [], []
    for sc in sidecars:
        unpacked = None
        try:
            data = json.loads(sc.read_text())
            e = data["expectation"]
            exp = rmp.Expectation(int(e["asid"]), _pairs(e.get("private_gpas")), _pairs(e.get("shared_gpas")),
                                  bool(e.get("torn_down", False)), _pairs(e.get("leaked_pfns")),
                                  bool(e.get("exclusive", True)), _pairs(e.get("allowed_gpas")))
            phase = str(data.get("phase") or sc.stem)
            nodeid, target = str(data.get("nodeid", sc.parent.name)), str(data.get("target", ""))
            wants_map = bool(data.get("gpa_window")) or not exp.torn_down
            raw = sidecar_bin(sc)
            if not raw.exists() and not wants_map and isinstance(data.get("verdict"), str):
                # The evidence keeps only the gzip of a dump that checked ok: its recorded verdict
                # stands, no multi-GiB unpacking for a table row.
                maps.append(RmpMap(nodeid, target, phase, data["verdict"], data["verdict"].startswith("ok"), None))
                continue
            if not raw.exists():
                raw = unpacked = _unpack(raw)
            dump = rmp.load_dump(raw, int(data["start_pfn"]), fmt=data.get("format", "fam19h-raw"),
                                 sparse=bool(data.get("sparse", False)))
            verdict = rmp.check(dump, exp)
            png = None
            if wants_map:
                start, end = _window(data.get("gpa_window"), exp)
                png = run_dir / f"rmp-map-{_SAFE.sub('_', sc.parent.name)}-{_SAFE.sub('_', phase)}.png"
                draw_rmp_map(rmp.gpa_states(dump, exp, start, end), start, png,
                             f"{nodeid} {phase}: {verdict.summary()}"[:160])
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, EOFError) as e:
            problems.append(f"{sc}: no RMP map: {type(e).__name__}: {e}")
            continue
        finally:
            if unpacked is not None:
                unpacked.unlink(missing_ok=True)
        maps.append(RmpMap(nodeid, target, phase, verdict.summary(), verdict.ok, png))
    return maps, problems


def _unpack(raw: Path) -> Path:
    """<raw>.gz unpacked next to it (the caller deletes it): the evidence keeps only the gzip
    of a dump that checked ok."""
    out = raw.with_name(raw.name + ".unpacked")
    with gzip.open(raw.with_name(raw.name + ".gz"), "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return out


def _pairs(value) -> tuple[tuple[int, int], ...]:
    return tuple((int(s), int(e)) for s, e in (value or ()))


def _window(value, exp) -> tuple[int, int]:
    if value:
        start, end = (int(v) for v in value)
    else:  # no recorded window: the span of what the test expected
        spans = [*exp.private_gpas, *exp.shared_gpas]
        if not spans:
            raise ValueError("no gpa_window and no GPA ranges in the expectation")
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
    if not 0 < end - start <= _MAP_MAX_BYTES:
        raise ValueError(f"GPA window {start:#x}-{end:#x} is empty or larger than {_MAP_MAX_BYTES >> 30} GiB")
    return start, end


# --- content ---------------------------------------------------------------------------------

def build(run_dir: Path, meta: dict, cases, suite_props, maps: list[RmpMap], problems: list[str]) -> list:
    """The summary as blocks: ("h", level, parts), ("p", parts), ("table", header, rows),
    ("pre", text), ("img", png, alt); parts are str, Code or Link; rows hold (parts, css class)."""
    counts = Counter(c.outcome for c in cases)
    total = ", ".join(f"{counts[o]} {o.value}" for o in _ORDER)
    b: list = [("h", 1, [f"snp-harness run {run_dir.name}"]),
               ("p", [f"{len(cases)} tests: {total}."])]
    b += _header(meta, cases, suite_props)
    b += _scenarios(cases)
    b += _failures(meta, cases)
    b += _splats(run_dir, cases)
    b += _rmp(run_dir, cases, maps)
    b += _skips(cases)
    b += _subtest_skips(cases)
    if problems:
        b += [("h", 2, ["Problems reading this run"]),
              ("table", ["problem"], [[([p], "")] for p in problems])]
    return b


def _header(meta: dict, cases, suite_props) -> list:
    kernels = sorted({v for k, v in suite_props if k.endswith(" kernel")})
    hosts = meta.get("hosts") or sorted({c.target for c in cases if c.target})
    patch_ids = meta.get("patch_ids") or []
    rows = [("kernel", meta.get("kernel_release") or ", ".join(kernels)),
            ("build", meta.get("build")), ("series", meta.get("series") or "none"),
            ("patches", f"{len(patch_ids)}" if isinstance(patch_ids, list) else str(patch_ids)),
            ("tree", meta.get("tree_id")), ("config sha256", meta.get("config_sha256")),
            ("hosts", ", ".join(map(str, hosts)) if isinstance(hosts, list) else str(hosts)),
            ("duration", f"{meta['duration_s']} s" if meta.get("duration_s") is not None else None),
            ("pytest exit", meta.get("pytest_exit")), ("reproducer", meta.get("reproducer")),
            # how the run ended early, when it did: the tests below are what ran
            ("interrupted", f"by {meta['interrupted']}: only the tests below ran" if meta.get("interrupted") else None),
            ("artifact disk", meta.get("disk_full"))]
    out = [("h", 2, ["Run"]),
           ("table", ["", ""], [[([k], ""), ([Code(str(v))] if k in ("build", "tree", "reproducer",
                                                                   "config sha256") else [str(v)], "")]
                                for k, v in rows if v not in (None, "")])]
    if isinstance(patch_ids, list) and patch_ids:
        out += [("h", 3, ["Patches (patch-id, subject)"]),
                ("table", ["patch-id", "subject"],
                 [[([Code(pid)], ""), ([subject], "")] for pid, _, subject in
                  (str(p).partition(" ") for p in patch_ids)])]
    per_target = [(t, k, v) for name, v in suite_props for t, _, k in [name.partition(" ")] if k]
    if per_target:
        out += [("h", 3, ["Targets"]),
                ("table", ["target", "property", "value"], [[([t], ""), ([k], ""), ([v], "")]
                                                           for t, k, v in per_target])]
    return out


def _scenarios(cases) -> list:
    targets = list(dict.fromkeys(c.target or "(no target)" for c in cases))
    grid: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for c in cases:
        grid[c.scenario][c.target or "(no target)"][c.outcome] += 1
    rows = []
    for scenario, per_target in grid.items():
        row = [([Code(scenario)], "")]
        for t in targets:
            n = per_target.get(t)
            if not n:
                row.append((["—"], "none"))
                continue
            worst = next(o for o in _ORDER if n[o])
            text = _LABEL[worst] if sum(n.values()) == 1 else ", ".join(
                f"{n[o]} {_LABEL[o]}" for o in _ORDER if n[o])
            row.append(([text], worst.value))
        rows.append(row)
    return [("h", 2, ["Results by scenario"]), ("table", ["scenario", *targets], rows)] if rows else []


def _failures(meta: dict, cases) -> list:
    bad = [c for c in cases if c.outcome in (Outcome.FAILED, Outcome.ERROR)]
    if not bad:
        return []
    out: list = [("h", 2, ["Failures and errors"])]
    for c in bad:
        first = next((ln for ln in c.message.splitlines() if ln.strip()), "(no message)")
        out += [("h", 3, [Code(c.nodeid), f" — {_LABEL[c.outcome]}" + (f" on {c.target}" if c.target else "")]),
                ("p", [Code(first)]),
                ("pre", reproducer(meta, c.nodeid))]
    return out


def _splats(run_dir: Path, cases) -> list:
    rows, gaps = [], Counter()
    for c in cases:
        evidence = c.prop("dmesg_evidence")
        if evidence and evidence != "ok":
            gaps[evidence] += 1
        dmesg = _file_link(run_dir, c.prop("dmesg"), "dmesg slice")
        for s in c.props("splat"):
            category, _, title = s.partition(": ")
            rows.append([([Code(c.nodeid)], ""), ([c.target], ""), ([category], "failed"), ([title], ""),
                         (dmesg, "")])
        if c.prop("dmesg_lost"):
            gaps[f"lost: {c.prop('dmesg_lost')}"] += 1
    out: list = [("h", 2, ["Kernel splats"])]
    out.append(("table", ["test", "target", "category", "title", "dmesg"], rows) if rows
               else ("p", ["No splats in any test's dmesg slice."]))
    if gaps:
        out += [("p", ["dmesg evidence gaps:"]),
                ("table", ["dmesg evidence", "tests"], [[([g], ""), ([str(n)], "")] for g, n in gaps.items()])]
    return out


def _rmp(run_dir: Path, cases, maps: list[RmpMap]) -> list:
    keys = ("rmp_verdict", "rmp_fault_events", "rmp_fault_psmash_failures", "rmp_fault_tracing")
    rows, skipped = [], {}
    for c in cases:
        if not any(c.prop(k) for k in keys[:3]):
            continue
        verdict = c.prop("rmp_verdict")
        quiet = c.prop("rmp_fault_events", "0") == "0" and c.prop("rmp_fault_psmash_failures", "0") == "0"
        if verdict.startswith("skipped") and quiet:  # one line per target below, not one row per test
            skipped.setdefault(c.target, verdict)
            continue
        cls = "" if not verdict else "passed" if verdict.startswith("ok") else "failed"
        dumps = _spaced(_file_link(run_dir, d, Path(d).stem) for d in c.props("rmp_dump"))
        rows.append([([Code(c.nodeid)], ""), ([c.target], ""), ([verdict or "—"], cls),
                     *[([c.prop(k) or "—"], "") for k in keys[1:]], (dumps or ["—"], "")])
    if not rows and not maps and not skipped:
        return []
    out: list = [("h", 2, ["RMP"])]
    out += [("p", [f"RMP dumps on {t or 'the target'}: {why}"]) for t, why in sorted(skipped.items())]
    if rows:
        out.append(("table", ["test", "target", "verdict", "kvm_rmp_fault events", "PSMASH failures",
                              "tracing", "dumps"], rows))
    for m in maps:
        out += [("h", 3, [Code(m.nodeid), f" — {m.phase}" + (f" on {m.target}" if m.target else "")]),
                ("p", [m.verdict])]
        if m.png is not None:
            out.append(("img", m.png, f"RMP map of {m.nodeid} {m.phase}"))
    return out


def _skips(cases) -> list:
    by_reason: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        if c.outcome is Outcome.SKIPPED:
            by_reason[c.message or "(no reason given)"].append(c)
    if not by_reason:
        return []
    rows = []
    for reason, group in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        names = _spaced([Code(c.name)] for c in group[:_SKIP_LISTED])
        if len(group) > _SKIP_LISTED:
            names.append(f" … and {len(group) - _SKIP_LISTED} more")
        rows.append([([reason], ""), ([str(len(group))], ""), (names, "")])
    return [("h", 2, [f"Skipped ({sum(len(g) for g in by_reason.values())})"]),
            ("table", ["reason", "count", "tests"], rows)]


def _subtest_skips(cases) -> list:
    """Subtests a scenario skipped as declared: not hidden inside a passing test."""
    rows = [[([Code(c.nodeid)], ""), ([c.target], ""), ([skip], "")]
            for c in cases for skip in c.props("subtest_skip")]
    if not rows:
        return []
    return [("h", 2, [f"Subtests skipped as declared ({len(rows)})"]),
            ("table", ["test", "target", "subtest: reason (declared: why)"], rows)]


def _spaced(groups) -> list:
    out: list = []
    for parts in groups:
        out += [" ", *parts] if out else list(parts)
    return out


def _file_link(run_dir: Path, value: str, text: str) -> list:
    """A link to a file of the run, relative when it lies inside the run directory."""
    if not value:
        return ["—"]
    path = resolve(run_dir, value)
    try:
        href = path.relative_to(resolve(run_dir, ".")).as_posix()
    except ValueError:
        href = path.as_posix()
    return [Link(text, href)] if path.is_file() else [f"{text} (missing: {href})"]


def scrub_blocks(blocks: list) -> list:
    """The blocks with registered secrets replaced, before escaping could hide them from scrub()."""
    def parts(ps) -> list:
        return [Code(redact.scrub(p.text)) if isinstance(p, Code) else
                Link(redact.scrub(p.text), p.href) if isinstance(p, Link) else redact.scrub(str(p)) for p in ps]

    out: list = []
    for block in blocks:
        match block:
            case ("h", level, ps):
                out.append(("h", level, parts(ps)))
            case ("p", ps):
                out.append(("p", parts(ps)))
            case ("table", header, rows):
                out.append(("table", [redact.scrub(h) for h in header],
                            [[(parts(ps), cls) for ps, cls in row] for row in rows]))
            case ("pre", text):
                out.append(("pre", redact.scrub(text)))
            case ("img", png, alt):
                out.append(("img", png, redact.scrub(alt)))
            case _:
                out.append(block)
    return out


# --- rendering -------------------------------------------------------------------------------

# Every character CommonMark lets a backslash escape that can start markup here: links and
# images ([]()!<>), emphasis (*_~), headings and lists (#+-.), code (`), cells (|), entities
# (&), GitLab's math ($) and the backslash itself.
_MD_PUNCT = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&$])")
_WJ = "\u2060"  # WORD JOINER: invisible, and no autolinker matches across it
_SCHEME = re.compile(r"(?i)([a-z0-9+.-])(?=://)")  # GitLab links any scheme://
_WWW = re.compile(r"(?i)\b(www)(?=\.)")
# Link targets are the run's own files: ':' is encoded too, so no path reads as a scheme.
_HREF_SAFE = "/._-~"


def _md_text(text: str) -> str:
    """Plain text as Markdown that renders as exactly that text, on one line."""
    text = " ".join(str(text).splitlines())
    text = _WWW.sub(rf"\1{_WJ}", _SCHEME.sub(rf"\1{_WJ}", text)).replace("@", "@" + _WJ)
    return _MD_PUNCT.sub(r"\\\1", text)


def _md_code(text: str) -> str:
    # A code span's fence must be longer than any backtick run inside it (CommonMark).
    text = " ".join(text.splitlines())
    if not text.strip():
        return ""
    ticks = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _md_inline(parts, cell: bool = False) -> str:
    out = []
    for p in parts:
        if isinstance(p, Code):
            code = _md_code(p.text)
            # GFM splits cells at every unescaped pipe, even inside code spans.
            out.append(code.replace("|", "\\|") if cell else code)
        elif isinstance(p, Link):
            out.append(f"[{_md_text(p.text)}](<{quote(p.href, safe=_HREF_SAFE)}>)")
        else:
            out.append(_md_text(str(p)))
    # No indent either: four leading spaces would start a code block.
    return "".join(out).strip()


def render_markdown(blocks: list) -> str:
    lines: list[str] = []
    for block in blocks:
        match block:
            case ("h", level, parts):
                lines += ["#" * level + " " + _md_inline(parts), ""]
            case ("p", parts):
                lines += [_md_inline(parts), ""]
            case ("table", header, rows):
                lines.append("| " + " | ".join(_md_inline([h], cell=True) for h in header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(_md_inline(parts, cell=True) for parts, _ in row) + " |"
                          for row in rows]
                lines.append("")
            case ("pre", text):
                fence = "`" * max(3, max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
                lines += [f"{fence}sh", text, fence, ""]
            case ("img", png, alt):
                lines += [f"![{_md_text(alt)}](<{quote(png.name, safe=_HREF_SAFE)}>)", ""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f0f0f0}code,pre{font-family:ui-monospace,monospace}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto}td.passed{background:#dff0d8}
td.failed,td.error{background:#f8d7da;font-weight:bold}td.skipped{background:#eee;color:#666}
td.none{color:#aaa}img{max-width:100%;border:1px solid #ddd}
"""


def _html_inline(parts) -> str:
    out = []
    for p in parts:
        if isinstance(p, Code):
            out.append(f"<code>{html.escape(p.text)}</code>")
        elif isinstance(p, Link):
            out.append(f'<a href="{html.escape(quote(p.href, safe=_HREF_SAFE))}">{html.escape(p.text)}</a>')
        else:
            out.append(html.escape(str(p)))
    return "".join(out)


def render_html(blocks: list) -> str:
    title = next((_html_inline(b[2]) for b in blocks if b[0] == "h"), "snp-harness run")
    body: list[str] = []
    for block in blocks:
        match block:
            case ("h", level, parts):
                body.append(f"<h{level}>{_html_inline(parts)}</h{level}>")
            case ("p", parts):
                body.append(f"<p>{_html_inline(parts)}</p>")
            case ("table", header, rows):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                cells = ["<tr>" + "".join(f'<td class="{html.escape(cls)}">{_html_inline(parts)}</td>'
                                          if cls else f"<td>{_html_inline(parts)}</td>" for parts, cls in row)
                         + "</tr>" for row in rows]
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(cells)}</tbody></table>")
            case ("pre", text):
                body.append(f"<pre>{html.escape(text)}</pre>")
            case ("img", png, alt):
                # Inline as a data: URI, so the page works on its own (a CI attachment, a mail).
                try:
                    data = base64.b64encode(png.read_bytes()).decode("ascii")
                    body.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
                except OSError as e:
                    body.append(f"<p>{html.escape(f'{png.name}: {e}')}</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(body)
            + "\n</body></html>\n")
