"""Reading the Prometheus text every app serves at `/metrics`: request counts, latency
quantiles from the histogram, counter totals and the process's own figures.

Shared by `consort status`, the gateway's overview (the web console), tests and benchmarks.
"""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

#: What launchers, scrapers and the catalog (the console's polls) ask: not the app's load.
PROBE_ROUTES = ("/healthz", "/readyz", "/metrics", "/info")


def latency_buckets(metrics_text: str, skip_routes: tuple[str, ...] = ()) -> dict[float, float]:
    """The app's latency histogram, cumulative counts by upper bound (seconds) summed over
    its routes, leaving out `skip_routes` (e.g. `PROBE_ROUTES`)."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "consort_http_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("route") not in skip_routes:
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0) + sample.value
    return buckets


def bucket_quantiles(
    buckets: dict[float, float], quantiles: tuple[float, ...] = (0.5, 0.99)
) -> list[float | None]:
    """Quantiles (ms) from cumulative histogram buckets (bucket upper bounds, interpolated
    linearly inside the bucket, as Prometheus' histogram_quantile does); None for each
    when the histogram counted nothing."""
    if not buckets or buckets.get(math.inf, 0) <= 0:
        return [None for _ in quantiles]
    bounds = sorted(buckets)
    total = buckets[math.inf]
    results: list[float | None] = []
    for q in quantiles:
        rank = q * total
        previous_bound, previous_count = 0.0, 0.0
        value = bounds[-2] if len(bounds) > 1 else 0.0
        for bound in bounds:
            count = buckets[bound]
            if count >= rank:
                if math.isinf(bound):
                    value = previous_bound
                else:
                    share = (
                        (rank - previous_count) / (count - previous_count)
                        if count > previous_count
                        else 1
                    )
                    value = previous_bound + (bound - previous_bound) * share
                break
            previous_bound, previous_count = bound, count
        results.append(round(value * 1000, 2))
    return results


def latency_quantiles(
    metrics_text: str, quantiles: tuple[float, ...] = (0.5, 0.99)
) -> list[float | None]:
    """Quantiles (ms) of all requests since the app started, from its latency histogram."""
    return bucket_quantiles(latency_buckets(metrics_text), quantiles)


def counter_total(metrics_text: str, name: str) -> float:
    """The sum of the counter `name` over all its labels (e.g. `consort_anomaly_points`)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == name
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def request_counts(metrics_text: str) -> tuple[float, float]:
    """(requests, 5xx responses) served; health probes, scrapes and `/info` excluded."""
    total = errors = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "consort_http_requests":
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            if sample.labels["route"] in PROBE_ROUTES:
                continue
            total += sample.value
            if sample.labels["status"].startswith("5"):
                errors += sample.value
    return total, errors


def process_figures(metrics_text: str) -> dict[str, float]:
    """The process collector's samples (`process_cpu_seconds_total`,
    `process_resident_memory_bytes`, `process_start_time_seconds`, ...) by name."""
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name.startswith("process_")
        for sample in family.samples
    }


#: daprd's pub/sub counters (OpenCensus names as its Prometheus endpoint serves them).
#: Bulk publishes count calls per topic only: daprd 1.18's per-event count of them loses
#: its `topic` label (a bool where its tag helper expects a string ends the tags).
_PUBLISHED = ("dapr_component_pubsub_egress_count",)
_PUBLISHED_BATCHES = ("dapr_component_pubsub_egress_bulk_count",)
_DELIVERED = ("dapr_component_pubsub_ingress_count",)
#: Its "bulk event" count is a count of bulk deliveries (daprd 1.18 aggregates it with
#: Count, not Sum): calls, as `batches` of events.
_DELIVERED_BATCHES = ("dapr_component_pubsub_ingress_bulk_event_count",)


def pubsub_counts(metrics_text: str) -> dict[tuple[str, str, str], float]:
    """What one sidecar's `/metrics` (daprd's own port) counts of pub/sub since it started:
    `("published", topic, "success"|"failure")` for what its app published one by one,
    `("batches", topic, "success"|"failure")` for its bulk publishes (calls, not events),
    `("delivered", topic, process_status)` for the events it handed its app one by one
    (`success`, `retry`, `drop`), `("delivered_batches", topic, process_status)` for its
    bulk deliveries (calls with an entry of that outcome)."""
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(metrics_text):
        name = family.name.removesuffix("_total")
        if name in _PUBLISHED:
            kind, status_label = "published", "success"
        elif name in _PUBLISHED_BATCHES:
            kind, status_label = "batches", "success"
        elif name in _DELIVERED:
            kind, status_label = "delivered", "process_status"
        elif name in _DELIVERED_BATCHES:
            kind, status_label = "delivered_batches", "process_status"
        else:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created") or "topic" not in sample.labels:
                continue
            status = sample.labels.get(status_label, "").lower()  # bulk ones: `SUCCESS`
            if kind in ("published", "batches"):
                status = "success" if status == "true" else "failure"
            key = (kind, sample.labels["topic"], status)
            counts[key] = counts.get(key, 0) + sample.value
    return counts


def event_counts(metrics_text: str) -> dict[tuple[str, str, str], float]:
    """What an app counted of the events delivered to it (`consort_events_total`):
    `("handled", topic, status)` with status `success`, `retry` or `drop`."""
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "consort_events":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = ("handled", sample.labels["topic"], sample.labels["status"].lower())
                counts[key] = counts.get(key, 0) + sample.value
    return counts
