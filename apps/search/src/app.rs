//! The service's shared state and the transport every route goes through: the app token,
//! trace context, caller faults in band, problem bodies, metrics and spans (what
//! `consort.kit.service.create_app` gives a Python app).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::config::Settings;
use crate::index::Index;
use crate::model::{MODEL_NAME, MODEL_VERSION};
use crate::problem::{ApiResult, PendingProblem, Problem, PROBLEM_JSON};
use crate::sidecar::Sidecar;
use crate::telemetry::{self, Trace};
use crate::worker::Worker;

pub enum ModelState {
    Loading,
    Ready(Worker),
    Failed(String),
}

#[derive(Clone)]
pub struct App {
    pub settings: Arc<Settings>,
    pub sidecar: Sidecar,
    pub index: Index,
    pub model: Arc<RwLock<ModelState>>,
    /// The index was loaded from the state store once since start-up.
    pub rebuilt: Arc<AtomicBool>,
    /// SIGTERM arrived: `/readyz` says so while requests in flight finish.
    pub draining: Arc<AtomicBool>,
}

/// Open without the app token: launchers, daprd's health checks and scrapers.
const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];
/// Largest event delivery from daprd (a bulk of events), as the kit allows.
const EVENT_DELIVERY_MAX_BYTES: usize = 32 * 1024 * 1024;

pub fn model_info() -> Value {
    json!({"name": MODEL_NAME, "version": MODEL_VERSION})
}

impl App {
    /// The model thread, or a 503 while the model loads (or after it failed to).
    pub fn worker(&self) -> ApiResult<Worker> {
        match &*self.model.read().expect("model state") {
            ModelState::Ready(w) => Ok(w.clone()),
            ModelState::Loading => Err(Problem::unavailable(
                "Model not ready",
                format!("model {MODEL_NAME} is still loading; retry shortly"),
                "model-not-ready",
                1,
            )),
            ModelState::Failed(why) => Err(Problem::unavailable(
                "Model not ready",
                format!("model {MODEL_NAME} failed to load: {why}"),
                "model-not-ready",
                1,
            )),
        }
    }

    pub fn model_loaded(&self) -> bool {
        matches!(&*self.model.read().expect("model state"), ModelState::Ready(_))
    }
}

/// The 503 of a failed call through the sidecar (the state store or the broker).
pub fn sidecar_failure(err: anyhow::Error) -> Problem {
    telemetry::log("warning", &format!("sidecar failure: {err:#}"), None, None);
    Problem::unavailable(
        "Sidecar unavailable",
        "The state store could not be reached through the Dapr sidecar; try again shortly.",
        "service-unavailable",
        2,
    )
}

/// The route template of a path, for metrics and span names (never the raw path).
pub fn route_template(path: &str) -> String {
    let s: Vec<&str> = path.trim_matches('/').split('/').collect();
    let t = match s.as_slice() {
        ["v1", "embeddings"] => "/v1/embeddings",
        ["v1", "collections", _] => "/v1/collections/{name}",
        ["v1", "collections", _, "documents"] => "/v1/collections/{name}/documents",
        ["v1", "collections", _, "query"] => "/v1/collections/{name}/query",
        ["v1", "collections", _, "documents", _] => "/v1/collections/{name}/documents/{id}",
        ["v1", "collections", _, "documents", _, "similar"] => {
            "/v1/collections/{name}/documents/{id}/similar"
        }
        ["healthz"]
        | ["readyz"]
        | ["info"]
        | ["metrics"]
        | ["events", "reviews-submitted"]
        | ["dapr", "subscribe"]
        | ["dapr", "config"] => return path.to_string(),
        _ => "unmatched",
    };
    t.to_string()
}

fn token_ok(given: Option<&HeaderValue>, want: &str) -> bool {
    let given = given.map(|v| v.as_bytes()).unwrap_or_default();
    // Constant time in the token's length, like hmac.compare_digest.
    given.len() == want.len()
        && given
            .iter()
            .zip(want.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn problem_body(problem: &Problem, path: &str, trace: &Trace) -> Response {
    let body = problem.body(path, Some(&trace.trace_id));
    let mut response = (
        StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, PROBLEM_JSON)],
        body.to_string(),
    )
        .into_response();
    if let Some(s) = problem.retry_after_s {
        response.headers_mut().insert("retry-after", HeaderValue::from(s));
    }
    response
}

