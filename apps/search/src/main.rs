//! Consort's search service: sentence embeddings (all-MiniLM-L6-v2) and semantic search
//! over collections kept in the state store, beside its own Dapr sidecar. It is started
//! like every app (`dapr.yaml`'s `command:`), with the same environment.

mod app;
mod config;
mod events;
mod index;
mod model;
mod problem;
mod routes;
mod sidecar;
mod telemetry;
mod validate;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use crate::app::{App, ModelState};
use crate::config::Settings;
use crate::index::Index;
use crate::sidecar::Sidecar;
use crate::telemetry::Trace;

fn router(app: App) -> Router {
    Router::new()
        .route("/v1/embeddings", post(routes::embeddings))
        .route(
            "/v1/collections/{name}",
            get(routes::get_collection).delete(routes::delete_collection),
        )
        .route("/v1/collections/{name}/documents", post(routes::index_documents))
        .route(
            "/v1/collections/{name}/documents/{id}",
            axum::routing::delete(routes::delete_document),
        )
        .route(
            "/v1/collections/{name}/documents/{id}/similar",
            get(routes::similar),
        )
        .route("/v1/collections/{name}/query", post(routes::query))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/info", get(routes::info))
        .route("/dapr/subscribe", get(events::subscribe))
        .route(events::ROUTE, post(events::on_reviews_submitted))
        // The kit's middleware checks sizes first and answers with a problem.
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
        .layer(axum::middleware::from_fn_with_state(app.clone(), app::kit))
        .with_state(app)
}

fn load_model(app: &App) {
    let app = app.clone();
    std::thread::spawn(move || {
        let started = Instant::now();
        let state = match model::Embedder::load(&app.settings.model_dir) {
            Ok(m) => {
                telemetry::log_info(&format!(
                    "model {} loaded in {:.2} s from {}",
                    model::MODEL_NAME,
                    started.elapsed().as_secs_f64(),
                    app.settings.model_dir.display()
                ));
                ModelState::Ready(worker::Worker::start(m, app.settings.max_batch_texts))
            }
            Err(e) => {
                telemetry::log_error(&format!(
                    "model {} failed to load: {e:#} (run `make setup`)",
                    model::MODEL_NAME
                ));
                ModelState::Failed(format!("{e:#}"))
            }
        };
        *app.model.write().expect("model state") = state;
    });
}

/// Load the index from the state store once the sidecar answers (retrying until it does).
fn rebuild_index(app: &App) {
    let app = app.clone();
    tokio::spawn(async move {
        loop {
            if app.sidecar.is_healthy().await {
                let trace = Trace::continue_from(None);
                match app.index.rebuild(&trace).await {
                    Ok(n) => {
                        telemetry::log_info(&format!("index loaded from the state store: {n} documents"));
                        app.rebuilt.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => telemetry::log("warning", &format!("index not loaded yet: {e:#}"), None, None),
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
}

async fn shutdown_signal(app: App) {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    app.draining.store(true, Ordering::SeqCst);
    telemetry::log_info("draining: SIGTERM received, finishing what is in flight");
}

/// `consort-search embed [BATCH]`: one JSON string a line on stdin, one JSON vector a
/// line on stdout, in batches of BATCH texts; the model in process, with no server (for
/// the eval against the Python reference and the in-process benchmark).
fn embed_lines(batch: usize) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let settings = Settings::from_env();
    let model = model::Embedder::load(&settings.model_dir)?;
    let texts: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map(|line| Ok(serde_json::from_str::<String>(&line?)?))
        .collect::<anyhow::Result<_>>()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for chunk in texts.chunks(batch.max(1)) {
        for v in model.embed(chunk)? {
            writeln!(out, "{}", serde_json::to_string(&v)?)?;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("embed") {
        return embed_lines(args.get(2).and_then(|b| b.parse().ok()).unwrap_or(32));
    }
    serve()
}

#[tokio::main]
async fn serve() -> anyhow::Result<()> {
    let settings = Settings::from_env();
    telemetry::init_logging(&settings.app_id, &settings.log_level);
    telemetry::start_span_export(settings.zipkin_url.clone());
    let sidecar = Sidecar::new(
        settings.dapr_http_url.clone(),
        settings.dapr_api_token.clone(),
        settings.statestore_name.clone(),
        settings.pubsub_name.clone(),
    );
    let app = App {
        index: Index::new(sidecar.clone()),
        sidecar,
        model: Arc::new(RwLock::new(ModelState::Loading)),
        rebuilt: Arc::new(AtomicBool::new(false)),
        draining: Arc::new(AtomicBool::new(false)),
        settings: Arc::new(settings),
    };
    load_model(&app);
    rebuild_index(&app);
    let listener =
        tokio::net::TcpListener::bind((app.settings.app_host.as_str(), app.settings.app_port)).await?;
    telemetry::log(
        "info",
        "started",
        None,
        Some(
            json!({"version": app.settings.version, "models": [app::model_info()], "port": app.settings.app_port}),
        ),
    );
    let grace = Duration::from_secs_f64(app.settings.shutdown_grace_s.max(0.0));
    let server =
        axum::serve(listener, router(app.clone())).with_graceful_shutdown(shutdown_signal(app.clone()));
    let draining = app.draining.clone();
    tokio::select! {
        result = server => result?,
        _ = async {
            while !draining.load(Ordering::SeqCst) { tokio::time::sleep(Duration::from_millis(100)).await; }
            tokio::time::sleep(grace).await;
        } => telemetry::log("warning", "grace over: exiting with requests still in flight", None, None),
    }
    telemetry::log_info("stopped");
    Ok(())
}
