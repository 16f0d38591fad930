"""`snp-harness splats` and `snp-harness report`: offline, over saved logs and run directories."""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def register(sub) -> None:
    s = sub.add_parser("splats", help="classify saved kernel logs (dmesg, console logs, bug reports)")
    s.add_argument("files", nargs="+", metavar="FILE", help="log files; - for standard input")
    s.add_argument("--json", action="store_true",
                   help="print a JSON list of {title, category, first_line, last_line, file}")
    s.set_defaults(func=cmd_splats)

    r = sub.add_parser("report", help="reports from run directories (offline)")
    rs = r.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    m = rs.add_parser("merge", help="join JUnit reports from several hosts into one file")
    m.add_argument("inputs", nargs="+", metavar="[HOST=]JUNIT",
                   help="a junit.xml or a run directory, optionally labelled with its host")
    m.add_argument("-o", "--output", required=True, metavar="PATH", help="the merged JUnit file")
    m.set_defaults(func=cmd_report_merge)
    w = rs.add_parser("summary", help="(re)write junit enrichment, summary.md and summary.html of a run directory")
    w.add_argument("run_dir", metavar="RUN_DIR")
    w.set_defaults(func=cmd_report_summary)


def cmd_splats(args) -> int:
    from harness.evidence.splats import classify

    found = []
    for name in args.files:
        try:  # streamed: a lab's console log can be gigabytes
            if name == "-":
                report = classify(sys.stdin)
            else:
                with open(name, encoding="utf-8", errors="replace") as f:
                    report = classify(f)
        except OSError as e:
            print(f"error: cannot read {name}: {e.strerror}", file=sys.stderr)
            return EXIT_USAGE
        found += [{"title": s.title, "category": s.category, "first_line": s.first_line,
                   "last_line": s.last_line, "file": name} for s in report.splats]
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        for f in found:
            print(f"{f['file']}:{f['first_line']}-{f['last_line']}: [{f['category']}] {f['title']}")
        print(f"{len(found)} splat(s) in {len(args.files)} file(s)", file=sys.stderr)
    return EXIT_FAIL if found else EXIT_OK


def _junit_input(spec: str) -> tuple[str, Path]:
    label, sep, path = spec.partition("=")
    if not sep:
        label, path = "", spec
    p = Path(path)
    if p.is_dir():
        p = p / "junit.xml"
    return (label or p.parent.name), p


def cmd_report_merge(args) -> int:
    from harness.report.junit import merge

    inputs = [_junit_input(s) for s in args.inputs]
    problems = merge(inputs, Path(args.output))
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    print(f"merged {len(inputs)} report(s) into {args.output}")
    return EXIT_OK if len(problems) < len(inputs) else EXIT_USAGE


def cmd_report_summary(args) -> int:
    from harness.report.finish import finish_run

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        print(f"error: {run_dir} is not a run directory", file=sys.stderr)
        return EXIT_USAGE
    result = finish_run(run_dir)
    for p in result.problems:
        print(f"warning: {p}", file=sys.stderr)
    for path in result.written:
        print(path)
    return EXIT_OK
