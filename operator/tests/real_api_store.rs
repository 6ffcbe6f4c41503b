//! The controller core's test suite (`store-suite`) over the controller's store on the
//! Kubernetes API (`KubeStore`), on a real kube-apiserver and etcd (see
//! `common/control_plane.rs`): Topic status writes, the metadata ConfigMap and the
//! resourceVersion preconditions as a real server applies them. The suite's tests that
//! run on tokio's paused clock run over the fake only (`operator/src/kube_store/tests.rs`):
//! a real client's timers must not jump ahead while it waits on the network.

mod common;

use common::brokers;
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

/// Object size limits: a Topic may have 100,000 partitions (the CRD's maximum), whose
/// records must fit in its status (etcd refuses objects above 1.5 MiB), and topics made
/// outside Kubernetes with 20,000 partitions between them must fit in the metadata
/// ConfigMap (at most 1 MiB). Every record comes back as written in a new controller.
#[tokio::test]
async fn the_largest_topic_and_thousands_of_partitions_outside_kubernetes_fit_their_objects() {
    use std::collections::BTreeMap;
    use tributary_broker::controller::{Controller, ControllerConfig};
    use tributary_broker::metadata::NewTopic;

    let (plane, client, cluster) = start().await;
    let topic: Topic = serde_json::from_value(json!({
        "apiVersion": "tributary.dev/v1alpha1",
        "kind": "Topic",
        "metadata": {"name": "huge", "namespace": NAMESPACE},
        "spec": {"cluster": "demo", "partitions": 100_000},
    }))
    .expect("a Topic");
    let topics: Api<Topic> = Api::namespaced(client.clone(), NAMESPACE);
    topics
        .create(&PostParams::default(), &topic)
        .await
        .expect("a Topic object");
    let start_controller = async || {
        let store = KubeStore::new(client.clone(), &cluster).expect("a store");
        Controller::start(0, store, ControllerConfig::default())
            .await
            .unwrap_or_else(|e| panic!("the controller starts: {e}\n{}", plane.logs()))
    };
    let controller = start_controller().await;
    let mut sessions = brokers::register(&controller, 0..3).await;
    let create = async |name: &str, partitions: u32| {
        let topic = NewTopic {
            name: name.into(),
            partitions,
            replication_factor: Some(3),
            config: BTreeMap::new(),
        };
        controller
            .create_topic(topic, false)
            .await
            .unwrap_or_else(|e| panic!("topic {name} of {partitions} partitions: {e}"))
    };
    create("huge", 100_000).await;
    for i in 0..4 {
        create(&format!("Made_Outside_{i}"), 5_000).await;
    }
    // Brokers come and go: leaders move, ISRs shrink and grow, epochs rise unevenly.
    for round in 0..4 {
        let (registration, session) = &mut sessions[round % 3];
        controller
            .end_session(registration.broker.id, *session)
            .await
            .expect("a session ends");
        *session = controller
            .register_broker(registration.clone())
            .await
            .expect("a registration");
    }
    let status = topics.get("huge").await.expect("the Topic").status;
    let status = status.expect("a status");
    assert_eq!(status.partition_count, Some(100_000));
    let status_bytes = serde_json::to_vec(&status).expect("JSON").len();
    let config_map =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), NAMESPACE)
            .get("demo-controller-metadata")
            .await
            .expect("the metadata ConfigMap");
    let data_bytes: usize = config_map
        .data
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    eprintln!(
        "status of 100,000 partitions: {status_bytes} bytes; ConfigMap data with 20,000: {data_bytes} bytes"
    );
    assert!(status_bytes < 1024 * 1024, "{status_bytes}");
    assert!(data_bytes < 512 * 1024, "{data_bytes}");

    let before = controller.snapshot();
    drop(controller);
    let after = start_controller().await.snapshot();
    assert_eq!(after.topics, before.topics);
}

/// An API server whose Topic CRD is older than the operator (helm upgrade does not update
/// CRDs) drops `status.assignment` without an error: the store refuses such a write and
/// says what to do, instead of leaving a Topic whose partitions are gone.
#[tokio::test]
async fn an_outdated_topic_crd_is_refused_rather_than_losing_the_record() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use std::collections::BTreeMap;
    use tributary_broker::controller::{Controller, ControllerConfig};
    use tributary_broker::metadata::NewTopic;

    let (_plane, client, cluster) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = crds
        .get("topics.tributary.dev")
        .await
        .expect("the Topic CRD");
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"))
            .and_then(|s| s.properties.as_mut())
            .expect("a status schema");
        status.remove("assignment");
    }
    crds.replace("topics.tributary.dev", &PostParams::default(), &crd)
        .await
        .expect("the older CRD");
    // The API server takes the changed schema up asynchronously: until a status written
    // with an assignment comes back without one (on a Topic of another cluster).
    let topics: Api<Topic> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut probe = topics.get("b").await.expect("Topic b");
        probe.status = Some(tributary_operator::crd::TopicStatus {
            assignment: Some("probe".into()),
            ..Default::default()
        });
        let written = topics
            .replace_status("b", &PostParams::default(), &probe)
            .await
            .expect("a status write");
        if written.status.and_then(|s| s.assignment).is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the older CRD never took effect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let store = KubeStore::new(client.clone(), &cluster).expect("a store");
    let controller = Controller::start(0, store, ControllerConfig::default())
        .await
        .expect("a controller");
    brokers::register(&controller, 0..1).await;
    let topic = NewTopic {
        name: "orders".into(),
        partitions: 1,
        replication_factor: Some(1),
        config: BTreeMap::new(),
    };
    let error = controller
        .create_topic(topic, false)
        .await
        .expect_err("the write is refused")
        .to_string();
    assert!(
        error.contains("the Topic CRD is older than this operator"),
        "{error}"
    );
}
