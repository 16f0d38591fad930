"""Secrets kept out of logs, reports and dry-runs.

An inventory may hold a secret in an argv (`ipmitool ... -P PASSWORD`), and a
labgrid NetworkService may carry a password. Every secret found is registered
here once; from then on every log record, and every report writer that calls
scrub(), shows it as REDACTED. Matching the secret's value (not only its
option) also catches it in an exception message or a command's output.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import threading
from typing import Any, Iterable, Sequence

REDACTED = "********"

# Options whose next word is a secret, per program (basename of argv[0]); "*" applies to all.
_SECRET_OPTIONS: dict[str, frozenset[str]] = {
    "*": frozenset({"--password", "--passwd", "--pass", "--secret", "--token", "--api-key", "--apikey"}),
    "ipmitool": frozenset({"-P", "-k", "-y"}),  # password, Kg key, hex Kg key
    "sshpass": frozenset({"-p"}),
    "racadm": frozenset({"-p"}),
    "curl": frozenset({"-u", "--user"}),  # user:password
    # Programs a wrapper runs whose short options are no secret (sshpass -p X ssh -p 2222 bmc).
    **{program: frozenset() for program in ("ssh", "scp", "sftp", "telnet", "socat", "nc")},
}
# A name that says secret, as a whole word of NAME (IPMI_PASSWORD, db.password; not bypass, PasswordAuthentication).
_SECRET_NAME = r"(?:[A-Za-z0-9]+[_.-])*(?:pass(?:word|wd|phrase)?|secret|token|api_?key)(?:[_.-][A-Za-z0-9]+)*"
# NAME=value words (env assignments, key=value options) whose name says secret.
_SECRET_ASSIGNMENT = re.compile(rf"(?i)^(?:--?)?({_SECRET_NAME})=(.+)$")
# user:password@ in a URL.
_URL_PASSWORD = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^/\s:@]+:([^/\s@]+)@")
# "password: X" / "'password': 'X'" / "password = X" in tool output (labgrid `show`, config dumps).
_TEXT_PASSWORD = re.compile(r"(?im)(?<![A-Za-z0-9])(?:pass(?:word|wd|phrase)?|secret|api_?key)['\"]?\s*[:=]\s*"
                            r"['\"]?([^\s'\",}]+)")
_SECRET_KEY = re.compile(rf"(?i)^{_SECRET_NAME}$")
# Values that are settings, not secrets (PasswordAuthentication=no, 'secret': False): never redacted.
_NOT_SECRETS = frozenset({"yes", "no", "true", "false", "on", "off", "none", "null", "ask", "prompt"})

_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register(secret: str) -> None:
    """From now on `secret` never appears in a log record or a scrubbed text."""
    global _pattern
    if not isinstance(secret, str) or len(secret) < 3 or secret == REDACTED or secret.lower() in _NOT_SECRETS:
        return  # too short (or too common) to redact without mangling ordinary text
    # Also as it shows once quoted: shlex.join in a log line, repr in an error, a JSON string.
    forms = {secret, shlex.quote(secret), repr(secret)[1:-1], json.dumps(secret)[1:-1]}
    with _lock:
        if forms <= _known:
            return
        _known.update(forms)
        _pattern = re.compile("|".join(re.escape(s) for s in sorted(_known, key=len, reverse=True)))


def secrets_in_argv(argv: Sequence[str]) -> list[str]:
    """The secret words of an argv: after a secret option, or in a NAME=value / URL form.

    Wrappers count: in `timeout 60 ipmitool -P X` or `sshpass -p X ssh -p 22 bmc`, the options
    of each known program apply from its word on (until the next one), and a word holding a
    command line (`sh -c "ipmitool -P X ..."`) is read as one too.
    """
    found: list[str] = []
    options = _SECRET_OPTIONS["*"]
    for i, word in enumerate(argv):
        program = os.path.basename(word)
        if program in _SECRET_OPTIONS and program != "*" and (i == 0 or argv[i - 1] not in options):
            options = _SECRET_OPTIONS["*"] | _SECRET_OPTIONS[program]
        if word in options and i + 1 < len(argv):
            found.append(argv[i + 1])
        opt, eq, value = word.partition("=")
        if eq and opt in options and value:
            found.append(value)
        elif (m := _SECRET_ASSIGNMENT.match(word)) is not None:
            found.append(m.group(2))
        # -Psecret (a short option glued to its value)
        for short in (o for o in options if len(o) == 2 and o.startswith("-")):
            if word.startswith(short) and len(word) > 2 and not word.startswith("--"):
                found.append(word[2:])
        found.extend(m.group(1) for m in _URL_PASSWORD.finditer(word))
        if i > 0 and any(c.isspace() for c in word.strip()):
            try:
                found.extend(secrets_in_argv(shlex.split(word)))
            except ValueError:  # not shell words after all
                found.extend(secrets_in_argv(word.split()))
    return found


def secrets_in_text(text: str) -> list[str]:
    """Secret values in tool output: "password: X" fields and user:password@ URLs."""
    return [m.group(1) for m in _TEXT_PASSWORD.finditer(text)] + \
           [m.group(1) for m in _URL_PASSWORD.finditer(text)]


def secrets_in_data(data: Any) -> list[str]:
    """The values of secret-named keys anywhere in parsed data (labgrid's resource params)."""
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and _SECRET_KEY.match(key) and isinstance(value, (str, int)) \
                    and not isinstance(value, bool):
                found.append(str(value))
            else:
                found += secrets_in_data(value)
    elif isinstance(data, (list, tuple)):
        for item in data:
            found += secrets_in_data(item)
    elif isinstance(data, str):
        found += [m.group(1) for m in _URL_PASSWORD.finditer(data)]
    return found


def register_argv(argv: Sequence[str]) -> None:
    for s in secrets_in_argv(argv):
        register(s)


def register_text(text: str) -> None:
    for s in secrets_in_text(text or ""):
        register(s)


def register_data(data: Any) -> None:
    for s in secrets_in_data(data):
        register(s)


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by REDACTED."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(REDACTED, text)


def any_registered() -> bool:
    return _pattern is not None


def scrub_all(texts: Iterable[str]) -> list[str]:
    return [scrub(t) for t in texts]


def redact_argv(argv: Sequence[str]) -> str:
    """An argv for display (logs, dry-run): shell-quoted, secrets replaced."""
    register_argv(argv)
    return scrub(shlex.join(argv))


def install_log_scrubber() -> None:
    """Every log record, from any logger to any handler (pytest's capture too), is scrubbed.

    A record factory, not a handler filter: filters miss handlers added later (pytest's
    caplog and report sections), a factory covers every record created from now on. It
    wraps the factory in place, so another library's factory keeps working. Exception
    text attached to a record is scrubbed by the formatter wrapper below.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_snph_scrubbing", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _pattern is None:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it when a handler formats it
            return record
        scrubbed = scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        return record

    factory._snph_scrubbing = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
    original = logging.Formatter.formatException
    if getattr(original, "_snph_scrubbing", False):
        return

    def format_exception(self, ei):  # type: ignore[no-untyped-def]
        return scrub(original(self, ei))

    format_exception._snph_scrubbing = True  # type: ignore[attr-defined]
    logging.Formatter.formatException = format_exception  # type: ignore[method-assign]


def _reset_for_tests() -> None:
    """Forget every registered secret (the registry is process-wide)."""
    global _pattern
    with _lock:
        _known.clear()
        _pattern = None
