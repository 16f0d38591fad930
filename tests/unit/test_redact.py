"""Secrets out of logs, errors and reports: harness.redact, and where the harness registers
and scrubs (inventory, labgrid `show`, JUnit, summaries)."""

from __future__ import annotations

import logging
import shlex
import sys
import uuid
from pathlib import Path

import pytest
from junitparser import Error, Failure, Skipped
from junitparser.xunit2 import JUnitXml, TestCase, TestSuite

from harness import redact
from harness.config import load_config
from harness.errors import ConfigError, LeaseError
from harness.redact import REDACTED, redact_argv, register, register_argv, scrub, secrets_in_argv


def unique(prefix: str = "s3cr") -> str:
    """A secret no other text of the test session contains."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _fresh_registry():
    redact._reset_for_tests()
    yield
    redact._reset_for_tests()


# ---- which words of an argv are secrets ------------------------------------------

@pytest.mark.parametrize("argv, secrets", [
    (["ipmitool", "-I", "lanplus", "-H", "bmc", "-U", "admin", "-P", "pw-one", "chassis", "power", "cycle"],
     ["pw-one"]),
    (["/usr/bin/ipmitool", "-Ppw-glued", "sol", "activate"], ["pw-glued"]),
    (["timeout", "60", "ipmitool", "-P", "pw-wrapped", "power", "cycle"], ["pw-wrapped"]),
    (["sh", "-c", "ipmitool -H bmc -P 'pw in sh' chassis power cycle"], ["pw in sh"]),
    (["env", "IPMI_PASSWORD=pw-env", "ipmitool", "-E", "power", "cycle"], ["pw-env"]),
    (["pdu-ctl", "--password=pw-long", "--outlet", "3"], ["pw-long"]),
    (["pdu-ctl", "--token", "tok-123", "cycle"], ["tok-123"]),
    (["curl", "-X", "POST", "https://admin:pw-url@pdu.lab/outlet/3"], ["pw-url"]),
    (["sshpass", "-p", "pw-sshpass", "ssh", "-p", "2222", "console@bmc"], ["pw-sshpass"]),
    # settings that only look like secrets
    (["ssh", "-o", "PasswordAuthentication=no", "-o", "bypass=yes", "-p", "22", "bmc"], []),
    (["conmux-console", "epyc1"], []),
])
def test_secrets_in_argv(argv, secrets):
    assert secrets_in_argv(argv) == secrets


def test_a_secret_is_scrubbed_as_written_and_as_quoted():
    secret = unique("it's") + " x"  # a quote and a space: shlex.join and repr() quote it
    register(secret)
    argv = ["ipmitool", "-P", secret, "power", "cycle"]
    for shown in (secret, shlex.join(argv), repr(argv), f'{{"argv": "{secret}"}}'):
        assert secret not in scrub(shown) and "s-" not in scrub(shown).replace(REDACTED, "")
    assert redact_argv(argv) == f"ipmitool -P {REDACTED} power cycle"


def test_short_and_common_values_are_never_secrets():
    for value in ("", "ab", "yes", "False", "none"):
        register(value)
    assert scrub("ab yes False none") == "ab yes False none"


def test_log_records_and_their_tracebacks_are_scrubbed():
    secret = unique()
    register_argv(["ipmitool", "-P", secret, "power", "cycle"])
    redact.install_log_scrubber()
    redact.install_log_scrubber()  # idempotent: one wrapper, not two
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test_redact.scrubber")
    logger.addHandler(Keep())
    logger.propagate = False
    try:
        logger.warning("power-cycling: %s", shlex.join(["ipmitool", "-P", secret]))
        try:
            raise RuntimeError(f"ipmitool said: bad password {secret}")
        except RuntimeError:
            logger.exception("power cycle failed")
    finally:
        logger.handlers.clear()
    formatted = [logging.Formatter("%(message)s").format(r) for r in records]
    assert formatted[0] == f"power-cycling: ipmitool -P {REDACTED}"
    assert "bad password" in formatted[1] and all(secret not in f for f in formatted)


# ---- the inventory registers its secrets --------------------------------------------

def _inventory(tmp_path: Path, host: str) -> Path:
    path = tmp_path / "inv.toml"
    path.write_text(f'[hosts.epyc1]\naddress = "10.0.0.1"\n{host}\n')
    return path


def test_loading_the_inventory_registers_power_cycle_and_console_secrets(tmp_path):
    power, console, coord = unique(), unique(), unique()
    config = load_config(_inventory(tmp_path, (
        f'power_cycle = ["ipmitool", "-H", "bmc", "-U", "admin", "-P", "{power}", "chassis", "power", "cycle"]\n'
        f'console = ["sshpass", "-p", "{console}", "ssh", "-p", "2222", "sol@bmc"]\n'
        f'labgrid_coordinator = "ws://ci:{coord}@coord.lab:20408/ws"')))
    text = f"{config.host('epyc1').power_cycle} {config.host('epyc1').console} {config.host('epyc1')} ws://ci:{coord}@x"
    assert {power, console, coord}.isdisjoint(scrub(text).split()) and scrub(text).count(REDACTED) >= 4
    assert "2222" in scrub(text)  # ssh's -p is a port, not sshpass's password
    assert power not in repr(config.host("epyc1"))  # a HostConfig in a traceback or assertion


def test_a_power_cycle_written_as_one_string_is_an_error_that_hides_its_password(tmp_path):
    secret = unique()
    with pytest.raises(ConfigError) as e:
        load_config(_inventory(tmp_path, f'power_cycle = "ipmitool -P {secret} -H bmc chassis power cycle"'))
    assert "hosts.epyc1.power_cycle: expected a list of strings" in str(e.value)
    assert secret not in str(e.value) and f"-P {REDACTED}" in str(e.value)


# ---- labgrid `show` output -------------------------------------------------------

SHOW = """Place 'epyc2':
  acquired: vm/root
  reservation: TSVZ7YK77X
