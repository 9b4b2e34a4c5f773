//! The routes: embeddings, collections, health, `/info`, `/metrics` and the event
//! subscription. The limits are the contract's (`consort/contracts/search.py`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Map, Value};

use crate::app::{empty, is_draining, json_response, model_info, parse_json, sidecar_failure, App};
use crate::index::{Document, Match, Search};
use crate::model::{DIMENSIONS, MODEL_NAME};
use crate::problem::{ApiResult, Problem};
use crate::telemetry::{self, Trace};
use crate::validate::{self, Checker, MAX_DOCUMENTS, MAX_EMBED_TEXTS, MAX_K};

/// The routes `/info` lists (the contract's paths).
pub const ROUTES: [(&str, &str); 9] = [
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/collections/{name}"),
    ("DELETE", "/v1/collections/{name}"),
    ("POST", "/v1/collections/{name}/documents"),
    ("DELETE", "/v1/collections/{name}/documents/{id}"),
    ("POST", "/v1/collections/{name}/query"),
    ("GET", "/v1/collections/{name}/documents/{id}/similar"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
];

fn matches_json(matches: Vec<Match>) -> Value {
    matches
        .into_iter()
        .map(|m| json!({"id": m.id, "score": m.score, "text": m.text, "metadata": m.metadata}))
        .collect()
}

/// The collection kept by `reviews.submitted` events is read-only through the API.
fn writable(app: &App, name: &str) -> ApiResult<()> {
    if name == app.settings.reviews_collection {
        return Err(Problem::new(
            409,
            "Collection managed by events",
            format!("`{name}` is indexed from reviews.submitted events; query it, but write to another collection."),
            "collection-read-only",
        ));
    }
    Ok(())
}

fn missing_collection(name: &str) -> Problem {
    Problem::not_found(format!("no collection `{name}`: index documents into it first"))
}

pub async fn embeddings(State(app): State<App>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let body = parse_json(headers.get(header::CONTENT_TYPE), &body)?;
    let mut c = Checker::default();
    let mut texts = Vec::new();
    if let Some(map) = c.object(&body, "body", &["texts"], &["texts"]) {
        if let Some(items) = map
            .get("texts")
            .and_then(|v| c.list(v, "body.texts", 1, MAX_EMBED_TEXTS))
        {
            for (i, v) in items.iter().enumerate() {
                if let Some(t) = c.text(v, &format!("body.texts.{i}")) {
                    texts.push(t);
                }
            }
        }
    }
    c.finish()?;
    let worker = app.worker()?;
    let (vectors, tokens) = worker.embed(texts).await?;
    Ok(json_response(
        StatusCode::OK,
        json!({"model": model_info(), "dimensions": DIMENSIONS, "embeddings": vectors, "tokens": tokens}),
    ))
}

pub async fn index_documents(
    State(app): State<App>,
    Extension(trace): Extension<Trace>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    validate::collection_name(&name)?;
    let body = parse_json(headers.get(header::CONTENT_TYPE), &body)?;
    let mut c = Checker::default();
    let mut docs: Vec<(String, String, Map<String, Value>)> = Vec::new();
    if let Some(map) = c.object(&body, "body", &["documents"], &["documents"]) {
        if let Some(items) = map
            .get("documents")
            .and_then(|v| c.list(v, "body.documents", 1, MAX_DOCUMENTS))
        {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let at = format!("body.documents.{i}");
                let Some(d) = c.object(item, &at, &["id", "text", "metadata"], &["id", "text"]) else {
                    continue;
                };
                let id = match d.get("id").and_then(Value::as_str) {
                    Some(id) if validate::is_document_id(id) => {
                        if !seen.insert(id.to_string()) {
                            c.fail(
                                &format!("{at}.id"),
                                format!("`{id}` is given twice in this request"),
                                None,
                            );
                        }
                        Some(id.to_string())
                    }
                    Some(_) | None if d.contains_key("id") => {
                        c.fail(
                            &format!("{at}.id"),
                            format!("String should match pattern '{}'", validate::DOCUMENT_ID_PATTERN),
                            Some(json!(validate::DOCUMENT_ID_PATTERN)),
                        );
                        None
                    }
                    _ => None,
                };
                let text = d.get("text").and_then(|t| c.text(t, &format!("{at}.text")));
                let metadata = match d.get("metadata") {
                    Some(Value::Null) | None => Some(Map::new()),
                    Some(m) => c.metadata(m, &format!("{at}.metadata")),
                };
                if let (Some(id), Some(text), Some(metadata)) = (id, text, metadata) {
                    docs.push((id, text, metadata));
                }
            }
        }
    }
    c.finish()?;
    writable(&app, &name)?;
    let worker = app.worker()?;
    let (vectors, _) = worker.embed(docs.iter().map(|d| d.1.clone()).collect()).await?;
    let ids: Vec<String> = docs.iter().map(|d| d.0.clone()).collect();
    let documents = docs
        .into_iter()
        .zip(vectors)
        .map(|((id, text, metadata), vector)| Document {
            id,
            text,
            metadata,
            vector,
        })
        .collect();
    let written = app
        .index
        .upsert(&name, documents, &trace)
        .await
        .map_err(sidecar_failure)?;
    Ok(json_response(
        if written.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        json!({"collection": name, "indexed": ids, "count": written.count, "model": model_info()}),
    ))
}

