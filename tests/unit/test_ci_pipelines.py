"""The lab CI examples (ci/gitlab-ci.yml, ci/Jenkinsfile): their structure, and every
`.venv/bin/snp-harness` and `.venv/bin/pytest` command in them parses as written."""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from harness import cli, plugin

REPO = Path(__file__).resolve().parents[2]
GITLAB = REPO / "ci" / "gitlab-ci.yml"
JENKINS = REPO / "ci" / "Jenkinsfile"
PIPELINES = (GITLAB, JENKINS)

_COMMAND = re.compile(r"\.venv/bin/(?:snp-harness|pytest)(?=\s|$)")
# Shell control operators and the end of a Groovy '''-string: where a command stops.
_END = re.compile(r"\s(?:\|\||&&|;|\||>|2>)\s|'''")
# $VAR, ${VAR}, ${params.VAR}, ${env.VAR} (shell or Groovy); not ${VAR:?...} and the like. They become
# string placeholders, so options with a type (--snp-lease-wait SECONDS) must be given literal values.
_VAR = re.compile(r"\$\{(?:params\.|env\.)?([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)")
_GITLAB_KEYWORDS = {"stages", "variables", "workflow", "default", "include", "image", "services", "cache",
                    "before_script", "after_script"}
# What the runner's secret files arrive as (GitLab File variables, Jenkins file credentials).
_SECRETS = ("SNP_SSH_KEY", "SNP_KNOWN_HOSTS", "SNP_HARNESS_CONFIG", "SNP_INVENTORY")


# -- extraction -------------------------------------------------------------------

def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, line) with backslash-newline continuations joined; comments dropped."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = n
            if line.lstrip().startswith(("#", "//")):
                continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def _expand(command: str) -> str:
    return _VAR.sub(lambda m: f"placeholder-{(m[1] or m[2]).lower()}", command)


def _split(line: str, start: int) -> tuple[str, list[str]]:
    """The command starting at `start` in `line`: (text as written, argv with variables expanded)."""
    text = _END.split(line[start:])[0].strip()
    try:
        return text, shlex.split(_expand(text))
    except ValueError:  # the quote closing a one-line Groovy/YAML string around the command
        if text[-1:] not in ("'", '"'):
            raise
        return text[:-1], shlex.split(_expand(text[:-1]))


def commands(path: Path) -> list[tuple[int, str, list[str]]]:
    """Every snp-harness/pytest command in `path`: (line, text as written, argv with variables expanded)."""
    found = []
    for lineno, line in _logical_lines(path.read_text()):
        for m in _COMMAND.finditer(line):
            text, argv = _split(line, m.start())
            found.append((lineno, " ".join(text.split()), argv))
    return found


def _all_commands():
    return [pytest.param(path, line, text, argv, id=f"{path.name}:{line}:{Path(argv[0]).name}-{argv[1]}")
            for path in PIPELINES for line, text, argv in commands(path)]


# -- what the harness accepts -------------------------------------------------------

class _RecordingParser:
    """Stands in for pytest's parser: records the plugin's addoption calls."""

    def __init__(self) -> None:
        self.options: list[tuple[tuple[str, ...], dict]] = []

    def getgroup(self, *args, **kwargs) -> _RecordingParser:
        return self

    def addoption(self, *names: str, **kwargs) -> None:
        self.options.append((names, kwargs))

    def addini(self, *args, **kwargs) -> None:
        pass


def _plugin_options() -> list[tuple[tuple[str, ...], dict]]:
    recorder = _RecordingParser()
    plugin.pytest_addoption(recorder)
    return recorder.options


