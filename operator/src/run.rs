//! `tributary-operator run`: every replica serves health and metrics over HTTP and the
//! controllers' gRPC port; the one holding the leader Lease labels its pod (which the
//! controller Service selects), watches Clusters and Topics, and hosts each Cluster's
//! controller. A replica that loses the Lease exits, and Kubernetes restarts it as a
//! standby; a new leader resumes from what the API server holds.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::ListParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tributary_broker::server::controller_server;

use crate::context::{Context, Error};
use crate::crd::{Cluster, Topic};
use crate::hosting::Controllers;
use crate::leader::{self, LeaseConfig, LeaseLock};
use crate::metrics::Metrics;
use crate::resources::Settings;
use crate::{cluster_reconciler, topic_reconciler};

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Watch only this namespace; None watches all.
    pub namespace: Option<String>,
    pub settings: Settings,
    pub lease: LeaseConfig,
    /// This replica's pod (namespace, name), to label when it leads; None when run
    /// outside a cluster, where brokers must reach this process by other means.
    pub pod: Option<(String, String)>,
}

/// Shared by the HTTP handlers.
struct Health {
    metrics: Arc<Metrics>,
    /// Set once the replica is serving (as leader or standby).
    serving: AtomicBool,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.serving.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> String {
    health.metrics.render()
}

/// Serves /healthz, /readyz and /metrics on `listener` until `shutdown`.
async fn serve_http(
    listener: TcpListener,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Fails with what to do when the CRDs are not installed (or not readable).
pub async fn check_crds(client: &Client, namespace: Option<&str>) -> Result<(), String> {
    let clusters: Api<Cluster> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match clusters.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(
            "the Tributary CRDs are not installed in this Kubernetes cluster: \
             run `tributary-operator crd | kubectl apply -f -` (or install the Helm chart), then start the operator again"
                .into(),
        ),
        Err(kube::Error::Api(status)) if status.code == 403 => Err(format!(
            "the operator may not list Clusters{}: {}; grant it the Role of the Helm chart (`tributary-operator rbac` prints the rules)",
            namespace.map(|n| format!(" in namespace {n}")).unwrap_or_default(),
            status.message
        )),
        Err(e) => Err(format!("cannot reach the Kubernetes API: {e}")),
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn error_policy<K>(object: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action
where
    K: kube::Resource<DynamicType = ()>,
{
    tracing::warn!(
        name = %object.name_any(),
        namespace = ?object.namespace(),
        %error,
        "reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(5))
}

/// Watches Clusters and Topics and reconciles them until `stop` completes; stops the
/// controllers of Clusters that are gone.
async fn lead(
    client: Client,
    config: &RunConfig,
    controllers: Controllers,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let namespace = config.namespace.as_deref();
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.settings.clone(),
        controllers.clone(),
    ));
    let clusters = {
        let metrics = metrics.clone();
        Controller::new(
            api::<Cluster>(&client, namespace),
            watcher::Config::default(),
        )
        .owns(
            api::<StatefulSet>(&client, namespace),
            watcher::Config::default(),
        )
        // A Topic's replication factor can make its Cluster's spec invalid.
        .watches(
            api::<Topic>(&client, namespace),
            watcher::Config::default(),
            |topic| {
                let namespace = topic.namespace()?;
                Some(ObjectRef::new(&topic.spec.cluster).within(&namespace))
            },
        )
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(
            move |cluster, ctx| {
                let metrics = metrics.clone();
                async move {
                    metrics
                        .measure("cluster", cluster_reconciler::reconcile(cluster, ctx))
                        .await
                }
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {})
    };
    let topics = {
        let metrics = metrics.clone();
        Controller::new(api::<Topic>(&client, namespace), watcher::Config::default())
            .graceful_shutdown_on(stop.clone().cancelled_owned())
            .run(
                move |topic, ctx| {
                    let metrics = metrics.clone();
                    async move {
                        metrics
                            .measure("topic", topic_reconciler::reconcile(topic, ctx))
                            .await
                    }
                },
                error_policy,
                ctx,
            )
            .for_each(|_| async {})
    };
    let sweep = {
        let api = api::<Cluster>(&client, namespace);
        let stop = stop.clone();
        async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! { _ = ticker.tick() => {}, () = stop.cancelled() => return }
                match api.list(&ListParams::default()).await {
                    Ok(list) => {
                        let existing: std::collections::BTreeSet<String> =
                            list.items.iter().map(|c| c.key()).collect();
                        controllers.retain(|key| existing.contains(key));
                        metrics.controllers.set(controllers.keys().len() as i64);
                    }
                    Err(error) => tracing::warn!(%error, "cannot list Clusters"),
                }
            }
        }
    };
    tokio::join!(clusters, topics, sweep);
}

/// Runs the operator until `shutdown` completes (Ok) or leadership is lost (Err).
pub async fn run(
    client: Client,
    config: RunConfig,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    check_crds(&client, config.namespace.as_deref()).await?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        serving: AtomicBool::new(false),
    });
    let stop = CancellationToken::new();
    let http_addr: Option<SocketAddr> = http.local_addr().ok();
    let http_task = tokio::spawn(serve_http(
        http,
        health.clone(),
        stop.clone().cancelled_owned(),
    ));
    let controllers = Controllers::default();
    let grpc_addr: Option<SocketAddr> = grpc.local_addr().ok();
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(controller_server(controllers.clone()))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(grpc),
                stop.clone().cancelled_owned(),
            ),
    );
    tracing::info!(http = ?http_addr, grpc = ?grpc_addr, namespace = ?config.namespace, "operator serving; waiting for the leader Lease");

    if let Some((namespace, pod)) = &config.pod
        && let Err(error) = leader::unlabel(&client, namespace, pod).await
    {
        tracing::warn!(%error, "cannot take the leader label off this pod");
    }
    health.serving.store(true, Ordering::Relaxed);
    let mut lease = LeaseLock::new(client.clone(), config.lease.clone());
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        () = lease.acquire() => {
            tracing::info!(identity = %config.lease.identity, "leading");
            metrics.leader.set(1);
            if let Some((namespace, pod)) = &config.pod
                && let Err(error) = leader::label_leader(&client, namespace, pod, &config.lease.name).await
            {
                tracing::error!(%error, "cannot label this pod as the leader's; brokers will not reach the controllers");
            }
            let leading = lead(client.clone(), &config, controllers.clone(), metrics.clone(), stop.clone());
            tokio::select! {
                () = leading => Ok(()),
                () = lease.keep() => Err("lost the leader Lease; exiting so that a restart makes this replica a standby".to_string()),
                () = &mut shutdown => {
                    controllers.stop_all();
                    stop.cancel();
                    if let Err(error) = lease.release().await {
                        tracing::warn!(%error, "cannot release the leader Lease; the next leader waits for it to lapse");
                    }
                    Ok(())
                }
            }
        }
        () = &mut shutdown => Ok(()),
    };
    // Not leading any more: every controller stops, ending its broker sessions.
    controllers.stop_all();
    stop.cancel();
    // Brokers' connections end with their sessions; do not wait long for stragglers.
    if tokio::time::timeout(Duration::from_secs(10), grpc_task)
        .await
        .is_err()
    {
        tracing::warn!("gRPC connections still open after 10 s; stopping anyway");
    }
    let _ = http_task.await;
    outcome
}

#[cfg(test)]
mod tests;
