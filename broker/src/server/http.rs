//! Health and metrics over plain HTTP: `/healthz` (the process is up), `/readyz` (the
//! broker serves requests), `/in-sync` (it serves and is in the in-sync set of every
//! partition it replicates: what a rolling restart waits for before it stops the next
//! broker), `/metrics` (Prometheus) and `/prestop` (hand leaderships over before a stop:
//! Kubernetes calls it as the pod's preStop hook).

use std::future::Future;
use std::pin::Pin;
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

/// Prepares the broker to stop: stops answering ready and hands its leaderships over.
pub(super) type PrestopHook =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Clone)]
pub(super) struct HttpState {
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    replicas: Arc<OnceLock<Arc<ReplicaManager>>>,
    prestop: Arc<OnceLock<PrestopHook>>,
}

impl HttpState {
    pub fn new(ready: Arc<AtomicBool>, metrics: Arc<Metrics>) -> Self {
        Self {
            ready,
            metrics,
            replicas: Arc::new(OnceLock::new()),
            prestop: Arc::new(OnceLock::new()),
        }
    }

    /// What `/prestop` does, once the broker can do it.
    pub fn attach_prestop(&self, hook: PrestopHook) {
        let _ = self.prestop.set(hook);
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

/// Ready, and caught up: in the in-sync set of every partition it replicates that has a
/// leader. Otherwise 503, naming the partitions it is still catching up on.
async fn in_sync(State(state): State<HttpState>) -> impl IntoResponse {
    let replicas = state
        .replicas
        .get()
        .filter(|_| state.ready.load(Ordering::Acquire));
    let Some(replicas) = replicas else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting up or shutting down\n".to_string(),
        );
    };
    let behind = replicas.out_of_sync();
    if behind.is_empty() {
        return (StatusCode::OK, "in sync\n".to_string());
    }
    let shown: Vec<String> = behind.iter().take(10).map(ToString::to_string).collect();
    let more = behind.len().saturating_sub(shown.len());
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "not in sync: catching up on {} partition(s): {}{}\n",
            behind.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ),
    )
}

/// Answers once the broker leads nothing it could hand over (or the handover timed out),
/// so the stop that follows does not leave partitions leaderless.
async fn prestop(State(state): State<HttpState>) -> impl IntoResponse {
    match state.prestop.get() {
        Some(hook) => {
            hook().await;
            (StatusCode::OK, "not ready; leaderships handed over\n")
        }
        None => {
            state.ready.store(false, Ordering::Release);
            (
                StatusCode::OK,
                "not ready; still starting, so nothing to hand over\n",
            )
        }
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
        .route("/in-sync", get(in_sync))
        .route("/metrics", get(metrics))
        .route("/prestop", get(prestop))
        .with_state(state);
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(%error, "the health and metrics server failed");
    }
}