pub async fn query(
    State(app): State<App>,
    Extension(trace): Extension<Trace>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    validate::collection_name(&name)?;
    let body = parse_json(headers.get(header::CONTENT_TYPE), &body)?;
    let mut c = Checker::default();
    let (mut text, mut k, mut filter, mut min_score) = (None, 10, None, None);
    if let Some(map) = c.object(&body, "body", &["text", "k", "filter", "min_score"], &["text"]) {
        text = map.get("text").and_then(|t| c.text(t, "body.text"));
        if let Some(v) = map.get("k") {
            k = c.int(v, "body.k", 1, MAX_K).unwrap_or(k);
        }
        filter = match map.get("filter") {
            Some(Value::Null) | None => None,
            Some(f) => c.metadata(f, "body.filter"),
        };
        min_score = match map.get("min_score") {
            Some(Value::Null) | None => None,
            Some(v) => c.number(v, "body.min_score", -1.0, 1.0).map(|x| x as f32),
        };
    }
    c.finish()?;
    let text = text.expect("validated");
    let worker = app.worker()?;
    let (vectors, _) = worker.embed(vec![text]).await?;
    let found = app
        .index
        .query(
            &name,
            &vectors[0],
            &Search {
                k: k as usize,
                filter: filter.as_ref(),
                exclude: None,
                min_score,
            },
            &trace,
        )
        .await
        .map_err(sidecar_failure)?
        .ok_or_else(|| missing_collection(&name))?;
    Ok(json_response(
        StatusCode::OK,
        json!({"collection": name, "model": model_info(), "matches": matches_json(found)}),
    ))
}

fn k_param(params: &HashMap<String, String>, default: i64) -> ApiResult<(usize, Option<f32>)> {
    let mut c = Checker::default();
    let k = match params.get("k") {
        None => default,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) => c.int(&json!(n), "query.k", 1, MAX_K).unwrap_or(default),
            Err(_) => {
                c.fail(
                    "query.k",
                    "Input should be a valid integer, unable to parse string as an integer",
                    None,
                );
                default
            }
        },
    };
    let min_score = match params.get("min_score") {
        None => None,
        Some(raw) => match raw.parse::<f64>() {
            Ok(x) => c
                .number(&json!(x), "query.min_score", -1.0, 1.0)
                .map(|x| x as f32),
            Err(_) => {
                c.fail("query.min_score", "Input should be a valid number", None);
                None
            }
        },
    };
    for key in params.keys() {
        if key != "k" && key != "min_score" {
            c.fail(&format!("query.{key}"), "Extra inputs are not permitted", None);
        }
    }
    c.finish()?;
    Ok((k as usize, min_score))
}

