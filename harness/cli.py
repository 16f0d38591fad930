"""The snp-harness command line; the only module that prints.

Exit codes: 0 pass, 1 test failure (or: host not SNP-ready), 2 config or
usage error, 3 infrastructure error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from harness.errors import ConfigError, HarnessError, HostKeyError, InfraError, PatchError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INFRA = 0, 1, 2, 3

log = logging.getLogger("harness")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="snp-harness", description=__doc__.splitlines()[0])
    p.add_argument("--config", metavar="PATH",
                   help="inventory TOML (default: $SNP_HARNESS_CONFIG, then ./snp-harness.toml)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v: info, -vv: debug (every command)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("check", help="preflight: what the target can do, and what SNP still needs")
    where = c.add_mutually_exclusive_group()
    where.add_argument("host", nargs="?", help="inventory host name")
    where.add_argument("--local", action="store_true", help="check this machine (the default)")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.add_argument("--trust-new-host-key", action="store_true",
                   help="accept and record an unknown host key (never a changed one)")
    c.set_defaults(func=cmd_check)

    t = sub.add_parser("trust", help="record a host's SSH key in the harness's known_hosts")
    t.add_argument("host", help="inventory host name")
    t.add_argument("--fingerprint", metavar="SHA256:...",
                   help="the fingerprint you verified out of band; required when not on a terminal")
    t.add_argument("--replace", action="store_true", help="re-enrol a host whose key changed")
    t.set_defaults(func=cmd_trust)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigError, PatchError) as e:
        _err(f"error: {e}")
        return EXIT_USAGE
    except InfraError as e:
        _err(f"infrastructure error: {e}")
        return EXIT_INFRA
    except HarnessError as e:  # pragma: no cover - every error is one of the above
        _err(f"error: {e}")
        return EXIT_INFRA
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _config(args):
    from harness.config import find_config, load_config

    return load_config(find_config(args.config))


# -- check ---------------------------------------------------------------------

def cmd_check(args) -> int:
    from harness.targets.select import open_target

    config = _config(args)
    target_id = f"ssh://{config.host(args.host).name}" if args.host else "local://"
    target = open_target(config, target_id, trust_new_host_key=args.trust_new_host_key)
    try:
        caps = target.capabilities()
    finally:
        target.close()
    if args.json:
        print(json.dumps({"target": target.name, **caps.as_dict()}, indent=2, sort_keys=True))
    else:
        _print_capabilities(target.name, caps)
    return EXIT_OK if caps.snp_ready else EXIT_FAIL


def _print_capabilities(name: str, caps) -> None:
    from rich.console import Console
    from rich.table import Table

    from harness.targets.capabilities import KNOWN_CAPS

    console = Console()
    facts = Table(title=f"{name}: facts", show_header=False)
    for key, value in caps.properties().items():
        facts.add_row(key, value)
    console.print(facts)

    have = Table(title="capabilities")
    have.add_column("capability")
    have.add_column("")
    have.add_column("description / what is missing")
    for cap, description in KNOWN_CAPS.items():
        reason = caps.missing(cap)
        have.add_row(cap, "[red]no[/]" if reason else "[green]yes[/]", reason or description)
    console.print(have)

    snp = Table(title="SNP requirements")
    for col in ("check", "", "found", "fix"):
        snp.add_column(col)
    for check in caps.checks:
        snp.add_row(check.name, "[green]ok[/]" if check.ok else "[red]MISSING[/]", check.detail,
                    "" if check.ok else check.fix)
    console.print(snp)
    for problem in caps.facts.problems:
        console.print(f"[yellow]probe problem:[/] {problem}")
    verdict = "[green]ready for SNP testing[/]" if caps.snp_ready else "[red]not ready for SNP testing[/]"
    console.print(f"{name}: {verdict}")


# -- trust -----------------------------------------------------------------------

def cmd_trust(args) -> int:
    from harness.transport.hostkeys import KnownHosts, describe, fingerprint
    from harness.transport.ssh import SshTransport

    host = _config(args).host(args.host)
    transport = SshTransport.from_host(host)
    key = transport.host_key()
    known = KnownHosts(host.known_hosts)
    recorded = known.keys_for(transport.hostid)
    print(f"{transport.name} ({transport.hostid}) offers {describe(key)}")
    if key in recorded:
        print(f"already trusted in {host.known_hosts}")
        return EXIT_OK
    if recorded and not args.replace:
        raise HostKeyError(
            f"{transport.name}: the recorded key ({', '.join(describe(k) for k in recorded)}) differs from "
            f"the offered one; if the host was reinstalled, run `snp-harness trust --replace {host.name}`")
    if args.fingerprint:
        if args.fingerprint != fingerprint(key):
            raise HostKeyError(
                f"{transport.name}: offered key {fingerprint(key)} does not match --fingerprint {args.fingerprint}")
    elif not sys.stdin.isatty():
        raise ConfigError(
            f"not on a terminal: confirm the key by passing --fingerprint {fingerprint(key)} "
            "after checking it out of band (e.g. `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on the host)")
    elif input("Trust this key? [y/N] ").strip().lower() not in ("y", "yes"):
        print("not trusted")
        return EXIT_FAIL
    (known.replace if recorded else known.add)(transport.hostid, key)
    print(f"trusted: recorded in {host.known_hosts}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
