//! Errors as data: the one problem+json shape of every Consort service
//! (`consort.contracts.common.Problem`): `type`, `title`, `status`, `detail`,
//! `instance`, `errors` (the field, what is wrong, the limit) and `trace_id`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One field that breaks the contract.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
    pub limit: Option<Value>,
}

/// A problem to answer with; the middleware fills in `instance` and `trace_id`.
#[derive(Clone, Debug)]
pub struct Problem {
    pub status: u16,
    pub title: String,
    pub detail: String,
    pub slug: String,
    pub errors: Vec<FieldProblem>,
    pub retry_after_s: Option<u32>,
}

impl Problem {
    pub fn new(status: u16, title: &str, detail: impl Into<String>, slug: &str) -> Self {
        Self {
            status,
            title: title.into(),
            detail: detail.into(),
            slug: slug.into(),
            errors: Vec::new(),
            retry_after_s: None,
        }
    }

    /// The 422 of fields that break the contract (`consort.kit.errors.invalid_field`).
    pub fn invalid(errors: Vec<FieldProblem>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{} {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            errors,
            ..Self::new(422, "Invalid request", detail, "validation-error")
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, "Not found", detail, "not-found")
    }

    /// A 503 with `Retry-After`: the same request may succeed later.
    pub fn unavailable(title: &str, detail: impl Into<String>, slug: &str, retry_after_s: u32) -> Self {
        Self {
            retry_after_s: Some(retry_after_s),
            ..Self::new(503, title, detail, slug)
        }
    }

    pub fn body(&self, instance: &str, trace_id: Option<&str>) -> Value {
        let mut body = json!({
            "type": format!("urn:consort:problem:{}", self.slug),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        });
        if !self.errors.is_empty() {
            body["errors"] = self
                .errors
                .iter()
                .map(|e| {
                    let mut v = json!({"field": e.field, "message": e.message});
                    if let Some(limit) = &e.limit {
                        v["limit"] = limit.clone();
                    }
                    v
                })
                .collect();
        }
        if let Some(trace_id) = trace_id {
            body["trace_id"] = json!(trace_id);
        }
        body
    }
}

/// Carried on the response until the middleware, which knows the path and the trace id,
/// writes the body.
#[derive(Clone, Debug)]
pub struct PendingProblem(pub Problem);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = status.into_response();
        if let Some(s) = self.retry_after_s {
            response.headers_mut().insert("retry-after", HeaderValue::from(s));
        }
        response.extensions_mut().insert(PendingProblem(self));
        response
    }
}

impl From<anyhow::Error> for Problem {
    fn from(err: anyhow::Error) -> Self {
        crate::telemetry::log_error(&format!("unexpected error: {err:#}"));
        Self::new(
            500,
            "Internal error",
            "The service failed on this request; its log has the details under this trace id.",
            "internal-error",
        )
    }
}

pub type ApiResult<T> = Result<T, Problem>;