pub async fn similar(
    State(app): State<App>,
    Extension(trace): Extension<Trace>,
    Path((name, id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    validate::collection_name(&name)?;
    validate::document_id(&id, "path.id")?;
    let (k, min_score) = k_param(&params, 5)?;
    let doc = app
        .index
        .get(&name, &id, &trace)
        .await
        .map_err(sidecar_failure)?
        .ok_or_else(|| Problem::not_found(format!("no document `{id}` in collection `{name}` (yet)")))?;
    let found = app
        .index
        .query(
            &name,
            &doc.vector,
            &Search {
                k,
                filter: None,
                exclude: Some(&id),
                min_score,
            },
            &trace,
        )
        .await
        .map_err(sidecar_failure)?
        .unwrap_or_default();
    Ok(json_response(
        StatusCode::OK,
        json!({"collection": name, "id": id, "model": model_info(), "matches": matches_json(found)}),
    ))
}

pub async fn get_collection(
    State(app): State<App>,
    Extension(trace): Extension<Trace>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    validate::collection_name(&name)?;
    let count = app
        .index
        .size(&name, &trace)
        .await
        .map_err(sidecar_failure)?
        .ok_or_else(|| missing_collection(&name))?;
    Ok(json_response(
        StatusCode::OK,
        json!({"name": name, "count": count, "dimensions": DIMENSIONS, "model": model_info()}),
    ))
}

pub async fn delete_collection(
    State(app): State<App>,
    Extension(trace): Extension<Trace>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    validate::collection_name(&name)?;
    writable(&app, &name)?;
    if !app
        .index
        .delete_collection(&name, &trace)
        .await
        .map_err(sidecar_failure)?
    {
        return Err(missing_collection(&name));
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn delete_document(
    State(app): State<App>,
    Extension(trace): Extension<Trace>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    validate::collection_name(&name)?;
    validate::document_id(&id, "path.id")?;
    writable(&app, &name)?;
    if !app
        .index
        .delete_document(&name, &id, &trace)
        .await
        .map_err(sidecar_failure)?
    {
        return Err(Problem::not_found(format!(
            "no document `{id}` in collection `{name}`"
        )));
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}))
}

pub async fn readyz(State(app): State<App>) -> Response {
    if is_draining(&app) {
        let mut p = Problem::new(
            503,
            "Shutting down",
            "This instance is finishing its requests in flight before it exits; send new ones elsewhere.",
            "shutting-down",
        );
        p.retry_after_s = Some(1);
        return p.into_response();
    }
    let mut waiting = Vec::new();
    if !app.sidecar.is_healthy().await {
        waiting.push(format!(
            "Dapr sidecar at {} is not reachable yet",
            app.settings.dapr_http_url
        ));
    }
    match &*app.model.read().expect("model state") {
        crate::app::ModelState::Ready(_) => {}
        crate::app::ModelState::Loading => waiting.push(format!("model {MODEL_NAME} is loading")),
        crate::app::ModelState::Failed(why) => {
            waiting.push(format!("model {MODEL_NAME} failed to load: {why}"))
        }
    }
    if !app.rebuilt.load(Ordering::SeqCst) {
        waiting.push("the index is loading from the state store".into());
    }
    if waiting.is_empty() {
        return json_response(
            StatusCode::OK,
            json!({"status": "ready", "checks": ["sidecar", MODEL_NAME, "index"]}),
        );
    }
    Problem::new(503, "Not ready", waiting.join("; "), "not-ready").into_response()
}

pub async fn metrics(State(app): State<App>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        telemetry::render_metrics(&app.settings.app_id, &app.settings.version, MODEL_NAME),
    )
        .into_response()
}

/// What this service is: the `ServiceInfo` contract, as the Python kit answers it.
pub async fn info(State(app): State<App>, Extension(trace): Extension<Trace>) -> Response {
    let sidecar = match app.sidecar.metadata(&trace).await {
        Ok(m) => json!({
            "runtime_version": m["runtimeVersion"].as_str().unwrap_or(""),
            "components": m["components"].as_array().map(|cs| cs.iter().map(|c| json!({
                "name": c["name"], "type": c["type"], "version": c["version"].as_str().unwrap_or("")
            })).collect::<Vec<_>>()).unwrap_or_default(),
            "subscriptions": m["subscriptions"].as_array().map(|ss| ss.iter().map(|s| json!({
                "pubsub": s["pubsubname"], "topic": s["topic"],
                "dead_letter_topic": s["deadLetterTopic"].as_str().filter(|t| !t.is_empty()),
            })).collect::<Vec<_>>()).unwrap_or_default(),
            "actor_types": [],
        }),
        Err(e) => {
            telemetry::log(
                "warning",
                &format!("sidecar metadata unavailable: {e:#}"),
                Some(&trace.trace_id),
                None,
            );
            Value::Null
        }
    };
    let mut subscribes: Vec<String> = sidecar["subscriptions"]
        .as_array()
        .map(|ss| {
            ss.iter()
                .filter_map(|s| s["topic"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    subscribes.sort();
    subscribes.dedup();
    let models = if app.model_loaded() {
        json!([model_info()])
    } else {
        json!([])
    };
    json_response(
        StatusCode::OK,
        json!({
            "app_id": app.settings.app_id,
            "version": app.settings.version,
            "models": models,
            "routes": ROUTES.iter().map(|(m, p)| json!({"method": m, "path": p})).collect::<Vec<_>>(),
            "publishes": [crate::events::DUPLICATE_TOPIC],
            "subscribes": subscribes,
            "sidecar": sidecar,
        }),
    )
}
