//! `reviews.submitted` in, `reviews.duplicate-suspected` out.
//!
//! Every review is indexed into the reviews collection under its review id, so a
//! redelivered event writes the same document again (idempotent by construction), and
//! its duplicate check gives the same answer: a review is compared only with reviews
//! submitted before it (by `submitted_at`, then id), whatever arrived in between. The
//! duplicate event's id is `<review id>:duplicate-suspected`, the same on every
//! redelivery, so its consumers see one event.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Map, Value};

use crate::app::{json_response, model_info, App};
use crate::index::{Document, Search};
use crate::telemetry::{self, Trace};
use crate::validate::Checker;

pub const SUBMITTED_TOPIC: &str = "reviews.submitted";
pub const DUPLICATE_TOPIC: &str = "reviews.duplicate-suspected";
pub const DUPLICATE_EVENT_TYPE: &str = "consort.reviews.duplicate-suspected.v1";
pub const ROUTE: &str = "/events/reviews-submitted";

/// `GET /dapr/subscribe`: the topic, its route and dead-letter topic, bulk delivery.
pub async fn subscribe(State(app): State<App>) -> Response {
    json_response(
        StatusCode::OK,
        json!([{
            "pubsubname": app.settings.pubsub_name,
            "topic": SUBMITTED_TOPIC,
            "routes": {"default": ROUTE},
            "deadLetterTopic": format!("{SUBMITTED_TOPIC}.dead-letter"),
            "bulkSubscribe": {"enabled": true, "maxMessagesCount": 32, "maxAwaitDurationMs": 20},
        }]),
    )
}

struct Review {
    entry: Option<String>,
    id: String,
    text: String,
    product: Option<String>,
    submitted_at: String,
    traceparent: Option<String>,
}

fn review_id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The review in one CloudEvent, or why it is poison.
fn parse(entry: Option<String>, event: &Value) -> Result<Review, String> {
    let data = match &event["data"] {
        Value::String(s) => serde_json::from_str(s).map_err(|e| format!("data is not JSON: {e}"))?,
        other => other.clone(),
    };
    let mut c = Checker::default();
    let id = data["review_id"]
        .as_str()
        .filter(|id| review_id_ok(id))
        .map(String::from);
    if id.is_none() {
        c.fail("data.review_id", "should match ^[A-Za-z0-9_.-]{1,64}$", None);
    }
    let text = c.text(&data["text"], "data.text");
    let submitted_at = data["submitted_at"].as_str().map(String::from);
    if submitted_at.is_none() {
        c.fail("data.submitted_at", "Field required", None);
    }
    if let Err(p) = c.finish() {
        return Err(p.detail);
    }
    Ok(Review {
        entry,
        id: id.expect("checked"),
        text: text.expect("checked"),
        product: data["product"].as_str().map(String::from),
        submitted_at: submitted_at.expect("checked"),
        traceparent: event["traceparent"].as_str().map(String::from),
    })
}

fn earlier(a: (&str, &str), b: (&str, &str)) -> bool {
    a < b
}

/// One delivery: a CloudEvent, or a bulk of them.
pub async fn on_reviews_submitted(
    State(app): State<App>,
    Extension(trace): Extension<Trace>,
    body: Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            telemetry::log(
                "error",
                &format!("poison delivery, not JSON: {e}"),
                Some(&trace.trace_id),
                None,
            );
            return json_response(StatusCode::OK, json!({"status": "DROP"}));
        }
    };
    let bulk = body["entries"].is_array();
    let raw: Vec<(Option<String>, Value)> = if bulk {
        body["entries"]
            .as_array()
            .expect("array")
            .iter()
            .map(|e| {
                (
                    Some(e["entryId"].as_str().unwrap_or_default().to_string()),
                    e["event"].clone(),
                )
            })
            .collect()
    } else {
        vec![(None, body)]
    };
    let mut statuses: Vec<(Option<String>, &'static str)> = Vec::new();
    let mut reviews = Vec::new();
    for (entry, event) in raw {
        match parse(entry.clone(), &event) {
            Ok(r) => reviews.push(r),
            Err(why) => {
                telemetry::log(
                    "error",
                    &format!("poison reviews.submitted event, dropped to dead letter: {why}"),
                    Some(&trace.trace_id),
                    None,
                );
                telemetry::event_handled(SUBMITTED_TOPIC, "DROP");
                statuses.push((entry, "DROP"));
            }
        }
    }
    if !reviews.is_empty() {
        let outcome = handle(&app, &trace, &reviews).await;
        for (r, ok) in reviews.iter().zip(outcome) {
            let status = if ok { "SUCCESS" } else { "RETRY" };
            telemetry::event_handled(SUBMITTED_TOPIC, status);
            statuses.push((r.entry.clone(), status));
        }
    }
    if bulk {
        json_response(
            StatusCode::OK,
            json!({"statuses": statuses.iter().map(|(e, s)| json!({"entryId": e, "status": s})).collect::<Vec<_>>()}),
        )
    } else {
        json_response(
            StatusCode::OK,
            json!({"status": statuses.first().map(|s| s.1).unwrap_or("SUCCESS")}),
        )
    }
}

