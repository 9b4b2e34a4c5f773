//! Settings, from the same environment variables the Python kit reads
//! (`consort/kit/settings.py`): the launcher sets `APP_ID`, `APP_PORT`, `DAPR_HTTP_PORT`
//! and the tokens; `CONSORT_*` configure every app alike; `SEARCH_*` this one.

use std::env;
use std::path::PathBuf;

use crate::model::MODEL_VERSION;

/// Everything the service is configured with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub app_id: String,
    pub version: String,
    pub app_port: u16,
    /// `CONSORT_APP_HOST`: where the app listens (loopback unless a pod needs more).
    pub app_host: String,
    pub dapr_http_url: String,
    /// `DAPR_API_TOKEN`: sent with every call to the sidecar.
    pub dapr_api_token: String,
    /// `APP_API_TOKEN`: what the sidecar sends with every call to the app.
    pub app_api_token: String,
    pub pubsub_name: String,
    pub statestore_name: String,
    pub zipkin_url: Option<String>,
    pub log_level: String,
    pub max_body_bytes: usize,
    pub shutdown_grace_s: f64,
    pub model_dir: PathBuf,
    /// Cosine at or above which a new review is reported as a suspected duplicate.
    pub duplicate_threshold: f32,
    /// The collection `reviews.submitted` events are indexed into.
    pub reviews_collection: String,
    /// Most texts one model call takes when requests are batched together.
    pub max_batch_texts: usize,
}

fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.is_empty())
}

fn parsed<T: std::str::FromStr>(name: &str, default: T) -> T {
    var(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `CONSORT_CACHE`, else `$XDG_CACHE_HOME/consort`, else `~/.cache/consort`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CONSORT_CACHE") {
        return PathBuf::from(dir);
    }
    let base = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(var("HOME").unwrap_or_else(|| "/root".into())).join(".cache"));
    base.join("consort")
}

/// Where `runtime/search.sh` unpacks the model.
pub fn default_model_dir() -> PathBuf {
    cache_dir()
        .join("search")
        .join(format!("all-minilm-l6-v2-{MODEL_VERSION}"))
}

impl Settings {
    pub fn from_env() -> Self {
        let dapr_port: u16 = parsed("DAPR_HTTP_PORT", 3500);
        let dapr_host = var("DAPR_HOST").unwrap_or_else(|| "127.0.0.1".into());
        Self {
            app_id: var("APP_ID").unwrap_or_else(|| "search".into()),
            version: var("CONSORT_SERVICE_VERSION").unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            app_port: parsed("APP_PORT", 8008),
            app_host: var("CONSORT_APP_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            dapr_http_url: format!("http://{dapr_host}:{dapr_port}"),
            dapr_api_token: var("DAPR_API_TOKEN").unwrap_or_default(),
            app_api_token: var("APP_API_TOKEN").unwrap_or_default(),
            pubsub_name: var("CONSORT_PUBSUB_NAME").unwrap_or_else(|| "pubsub".into()),
            statestore_name: var("CONSORT_STATESTORE_NAME").unwrap_or_else(|| "statestore".into()),
            zipkin_url: var("CONSORT_ZIPKIN_URL"),
            log_level: var("CONSORT_LOG_LEVEL")
                .unwrap_or_else(|| "INFO".into())
                .to_uppercase(),
            max_body_bytes: parsed("CONSORT_MAX_BODY_BYTES", 4 * 1_048_576),
            shutdown_grace_s: parsed("CONSORT_SHUTDOWN_GRACE_S", 10.0),
            model_dir: var("SEARCH_MODEL_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(default_model_dir),
            duplicate_threshold: parsed("SEARCH_DUPLICATE_THRESHOLD", 0.9),
            reviews_collection: var("SEARCH_REVIEWS_COLLECTION").unwrap_or_else(|| "reviews".into()),
            max_batch_texts: parsed("SEARCH_MAX_BATCH_TEXTS", 64),
        }
    }
}
