"""`consort keys`: the gateway's API keys, in the run folder's keys file.

consort keys create --name N --scopes text,images [--rate 10] [--burst 20]
                                             a new key, printed once (only its hash is kept)
consort keys list                            every key: id, name, scopes, rate, revoked
consort keys revoke ID                       refused from the next request on, no restart

The keys file is `$GATEWAY_KEYS_FILE`, else `gateway-keys.json` in the run folder; running
gateways read it again when it changes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from consort.dev.system import default_run_dir
from consort.kit.keys import (
    DEFAULT_RATE_PER_S,
    KEYS_FILE_NAME,
    SCOPES,
    KeyFile,
    KeyProblem,
)


def keys_file() -> Path:
    """The keys file the gateways of this run folder read."""
    configured = os.environ.get("GATEWAY_KEYS_FILE")
    return Path(configured) if configured else default_run_dir() / KEYS_FILE_NAME


def add_parser(sub: Any) -> None:
    """Add `keys` and its subcommands to the `consort` parser."""
    parser = sub.add_parser("keys", help="create, list and revoke the gateway's API keys")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--file", type=Path, help="the keys file (default: the run folder's)")
    commands = parser.add_subparsers(dest="keys_command", required=True)
    create = commands.add_parser(
        "create",
        help="a new key, printed once",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scopes:\n" + "\n".join(f"  {name:<16} {what}" for name, what in SCOPES.items()),
    )
    create.add_argument("--name", required=True, help="who or what uses it")
    create.add_argument(
        "--scopes", required=True, help=f"comma-separated: {', '.join(SCOPES)}, or all"
    )
    create.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE_PER_S,
        help=f"requests per second on each gateway instance (default {DEFAULT_RATE_PER_S:g})",
    )
    create.add_argument("--burst", type=int, help="requests at once above it (default 2x rate)")
    commands.add_parser("list", help="every key, without secrets", parents=[common])
    revoke = commands.add_parser("revoke", help="refuse a key from now on", parents=[common])
    revoke.add_argument("id", help="the key's id (`consort keys list`)")


def run(args: argparse.Namespace) -> int:
    """Run `consort keys <command>`; 0 on success, 1 when the command was refused."""
    keys = KeyFile(args.file or keys_file())
    err = Console(stderr=True)
    try:
        if args.keys_command == "create":
            record, key = keys.create(args.name, args.scopes, args.rate, args.burst)
            err.print(
                f"key {record.id} ({record.name}): scopes {', '.join(record.scopes)}, "
                f"{record.rate_per_s:g}/s (bursts of {record.burst}), in {keys.path}. "
                "It is shown this once only:"
            )
            sys.stdout.write(key + "\n")  # alone on stdout: KEY=$(consort keys create ...)
        elif args.keys_command == "revoke":
            record = keys.revoke(args.id)
            err.print(f"key {record.id} ({record.name}) revoked at {record.revoked}")
        else:
            Console().print(_table(keys))
    except KeyProblem as exc:
        err.print(f"[red]{exc}[/red]")
        return 1
    return 0


def _table(keys: KeyFile) -> Table:
    table = Table(title=f"API keys in {keys.path}", title_justify="left")
    for column in ("id", "name", "scopes", "rate/s", "burst", "created", "revoked"):
        table.add_column(column)
    for record in keys.read():
        table.add_row(
            record.id,
            record.name,
            ",".join(record.scopes),
            f"{record.rate_per_s:g}",
            str(record.burst),
            record.created,
            record.revoked or "",
        )
    return table
