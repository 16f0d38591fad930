"""Host-key verification against the harness's own known_hosts file.

A new key is never accepted without an explicit decision (`snp-harness trust`
or --trust-new-host-key), and a changed key is always an error.

The file is in OpenSSH's known_hosts format, read by our own parser (paramiko's
HostKeys.load gives up on the whole file for one line it does not understand):

- fields are separated by runs of spaces or tabs; blank lines and `#` comments
  are skipped;
- host names are comma-separated patterns (`*`, `?`, `!negation`, `[host]:port`)
  or one hashed `|1|salt|hash` name, matched as OpenSSH matches them;
- any recorded key equal to the offered one is a match;
- `@revoked` refuses its key for the hosts it names (it does not make a host known);
- `@cert-authority` lines, certificates, security-key (sk-) and unknown key types
  cannot be checked with paramiko, but they do make their hosts known: a host with
  any entry is never "new", and if none of its usable keys matches, that is an
  error naming the lines.

A malformed line (unknown marker, missing field, bad base64, a key that does not
parse) is an error naming file and line when it names the host being checked or
might (a damaged hashed name, no host field): a damaged entry must never let a
host pass as new. A malformed line that names only other hosts is logged as a
warning and skipped, so one bad entry does not stop the rest of the lab.

Writers hold an exclusive flock on FILE.lock and readers a shared one; the file
is rewritten through a temporary file and os.replace, so nobody reads it half
written and a crash leaves the previous file whole. `replace` drops the host's
own key lines (plain or hashed; its name is cut out of a shared name list) and
keeps every other line byte for byte, markers included; it refuses when a
wildcard line would still give the host another key.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import paramiko

from harness.errors import HostKeyError
from harness.transport.known_hosts_format import (
    CERT_AUTHORITY, REVOKED, Entry, describe, fingerprint, host_id, is_literal, parse_known_hosts, parse_public_key,
    split_lines)

__all__ = ["HostEntries", "KnownHosts", "describe", "fingerprint", "host_id", "parse_public_key"]
log = logging.getLogger(__name__)

# The host-key algorithms that prove each key type: ssh-rsa keys sign with SHA-2 (RFC 8332).
_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


@dataclass
class HostEntries:
    """What the file says about one host."""

    path: Path
    hostid: str
    keys: list[Entry] = field(default_factory=list)  # host keys paramiko can verify with
    unusable: list[Entry] = field(default_factory=list)  # entries it cannot: @cert-authority, certificates...
    revoked: list[Entry] = field(default_factory=list)
    problems: list[Entry] = field(default_factory=list)  # malformed lines about this host, or maybe about it

    @property
    def known(self) -> bool:
        """The host has an entry (usable or not): it is never new."""
        return bool(self.keys or self.unusable or self.problems)

    def matches(self, key: paramiko.PKey) -> bool:
        return any(e.key == key for e in self.keys)

    def revoked_by(self, key: paramiko.PKey) -> Entry | None:
        blob = key.asbytes()
        return next((e for e in self.revoked if e.blob == blob or (e.key is not None and e.key == key)), None)

    def summary(self) -> str:
        entries = sorted(self.problems + self.keys + self.unusable, key=lambda e: e.lineno)
        return f"{self.path} " + "; ".join(e.describe() for e in entries)


def _entries(path: Path, entries: list[Entry], hostid: str) -> tuple[HostEntries, list[Entry]]:
    """The host's entries, and the malformed lines that are about other hosts only."""
    found, elsewhere = HostEntries(path, hostid), []
    for e in entries:
        about = e.names(hostid)
        if e.problem:
            (elsewhere if about is False else found.problems).append(e)
        elif not about:
            continue
        elif e.marker == REVOKED:
            found.revoked.append(e)
        elif e.key is not None:
            found.keys.append(e)
        else:
            found.unusable.append(e)
    return found, elsewhere


def _check(where: str, found: HostEntries, key: paramiko.PKey) -> bool:
    """True if `key` is recorded for the host, False if the host is new; else HostKeyError."""
    name = _name(where)
    if found.problems:
        lines = "; ".join(e.describe() for e in found.problems)
        raise HostKeyError(
            f"{where}: {found.path} has malformed entries that are, or may be, about {found.hostid}: {lines}. "
            f"Fix or delete them (`snp-harness trust --replace {name}` rewrites the ones that name it), "
            "then connect again."
        )
    revoked = found.revoked_by(key)
    if revoked is not None:
        raise HostKeyError(f"{where}: the host offered {describe(key)}, but that key is revoked "
                           f"in {found.path} line {revoked.lineno}. Do not trust this host.")
    if found.matches(key):
        return True
    if not found.known:
        return False
    headline = f"HOST KEY CHANGED for {found.hostid}" if found.keys else (
        f"no key the harness can verify with for {found.hostid}, though it has entries")
    raise HostKeyError(
        f"{where}: {headline}: {found.summary()}; but the host offered {describe(key)}. "
        "This is a reinstalled host or an attack. If the change is expected, check the new key out of band, "
        f"then re-enrol it with `snp-harness trust --replace {name}`."
    )


