//! Logs, traces and metrics in the shapes the Python kit gives (`consort/kit/logging.py`,
//! `telemetry.py`): one JSON object a line with `app_id` and `trace_id`; W3C trace context
//! continued from the caller, each request a server span sent to Zipkin beside the
//! sidecars' own; Prometheus counters and histograms under the same names.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde_json::{json, Value};

static APP_ID: OnceLock<String> = OnceLock::new();
static DEBUG: OnceLock<bool> = OnceLock::new();

pub fn init_logging(app_id: &str, level: &str) {
    let _ = APP_ID.set(app_id.to_string());
    let _ = DEBUG.set(level == "DEBUG");
}

/// Now, as Python's `datetime.isoformat(timespec="milliseconds")` in UTC.
pub fn now_iso() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// One log line on stderr.
pub fn log(level: &str, msg: &str, trace_id: Option<&str>, fields: Option<Value>) {
    if level == "debug" && !DEBUG.get().copied().unwrap_or(false) {
        return;
    }
    let mut entry = json!({
        "time": now_iso(),
        "level": level,
        "app_id": APP_ID.get().map(String::as_str).unwrap_or("search"),
        "logger": "search",
        "msg": msg,
    });
    if let Some(t) = trace_id {
        entry["trace_id"] = json!(t);
    }
    if let Some(Value::Object(extra)) = fields {
        for (k, v) in extra {
            entry[k] = v;
        }
    }
    eprintln!("{entry}");
}

pub fn log_info(msg: &str) {
    log("info", msg, None, None);
}

pub fn log_error(msg: &str) {
    log("error", msg, None, None);
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().fold(String::with_capacity(bytes * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The trace context of the work in hand: the caller's trace, this span, its parent.
#[derive(Clone, Debug)]
pub struct Trace {
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: Option<String>,
}

impl Trace {
    /// Continue a W3C `traceparent` (`00-<trace>-<span>-<flags>`), or start a new trace.
    pub fn continue_from(traceparent: Option<&str>) -> Self {
        let parsed = traceparent.and_then(|tp| {
            let parts: Vec<&str> = tp.trim().split('-').collect();
            let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
            (parts.len() >= 4 && hex(parts[1], 32) && hex(parts[2], 16) && parts[1] != "0".repeat(32))
                .then(|| (parts[1].to_lowercase(), parts[2].to_lowercase()))
        });
        match parsed {
            Some((trace_id, parent)) => Self {
                trace_id,
                span_id: random_hex(8),
                parent_id: Some(parent),
            },
            None => Self {
                trace_id: random_hex(16),
                span_id: random_hex(8),
                parent_id: None,
            },
        }
    }

    /// The `traceparent` to send on: this span as the parent.
    pub fn child_traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }

    /// A child span of this one (for work inside a request, e.g. one event of a bulk).
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            span_id: random_hex(8),
            parent_id: Some(self.span_id.clone()),
        }
    }
}

/// Spans waiting to be sent to Zipkin.
static SPANS: Mutex<Vec<Value>> = Mutex::new(Vec::new());
static ZIPKIN: OnceLock<Option<String>> = OnceLock::new();

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

/// Record one finished span (kept only when spans are exported).
pub fn record_span(
    trace: &Trace,
    name: &str,
    kind: &str,
    started: SystemTime,
    tags: BTreeMap<String, String>,
) {
    if !matches!(ZIPKIN.get(), Some(Some(_))) {
        return;
    }
    let duration = SystemTime::now().duration_since(started).unwrap_or_default();
    let mut span = json!({
        "traceId": trace.trace_id,
        "id": trace.span_id,
        "name": name,
        "kind": kind,
        "timestamp": micros(started),
        "duration": duration.as_micros().max(1) as u64,
        "localEndpoint": {"serviceName": APP_ID.get().map(String::as_str).unwrap_or("search")},
        "tags": tags,
    });
    if let Some(parent) = &trace.parent_id {
        span["parentId"] = json!(parent);
    }
    if let Ok(mut spans) = SPANS.lock() {
        if spans.len() < 10_000 {
            spans.push(span);
        }
    }
}

/// Send recorded spans to Zipkin every half second (like the kit's batch processor).
pub fn start_span_export(url: Option<String>) {
    let _ = ZIPKIN.set(url.clone());
    let Some(url) = url else { return };
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .expect("client");
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let batch: Vec<Value> = SPANS
                .lock()
                .map(|mut s| std::mem::take(&mut *s))
                .unwrap_or_default();
            if batch.is_empty() {
                continue;
            }
            if let Err(e) = client.post(&url).json(&batch).send().await {
                log(
                    "warning",
                    &format!("spans not exported to Zipkin: {e}"),
                    None,
                    None,
                );
            }
        }
    });
}

/// Latency buckets (seconds), the kit's.
const LATENCY_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; buckets.len()];
        }
        for (i, b) in buckets.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, buckets: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in buckets.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts.get(i).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
    }
}

