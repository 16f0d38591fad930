"""OpenSSH's known_hosts format, read by our own parser, and key fingerprints.

paramiko's HostKeys.load gives up on the whole file for one line it does not
understand; this parser reads every line and marks a malformed one instead (see
harness.transport.hostkeys for what is done with each kind of entry).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass

import paramiko

CERT_AUTHORITY, REVOKED = "@cert-authority", "@revoked"
# Key types paramiko can verify a host with; certificates and sk- keys are not among them.
_PLAIN = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
_FIELD = re.compile(r"[^ \t]+")


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


@dataclass(frozen=True)
class Entry:
    """One non-comment line of the file."""

    lineno: int
    text: str  # without its line ending
    marker: str | None = None
    hosts: str | None = None
    hosts_span: tuple[int, int] | None = None
    key_type: str | None = None
    blob: bytes | None = None
    key: paramiko.PKey | None = None  # set only for a host key paramiko can verify with
    problem: str | None = None

    def names(self, hostid: str) -> bool | None:
        """Whether this line is about hostid; None when that cannot be told."""
        if self.hosts is None:
            return None
        return _names(self.hosts, hostid)

    def describe(self) -> str:
        if self.problem:
            return f"line {self.lineno}: {self.problem}"
        what = self.key_type if self.key is None else describe(self.key)
        if self.marker:
            what = f"{self.marker} {what}"
        elif self.key is None:
            what += " (a key type the harness cannot verify with)"
        return f"line {self.lineno}: {what}"


def parse_known_hosts(data: bytes) -> list[Entry]:
    """Every entry of a known_hosts file; malformed ones carry `problem` (never raises)."""
    out = []
    for n, raw in enumerate(split_lines(data), 1):
        entry = _parse_line(n, raw.decode("utf-8", "surrogateescape").rstrip("\r\n"))
        if entry is not None:
            out.append(entry)
    return out


def split_lines(data: bytes) -> list[bytes]:
    """Lines with their endings, split on \\n only (as OpenSSH reads them)."""
    lines = data.split(b"\n")
    out = [ln + b"\n" for ln in lines[:-1]]
    return out + [lines[-1]] if lines[-1] else out


def _parse_line(n: int, text: str) -> Entry | None:
    fields = list(_FIELD.finditer(text))
    if not fields or fields[0].group().startswith("#"):
        return None
    marker = fields.pop(0).group() if fields[0].group().startswith("@") else None
    problem = None if marker in (None, CERT_AUTHORITY, REVOKED) else f"unknown marker {marker!r}"
    if not fields:
        return Entry(n, text, marker, problem=problem or "no host names")
    hosts, span = fields[0].group(), fields[0].span()
    if hosts.startswith("|") and _hashed(hosts) is None:
        problem = problem or "damaged hashed host name"
    if len(fields) < 3:
        return Entry(n, text, marker, hosts, span, problem=problem or "no key type or no key")
    key_type = fields[1].group()
    try:
        blob = base64.b64decode(fields[2].group(), validate=True)
    except binascii.Error:
        return Entry(n, text, marker, hosts, span, key_type, problem=problem or "bad base64 in the key")
    inner = _blob_type(blob)
    if inner != key_type:
        problem = problem or (f"the key is a {inner} key, but the line says {key_type}" if inner
                              else "the key is not an SSH public key")
    key = None
    if problem is None and marker != CERT_AUTHORITY and key_type in _PLAIN:
        try:
            key = paramiko.PKey.from_type_string(key_type, blob)
        except Exception as e:  # noqa: BLE001 - paramiko raises many types on a damaged blob
            problem = f"cannot read the {key_type} key: {e or type(e).__name__}"
    return Entry(n, text, marker, hosts, span, key_type, blob, key, problem)


def _blob_type(blob: bytes) -> str | None:
    """The type name a public-key blob starts with (SSH wire format)."""
    if len(blob) < 4:
        return None
    (size,) = struct.unpack(">I", blob[:4])
    name = blob[4:4 + size]
    if size == 0 or len(name) != size or not name.isascii():
        return None
    return name.decode()


def _hashed(hosts: str) -> tuple[bytes, bytes] | None:
    """(salt, digest) of a `|1|salt|hash` name, or None if it is damaged."""
    parts = hosts.split("|")
    if len(parts) != 4 or parts[0] or parts[1] != "1":
        return None
    try:
        salt, digest = (base64.b64decode(p, validate=True) for p in parts[2:])
    except binascii.Error:
        return None
    sha1 = hashlib.sha1().digest_size
    return (salt, digest) if len(salt) == sha1 and len(digest) == sha1 else None


def _names(hosts: str, hostid: str) -> bool | None:
    host = hostid.lower()  # OpenSSH matches and hashes host names in lower case
    if hosts.startswith("|"):
        hashed = _hashed(hosts)
        if hashed is None:
            return None
        salt, digest = hashed
        return any(hmac.compare_digest(hmac.new(salt, h.encode(), "sha1").digest(), digest) for h in {host, hostid})
    matched = False
    for pattern in hosts.split(","):
        negated = pattern.startswith("!")
        if _glob(pattern[negated:].lower(), host):
            if negated:  # a negated match rules the line out, whatever else matches
                return False
            matched = True
    return matched


def _glob(pattern: str, name: str) -> bool:
    # Only * and ? are special: fnmatch would read "[host]:port" as a character class.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return bool(pattern) and re.fullmatch(regex, name, re.DOTALL) is not None


def is_literal(pattern: str) -> bool:
    return not pattern.startswith(("!", "|")) and not any(c in pattern for c in "*?")