def _declared_packages() -> set[str]:
    """Packages in pyproject's dependencies and its test extra (ci/bootstrap installs '.[test]')."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = [*project.get("dependencies", []), *project.get("optional-dependencies", {}).get("test", [])]
    return {re.match(r"[A-Za-z0-9_.-]+", s.strip())[0].lower().replace("_", "-") for s in specs}


def _check_paths(where: str, args: list[str]) -> None:
    for a in args:
        if a.startswith("tests/"):
            assert (REPO / a.split("::")[0]).exists(), f"{where}: {a} does not exist"


def _check_snp_harness(where: str, argv: list[str], capsys) -> None:
    try:
        args = cli._parser().parse_args(argv[1:])
    except SystemExit as e:
        pytest.fail(f"{where}: snp-harness rejects it (exit {e.code}): {capsys.readouterr().err.strip()}",
                    pytrace=False)
    assert callable(getattr(args, "func", None)), f"{where}: no subcommand"
    if "--" in argv:
        _check_paths(where, argv[argv.index("--") + 1:])


def _check_pytest(where: str, argv: list[str], capsys) -> None:
    options = _plugin_options()
    known = {name for names, _ in options for name in names}
    used = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--snp-")]
    unknown = sorted(set(used) - known)
    assert not unknown, f"{where}: options the plugin does not register: {unknown} (it has: {sorted(known)})"
    # Values against the plugin's own definitions: choices, types, flags that take no value.
    replay = argparse.ArgumentParser(prog="pytest", add_help=False, allow_abbrev=False)
    for names, kwargs in options:
        replay.add_argument(*names, **kwargs)
    try:
        replay.parse_known_args(argv[1:])
    except SystemExit as e:
        pytest.fail(f"{where}: a --snp-* value is refused (exit {e.code}): {capsys.readouterr().err.strip()}",
                    pytrace=False)
    if any(a == "-n" or re.fullmatch(r"-n\d+|--numprocesses(=.*)?", a) for a in argv[1:]):
        assert "pytest-xdist" in _declared_packages(), \
            f"{where}: -n needs pytest-xdist, which pyproject.toml does not declare"
    _check_paths(where, [a for a in argv[1:] if not a.startswith("-")])


@pytest.mark.parametrize("path, line, text, argv", _all_commands())
def test_command_parses(path, line, text, argv, capsys):
    where = f"{path.relative_to(REPO)}:{line}: `{text}`"
    if argv[0].endswith("snp-harness"):
        _check_snp_harness(where, argv, capsys)
    else:
        _check_pytest(where, argv, capsys)


def test_extractor_expands_variables_and_joins_lines(tmp_path):
    f = tmp_path / "Jenkinsfile"
    f.write_text("// .venv/bin/pytest --ignored\n"
                 "rc = sh(script: '''\n"
                 "  .venv/bin/snp-harness bisect --good \"${params.GOOD}\" --bad \"${env.BAD}\" \\\n"
                 "    --tree $TREE --snp-host ${HOST} -- \"$SEL\" || true'''\n")
    assert commands(f) == [(3, '.venv/bin/snp-harness bisect --good "${params.GOOD}" --bad "${env.BAD}" '
                               '--tree $TREE --snp-host ${HOST} -- "$SEL"',
                            [".venv/bin/snp-harness", "bisect", "--good", "placeholder-good", "--bad",
                             "placeholder-bad", "--tree", "placeholder-tree", "--snp-host", "placeholder-host",
                             "--", "placeholder-sel"])]


def test_both_pipelines_run_the_suites_and_bisect():
    for path in PIPELINES:
        argvs = [argv for _, _, argv in commands(path)]
        suites = [a for a in argvs if a[0].endswith("pytest")]
        bisects = [a for a in argvs if a[0].endswith("snp-harness") and a[1] == "bisect"]
        assert suites and bisects, f"{path.name}: expected a pytest run of the suites and a bisect"
        for a in suites:
            if "tests/snp" in a:  # the lab's suites
                assert "--junitxml=junit.xml" in a and "--snp-run-dir" in a and "-n" in a, f"{path.name}: {a}"
        for a in bisects:
            assert {"--install", "--verify-revert", "--repeat"} <= set(a), f"{path.name}: {a}"


def test_host_keys_are_never_accepted_and_secrets_never_printed():
    secret = "|".join(_SECRETS)
    for path in PIPELINES:
        for line, text in _logical_lines(path.read_text()):
            where = f"{path.name}:{line}: {text.strip()}"
            assert not re.search(r"trust-new-host-key|StrictHostKeyChecking", text), \
                f"{where}: host keys come pinned in the known_hosts secret, never accepted in CI"
            assert not re.search(rf"\b(cat|echo|printf|head|tail|less|base64|xxd|od)\b.*\$\{{?({secret})\b", text), \
                f"{where}: a secret file is only copied (install -m 600), never printed"
            if re.search(rf"\$\{{?({secret})\b", text) and re.match(r"\s*(- )?install\s", text):
                assert "install -m 600" in text, f"{where}: secret copies are private to the CI user"


# -- GitLab structure ---------------------------------------------------------------

def _gitlab() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads ci/gitlab-ci.yml: pip install pyyaml")
    return yaml.safe_load(GITLAB.read_text())


def _merge(base: dict, over: dict) -> dict:
    """GitLab's `extends`: mappings merge deeply, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _job(config: dict, name: str) -> dict:
    job = config[name]
    bases = job.get("extends", [])
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = _merge(merged, _job(config, base))
    return _merge(merged, {k: v for k, v in job.items() if k != "extends"})


def _jobs(config: dict) -> dict[str, dict]:
    return {name: _job(config, name) for name, value in config.items()
            if isinstance(value, dict) and name not in _GITLAB_KEYWORDS and not name.startswith(".")}


