//! A Kubernetes cluster on this machine for the e2e suite, with no containers: a real
//! control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, built
//! from the Go module proxy) and a test node agent that plays the kubelet with real
//! processes. It is kwok's idea, but the pods run: each node agent registers a Node, runs
//! the pods bound to it as local processes (the image map names the built binary that
//! stands in for each image), each pod with an address of its own (10.244.N.x),
//! its volumes bind-mounted in a mount namespace of its own, cluster names in its own
//! `/etc/hosts`, its probes, hooks, restarts and graceful deletion, and serves `exec` and
//! logs to the API server. Test-only: nothing here ships.
//!
//! - [`control_plane`]: the four control-plane processes, certificates and kubeconfig.
//! - [`node`]: the Node object and its Lease.
//! - [`pods`]: the pods' lifecycle and status.
//! - [`runtime`]: a container's program, environment and process.
//! - [`volumes`]: a pod's volumes as directories.
//! - [`sandbox`]: the mount namespace a container runs in.
//! - [`names`]: cluster DNS names through each pod's hosts file.
//! - [`probes`]: probes and lifecycle hooks.
//! - [`streaming`]: the exec and log endpoints.

pub mod control_plane;
pub mod names;
pub mod node;
pub mod pods;
pub mod probes;
pub mod runtime;
pub mod sandbox;
pub mod streaming;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::net::TcpListener;

use names::Names;
use pods::{Pods, Settings};
use streaming::Streaming;

/// The pods' addresses. The whole cluster runs in a network namespace of its own (see
/// `e2e/local.sh`) whose loopback device holds this network, so every address in it is
/// local and none of the machine's network settings change. (Loopback addresses proper,
/// 127.x, would need no namespace, but Kubernetes refuses them as endpoint addresses.)
pub const POD_NETWORK: &str = "10.244.0.0/16";

/// How often the agent looks at its pods besides when the watch says something changed.
const SYNC_PERIOD: Duration = Duration::from_millis(250);

/// One node agent.
pub struct NodeAgent {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub settings: Settings,
    /// The node's HTTPS certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn watch<K>(api: Api<K>, config: watcher::Config) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .touched_objects();
    tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    store
}

impl NodeAgent {
    /// Registers the node and runs its pods until `stop` turns true; then kills every pod
    /// process it started.
    pub async fn run(
        self,
        client: Client,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("the node's port")?;
        let port = listener.local_addr()?.port();
        let registration = Arc::new(node::Registration {
            name: self.name.clone(),
            labels: self.labels.clone(),
            port,
        });
        registration.register(&client).await?;
        let beat = {
            let (registration, client) = (registration.clone(), client.clone());
            tokio::spawn(async move { registration.heartbeat(&client).await })
        };
        let settings = Arc::new(self.settings);
        let mut pods = Pods::new(settings.clone(), client.clone());
        let streaming = Arc::new(Streaming {
            targets: pods.targets.clone(),
            images: settings.images.clone(),
            sandbox: settings.sandbox.clone(),
        });
        let tls = streaming::acceptor(&self.cert, &self.key)?;
        let server = tokio::spawn(streaming.serve(listener, tls));
        let on_node = watcher::Config::default().fields(&format!("spec.nodeName={}", self.name));
        let pod_store = watch(Api::<Pod>::all(client.clone()), on_node);
        let services = watch(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        );
        let slices = watch(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        );
        for (what, ready) in [
            ("pods", pod_store.wait_until_ready().await.is_ok()),
            ("services", services.wait_until_ready().await.is_ok()),
            ("endpoint slices", slices.wait_until_ready().await.is_ok()),
        ] {
            anyhow::ensure!(ready, "the watch of {what} ended before it listed anything");
        }
        tracing::info!(node = %self.name, port, "node agent ready");
        loop {
            let names = Names::new(
                &services.state(),
                &slices.state(),
                &settings.machine.api_host,
            );
            pods.sync(&pod_store.state(), &names).await;
            tokio::select! {
                _ = tokio::time::sleep(SYNC_PERIOD) => {}
                _ = stop.changed() => break,
            }
        }
        pods.kill_all().await;
        beat.abort();
        server.abort();
        Ok(())
    }
}
