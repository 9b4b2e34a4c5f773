"""Looking at a running system from the terminal: `consort trace` and `consort status`.

Plain functions over data (Zipkin spans, Prometheus text) plus thin fetchers, so the
rendering is tested without a running system.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table
from rich.text import Text

# Re-exported: the status table and the tests and benchmarks read metrics with these.
from consort.dev.processes import loopback_client
from consort.kit.metrics_text import counter_total as counter_total
from consort.kit.metrics_text import latency_quantiles as latency_quantiles
from consort.kit.metrics_text import request_counts as request_counts

DAPR_SCOPE = "dapr-diagnostics"


# -- traces ----------------------------------------------------------------------------------
@dataclass
class SpanNode:
    """One span of a trace, with its children in start order."""

    span: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)

    @property
    def start_us(self) -> int:
        return int(self.span.get("timestamp", 0))

    @property
    def duration_us(self) -> int:
        return int(self.span.get("duration", 0))

    @property
    def component(self) -> str:
        """Who recorded the span: `<app> app` or `<app> daprd`."""
        tags = self.span.get("tags", {})
        service = self.span.get("localEndpoint", {}).get("serviceName", "?")
        return f"{service} daprd" if tags.get("otel.scope.name") == DAPR_SCOPE else f"{service} app"

    @property
    def label(self) -> str:
        tags = self.span.get("tags", {})
        name = str(self.span.get("name", ""))
        if name.upper() in ("GET", "POST", "PUT", "DELETE") and "http.url" in tags:
            return f"{name.upper()} {httpx.URL(tags['http.url']).path}"
        return name


def span_tree(spans: list[dict[str, Any]]) -> list[SpanNode]:
    """The spans of one trace as trees (roots: spans whose parent is not in the trace)."""
    nodes = {s["id"]: SpanNode(s) for s in spans}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get(node.span.get("parentId", ""))
        (parent.children if parent else roots).append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: n.start_us)
    return sorted(roots, key=lambda n: n.start_us)


def waterfall(spans: list[dict[str, Any]], width: int = 40) -> Table:
    """A terminal waterfall of one trace: each span's place and length on a time bar."""
    roots = span_tree(spans)
    table = Table(title=f"trace {spans[0]['traceId']}" if spans else "empty trace")
    table.add_column("span")
    table.add_column("recorded by")
    table.add_column("ms", justify="right")
    table.add_column("timeline")
    if not roots:
        return table
    begin = min(n.start_us for n in roots)
    end = max(s.get("timestamp", 0) + s.get("duration", 0) for s in spans)
    total = max(end - begin, 1)

    def add(node: SpanNode, depth: int) -> None:
        offset = int((node.start_us - begin) / total * width)
        length = max(1, math.ceil(node.duration_us / total * width))
        bar = Text(" " * offset)
        bar.append(
            "█" * min(length, width - offset),
            style="cyan" if "daprd" in node.component else "green",
        )
        table.add_row(
            "  " * depth + node.label,
            node.component,
            f"{node.duration_us / 1000:.2f}",
            bar,
        )
        for child in node.children:
            add(child, depth + 1)

    for root in roots:
        add(root, 0)
    return table


def fetch_trace(zipkin_url: str, trace_id: str) -> list[dict[str, Any]]:
    """The spans Zipkin holds for `trace_id` (empty when it has none yet)."""
    response = httpx.get(f"{zipkin_url}/api/v2/trace/{trace_id}", timeout=5)
    if response.status_code == 404:
        return []
    response.raise_for_status()
    spans: list[dict[str, Any]] = response.json()
    return spans


# -- status ----------------------------------------------------------------------------------
@dataclass
class AppStatus:
    """What `consort status` shows of one app."""

    app_id: str
    health: str
    version: str = "-"
    models: str = "-"
    requests: float = 0
    errors: float = 0
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


def app_status(app_id: str, url: str, headers: dict[str, str] | None = None) -> AppStatus:
    """Ask one app for its readiness, info and metrics (`headers`: its app token)."""
    try:
        client = loopback_client()
        ready = client.get(f"{url}/readyz", timeout=2)
        info = client.get(f"{url}/info", headers=headers, timeout=2).json()
        metrics = client.get(f"{url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return AppStatus(app_id, "down")
    status = AppStatus(
        app_id,
        "ready" if ready.status_code == 200 else f"not ready: {ready.json().get('detail', '')}",
        version=info.get("version", "-"),
        models=", ".join(f"{m['name']} {m['version']}" for m in info.get("models", [])) or "-",
    )
    status.requests, status.errors = request_counts(metrics)
    status.p50_ms, status.p99_ms = latency_quantiles(metrics)
    return status


def status_table(statuses: list[AppStatus]) -> Table:
    table = Table(title="Consort status")
    for column in (
        "service",
        "health",
        "version",
        "model",
        "requests",
        "p50 ms",
        "p99 ms",
        "errors",
    ):
        table.add_column(
            column,
            justify="right" if column in ("requests", "p50 ms", "p99 ms", "errors") else "left",
        )
    for s in statuses:
        health = Text(s.health, style="green" if s.health == "ready" else "red")
        rate = s.error_rate
        table.add_row(
            s.app_id,
            health,
            s.version,
            s.models,
            f"{s.requests:.0f}",
            "-" if s.p50_ms is None else f"{s.p50_ms:.1f}",
            "-" if s.p99_ms is None else f"{s.p99_ms:.1f}",
            "-" if rate is None else f"{rate:.1%}",
        )
    return table


def read_endpoints(run_dir: Path) -> dict[str, Any]:
    """Where the running system's apps and Zipkin listen (written by `consort run`)."""
    path = run_dir / "endpoints.json"
    try:
        endpoints: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path} not found: is Consort running (`make run`)?") from exc
    return endpoints


# -- processes -------------------------------------------------------------------------------
STATE_STYLES = {
    "ready": "green",
    "starting": "yellow",
    "restarting": "yellow",
    "crash-looping": "red",
    "stopped": "dim",
}


def duration(seconds: float | None) -> str:
    """`42 s`, `3 min 05 s`, `2 h 07 min`; `-` for None."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def process_table(processes: list[dict[str, Any]], now: float) -> Table:
    """The launcher's processes (its `Supervisor.status()` rows) as a table.

    Args:
        processes: one row per process: name, group, state, restarts, last_exit_code,
            last_exit_at (wall-clock seconds), uptime_s, pid.
        now: the wall-clock time to say how long ago the last exit was.
    """
    table = Table(title="Consort processes")
    for column in ("process", "group", "state", "restarts", "last exit", "uptime", "pid"):
        table.add_column(column, justify="right" if column in ("restarts", "pid") else "left")
    for p in processes:
        exited = (
            "-"
            if p.get("last_exit_at") is None
            else f"code {p['last_exit_code']}, {duration(now - p['last_exit_at'])} ago"
        )
        table.add_row(
            p["name"],
            p["group"],
            Text(p["state"], style=STATE_STYLES.get(p["state"], "")),
            str(p["restarts"]),
            exited,
            duration(p.get("uptime_s")),
            "-" if p.get("pid") is None else str(p["pid"]),
        )
    return table