/// Index the reviews and report suspected duplicates; true for each one handled.
async fn handle(app: &App, trace: &Trace, reviews: &[Review]) -> Vec<bool> {
    let fail = |why: String| {
        telemetry::log(
            "warning",
            &format!("reviews not indexed, they will be redelivered: {why}"),
            Some(&trace.trace_id),
            None,
        );
        vec![false; reviews.len()]
    };
    // The model may still be loading when daprd delivers: wait for it a while.
    let mut worker = None;
    for _ in 0..600 {
        match app.worker() {
            Ok(w) => {
                worker = Some(w);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let Some(worker) = worker else {
        return fail("the model is not loaded".into());
    };
    let collection = app.settings.reviews_collection.clone();
    let (vectors, _) = match worker
        .embed(reviews.iter().map(|r| r.text.clone()).collect())
        .await
    {
        Ok(v) => v,
        Err(e) => return fail(format!("{e:#}")),
    };
    let docs: Vec<Document> = reviews
        .iter()
        .zip(vectors)
        .map(|(r, vector)| {
            let mut metadata = Map::new();
            if let Some(p) = &r.product {
                metadata.insert("product".into(), json!(p));
            }
            metadata.insert("submitted_at".into(), json!(r.submitted_at));
            Document {
                id: r.id.clone(),
                text: r.text.clone(),
                metadata,
                vector,
            }
        })
        .collect();
    if let Err(e) = app.index.upsert(&collection, docs.clone(), trace).await {
        return fail(format!("{e:#}"));
    }
    telemetry::log(
        "info",
        &format!("indexed {} reviews from {SUBMITTED_TOPIC}", docs.len()),
        Some(&trace.trace_id),
        None,
    );
    // Every earlier review is a candidate; the index now holds this batch too.
    let threshold = app.settings.duplicate_threshold;
    let mut outcome = Vec::with_capacity(reviews.len());
    for (review, doc) in reviews.iter().zip(&docs) {
        let span = review
            .traceparent
            .as_deref()
            .map(|tp| Trace::continue_from(Some(tp)))
            .unwrap_or_else(|| trace.child());
        let candidates = match app
            .index
            .query(
                &collection,
                &doc.vector,
                &Search {
                    k: 64,
                    filter: None,
                    exclude: Some(&review.id),
                    min_score: Some(threshold),
                },
                trace,
            )
            .await
        {
            Ok(Some(m)) => m,
            Ok(None) => Vec::new(),
            Err(e) => {
                telemetry::log(
                    "warning",
                    &format!("duplicate check of {} failed: {e:#}", review.id),
                    Some(&trace.trace_id),
                    None,
                );
                outcome.push(false);
                continue;
            }
        };
        let best = candidates.into_iter().find(|m| {
            let at = m
                .metadata
                .get("submitted_at")
                .and_then(Value::as_str)
                .unwrap_or("");
            earlier(
                (at, m.id.as_str()),
                (review.submitted_at.as_str(), review.id.as_str()),
            )
        });
        let Some(best) = best else {
            outcome.push(true);
            continue;
        };
        let score = best.score;
        let data = json!({
            "review_id": review.id,
            "duplicate_of": best.id,
            "score": score,
            "threshold": threshold,
            "product": review.product,
            "model": model_info(),
            "detected_at": telemetry::now_iso(),
        });
        let event_id = format!("{}:duplicate-suspected", review.id);
        match app
            .sidecar
            .publish(
                DUPLICATE_TOPIC,
                DUPLICATE_EVENT_TYPE,
                &event_id,
                &app.settings.app_id,
                data,
                &span,
            )
            .await
        {
            Ok(()) => {
                telemetry::duplicate_suspected();
                telemetry::log(
                    "info",
                    &format!(
                        "review {} suspected duplicate of {} (cosine {score:.3})",
                        review.id, best.id
                    ),
                    Some(&span.trace_id),
                    None,
                );
                outcome.push(true);
            }
            Err(e) => {
                telemetry::log(
                    "warning",
                    &format!("duplicate event for {} not published: {e:#}", review.id),
                    Some(&span.trace_id),
                    None,
                );
                outcome.push(false);
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_review_and_refuses_poison() {
        let ok = json!({"id": "e1", "data": {"review_id": "r-1", "text": "Great phone", "submitted_at": "2026-01-01T00:00:00Z"}});
        let r = parse(None, &ok).unwrap();
        assert_eq!(r.id, "r-1");
        let as_string = json!({"id": "e2", "data": ok["data"].to_string()});
        assert_eq!(parse(None, &as_string).unwrap().text, "Great phone");
        assert!(parse(
            None,
            &json!({"id": "e3", "data": {"review_id": "a/b", "text": "x", "submitted_at": "t"}})
        )
        .is_err());
        assert!(parse(
            None,
            &json!({"id": "e4", "data": {"review_id": "a", "text": " ", "submitted_at": "t"}})
        )
        .is_err());
    }

    #[test]
    fn earlier_orders_by_time_then_id() {
        assert!(earlier(("2026-01-01", "b"), ("2026-01-02", "a")));
        assert!(earlier(("2026-01-01", "a"), ("2026-01-01", "b")));
        assert!(!earlier(("2026-01-01", "b"), ("2026-01-01", "b")));
    }
}
