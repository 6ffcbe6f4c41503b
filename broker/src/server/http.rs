//! Health and metrics over plain HTTP: `/healthz` (the process is up), `/readyz` (the
//! broker serves requests) and `/metrics` (Prometheus).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use crate::replication::ReplicaManager;

#[derive(Clone)]
pub(super) struct HttpState {
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    replicas: Arc<OnceLock<Arc<ReplicaManager>>>,
}

impl HttpState {
    pub fn new(ready: Arc<AtomicBool>, metrics: Arc<Metrics>) -> Self {
        Self {
            ready,
            metrics,
            replicas: Arc::new(OnceLock::new()),
        }
    }

    /// Partition metrics become available once the logs are loaded.
    pub fn attach(&self, replicas: Arc<ReplicaManager>) {
        let _ = self.replicas.set(replicas);
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting up or shutting down\n",
        )
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let body = match state.replicas.get() {
        Some(replicas) => {
            let replicas = replicas.clone();
            let metrics = state.metrics.clone();
            tokio::task::spawn_blocking(move || metrics.render(&replicas))
                .await
                .unwrap_or_default()
        }
        None => String::new(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

pub(super) async fn serve(listener: TcpListener, state: HttpState, stop: CancellationToken) {
    let router = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(%error, "the health and metrics server failed");
    }
}