def _scripts(job: dict) -> list[str]:
    return [line for key in ("before_script", "script", "after_script") for line in job.get(key, [])]


def test_gitlab_structure():
    config = _gitlab()
    assert config["stages"] == ["test", "bisect"]
    jobs = _jobs(config)
    assert {"snp-tests", "bisect"} <= set(jobs)
    for name, job in jobs.items():
        assert job["stage"] in config["stages"], name
        assert job.get("tags"), f"{name}: runs on a tagged (lab) runner"
        assert "ci/fresh-venv" in _scripts(job), name
        assert job.get("timeout") and "interruptible" in job, name
        artifacts = job["artifacts"]
        assert artifacts["when"] == "always" and artifacts.get("expire_in"), name

    tests = jobs["snp-tests"]
    assert tests["stage"] == "test" and tests["interruptible"] is True
    assert tests["artifacts"]["reports"]["junit"] == "junit.xml"
    assert {"junit.xml", "run/"} <= set(tests["artifacts"]["paths"])

    bisect = jobs["bisect"]
    assert bisect["stage"] == "bisect"
    conditions = [rule.get("if", "") for rule in bisect["rules"]]
    assert conditions and all('$CI_PIPELINE_SOURCE == "schedule"' in c and "$BISECT_GOOD" in c
                              for c in conditions), conditions
    assert bisect["allow_failure"] == {"exit_codes": [1]}, "only 1 (inconclusive) may fail; 3 stays red"
    assert "runs/*-bisect/" in bisect["artifacts"]["paths"]
    script = "\n".join(_scripts(bisect))
    for var in ("BISECT_GOOD", "BISECT_BAD", "BISECT_TREE", "BISECT_HOST", "BISECT_SELECTION"):
        assert f"${var}" in script, var


def test_gitlab_commands_are_the_checked_ones():
    """The commands read from the parsed YAML are the ones test_command_parses checked in the text."""
    checked = {tuple(argv) for _, _, argv in commands(GITLAB)}
    jobs = _jobs(_gitlab())
    run = set()
    for job in jobs.values():
        for entry in _scripts(job):
            for _, line in _logical_lines(entry):
                for m in _COMMAND.finditer(line):
                    run.add(tuple(_split(line, m.start())[1]))
    assert run and run <= checked, run - checked


# -- who gets the lab's secrets ------------------------------------------------------

PROTECTED_TAG = "snp-lab-protected"
_PROTECTED_IF = '$CI_COMMIT_REF_PROTECTED == "true"'


def _holds_secrets(job: dict) -> bool:
    return any(re.search(rf"\$\{{?({'|'.join(_SECRETS)})\b", line) for line in _scripts(job))


def _cache_dirs(lines: list[str]) -> set[str]:
    return {m[1] for line in lines for m in re.finditer(r'XDG_CACHE_HOME="([^"]+)"', line)}


def test_gitlab_secrets_reach_protected_refs_on_the_protected_runner_only():
    jobs = _jobs(_gitlab())
    secret = {n: j for n, j in jobs.items() if _holds_secrets(j)}
    other = {n: j for n, j in jobs.items() if n not in secret}
    assert {"snp-tests", "bisect"} <= set(secret) and other, "a job without secrets runs other branches"
    for name, job in secret.items():
        assert job["tags"] == [PROTECTED_TAG], name
        for rule in job["rules"]:
            assert "if" in rule, f"{name}: a rule without `if` runs on every ref"
            assert rule.get("when") == "never" or _PROTECTED_IF in rule["if"], f"{name}: {rule}"
    for name, job in other.items():
        assert PROTECTED_TAG not in job["tags"] and job.get("rules"), name
        assert not _holds_secrets(job), name


def test_gitlab_jobs_with_secrets_rebuild_the_venv_first_and_keep_their_own_cache():
    config = _gitlab()
    assert ".venv" not in config["variables"]["GIT_CLEAN_FLAGS"], "no job's .venv survives into the next"
    caches = {}
    for name, job in _jobs(config).items():
        lines = _scripts(job)
        assert "ci/bootstrap" not in lines, f"{name}: ci/bootstrap may sudo and reuses .venv"
        first_secret = next((i for i, ln in enumerate(lines) if re.search("|".join(_SECRETS), ln)), len(lines))
        assert "ci/fresh-venv" in lines[:first_secret], f"{name}: .venv rebuilt before any secret is on disk"
        before = lines[:lines.index("ci/fresh-venv")]
        caches[name] = _cache_dirs(before)
        assert len(caches[name]) == 1, f"{name}: set XDG_CACHE_HOME (kernel, ccache, pip) before ci/fresh-venv"
    jobs = _jobs(config)
    protected = {d for n, ds in caches.items() if _holds_secrets(jobs[n]) for d in ds}
    unprotected = {d for n, ds in caches.items() if not _holds_secrets(jobs[n]) for d in ds}
    assert len(protected) == 1 and len(unprotected) == 1 and protected != unprotected, caches