class KnownHosts:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._warned: set[tuple[int, str]] = set()

    def lookup(self, hostid: str) -> HostEntries:
        """What the file says about hostid; never raises for its content, only if it cannot be read."""
        with self._locked(fcntl.LOCK_SH):
            data = self._read()
        return self._find(data, hostid)

    def keys_for(self, hostid: str) -> list[paramiko.PKey]:
        return [e.key for e in self.lookup(hostid).keys]

    def host_key_algorithms(self, hostid: str, offered: Sequence[str]) -> list[str]:
        """`offered` (paramiko's host-key algorithms) with those for the recorded keys first,
        as OpenSSH orders them; only names in `offered` are returned."""
        wanted = [a for e in self.lookup(hostid).keys for a in _ALGORITHMS.get(e.key_type, (e.key_type,))]
        first = [a for a in dict.fromkeys(wanted) if a in offered]
        return [*first, *(a for a in offered if a not in first)]

    def verify(self, where: str, hostid: str, key: paramiko.PKey, *, trust_new: bool = False) -> None:
        """Accept `key` only if it is a recorded key for `hostid`."""
        if _check(where, self.lookup(hostid), key):
            return
        if not trust_new:
            raise HostKeyError(
                f"{where}: unknown host key for {hostid}: {describe(key)} is not in {self.path}. "
                f"Check the fingerprint out of band, then run `snp-harness trust {_name(where)}` "
                f"(or pass --trust-new-host-key to accept it on first contact)."
            )
        log.warning("%s: trusting new host key %s for %s (recorded in %s)", where, describe(key), hostid, self.path)
        # Checked again under the lock: another worker may have recorded a key meanwhile.
        self._update(hostid, key, still=lambda found: _check(where, found, key))

    def add(self, hostid: str, key: paramiko.PKey) -> None:
        """Record key for hostid (a no-op if it is already there)."""
        self._update(hostid, key)

    def replace(self, hostid: str, key: paramiko.PKey) -> None:
        """Make key the host's only key: drop the lines that name it, keep every other line as it is."""
        self._update(hostid, key, replace=True)

    # -- file access ----------------------------------------------------------

    def _find(self, data: bytes, hostid: str) -> HostEntries:
        found, elsewhere = _entries(self.path, parse_known_hosts(data), hostid)
        for e in elsewhere:
            if (e.lineno, e.text) not in self._warned:
                self._warned.add((e.lineno, e.text))
                log.warning("%s line %d: %s; skipped (it is not about %s)", self.path, e.lineno, e.problem, hostid)
        return found

    def _update(self, hostid: str, key: paramiko.PKey, *, replace: bool = False,
                still: Callable[[HostEntries], bool] | None = None) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HostKeyError(f"cannot create the directory of {self.path}: {e}") from e
        with self._locked(fcntl.LOCK_EX):
            data = self._read()
            found = self._find(data, hostid)
            if still is not None and still(found):
                return
            revoked = found.revoked_by(key)
            if revoked is not None:
                raise HostKeyError(f"{hostid}: {describe(key)} is revoked in {self.path} line {revoked.lineno}; "
                                   "not recording it")
            if found.matches(key) and not replace:
                return
            lines = split_lines(data)
            if replace:
                lines = _without_host(lines, parse_known_hosts(data), hostid)
            if lines and not lines[-1].endswith(b"\n"):
                lines[-1] += b"\n"
            lines.append(f"{hostid} {key.get_name()} {key.get_base64()}\n".encode())
            new = b"".join(lines)
            if replace:
                self._check_replaced(new, hostid, key)
            self._write(new)

    def _check_replaced(self, data: bytes, hostid: str, key: paramiko.PKey) -> None:
        found, _ = _entries(self.path, parse_known_hosts(data), hostid)
        # Lines naming the host through a pattern also name other hosts: never rewritten for one.
        stuck = found.problems + [e for e in found.keys + found.unusable
                                  if e.marker != CERT_AUTHORITY and e.key != key]
        if stuck:
            lines = "; ".join(f"line {e.lineno} ({e.hosts or 'no host names'}): {e.problem or e.key_type}"
                              for e in sorted(stuck, key=lambda e: e.lineno))
            raise HostKeyError(f"{hostid}: cannot replace its key: {self.path} {lines} would still apply to it; "
                               "edit or delete those lines by hand (they may name other hosts too)")

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as e:
            raise HostKeyError(f"cannot read known_hosts {self.path}: {e}") from e

    def _write(self, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(e, OSError):
                raise HostKeyError(f"cannot write known_hosts {self.path}: {e}") from e
            raise
        with contextlib.suppress(OSError):  # make the rename itself survive a crash
            dirfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)

    @contextlib.contextmanager
    def _locked(self, mode: int):
        lock = self.path.with_name(self.path.name + ".lock")
        fd = None
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            # A reader in a read-only or missing directory: nobody writes there through us.
            if mode != fcntl.LOCK_SH or e.errno not in (errno.EACCES, errno.EROFS, errno.ENOENT):
                raise HostKeyError(f"cannot open the lock file {lock}: {e}") from e
        if fd is None:
            yield
            return
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)


def _without_host(lines: list[bytes], entries: list[Entry], hostid: str) -> list[bytes]:
    """lines minus the host-key lines that name hostid (markers are kept: revocations stay)."""
    out = list(lines)
    host = hostid.lower()
    for e in entries:
        if e.marker in (CERT_AUTHORITY, REVOKED) or e.names(hostid) is not True:
            continue
        i = e.lineno - 1
        if e.hosts.startswith("|"):
            out[i] = b""
            continue
        names = e.hosts.split(",")
        kept = [p for p in names if not (is_literal(p) and p.lower() == host)]
        if kept == names:
            continue  # named through a wildcard: _check_replaced reports it
        if not any(p and not p.startswith("!") for p in kept):
            out[i] = b""
            continue
        start, end = e.hosts_span
        ending = lines[i][len(lines[i].rstrip(b"\r\n")):]
        out[i] = (e.text[:start] + ",".join(kept) + e.text[end:]).encode("utf-8", "surrogateescape") + ending
    return [ln for ln in out if ln]


def _name(where: str) -> str:
    return where.split("://", 1)[-1]
