"""Host-key verification against the harness's own known_hosts file.

A new key is never accepted without an explicit decision (`snp-harness trust`
or --trust-new-host-key), and a changed key is always an error.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
from pathlib import Path

import paramiko

from harness.errors import HostKeyError

log = logging.getLogger(__name__)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_public_key(line: str) -> paramiko.PKey:
    """A key from an OpenSSH public key line ("ssh-ed25519 AAAA... comment")."""
    kind, b64 = line.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(b64))


def host_id(address: str, port: int) -> str:
    """The known_hosts name of an endpoint, as OpenSSH writes it."""
    return address if port == 22 else f"[{address}]:{port}"


def describe(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {fingerprint(key)}"


class KnownHosts:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def keys_for(self, hostid: str) -> list[paramiko.PKey]:
        return _values(self._load(), hostid)

    def _load(self) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        if self.path.exists():
            try:
                keys.load(str(self.path))
            except (OSError, paramiko.SSHException) as e:
                raise HostKeyError(f"cannot read known_hosts {self.path}: {e}") from e
        return keys

    def verify(self, where: str, hostid: str, key: paramiko.PKey, *, trust_new: bool = False) -> None:
        """Accept `key` only if it is the recorded key for `hostid`."""
        known = self.keys_for(hostid)
        if any(k == key for k in known):
            return
        if known:
            had = ", ".join(describe(k) for k in known)
            raise HostKeyError(
                f"{where}: HOST KEY CHANGED for {hostid}: {self.path} has {had}, "
                f"but the host offered {describe(key)}. This is a reinstalled host or an attack. "
                f"If the change is expected, re-enrol it with `snp-harness trust --replace {_name(where)}`."
            )
        if not trust_new:
            raise HostKeyError(
                f"{where}: unknown host key for {hostid}: {describe(key)} is not in {self.path}. "
                f"Check the fingerprint out of band, then run `snp-harness trust {_name(where)}` "
                f"(or pass --trust-new-host-key to accept it on first contact)."
            )
        log.warning("%s: trusting new host key %s for %s (recorded in %s)", where, describe(key), hostid, self.path)
        self.add(hostid, key)

    def add(self, hostid: str, key: paramiko.PKey) -> None:
        self._rewrite(hostid, key, replace=False)

    def replace(self, hostid: str, key: paramiko.PKey) -> None:
        self._rewrite(hostid, key, replace=True)

    def _rewrite(self, hostid: str, key: paramiko.PKey, *, replace: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = f"{hostid} {key.get_name()} {key.get_base64()}\n"
        with open(self.path, "a+", encoding="ascii") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # two runs trusting at once must not interleave
            f.seek(0)
            lines = f.readlines()
            if replace:
                lines = [ln for ln in lines if not _names_host(ln, hostid)]
            lines.append(line)
            f.seek(0)
            f.truncate()
            f.writelines(lines)
        self.path.chmod(0o600)


def _values(keys: paramiko.HostKeys, hostid: str) -> list[paramiko.PKey]:
    entry = keys.lookup(hostid)
    return list(entry.values()) if entry else []


def _names_host(line: str, hostid: str) -> bool:
    if not line.strip() or line.lstrip().startswith("#"):
        return False
    entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
    if entry is None:
        return False
    for name in entry.hostnames:
        if name == hostid or (name.startswith("|1|") and paramiko.HostKeys.hash_host(hostid, name) == name):
            return True
    return False


def _name(where: str) -> str:
    return where.split("://", 1)[-1]