def _jenkins_stages() -> dict[str, str]:
    text = JENKINS.read_text()
    parts = re.split(r"^    stage\('([^']+)'\) \{$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_jenkins_lab_stages_run_for_trusted_refs_on_the_protected_agent_only():
    stages = _jenkins_stages()
    lab = {n: body for n, body in stages.items() if "lab(" in body}
    other = {n: body for n, body in stages.items() if n not in lab}
    assert {"SNP suites", "Bisect"} <= set(lab) and other
    for name, body in lab.items():
        assert f"agent {{ label '{PROTECTED_TAG}' }}" in body, name
        when = re.search(r"expression \{ return ([^}]*) \}", body)[1]
        assert "beforeAgent true" in body and re.match(r"trustedRef\(\)( &&|$)", when), f"{name}: {when}"
    for name, body in other.items():
        assert PROTECTED_TAG not in body and "withCredentials" not in body, name
        assert "return !trustedRef()" in body, name
    text = JENKINS.read_text()
    assert re.search(r"^  agent none\b", text, re.M), "no agent for the whole build: each stage its own"
    trusted = re.search(r"boolean trustedRef\(\) \{(.*?)^\}", text, re.S | re.M)[1]
    assert "!env.CHANGE_ID" in trusted, "a change request is never trusted"
    # The venv is rebuilt (with the protected cache) before the credentials are bound.
    body = re.search(r"^int lab\(String commands\) \{(.*?)^\}", text, re.S | re.M)[1]
    assert body.index("freshVenv('protected')") < body.index("withCredentials")
    assert 'XDG_CACHE_HOME="$HOME/.cache/snp-ci-protected"' in body
    assert "freshVenv('unprotected')" in "".join(other.values())
    assert 'XDG_CACHE_HOME="$HOME/.cache/snp-ci-unprotected"' in "".join(other.values())


def test_ci_never_uses_sudo_nor_bootstrap():
    for path in (*PIPELINES, REPO / "ci" / "fresh-venv"):
        for line, text in _logical_lines(path.read_text()):
            text = re.sub(r"\s(#|//)\s.*$", "", text)  # a trailing comment
            assert not re.search(r"\bsudo\b", text) or "sudo ci/bootstrap" in text and "echo" in text, \
                f"{path.name}:{line}: {text.strip()}"
            assert not re.search(r"\bapt(-get)?\b\s+install", text), f"{path.name}:{line}: {text.strip()}"
    for path in PIPELINES:
        assert "ci/bootstrap" not in [t.strip(" -'") for _, t in _logical_lines(path.read_text())], path.name


def test_the_bisect_selection_only_reaches_pytest_through_its_check():
    for path in PIPELINES:
        uses = [(n, t) for n, t in _logical_lines(path.read_text()) if "BISECT_SELECTION" in t
                and "${BISECT_SELECTION:?}" not in t and "name: 'BISECT_SELECTION'" not in t]
        assert uses, path.name
        for n, text in uses:
            m = re.search(r'\.venv/bin/python -m harness\.ci_selection "\$BISECT_SELECTION" -- '
                          r'(\.venv/bin/snp-harness bisect .*)$', " ".join(text.split()).rstrip("'"))
            assert m, f"{path.name}:{n}: BISECT_SELECTION must go through harness.ci_selection: {text.strip()}"
            argv = shlex.split(_expand(m[1]))
            assert argv[-1] == "--", f"{path.name}:{n}: the checked words are appended after `--`"


def _fake_tools(tmp_path: Path, missing: str | None) -> Path:
    """dpkg-query that knows every package but `missing`; a sudo that records being called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dpkg-query").write_text(
        f'#!/bin/sh\nfor a; do pkg=$a; done\n[ "$pkg" = "{missing}" ] && exit 1\nprintf "install ok installed"\n')
    (bin_dir / "sudo").write_text(f"#!/bin/sh\ntouch {tmp_path / 'sudo-called'}\nexit 1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("missing", [None, "qemu-system-x86", "mmdebstrap"])
def test_fresh_venv_checks_bootstraps_packages_without_sudo(tmp_path, missing):
    import os
    import subprocess

    bin_dir = _fake_tools(tmp_path, missing)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([str(REPO / "ci" / "fresh-venv"), "--check"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert not (tmp_path / "sudo-called").exists()
    if missing is None:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1
        assert f"missing Debian packages: {missing}" in done.stderr and "sudo ci/bootstrap" in done.stderr
