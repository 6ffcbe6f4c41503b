//! The controller core's test suite (`store-suite`) over the controller's store on the
//! Kubernetes API (`KubeStore`), on a real kube-apiserver and etcd (see
//! `common/control_plane.rs`): Topic status writes, the metadata ConfigMap and the
//! resourceVersion preconditions as a real server applies them. The suite's tests that
//! run on tokio's paused clock run over the fake only (`operator/src/kube_store/tests.rs`):
//! a real client's timers must not jump ahead while it waits on the network.

mod common;

use common::control_plane::{ControlPlane, install};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::sync::OnceCell;
use tributary_operator::crd::{Cluster, Topic};
use tributary_operator::kube_store::KubeStore;
use tributary_store_suite::StoreFactory;

const NAMESPACE: &str = "streams";

/// Stores of Cluster `demo` over one real control plane, started by the first `open`.
struct RealStores {
    started: OnceCell<(ControlPlane, Client, Cluster)>,
}

impl RealStores {
    fn new() -> Self {
        Self {
            started: OnceCell::new(),
        }
    }
}

/// The control plane with the CRDs, Cluster `demo`, and the Topic objects the suite
/// expects: `orders`, `t` and `a` of `demo` (their records go to the status), `b` of
/// another cluster (its record goes to the ConfigMap, like every topic without an object).
async fn start() -> (ControlPlane, Client, Cluster) {
    let plane = ControlPlane::start().await;
    let client = plane.client();
    install(&client, NAMESPACE).await;
    let cluster: Cluster = serde_json::from_value(json!({
        "apiVersion": "tributary.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "demo", "namespace": NAMESPACE},
        "spec": {"replicas": 3},
    }))
    .expect("a Cluster");
    let cluster = Api::<Cluster>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &cluster)
        .await
        .expect("Cluster demo");
    let topics: Api<Topic> = Api::namespaced(client.clone(), NAMESPACE);
    for (name, of) in [
        ("orders", "demo"),
        ("t", "demo"),
        ("a", "demo"),
        ("b", "elsewhere"),
    ] {
        let topic: Topic = serde_json::from_value(json!({
            "apiVersion": "tributary.dev/v1alpha1",
            "kind": "Topic",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"cluster": of, "partitions": 1},
        }))
        .expect("a Topic");
        topics
            .create(&PostParams::default(), &topic)
            .await
            .expect("a Topic object");
    }
    (plane, client, cluster)
}

impl StoreFactory for RealStores {
    type Store = KubeStore;

    async fn open(&self) -> KubeStore {
        let (_, client, cluster) = self.started.get_or_init(start).await;
        KubeStore::new(client.clone(), cluster).expect("a store")
    }
}

tributary_store_suite::metadata_store_suite!(real_time: RealStores::new());
