"""Exclusive hosts through a labgrid coordinator: a place reservation and lock instead of our lease.

Optional (the `labgrid` extra, labgrid >= 25.0). We drive the real `labgrid-client`:

    reserve name=PLACE          a reservation filtered on the place's name; prints its token and state
    wait TOKEN                  only while waiting and wait_s > 0; polls until allocated, bounded by wait_s
    -p +TOKEN lock              locks the place allocated to our reservation, and only that one
    -p PLACE show               the place and its resources: the NetworkService gives address, user, port
    -p PLACE unlock, cancel-reservation TOKEN       on release

Unlike our own lease, a labgrid lock outlives a killed holder: the place stays locked until someone
runs `labgrid-client -p PLACE unlock`. The coordinator knows holders as host/user (LG_HOSTNAME,
LG_USERNAME), so two runs of one user on one machine look alike to it.
"""

from __future__ import annotations

import ast
import getpass
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from harness import redact
from harness.errors import ConfigError, HarnessError, LeaseError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'snp-harness[labgrid]' (in a checkout: .venv/bin/pip install -e '.[labgrid]')"
# labgrid-client reads these; a caller's LG_ENV/LG_PLACE/LG_TOKEN must not redirect our commands.
_CHILD_ENV_DROP = ("LG_ENV", "LG_PLACE", "LG_TOKEN", "LG_STATE", "LG_INITIAL_STATE", "PLACE", "STATE")
_RESOURCE = re.compile(r"^(?:Acquired|Matching) resource '([^']*)' \(([^)]*)\):$")


@dataclass(frozen=True)
class NetworkService:
    address: str
    username: str | None
    port: int | None  # None: labgrid's NetworkService default, 22
    path: str  # exporter/group/cls/name
    proxy: str | None = None  # the exporter host, needed as a jump host when proxy_required
    proxy_required: bool = False


@dataclass(frozen=True)
class PlaceInfo:
    name: str
    acquired: str | None  # "host/user", as labgrid reports it
    reservation: str | None
    resources: tuple[tuple[str, str, dict], ...]  # (name, exporter/group/cls/name, Resource.asdict())


def parse_token(text: str) -> str:
    """The token in `reserve` output: `export LG_TOKEN=T` (with --shell) or `Reservation 'T':`."""
    m = re.search(r"^export LG_TOKEN=(\S+)$", text, re.M) or re.search(r"^Reservation '([^']+)':$", text, re.M)
    if not m:
        raise LeaseError(f"no reservation token in labgrid-client reserve output: {text.strip()[-300:]!r}")
    return m.group(1)


def parse_state(text: str) -> str | None:
    """The last reservation state printed (`reserve` prints one, `wait` one per poll)."""
    states = re.findall(r"^\s*state: (\w+)$", text, re.M)
    return states[-1] if states else None


def parse_reservations(text: str) -> dict[str, str]:
    """token -> owner ("host/user") from `labgrid-client reservations`."""
    return dict(re.findall(r"^Reservation '([^']+)':\n\s+owner: (\S+)$", text, re.M))


def parse_lock_refusal(stderr: str) -> str | None:
    """The holder named by a refused `lock` (ClientSession._acquire_place), if it names one."""
    m = re.search(r"already acquired by (\S+?)\.?(?:\s|$)", stderr)
    return m.group(1) if m else None


def parse_place(text: str) -> PlaceInfo:
    """`labgrid-client -p PLACE show` (ClientSession.print_place around Place.show)."""
    lines = text.splitlines()
    head = next((m for ln in lines if (m := re.match(r"^Place '([^']*)':$", ln))), None)
    if not head:
        raise LeaseError(f"unexpected labgrid-client show output: {redact.scrub(text.strip())[:300]!r}")
    acquired = reservation = None
    resources: list[tuple[str, str, dict]] = []
    i = 0
    while i < len(lines):
        ln, i = lines[i], i + 1
        if not resources and (m := re.match(r"^  acquired: (.*)$", ln)):
            acquired = None if m.group(1) == "None" else m.group(1)
        elif not resources and (m := re.match(r"^  reservation: (\S+)$", ln)):
            reservation = m.group(1)
        elif m := _RESOURCE.match(ln):
            start = i
            while i < len(lines) and lines[i].startswith("  "):
                i += 1
            try:  # pformat(Resource.asdict()) indented by two: a Python literal
                data = ast.literal_eval(textwrap.dedent("\n".join(lines[start:i])))
            except (ValueError, SyntaxError) as e:
                raise LeaseError(f"cannot read resource {m.group(2)} in labgrid-client show output: {e}") from e
            resources.append((m.group(1), m.group(2), data))
    return PlaceInfo(head.group(1), acquired, reservation, tuple(resources))