Acquired resource 'ssh' (lab-exp2/epyc2/NetworkService/NetworkService):
  {{'acquired': 'epyc2',
   'avail': True,
   'cls': 'NetworkService',
   'params': {{'address': '192.0.2.12', 'password': {password!r}, 'username': 'root'}}}}
"""


def _fake_client(tmp_path: Path, stdout: str, rc: int) -> Path:
    client = tmp_path / "labgrid-client"
    client.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({stdout!r})\nsys.exit({rc})\n")
    client.chmod(0o755)
    return client


def test_a_failed_show_quotes_its_output_without_the_network_service_password(tmp_path):
    from harness.targets.labgrid import LabgridPlace

    password = unique("pw with space")  # the text pattern alone would stop at the space
    client = _fake_client(tmp_path, SHOW.format(password=password) + "Error: lost the coordinator\n", 1)
    with pytest.raises(LeaseError) as e:
        LabgridPlace("epyc2", client=str(client))._ok(["-p", "epyc2", "show"])
    assert "exited 1" in str(e.value) and "'password': ********," in str(e.value)
    assert password not in str(e.value) and password.split()[-1] not in str(e.value)


def test_unreadable_show_output_is_quoted_without_its_password(tmp_path):
    from harness.targets.labgrid import LabgridPlace, parse_network_service

    password = unique()
    client = _fake_client(tmp_path, f"labgrid-client: password: {password} for place epyc2?\n", 0)
    text = LabgridPlace("epyc2", client=str(client))._ok(["-p", "epyc2", "show"])
    with pytest.raises(LeaseError, match="unexpected labgrid-client show output") as e:
        parse_network_service(text, "epyc2")
    assert password not in str(e.value)


# ---- reports scrub what they write -----------------------------------------------

def _junit(path: Path, secret: str) -> None:
    suite = TestSuite("pytest")
    failed = TestCase("test_power[ssh://epyc1]", "tests.snp.test_x")
    failed.result = [Failure(f"power cycle failed: ipmitool -P {secret}")]
    failed.system_out = f"WARNING harness.targets.host: power-cycling: ipmitool -P {secret}\n"
    skipped = TestCase("test_other[ssh://epyc1]", "tests.snp.test_x")
    skipped.result = [Skipped(f"no power control: bad password {secret}")]
    errored = TestCase("test_third[ssh://epyc1]", "tests.snp.test_x")
    errored.result = [Error(f"lease: {secret}")]
    for tc in (failed, skipped, errored):
        suite.add_testcase(tc)
    xml = JUnitXml()
    xml.add_testsuite(suite)
    xml.write(str(path))


def test_enriched_junit_holds_no_registered_secret(tmp_path):
    from harness.report.junit import enrich

    secret = unique("a&b<c")  # XML escapes it in the file: only a scrub of the tree finds it
    _junit(tmp_path / "junit.xml", secret)
    register(secret)
    assert enrich(tmp_path / "junit.xml", tmp_path, {"series": f"x {secret}"}) == []
    text = (tmp_path / "junit.xml").read_text()
    assert "&amp;b&lt;c" not in text and text.count(REDACTED) == 5


def test_summaries_hold_no_registered_secret(tmp_path):
    import json

    from harness.report.summary import write_summary

    secret = unique("p.w-[x]")  # Markdown escaping would hide it from a scrub of the file
    _junit(tmp_path / "junit.xml", secret)
    (tmp_path / "metadata.json").write_text(json.dumps({"series": secret, "reproducer": f"x -P {secret}",
                                                        "patch_ids": [f"abcd KVM: {secret}"]}))
    register(secret)
    write_summary(tmp_path)
    for name in ("summary.md", "summary.html"):
        text = (tmp_path / name).read_text()
        assert "-[x]" not in text and "\\-\\[x\\]" not in text, name
        assert text.replace("\\", "").count(REDACTED) >= 4, name  # Markdown escapes its stars
