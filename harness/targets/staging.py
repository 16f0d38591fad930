"""Staging files on a host that the harness then runs as root: a directory only we can write,
and sha256 checks of what is in it.

On a shared host, a directory any local user could have made first (mkdir -p of
/var/tmp/...) lets them swap what root later unpacks into / or kexecs. The stage
script makes the directory itself, or refuses it, in one fixed remote script
whose only inputs are its positional parameters.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from harness.errors import CommandFailed, ConfigError, InfraError

_COMPONENT = re.compile(r"[A-Za-z0-9_.+@-]+")
_SHA256_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")
REFUSED = 3  # the stage script's exit status when it refuses a directory
# $1..$n: the staging directory's components. Creates the missing ones 0700 and refuses one
# (or any parent up to /) that is not a directory, belongs to someone else, or that others
# may write; below a sticky directory (/tmp) everything must be ours. Nothing is followed:
# stat without -L sees a symlink as one.
STAGE_SCRIPT = r"""
dir=
for c do dir=$dir/$c; done
me=$(id -u) || exit 1
p=/ last=0 ours=0
ours_only="remove it (the harness makes its directories itself)"
refuse() {
	printf 'snp-harness: will not stage files in %s: %s %s\n' "$dir" "$p" "$1" >&2
	exit 3
}
check() {
	info=$(LC_ALL=C stat -c '%u %a %F' -- "$p") || refuse "cannot be examined"
	uid=${info%% *} rest=${info#* }
	mode=${rest%% *} kind=${rest#* }
	[ "$kind" = directory ] || refuse "is a $kind, not a directory: $ours_only"
	if [ "$last" = 1 ] || [ "$ours" = 1 ]; then
		[ "$uid" = "$me" ] || refuse "belongs to uid $uid, not to uid $me who runs the harness: $ours_only"
	elif [ "$uid" != "$me" ] && [ "$uid" != 0 ]; then
		refuse "belongs to uid $uid, neither to uid $me who runs the harness nor to root: chown root it"
	fi
	if [ $((0$mode & 022)) -ne 0 ]; then
		[ "$last" = 1 ] && refuse "is writable by group or others (mode $mode): $ours_only"
		[ $((0$mode & 01000)) -ne 0 ] || refuse "is writable by group or others (mode $mode): chmod go-w it"
		ours=1  # sticky (/tmp): safe only below, where everything must be ours
	fi
}
check
i=0
for c do
	i=$((i + 1)) p=${p%/}/$c
	[ "$i" -lt $# ] || last=1
	if [ ! -e "$p" ] && [ ! -L "$p" ]; then
		mkdir -m 700 -- "$p" || refuse "could not be created"
	fi
	check
done
chmod 700 -- "$p" || refuse "could not be made private (chmod 700)"
"""
# $1 the stage root, $2 the build being installed, $3 how many other builds to keep (newest
# first). Only build-key names (hex) are touched; a stage root is ours (the stage script said so).
PRUNE_SCRIPT = r"""
cd -- "$1" || exit 0
n=0
for d in $(ls -1t); do
	case $d in *[!0-9a-f]* | "$2") continue ;; esac
	n=$((n + 1))
	[ "$n" -le "$3" ] || rm -rf -- "$d"
done
"""
KEEP_STAGED = 3  # other builds kept staged on a host: a bisect's neighbours stay, /var/lib does not fill

# $1 tarball, $2 directory: a fresh root-only directory; files owned by us, not the tarball's uids.
UNPACK_SCRIPT = 'rm -rf -- "$2" && mkdir -m 700 -- "$2" && tar -x -o -z -f "$1" -C "$2" && chmod 700 -- "$2"'


def stage_components(stage_root: str, key: str) -> list[str]:
    """The staging directory of a build, as path components (for the stage script's arguments)."""
    if not stage_root.startswith("/"):
        raise ConfigError(f"stage directory {stage_root!r} is not an absolute path")
    parts = [p for p in stage_root.split("/") if p] + [key]
    bad = [p for p in parts if p in (".", "..") or not _COMPONENT.fullmatch(p)]
    if bad:
        raise ConfigError(f"stage directory {stage_root}/{key}: {bad[0]!r} is not a plain name "
                          f"({_COMPONENT.pattern})")
    return parts


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def parse_sha256sum(text: str) -> dict[str, str]:
    """path -> digest from `sha256sum` lines ("HASH  PATH", or "HASH *PATH" in binary mode)."""
    return {m.group(2): m.group(1) for m in map(_SHA256_LINE.fullmatch, text.splitlines()) if m}


def make_stage_dir(transport, stage_root: str, key: str) -> str:
    """The build's staging directory on the host, made (0700) or refused by the stage script."""
    parts = stage_components(stage_root, key)
    r = transport.run(["sh", "-c", STAGE_SCRIPT, "sh", *parts], timeout=60, check=False)
    if r.exit_status == REFUSED:
        raise InfraError(f"{transport.name}: {r.stderr.strip()}")
    if not r.ok:
        raise CommandFailed(r, transport.name)
    return "/" + "/".join(parts)


def remote_digests(transport, paths: list[str]) -> dict[str, str]:
    """path -> sha256 on the host; a missing or unreadable file is left out."""
    r = transport.run(["sha256sum", "--", *paths], timeout=300, check=False)
    return parse_sha256sum(r.stdout)
