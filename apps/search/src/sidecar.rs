//! This app's own daprd, over Dapr's HTTP API (as `consort.kit.dapr.Sidecar`): state,
//! publish, health and metadata. Every call carries `dapr-api-token` and the W3C
//! `traceparent` of the work in hand, so the sidecar's spans join the same trace.
//!
//! Why HTTP and not the Rust SDK: the Rust Dapr SDK speaks gRPC only and is pre-1.0; the
//! HTTP API is the one every Consort app uses, and the few calls here are plain JSON.

use std::time::Duration;

use anyhow::{anyhow, Result};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::telemetry::Trace;

#[derive(Clone)]
pub struct Sidecar {
    base: String,
    token: String,
    client: Client,
    pub statestore: String,
    pub pubsub: String,
}

/// When a state write may happen.
pub enum Condition {
    /// Last write wins.
    Always,
    /// Only while the key still has this ETag.
    IfEtag(String),
    /// Only when the key does not exist yet.
    IfAbsent,
}

/// One state value and its ETag.
pub struct Item {
    pub value: Value,
    pub etag: Option<String>,
}

/// The write lost a compare-and-set: the key changed since it was read.
#[derive(Debug)]
pub struct EtagMismatch;

impl std::fmt::Display for EtagMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the state key changed since it was read (ETag mismatch)")
    }
}

impl std::error::Error for EtagMismatch {}

impl Sidecar {
    pub fn new(base: String, token: String, statestore: String, pubsub: String) -> Self {
        let client = Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(64)
            .build()
            .expect("an HTTP client");
        Self {
            base,
            token,
            client,
            statestore,
            pubsub,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str, trace: &Trace) -> reqwest::RequestBuilder {
        let mut r = self.client.request(method, format!("{}{}", self.base, path));
        if !self.token.is_empty() {
            r = r.header("dapr-api-token", &self.token);
        }
        r.header("traceparent", trace.child_traceparent())
    }

    /// True when the sidecar is up and its components are loaded.
    pub async fn is_healthy(&self) -> bool {
        let mut r = self
            .client
            .get(format!("{}/v1.0/healthz/outbound", self.base))
            .timeout(Duration::from_secs(1));
        if !self.token.is_empty() {
            r = r.header("dapr-api-token", &self.token);
        }
        matches!(r.send().await, Ok(resp) if resp.status() == StatusCode::NO_CONTENT)
    }

    pub async fn metadata(&self, trace: &Trace) -> Result<Value> {
        let resp = self
            .request(reqwest::Method::GET, "/v1.0/metadata", trace)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(anyhow!("metadata answered {}", resp.status()));
        }
        Ok(resp.json().await?)
    }

    /// One key, or None when it is not there.
    pub async fn get_state(&self, key: &str, trace: &Trace) -> Result<Option<Item>> {
        let path = format!("/v1.0/state/{}/{}", self.statestore, urlencode(key));
        let resp = self.request(reqwest::Method::GET, &path, trace).send().await?;
        match resp.status() {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => {
                let etag = resp
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                let value: Value = resp.json().await?;
                Ok(Some(Item { value, etag }))
            }
            status => Err(anyhow!(
                "state get {key} answered {status}: {}",
                resp.text().await.unwrap_or_default()
            )),
        }
    }

    /// Several keys at once, in no particular order; missing keys are left out.
    pub async fn get_bulk_state(&self, keys: &[String], trace: &Trace) -> Result<Vec<(String, Value)>> {
        let mut found = Vec::new();
        for chunk in keys.chunks(500) {
            let path = format!("/v1.0/state/{}/bulk", self.statestore);
            let resp = self
                .request(reqwest::Method::POST, &path, trace)
                .json(&json!({"keys": chunk, "parallelism": 10}))
                .send()
                .await?;
            if resp.status() != StatusCode::OK {
                return Err(anyhow!("state bulk get answered {}", resp.status()));
            }
            let items: Vec<Value> = resp.json().await?;
            for item in items {
                if let (Some(key), Some(data)) = (item.get("key").and_then(Value::as_str), item.get("data")) {
                    if !data.is_null() {
                        found.push((key.to_string(), data.clone()));
                    }
                }
            }
        }
        Ok(found)
    }

    /// Write keys, each under its condition.
    pub async fn save(&self, items: Vec<(String, Value, Condition)>, trace: &Trace) -> Result<()> {
        let body: Vec<Value> = items
            .into_iter()
            .map(|(key, value, condition)| match condition {
                Condition::Always => json!({"key": key, "value": value}),
                Condition::IfEtag(etag) => json!({"key": key, "value": value, "etag": etag}),
                Condition::IfAbsent => json!({"key": key, "value": value,
                                              "options": {"concurrency": "first-write"}}),
            })
            .collect();
        let path = format!("/v1.0/state/{}", self.statestore);
        let resp = self
            .request(reqwest::Method::POST, &path, trace)
            .json(&body)
            .send()
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => Err(EtagMismatch.into()),
            status => {
                let text = resp.text().await.unwrap_or_default();
                // A first-write on a key that exists fails in Dapr's Redis store with a
                // plain 500 whose message says so: the same lost race.
                if text.contains("failed to set key") || text.to_lowercase().contains("etag") {
                    return Err(EtagMismatch.into());
                }
                Err(anyhow!("state save answered {status}: {text}"))
            }
        }
    }

    pub async fn delete_state(&self, key: &str, etag: Option<&str>, trace: &Trace) -> Result<()> {
        let path = format!("/v1.0/state/{}/{}", self.statestore, urlencode(key));
        let mut r = self.request(reqwest::Method::DELETE, &path, trace);
        if let Some(etag) = etag {
            r = r
                .header("if-match", etag)
                .query(&[("concurrency", "first-write")]);
        }
        let resp = r.send().await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => Err(EtagMismatch.into()),
            status => Err(anyhow!("state delete {key} answered {status}")),
        }
    }

    /// Publish one CloudEvent with the given id (the consumers' idempotency key).
    pub async fn publish(
        &self,
        topic: &str,
        event_type: &str,
        event_id: &str,
        source: &str,
        data: Value,
        trace: &Trace,
    ) -> Result<()> {
        let envelope = json!({
            "specversion": "1.0",
            "id": event_id,
            "source": source,
            "type": event_type,
            "datacontenttype": "application/json",
            "data": data,
        });
        let path = format!("/v1.0/publish/{}/{}", self.pubsub, topic);
        let resp = self
            .request(reqwest::Method::POST, &path, trace)
            .header("content-type", "application/cloudevents+json")
            .body(envelope.to_string())
            .send()
            .await?;
        if resp.status() != StatusCode::NO_CONTENT {
            return Err(anyhow!(
                "publish to {topic} answered {}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            ));
        }
        Ok(())
    }
}

/// Percent-encodes what a state key may hold beyond URL-safe characters.
fn urlencode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