def parse_network_service(text: str, place: str) -> NetworkService | None:
    """The place's one NetworkService from `show` output; None if it has none."""
    found = [(path, d.get("params") or {}) for _n, path, d in parse_place(text).resources
             if d.get("cls") == "NetworkService"]
    if len(found) > 1:
        raise ConfigError(f"labgrid place {place} has several NetworkService resources "
                          f"({', '.join(p for p, _ in found)}); match only one")
    if not found:
        return None
    path, params = found[0]
    extra, port = params.get("extra") or {}, params.get("port")
    return NetworkService(str(params["address"]), params.get("username") or None,
                          int(port) if port is not None else None, path,
                          extra.get("proxy") or None, bool(extra.get("proxy_required")))


def _register_show(proc: subprocess.CompletedProcess) -> None:
    """The secrets of `show` output: password fields as text, and as the resources' params."""
    redact.register_text(proc.stdout or "")
    redact.register_text(proc.stderr or "")
    try:
        redact.register_data([data for _name, _path, data in parse_place(proc.stdout or "").resources])
    except LeaseError:
        pass  # not a place's output: the text's password fields are registered already


class LabgridLease:
    """A locked labgrid place: lease.Lease's surface (where, held, release, with) plus the address."""

    def __init__(self, place: LabgridPlace, token: str, service: NetworkService | None) -> None:
        self._place, self.token, self.service, self.where = place, token, service, place.place
        self.address = service.address if service else None
        self.port = service.port if service else None
        self.username = service.username if service else None
        self.held = True

    def release(self) -> None:
        """Unlock, then cancel the reservation. Raises LeaseError once if that failed; then a no-op."""
        if not self.held:
            return
        self.held = False
        errors = []
        for args, gone in ((["-p", self.where, "unlock"], "is not acquired"),
                           (["cancel-reservation", self.token], "does not exist")):
            try:
                proc = self._place._run(args)
            except HarnessError as e:
                errors.append(str(e))
                continue
            if proc.returncode and gone not in proc.stderr:
                errors.append(self._place._failure(proc))
        if errors:
            raise LeaseError(f"labgrid place {self.where} may still be locked or reserved; "
                             f"`labgrid-client -p {self.where} unlock` frees it:\n" + "\n".join(errors))
        log.info("labgrid place %s released", self.where)

    def __enter__(self) -> LabgridLease:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.release()
        except LeaseError as e:
            if exc_type is None:
                raise
            log.warning("%s", e)  # do not hide the error already on its way


