"""`consort workflows`: cases and workflows of the running system, through the gateway.

consort workflows list [--status open]     cases, most recent first (open ones by default)
consort workflows show ID                  a workflow: status, step, result, and its case
consort workflows approve ID [--by NAME]   decide a case (also: dismiss)
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from consort.dev.system import default_run_dir
from consort.kit.keys import DEV_KEY_FILE_NAME

DEFAULT_GATEWAY = "http://127.0.0.1:8000"
STATUSES = ("open", "escalated", "closed", "failed", "all")


def add_parser(sub: Any) -> None:
    """Add `workflows` and its subcommands to the `consort` parser."""
    parser = sub.add_parser("workflows", help="list cases, show a workflow, decide a case")
    gateway = argparse.ArgumentParser(add_help=False)
    gateway.add_argument(
        "--gateway",
        default=os.environ.get("CONSORT_GATEWAY_URL", DEFAULT_GATEWAY),
        help=f"the gateway's URL (default: $CONSORT_GATEWAY_URL or {DEFAULT_GATEWAY})",
    )
    gateway.add_argument(
        "--api-key",
        default=os.environ.get("CONSORT_API_KEY"),
        help="an API key with the workflows and ops scopes "
        f"(default: $CONSORT_API_KEY, or the run folder's {DEV_KEY_FILE_NAME})",
    )
    commands = parser.add_subparsers(dest="workflows_command", required=True)
    listing = commands.add_parser("list", help="cases, most recent first", parents=[gateway])
    listing.add_argument("--status", choices=STATUSES, default="open")
    listing.add_argument("--limit", type=int, default=50)
    show = commands.add_parser("show", help="a workflow and its case", parents=[gateway])
    show.add_argument("id", help="the workflow id (triage-<review id>, forecast-and-alert-...)")
    for decision in ("approve", "dismiss"):
        decide = commands.add_parser(decision, help=f"{decision} a case", parents=[gateway])
        decide.add_argument("id", help="the workflow (and case) id")
        decide.add_argument("--by", default=os.environ.get("USER"), help="who decides")
        decide.add_argument("--note", help="why")


def run(args: argparse.Namespace) -> int:
    """Run `consort workflows <command>`; 0 on success, 1 when the gateway said no."""
    out = Console()
    key = args.api_key or _dev_key()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(base_url=args.gateway, headers=headers, timeout=10) as client:
            if args.workflows_command == "list":
                return _list(client, out, args.status, args.limit)
            if args.workflows_command == "show":
                return _show(client, out, args.id)
            return _decide(client, out, args.id, args.workflows_command, args.by, args.note)
    except httpx.HTTPError as exc:
        Console(stderr=True).print(f"[red]gateway at {args.gateway} unreachable:[/red] {exc}")
        return 1


def _dev_key() -> str | None:
    try:
        return (default_run_dir() / DEV_KEY_FILE_NAME).read_text().strip()
    except FileNotFoundError:
        return None


def _problem(response: httpx.Response) -> int:
    try:
        body = response.json()
        detail = body.get("detail") or body.get("title")
    except ValueError:
        detail = response.text[:300]
    Console(stderr=True).print(f"[red]{response.status_code}[/red] {detail}")
    return 1


def _list(client: httpx.Client, out: Console, status: str, limit: int) -> int:
    params: dict[str, str | int] = {"limit": limit}
    if status != "all":
        params["status"] = status
    response = client.get("/v1/cases", params=params)
    if response.status_code != 200:
        return _problem(response)
    cases = response.json()["cases"]
    table = Table(title=f"cases ({status})", title_justify="left")
    for column in ("id", "status", "priority", "product", "defects", "opened", "escalations"):
        table.add_column(column)
    table.add_column("outcome")
    for case in cases:
        table.add_row(
            case["id"],
            case["status"],
            case["priority"],
            case.get("product") or "",
            ", ".join(case["defects"]),
            case["opened_at"][:19].replace("T", " "),
            str(case["escalations"]),
            case.get("outcome") or "",
        )
    out.print(table)
    if not cases:
        out.print("no cases")
    return 0


def _show(client: httpx.Client, out: Console, instance_id: str) -> int:
    response = client.get(f"/v1/workflows/{instance_id}")
    if response.status_code != 200:
        return _problem(response)
    info = response.json()
    out.print(
        f"[bold]{info['id']}[/bold]  {info['workflow']}  [bold]{info['status']}[/bold]"
        + (f"  step: {info['step']}" if info.get("step") else "")
    )
    out.print(f"created {info['created_at']}  updated {info['updated_at']}")
    if info.get("failure"):
        out.print(f"[red]failed:[/red] {info['failure']['message']}")
    if info.get("output") is not None:
        out.print_json(json.dumps(info["output"]))
    case = client.get(f"/v1/cases/{instance_id}")
    if case.status_code == 200:
        found = case.json()
        out.print(
            f"case: [bold]{found['status']}[/bold]"
            + (f" ({found['outcome']})" if found.get("outcome") else "")
            + f"  priority {found['priority']}  product {found.get('product') or '-'}"
        )
        for entry in found["history"]:
            at = entry["at"][:19].replace("T", " ")
            out.print(f"  {at}  {entry['what']}  {entry.get('detail') or ''}")
    return 0


def _decide(
    client: httpx.Client,
    out: Console,
    instance_id: str,
    decision: str,
    by: str | None,
    note: str | None,
) -> int:
    body = {"decision": decision, "by": by, "note": note}
    response = client.post(
        f"/v1/workflows/{instance_id}/events/decision",
        json={k: v for k, v in body.items() if v is not None},
    )
    if response.status_code != 202:
        return _problem(response)
    out.print(f"{decision} sent to {instance_id} (it was {response.json().get('step')})")
    return 0