/// Every request passes here first.
pub async fn kit(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let wall = SystemTime::now();
    let path = request.uri().path().to_string();
    let method = request.method().as_str().to_string();
    let route = route_template(&path);
    let headers = request.headers();
    let trace = Trace::continue_from(headers.get("traceparent").and_then(|v| v.to_str().ok()));
    let in_band = headers
        .get("consort-caller-faults")
        .map(|v| v.as_bytes() == b"in-band")
        .unwrap_or(false);
    let open = OPEN_PATHS.contains(&path.as_str());
    telemetry::request_started();

    let mut response = if !open
        && !app.settings.app_api_token.is_empty()
        && !token_ok(headers.get("dapr-api-token"), &app.settings.app_api_token)
    {
        problem_body(
            &Problem::new(
                401,
                "Unauthorized",
                "this app answers its own Dapr sidecar only: send the `dapr-api-token` header",
                "unauthorized",
            ),
            &path,
            &trace,
        )
    } else {
        let limit = if path.starts_with("/events/") {
            EVENT_DELIVERY_MAX_BYTES
        } else {
            app.settings.max_body_bytes
        };
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if length.is_some_and(|n| n > limit) {
            let mut p = Problem::new(
                413,
                "Request body too large",
                format!("The body must be at most {limit} bytes."),
                "body-too-large",
            );
            p.errors.push(crate::problem::FieldProblem {
                field: "body".into(),
                message: format!("must be at most {limit} bytes"),
                limit: Some(json!(limit)),
            });
            problem_body(&p, &path, &trace)
        } else {
            request.extensions_mut().insert(trace.clone());
            let response = next.run(request).await;
            finish(response, &path, &trace)
        }
    };

    let status = response.status().as_u16();
    if in_band && (400..500).contains(&status) && status != 408 && status != 429 {
        *response.status_mut() = StatusCode::OK;
        response
            .headers_mut()
            .insert("consort-status", HeaderValue::from(status));
    }
    response
        .headers_mut()
        .insert("x-trace-id", HeaderValue::from_str(&trace.trace_id).expect("hex"));
    telemetry::request_finished(&route, &method, status, started.elapsed().as_secs_f64());
    if !open && route != "/dapr/subscribe" && route != "/dapr/config" {
        let mut tags = BTreeMap::new();
        tags.insert("http.method".to_string(), method.clone());
        tags.insert("http.route".to_string(), route.clone());
        tags.insert("http.status_code".to_string(), status.to_string());
        telemetry::record_span(&trace, &format!("{method} {route}"), "SERVER", wall, tags);
    }
    if status >= 500 {
        telemetry::log(
            "error",
            &format!("{method} {path} answered {status}"),
            Some(&trace.trace_id),
            None,
        );
    } else if status >= 400 && !open {
        // A refusal, logged with the trace id the client got in its problem.
        let msg = format!("{method} {path} answered {status}");
        telemetry::log("info", &msg, Some(&trace.trace_id), None);
    } else {
        telemetry::log(
            "debug",
            &format!("{method} {path} {status}"),
            Some(&trace.trace_id),
            None,
        );
    }
    response
}

/// A handler's problem gets its body here; axum's own refusals (404, 405, a body it
/// could not read) become problems too.
fn finish(mut response: Response, path: &str, trace: &Trace) -> Response {
    if let Some(PendingProblem(problem)) = response.extensions_mut().remove::<PendingProblem>() {
        return problem_body(&problem, path, trace);
    }
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if status.as_u16() >= 400 && !is_json {
        let (title, slug) = match status.as_u16() {
            404 => ("Not found", "not-found"),
            405 => ("Method not allowed", "method-not-allowed"),
            413 => ("Request body too large", "body-too-large"),
            _ => ("HTTP error", "http-error"),
        };
        let detail = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
        return problem_body(&Problem::new(status.as_u16(), title, detail, slug), path, trace);
    }
    response
}

/// A JSON answer.
pub fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Parse a JSON request body: 415 when it is not JSON, 400 when it does not parse.
pub fn parse_json(content_type: Option<&HeaderValue>, body: &[u8]) -> ApiResult<Value> {
    if let Some(ct) = content_type.and_then(|v| v.to_str().ok()) {
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !(essence == "application/json" || essence.ends_with("+json")) {
            return Err(Problem::new(
                415,
                "Unsupported media type",
                format!("The body must be JSON (Content-Type: application/json), not '{ct}'."),
                "unsupported-media-type",
            ));
        }
    }
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            400,
            "Malformed JSON",
            format!("The body is not valid JSON: {e}."),
            "malformed-json",
        )
    })
}

pub fn empty(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .expect("a response")
}

pub fn is_draining(app: &App) -> bool {
    app.draining.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates() {
        assert_eq!(
            route_template("/v1/collections/faq/documents/a1/similar"),
            "/v1/collections/{name}/documents/{id}/similar"
        );
        assert_eq!(route_template("/v1/embeddings"), "/v1/embeddings");
        assert_eq!(route_template("/nope/x"), "unmatched");
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_ok(Some(&HeaderValue::from_static("abc")), "abc"));
        assert!(!token_ok(Some(&HeaderValue::from_static("abd")), "abc"));
        assert!(!token_ok(None, "abc"));
    }
}