class LabgridPlace:
    def __init__(self, place: str, *, coordinator: str | None = None, client: str = "labgrid-client",
                 timeout: float = 60) -> None:
        self.place, self.coordinator, self.client, self.timeout = place, coordinator, client, timeout

    def _argv(self, args: list[str]) -> list[str]:
        exe = self.client
        if os.sep not in exe:
            beside = Path(sys.executable).parent / exe  # a venv that is not activated
            exe = str(beside) if os.access(beside, os.X_OK) else shutil.which(exe)
            if not exe:
                raise ConfigError(f"{self.client} not found (next to {sys.executable} or on PATH), needed for "
                                  f"labgrid place {self.place}: {INSTALL_HINT}")
        return [exe, *(["-x", self.coordinator] if self.coordinator else []), *args]

    def _run(self, args: list[str], timeout: float | None = None, *, bounded: bool = False):
        """labgrid-client ARGS; with bounded=True, None once `timeout` (the caller's wait) ran out."""
        argv, timeout = self._argv(args), timeout or self.timeout
        env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env,
                                  timeout=timeout)
        except FileNotFoundError as e:
            raise ConfigError(f"cannot run {argv[0]}: {e.strerror}; {INSTALL_HINT}") from e
        except subprocess.TimeoutExpired:
            if bounded:
                return None
            raise LeaseError(redact.scrub(f"`{' '.join(argv)}` timed out after {timeout:g}s "
                                          f"(is the labgrid coordinator {self._where()} up?)")) from None
        if args[-1:] == ["show"]:  # a NetworkService's password: registered before any error can quote it
            _register_show(proc)
        return proc

    def _where(self) -> str:
        return self.coordinator or os.environ.get("LG_COORDINATOR") or "127.0.0.1:20408 (labgrid's default)"

    def _failure(self, proc: subprocess.CompletedProcess) -> str:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        return redact.scrub(f"`{' '.join(proc.args)}` exited {proc.returncode}:\n{tail}".rstrip())

    def _ok(self, args: list[str]) -> str:
        proc = self._run(args)
        if proc.returncode:
            raise LeaseError(f"labgrid place {self.place}: {self._failure(proc)}")
        return proc.stdout

    def _busy(self, holder: str | None, wait_s: float) -> HarnessError:
        if holder is None:  # ask the coordinator who has the place
            show = self._run(["-p", self.place, "show"])
            info = None if show.returncode else parse_place(show.stdout)
            if re.search(r"matches (nothing|multiple)", show.stderr) or (info and info.name != self.place):
                found = (f"`-p {self.place}` finds {info.name}" if info
                         else redact.scrub(show.stderr.strip().splitlines()[-1]))
                return ConfigError(f"the labgrid coordinator {self._where()} has no place named exactly "
                                   f"{self.place} ({found}; `labgrid-client places` lists them)")
            if info and info.acquired:
                holder = info.acquired
            elif info and info.reservation:
                owner = parse_reservations(self._run(["reservations"]).stdout).get(info.reservation)
                holder = f"{owner or 'another user'} (reservation {info.reservation}, not yet locked)"
        me = "/".join((os.environ.get("LG_HOSTNAME") or socket.gethostname(),
                       os.environ.get("LG_USERNAME") or getpass.getuser()))  # labgrid's own defaults
        who = f"held by {holder}" if holder else "not allocated to us"
        if holder == me:
            who += " (that is you: another run of yours, or one that died holding it)"
        hint = f"wait longer than {wait_s:g}s" if wait_s > 0 else "wait for it"
        return LeaseError(f"labgrid place {self.place} is {who}; {hint} (pytest --snp-lease-wait S, "
                          f"snp-harness boot --wait-lease S), pick another place, "
                          f"or ask the holder to run `labgrid-client -p {self.place} unlock`")

    def acquire(self, wait_s: float = 0, *, require_address: bool = True) -> LabgridLease:
        """Reserve and lock the place, or raise LeaseError naming who holds it."""
        out = self._ok(["reserve", f"name={self.place}"])
        token, state = parse_token(out), parse_state(out)
        locked = False
        try:
            if state == "waiting" and wait_s > 0:
                waited = self._run(["wait", token], timeout=wait_s, bounded=True)
                if waited is not None:  # None: the bound ran out while still queued
                    if waited.returncode:
                        raise LeaseError(f"labgrid place {self.place}: {self._failure(waited)}")
                    state = parse_state(waited.stdout) or state
            if state != "allocated":
                raise self._busy(None, wait_s)
            lock = self._run(["-p", f"+{token}", "lock"])
            if lock.returncode:
                if "already acquired" in lock.stderr or "was not reserved for" in lock.stderr:
                    raise self._busy(parse_lock_refusal(lock.stderr), wait_s)
                raise LeaseError(f"labgrid place {self.place}: {self._failure(lock)}")
            locked = True
            service = parse_network_service(self._ok(["-p", self.place, "show"]), self.place)
            if service is None and require_address:
                raise ConfigError(f"labgrid place {self.place} has no NetworkService resource: export one "
                                  f"(address, username, port) and add-match it, or set address in the inventory")
        except BaseException:  # undo what we did, and only that: never unlock a lock that is not ours
            for args in ([["-p", self.place, "unlock"]] if locked else []) + [["cancel-reservation", token]]:
                try:
                    self._ok(args)
                except HarnessError as e:
                    log.warning("%s", e)
            raise
        if service and service.proxy_required:
            log.warning("labgrid place %s: %s is reachable only through the exporter %s",
                        self.place, service.address, service.proxy)
        log.info("labgrid place %s locked (reservation %s)", self.place, token)
        return LabgridLease(self, token, service)