#[derive(Default)]
struct Registry {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<(String, String), Histogram>,
    inflight: i64,
    inference: Histogram,
    batch: Histogram,
    events: BTreeMap<(String, String), u64>,
    duplicates: u64,
}

static METRICS: Mutex<Option<Registry>> = Mutex::new(None);

fn with<F: FnOnce(&mut Registry)>(f: F) {
    if let Ok(mut guard) = METRICS.lock() {
        f(guard.get_or_insert_with(Registry::default));
    }
}

pub fn request_started() {
    with(|r| r.inflight += 1);
}

pub fn request_finished(route: &str, method: &str, status: u16, seconds: f64) {
    with(|r| {
        r.inflight -= 1;
        *r.requests
            .entry((route.into(), method.into(), status))
            .or_default() += 1;
        r.latency
            .entry((route.into(), method.into()))
            .or_default()
            .observe(&LATENCY_BUCKETS, seconds);
    });
}

pub fn inference(seconds: f64, items: usize) {
    with(|r| {
        r.inference.observe(&LATENCY_BUCKETS, seconds);
        r.batch.observe(&BATCH_BUCKETS, items as f64);
    });
}

pub fn event_handled(topic: &str, status: &str) {
    with(|r| *r.events.entry((topic.into(), status.into())).or_default() += 1);
}

pub fn duplicate_suspected() {
    with(|r| r.duplicates += 1);
}

/// The Prometheus text exposition of every metric.
pub fn render_metrics(app_id: &str, version: &str, model: &str) -> String {
    let mut out = String::new();
    with(|r| {
        out.push_str("# HELP consort_http_requests_total HTTP requests served, by route, method and status.\n# TYPE consort_http_requests_total counter\n");
        for ((route, method, status), n) in &r.requests {
            let _ = writeln!(out, "consort_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP consort_http_request_duration_seconds Time to serve an HTTP request, by route and method.\n# TYPE consort_http_request_duration_seconds histogram\n");
        for ((route, method), h) in &r.latency {
            h.render(
                &mut out,
                "consort_http_request_duration_seconds",
                &format!("route=\"{route}\",method=\"{method}\""),
                &LATENCY_BUCKETS,
            );
        }
        let _ = write!(out, "# HELP consort_http_requests_in_flight Requests being served right now (the app's queue depth).\n# TYPE consort_http_requests_in_flight gauge\nconsort_http_requests_in_flight {}\n", r.inflight);
        out.push_str("# HELP consort_model_inference_seconds Time a model spent on one call, by model.\n# TYPE consort_model_inference_seconds histogram\n");
        r.inference.render(
            &mut out,
            "consort_model_inference_seconds",
            &format!("model=\"{model}\""),
            &LATENCY_BUCKETS,
        );
        out.push_str("# HELP consort_model_batch_size Items a model processed in one call, by model.\n# TYPE consort_model_batch_size histogram\n");
        r.batch.render(
            &mut out,
            "consort_model_batch_size",
            &format!("model=\"{model}\""),
            &BATCH_BUCKETS,
        );
        out.push_str("# HELP consort_events_total Events delivered to this app, by topic and outcome.\n# TYPE consort_events_total counter\n");
        for ((topic, status), n) in &r.events {
            let _ = writeln!(
                out,
                "consort_events_total{{topic=\"{topic}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = write!(out, "# HELP consort_search_duplicates_suspected_total Reviews reported as suspected duplicates.\n# TYPE consort_search_duplicates_suspected_total counter\nconsort_search_duplicates_suspected_total {}\n", r.duplicates);
        let _ = write!(out, "# HELP consort_app_info The app and its version (always 1).\n# TYPE consort_app_info gauge\nconsort_app_info{{app=\"{app_id}\",version=\"{version}\"}} 1\n");
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_w3c_trace() {
        let t = Trace::continue_from(Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        assert_eq!(t.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(t.parent_id.as_deref(), Some("b7ad6b7169203331"));
        assert!(t
            .child_traceparent()
            .starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
        let fresh = Trace::continue_from(Some("garbage"));
        assert_eq!(fresh.trace_id.len(), 32);
        assert!(fresh.parent_id.is_none());
    }

    #[test]
    fn iso_time_has_the_kits_shape() {
        let t = now_iso();
        assert_eq!(t.len(), "2026-12-02T05:14:32.123+00:00".len(), "{t}");
        assert!(t.starts_with("20"));
    }

    #[test]
    fn metrics_render_as_prometheus_text() {
        request_started();
        request_finished("/v1/embeddings", "POST", 200, 0.003);
        let text = render_metrics("search", "0.1.0", "all-MiniLM-L6-v2");
        assert!(text.contains(
            "consort_http_requests_total{route=\"/v1/embeddings\",method=\"POST\",status=\"200\"} 1"
        ));
        assert!(text.contains("consort_http_request_duration_seconds_bucket{route=\"/v1/embeddings\",method=\"POST\",le=\"0.005\"} 1"));
    }
}
