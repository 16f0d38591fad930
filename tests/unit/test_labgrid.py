"""labgrid place reservations: parsers on labgrid-client output, and the command sequence.

The command sequence runs against a fake `labgrid-client` script (labgrid is an external
service); tests/integration/test_labgrid_coordinator.py runs the real one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.errors import ConfigError, LeaseError
from harness.targets.labgrid import (
    LabgridPlace, parse_lock_refusal, parse_network_service, parse_place, parse_reservations, parse_state,
    parse_token)

DATA = Path(__file__).resolve().parents[1] / "data" / "labgrid"
COORD = "127.0.0.1:20408"


def text(name: str) -> str:
    return (DATA / name).read_text()


# ---- parsers ----------------------------------------------------------------

@pytest.mark.parametrize("name, token, state", [
    ("reserve_allocated.txt", "TSVZ7YK77X", "allocated"),
    ("reserve_waiting.txt", "W7HRNSXQ8F", "waiting"),
    ("reserve_shell.txt", "SV0UBYY0JG", None),
])
def test_reserve_output_gives_token_and_state(name, token, state):
    assert parse_token(text(name)) == token
    assert parse_state(text(name)) == state


def test_wait_output_ends_in_the_last_polled_state():
    out = text("wait_allocated.txt")
    assert out.count("state: waiting") > 1
    assert parse_state(out) == "allocated"


def test_no_token_is_a_lease_error():
    with pytest.raises(LeaseError, match="no reservation token"):
        parse_token("Server error: Error: Could not connect to coordinator\n")


def test_reservations_name_their_owners():
    assert parse_reservations(text("reservations.txt")) == {"KG4AD5I4CH": "vm/root", "8I02DAT10L": "worker1/ci"}


def test_lock_refusals():
    assert parse_lock_refusal(text("lock_acquired_by_other.stderr")) == "vm/root"
    assert parse_lock_refusal(text("lock_already_yours.stderr")) is None
    assert parse_lock_refusal(text("lock_not_reserved.stderr")) is None


def test_place_free_acquired_and_reserved():
    free = parse_place(text("show_free.txt"))
    assert (free.name, free.acquired, free.reservation) == ("epyc2", None, None)
    assert [(n, p) for n, p, _ in free.resources] == [
        ("NetworkPowerPort", "lab-exp2/epyc2/NetworkPowerPort/NetworkPowerPort"),
        ("ssh", "lab-exp2/epyc2/NetworkService/NetworkService")]
    locked = parse_place(text("show_acquired.txt"))
    assert (locked.acquired, locked.reservation) == ("vm/root", "TSVZ7YK77X")
    assert locked.resources[1][2]["acquired"] == "epyc2"
    reserved = parse_place(text("show_reserved_other.txt"))
    assert (reserved.acquired, reserved.reservation) == (None, "NPW74EB9ME")


def test_network_service_of_a_captured_place():
    svc = parse_network_service(text("show_acquired.txt"), "epyc2")
    assert (svc.address, svc.username, svc.port) == ("192.0.2.12", "root", None)
    assert svc.path == "lab-exp2/epyc2/NetworkService/NetworkService"
    assert (svc.proxy, svc.proxy_required) == ("localhost", False)


def test_network_service_behind_the_exporter():
    svc = parse_network_service(text("show_proxy_required.txt"), "milan1")
    assert (svc.address, svc.username, svc.port) == ("fe80::3e:5aff:fe12:3401%enp3s0", "root", 22)
    assert (svc.proxy, svc.proxy_required) == ("lab-exp1.example.org", True)
    info = parse_place(text("show_proxy_required.txt"))  # the orphaned resource has no block
    assert info.acquired == "ci-runner3/gitlab-runner" and len(info.resources) == 2


def test_two_network_services_are_ambiguous():
    with pytest.raises(ConfigError) as e:
        parse_network_service(text("show_two_services.txt"), "genoa2")
    assert "genoa2" in str(e.value) and "lab-exp1/genoa2-bmc/NetworkService/NetworkService" in str(e.value)


def test_no_network_service():
    assert parse_network_service(text("show_no_service.txt"), "genoa3") is None


def test_unexpected_show_output():
    with pytest.raises(LeaseError, match="unexpected labgrid-client show output"):
        parse_place("labgrid-client: Error: place pattern x matches nothing\n")


# ---- the command sequence, against a fake labgrid-client ----------------------

FAKE = r'''#!{python}
import json, os, sys, time
from pathlib import Path
here = Path(__file__).parent
args = sys.argv[1:]
with open(here / "calls.jsonl", "a") as f:
    f.write(json.dumps({{"argv": args, "env": {{k: os.environ.get(k) for k in ("LG_ENV", "LG_TOKEN", "LG_PLACE")}}}}) + "\n")
rest = list(args)
while rest and rest[0] in ("-x", "-p"):
    rest = rest[2:]
cmd = rest[0]
script = json.loads((here / "script.json").read_text())
state = json.loads((here / "state.json").read_text()) if (here / "state.json").exists() else {{}}
answers = script.get(cmd, [{{"rc": 0}}])
n = state.get(cmd, 0)
state[cmd] = n + 1
(here / "state.json").write_text(json.dumps(state))
a = answers[min(n, len(answers) - 1)]
time.sleep(a.get("sleep", 0))
sys.stdout.write(a.get("stdout", ""))
sys.stderr.write(a.get("stderr", ""))
sys.exit(a.get("rc", 0))
'''


class Fake:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.path = root / "labgrid-client"
        self.path.write_text(FAKE.format(python=sys.executable))
        self.path.chmod(0o755)

    def script(self, **answers) -> None:
        """cmd=[answer, ...]: each answer a data file name (stdout, rc 0) or a dict (stdout/stderr/rc/sleep)."""
        def one(a):
            if isinstance(a, str):
                return {"stdout": text(a), "rc": 0} if not a.endswith(".stderr") else {"stderr": text(a), "rc": 1}
            return a
        (self.root / "script.json").write_text(json.dumps({k.replace("_", "-"): [one(a) for a in v]
                                                           for k, v in answers.items()}))

    def calls(self) -> list[list[str]]:
        log = self.root / "calls.jsonl"
        return [json.loads(ln)["argv"] for ln in log.read_text().splitlines()] if log.exists() else []

    def envs(self) -> list[dict]:
        return [json.loads(ln)["env"] for ln in (self.root / "calls.jsonl").read_text().splitlines()]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.setenv("LG_HOSTNAME", "testhost")  # not the holders named in the captures
    monkeypatch.setenv("LG_USERNAME", "tester")
    return Fake(tmp_path / "lg")


def place(fake: Fake, name: str = "epyc2", **kw) -> LabgridPlace:
    return LabgridPlace(name, coordinator=COORD, client=str(fake.path), **kw)


def x(*args: str) -> list[str]:
    return ["-x", COORD, *args]


def test_free_place_reserve_lock_show_then_unlock_and_cancel(fake):
    fake.script(reserve=["reserve_allocated.txt"], lock=[{"stdout": "acquired place epyc2\n"}],
                show=["show_acquired.txt"])
    lease = place(fake).acquire(0)
    assert (lease.address, lease.port, lease.username, lease.held) == ("192.0.2.12", None, "root", True)
    assert lease.token == "TSVZ7YK77X" and lease.where == "epyc2"
    lease.release()
    lease.release()  # idempotent: no second unlock
    assert not lease.held
    assert fake.calls() == [
        x("reserve", "name=epyc2"),
        x("-p", "+TSVZ7YK77X", "lock"),
        x("-p", "epyc2", "show"),
        x("-p", "epyc2", "unlock"),
        x("cancel-reservation", "TSVZ7YK77X"),
    ]


def test_waiting_reservation_is_waited_for(fake):
    fake.script(reserve=["reserve_waiting.txt"], wait=["wait_allocated.txt"], show=["show_acquired.txt"])
    with place(fake).acquire(30) as lease:
        assert lease.address == "192.0.2.12"
    assert not lease.held
    assert [c[2] if c[2] != "-p" else c[4] for c in fake.calls()] == [
        "reserve", "wait", "lock", "show", "unlock", "cancel-reservation"]
    assert fake.calls()[1] == x("wait", "W7HRNSXQ8F")


def test_locked_by_other_without_waiting_names_the_holder(fake):
    fake.script(reserve=["reserve_waiting.txt"], show=["show_locked_by_other.txt"])
    with pytest.raises(LeaseError) as e:
        place(fake).acquire(0)
    msg = str(e.value)
    assert "epyc2 is held by vm/root" in msg and "--wait-lease" in msg and "labgrid-client -p epyc2 unlock" in msg
    assert "that is you" not in msg
    assert fake.calls() == [x("reserve", "name=epyc2"), x("-p", "epyc2", "show"),
                            x("cancel-reservation", "W7HRNSXQ8F")]


def test_held_by_myself_says_so(fake, monkeypatch):
    monkeypatch.setenv("LG_HOSTNAME", "vm")
    monkeypatch.setenv("LG_USERNAME", "root")
    fake.script(reserve=["reserve_waiting.txt"], show=["show_locked_by_other.txt"])
    with pytest.raises(LeaseError, match="held by vm/root .that is you"):
        place(fake).acquire(0)


def test_lock_refused_names_the_holder_and_cancels(fake):
    fake.script(reserve=["reserve_allocated.txt"], lock=["lock_acquired_by_other.stderr"])
    with pytest.raises(LeaseError, match="epyc2 is held by vm/root"):
        place(fake).acquire(0)
    assert fake.calls()[-1] == x("cancel-reservation", "TSVZ7YK77X")


def test_reserved_for_another_reservation_names_its_owner(fake):
    fake.script(reserve=["reserve_waiting.txt"], show=["show_reserved_other.txt"],
                reservations=["reservations_reserved_other.txt"])
    with pytest.raises(LeaseError, match=r"held by worker1/ci \(reservation NPW74EB9ME, not yet locked\)"):
        place(fake).acquire(0)
    assert "lock" not in [c[-1] for c in fake.calls()]


def test_wait_bound_runs_out(fake):
    fake.script(reserve=["reserve_waiting.txt"], wait=[{"sleep": 20}], show=["show_locked_by_other.txt"])
    with pytest.raises(LeaseError, match="held by vm/root; wait longer than 0.5s"):
        place(fake).acquire(0.5)
    assert fake.calls()[-1] == x("cancel-reservation", "W7HRNSXQ8F")


def test_unknown_place_is_a_config_error(fake):
    fake.script(reserve=["reserve_waiting.txt"], show=["show_no_such_place.stderr"])
    with pytest.raises(ConfigError, match="has no place named exactly nosuch .*matches nothing"):
        place(fake, "nosuch").acquire(0)
    assert fake.calls()[-1] == x("cancel-reservation", "W7HRNSXQ8F")


def test_ambiguous_place_is_a_config_error(fake):
    fake.script(reserve=["reserve_waiting.txt"], show=["show_ambiguous.stderr"])
    with pytest.raises(ConfigError, match="matches multiple places"):
        place(fake, "epyc").acquire(0)


def test_place_without_network_service_is_released(fake):
    fake.script(reserve=["reserve_allocated.txt"], show=["show_no_service.txt"])
    with pytest.raises(ConfigError, match="no NetworkService"):
        place(fake).acquire(0)
    assert fake.calls()[-2:] == [x("-p", "epyc2", "unlock"), x("cancel-reservation", "TSVZ7YK77X")]
    fake.root.joinpath("calls.jsonl").unlink()
    assert place(fake).acquire(0, require_address=False).address is None


def test_other_failures_name_command_status_and_stderr(fake):
    fake.script(reserve=[{"rc": 1, "stderr": "ERROR root: coordinator is unavailable\n"
                                            "Server error: Error: Could not connect to coordinator\n"}])
    with pytest.raises(LeaseError) as e:
        place(fake).acquire(0)
    msg = str(e.value)
    assert "reserve name=epyc2` exited 1" in msg and "Could not connect to coordinator" in msg


def test_missing_client_says_how_to_install(tmp_path):
    with pytest.raises(ConfigError) as e:
        LabgridPlace("epyc2", client="labgrid-client-not-installed").acquire(0)
    assert "pip install 'snp-harness[labgrid]'" in str(e.value) and ".venv/bin/pip install -e '.[labgrid]'" in str(e.value)
    with pytest.raises(ConfigError, match=r"snp-harness\[labgrid\]"):
        LabgridPlace("epyc2", client=str(tmp_path / "nowhere" / "labgrid-client")).acquire(0)


def test_failed_unlock_raises_once(fake):
    fake.script(reserve=["reserve_allocated.txt"], show=["show_acquired.txt"],
                unlock=[{"rc": 1, "stderr": "Server error: Error: boom\n"}])
    lease = place(fake).acquire(0)
    with pytest.raises(LeaseError, match="(?s)may still be locked.*boom"):
        lease.release()
    lease.release()
    assert fake.calls()[-1] == x("cancel-reservation", "TSVZ7YK77X")  # cancelled all the same


def test_unlock_of_a_kicked_place_is_quiet(fake):
    fake.script(reserve=["reserve_allocated.txt"], show=["show_acquired.txt"],
                unlock=["unlock_not_acquired.stderr"], cancel_reservation=["cancel_gone.stderr"])
    place(fake).acquire(0).release()


def test_no_coordinator_flag_without_one_and_callers_lg_env_is_dropped(fake, monkeypatch):
    monkeypatch.setenv("LG_ENV", "/somewhere/env.yaml")
    monkeypatch.setenv("LG_TOKEN", "STALE")
    fake.script(reserve=["reserve_allocated.txt"], show=["show_acquired.txt"])
    LabgridPlace("epyc2", client=str(fake.path)).acquire(0).release()
    assert fake.calls()[0] == ["reserve", "name=epyc2"]
    assert all(env == {"LG_ENV": None, "LG_TOKEN": None, "LG_PLACE": None} for env in fake.envs())
