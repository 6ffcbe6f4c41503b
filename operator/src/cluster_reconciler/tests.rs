use serde_json::Value;

use super::*;
use crate::fake_api::{Call, FakeApi};
use crate::hosting::Controllers;
use crate::resources::Settings;

const CLUSTER: &str = "/apis/tributary.dev/v1alpha1/namespaces/streams/clusters/demo";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/streams/events";
const STATEFULSET: &str = "/apis/apps/v1/namespaces/streams/statefulsets/demo-broker";
const OWNED: [&str; 6] = [
    "/api/v1/namespaces/streams/serviceaccounts/demo-broker",
    "/api/v1/namespaces/streams/services/demo-brokers",
    "/api/v1/namespaces/streams/services/demo",
    "/api/v1/namespaces/streams/configmaps/demo-broker-config",
    STATEFULSET,
    "/apis/policy/v1/namespaces/streams/poddisruptionbudgets/demo-broker",
];

fn settings() -> Settings {
    Settings {
        controller_address: "controller.tributary-system.svc:9093".into(),
    }
}

fn cluster_json(replicas: i32, default_rf: Option<i32>) -> Value {
    let mut config = serde_json::Map::new();
    if let Some(rf) = default_rf {
        config.insert("defaultReplicationFactor".into(), rf.into());
    }
    json!({
        "apiVersion": "tributary.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "demo", "namespace": "streams"},
        "spec": {"replicas": replicas, "config": config},
    })
}

/// A fake API server and the operator's context over it; the hosted controllers live as
/// long as it does, as they would in the operator.
struct Operator {
    api: FakeApi,
    ctx: Arc<Context>,
}

impl Operator {
    fn new() -> Self {
        let api = FakeApi::new();
        let ctx = Arc::new(Context::new(
            api.client(),
            settings(),
            Controllers::default(),
        ));
        Self { api, ctx }
    }

    /// Reconciles the Cluster as it is stored now, as the runtime would on a change.
    async fn reconcile(&self) -> Result<Action, Error> {
        let cluster: Cluster = serde_json::from_value(self.api.get(CLUSTER).unwrap()).unwrap();
        reconcile(Arc::new(cluster), self.ctx.clone()).await
    }
}

fn ready_condition(api: &FakeApi) -> Value {
    api.get(CLUSTER).unwrap()["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap()
}

fn version(api: &FakeApi, path: &str) -> Value {
    api.get(path).unwrap()["metadata"]["resourceVersion"].clone()
}

#[tokio::test]
async fn a_cluster_produces_exactly_its_owned_objects_and_reports_them_rolling_out() {
    let operator = Operator::new();
    let api = &operator.api;
    api.put(CLUSTER, cluster_json(3, None));
    operator.reconcile().await.unwrap();

    let applied: Vec<String> = api
        .writes()
        .into_iter()
        .filter(|c| c.method == "PATCH" && !c.path.ends_with("/status"))
        .map(|c| c.path)
        .collect();
    assert_eq!(applied, OWNED);
    let cluster: Cluster = serde_json::from_value(api.get(CLUSTER).unwrap()).unwrap();
    let expected = resources::owned(&cluster, &settings()).to_json();
    for (path, object) in OWNED.iter().zip(expected) {
        let stored = api.get(path).unwrap();
        assert_eq!(stored["spec"], object["spec"], "{path}");
        assert_eq!(stored["metadata"]["ownerReferences"][0]["name"], "demo");
    }
    let status = &api.get(CLUSTER).unwrap()["status"];
    assert_eq!(status["phase"], "Reconciling");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(ready_condition(api)["status"], "False");
    assert_eq!(ready_condition(api)["message"], "0 of 3 brokers are ready");
}

#[tokio::test]
async fn reconciling_again_changes_nothing() {
    let operator = Operator::new();
    let api = &operator.api;
    api.put(CLUSTER, cluster_json(3, None));
    operator.reconcile().await.unwrap();
    // Conditions set long ago keep their time when their status stays the same.
    let mut cluster = api.get(CLUSTER).unwrap();
    for condition in cluster["status"]["conditions"].as_array_mut().unwrap() {
        condition["lastTransitionTime"] = "2020-01-01T00:00:00Z".into();
    }
    api.put(CLUSTER, cluster);
    let before: Vec<Value> = OWNED
        .iter()
        .chain([&CLUSTER])
        .map(|p| version(api, p))
        .collect();
    operator.reconcile().await.unwrap();
    let after: Vec<Value> = OWNED
        .iter()
        .chain([&CLUSTER])
        .map(|p| version(api, p))
        .collect();
    assert_eq!(before, after, "a second reconcile wrote something");
}

#[tokio::test]
async fn changing_replicas_changes_the_statefulset() {
    let operator = Operator::new();
    let api = &operator.api;
    api.put(CLUSTER, cluster_json(3, None));
    operator.reconcile().await.unwrap();
    let mut cluster = api.get(CLUSTER).unwrap();
    cluster["spec"]["replicas"] = 5.into();
    cluster["metadata"]["generation"] = 2.into();
    api.put(CLUSTER, cluster);
    operator.reconcile().await.unwrap();
    assert_eq!(api.get(STATEFULSET).unwrap()["spec"]["replicas"], 5);
    assert_eq!(api.get(CLUSTER).unwrap()["status"]["observedGeneration"], 2);
}

#[tokio::test]
async fn a_ready_statefulset_makes_the_cluster_ready() {
    let operator = Operator::new();
    let api = &operator.api;
    api.put(CLUSTER, cluster_json(3, None));
    operator.reconcile().await.unwrap();
    let mut sts = api.get(STATEFULSET).unwrap();
    let generation = sts["metadata"]["generation"].clone();
    sts["status"] = json!({"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3, "observedGeneration": generation});
    api.put(STATEFULSET, sts);
    operator.reconcile().await.unwrap();
    let status = &api.get(CLUSTER).unwrap()["status"];
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["readyReplicas"], 3);
    assert_eq!(ready_condition(api)["status"], "True");
}

#[tokio::test]
async fn an_invalid_spec_sets_the_condition_and_changes_nothing() {
    let operator = Operator::new();
    let api = &operator.api;
    api.put(CLUSTER, cluster_json(3, None));
    operator.reconcile().await.unwrap();
    let before: Vec<Value> = OWNED.iter().map(|p| api.get(p).unwrap()).collect();

    let mut cluster = api.get(CLUSTER).unwrap();
    cluster["spec"]["replicas"] = 2.into();
    cluster["spec"]["config"]["defaultReplicationFactor"] = 3.into();
    api.put(CLUSTER, cluster);
    api.clear_calls();
    operator.reconcile().await.unwrap();

    let writes: Vec<Call> = api
        .writes()
        .into_iter()
        .filter(|c| !c.path.starts_with(EVENTS))
        .collect();
    assert_eq!(writes.len(), 1, "only the status is written: {writes:?}");
    assert_eq!(writes[0].path, format!("{CLUSTER}/status"));
    let warning = api
        .list(EVENTS)
        .into_iter()
        .find(|e| e["reason"] == "InvalidSpec")
        .expect("an Event says the spec is invalid");
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["regarding"]["name"], "demo");
    let after: Vec<Value> = OWNED.iter().map(|p| api.get(p).unwrap()).collect();
    assert_eq!(
        before, after,
        "an invalid spec must not change or delete anything"
    );
    let ready = ready_condition(api);
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("defaultReplicationFactor is 3 but replicas is 2")
            && message.contains("raise replicas to at least 3"),
        "{message}"
    );
    assert_eq!(api.get(CLUSTER).unwrap()["status"]["phase"], "Invalid");
}

#[tokio::test]
async fn a_topic_with_more_replicas_than_brokers_makes_the_spec_invalid() {
    let operator = Operator::new();
    let api = &operator.api;
    api.put(CLUSTER, cluster_json(2, Some(1)));
    api.put(
        "/apis/tributary.dev/v1alpha1/namespaces/streams/topics/orders",
        json!({
            "apiVersion": "tributary.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders", "namespace": "streams"},
            "spec": {"cluster": "demo", "partitions": 3, "replicationFactor": 3},
        }),
    );
    operator.reconcile().await.unwrap();
    let message = ready_condition(api)["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("topic 'orders' has replicationFactor 3 but replicas is 2"),
        "{message}"
    );
    assert!(
        api.get(STATEFULSET).is_none(),
        "nothing is created for an invalid spec"
    );
}

#[tokio::test]
async fn an_operator_restarted_with_an_invalid_topic_still_runs_the_clusters_controller() {
    let running = Operator::new();
    running.api.put(CLUSTER, cluster_json(2, Some(1)));
    running.reconcile().await.unwrap();
    assert!(running.ctx.controllers.get("streams/demo").is_some());
    running.api.put(
        "/apis/tributary.dev/v1alpha1/namespaces/streams/topics/orders",
        json!({
            "apiVersion": "tributary.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders", "namespace": "streams"},
            "spec": {"cluster": "demo", "partitions": 3, "replicationFactor": 3},
        }),
    );
    running.reconcile().await.unwrap();
    assert_eq!(ready_condition(&running.api)["reason"], "InvalidSpec");
    assert!(
        running.ctx.controllers.get("streams/demo").is_some(),
        "an invalid Topic leaves the running controller alone"
    );

    // A new operator process over the same API server: nothing hosted yet.
    running.ctx.controllers.stop_all();
    let restarted = Operator {
        api: running.api.clone(),
        ctx: Arc::new(Context::new(
            running.api.client(),
            settings(),
            Controllers::default(),
        )),
    };
    let statefulset = restarted.api.get(STATEFULSET);
    restarted.reconcile().await.unwrap();
    assert!(
        restarted.ctx.controllers.get("streams/demo").is_some(),
        "the controller is hosted whatever state one Topic is in"
    );
    assert_eq!(ready_condition(&restarted.api)["reason"], "InvalidSpec");
    assert_eq!(
        restarted.api.get(STATEFULSET),
        statefulset,
        "the brokers are left as they are"
    );
}

#[tokio::test]
async fn a_status_write_that_fails_is_an_error_the_controller_retries_and_the_retry_lands() {
    let operator = Operator::new();
    let api = &operator.api;
    api.put(CLUSTER, cluster_json(3, None));
    api.conflict_once(CLUSTER);
    let error = operator.reconcile().await.unwrap_err();
    assert!(error.to_string().contains("has been modified"), "{error}");
    assert!(api.get(CLUSTER).unwrap().get("status").is_none());
    operator.reconcile().await.unwrap();
    assert_eq!(api.get(CLUSTER).unwrap()["status"]["phase"], "Reconciling");
}

#[tokio::test]
async fn broker_sessions_show_in_the_status_and_a_missing_broker_degrades_the_cluster() {
    let operator = Operator::new();
    let api = &operator.api;
    api.put(CLUSTER, cluster_json(3, None));
    operator.reconcile().await.unwrap();
    let controller = operator.ctx.controllers.get("streams/demo").unwrap();
    for id in [0, 1] {
        let registration = crate::test_support::registration(
            id,
            format!("demo-broker-{id}.demo-brokers.streams.svc"),
            9095,
            format!("disk-{id}"),
        );
        controller.register_broker(registration).await.unwrap();
    }
    operator.reconcile().await.unwrap();

    let status = &api.get(CLUSTER).unwrap()["status"];
    let brokers = status["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 3);
    assert_eq!(
        brokers[0]["address"],
        "demo-broker-0.demo-brokers.streams.svc:9095"
    );
    let alive: Vec<bool> = brokers
        .iter()
        .map(|b| b["alive"].as_bool().unwrap())
        .collect();
    assert_eq!(alive, [true, true, false]);
    let degraded = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap();
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "BrokersDown");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("broker(s) 2")
    );
    assert!(
        api.list(EVENTS)
            .iter()
            .any(|e| e["reason"] == "BrokersDown" && e["type"] == "Warning"),
        "the transition is recorded as an Event"
    );
}

fn statefulset_replicas(api: &FakeApi) -> i64 {
    api.get(STATEFULSET).unwrap()["spec"]["replicas"]
        .as_i64()
        .unwrap()
}

fn condition_of(api: &FakeApi, type_: &str) -> Value {
    api.get(CLUSTER).unwrap()["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap()
}

/// A reconciled Cluster of `replicas` brokers, all registered, with a topic of `rf`.
async fn running_cluster(replicas: i32, rf: u32) -> Operator {
    use tributary_broker::metadata::NewTopic;

    let operator = Operator::new();
    operator.api.put(CLUSTER, cluster_json(replicas, Some(1)));
    operator.reconcile().await.unwrap();
    let controller = operator.ctx.controllers.get("streams/demo").unwrap();
    for id in 0..replicas {
        let registration = crate::test_support::registration(
            id,
            format!("demo-broker-{id}"),
            9095,
            format!("disk-{id}"),
        );
        controller.register_broker(registration).await.unwrap();
    }
    let topic = NewTopic {
        name: "events".into(),
        partitions: 10,
        replication_factor: Some(rf),
        config: Default::default(),
    };
    controller.create_topic(topic, false).await.unwrap();
    operator
}

fn scale_to(api: &FakeApi, replicas: i32) {
    let mut cluster = api.get(CLUSTER).unwrap();
    cluster["spec"]["replicas"] = replicas.into();
    api.put(CLUSTER, cluster);
}

#[tokio::test]
async fn a_scale_down_shrinks_the_statefulset_only_after_the_drain_finished() {
    let operator = running_cluster(5, 2).await;
    let api = &operator.api;
    let controller = operator.ctx.controllers.get("streams/demo").unwrap();
    scale_to(api, 3);
    operator.reconcile().await.unwrap();
    assert_eq!(statefulset_replicas(api), 5, "not before the drain");
    assert_eq!(controller.cordoned().await.unwrap(), [3, 4].into());
    let rebalancing = condition_of(api, "Rebalancing");
    assert_eq!(
        (
            rebalancing["status"].as_str(),
            rebalancing["reason"].as_str()
        ),
        (Some("True"), Some("Draining"))
    );

    // The drain runs; until it is done the StatefulSet keeps its five pods.
    for _ in 0..100 {
        if controller
            .rebalance_status()
            .await
            .unwrap()
            .moves
            .is_empty()
        {
            break;
        }
        tributary_store_suite::catch_up(&controller).await;
        controller.advance_reassignments().await.unwrap();
        operator.reconcile().await.unwrap();
        if !controller
            .rebalance_status()
            .await
            .unwrap()
            .moves
            .is_empty()
        {
            assert_eq!(statefulset_replicas(api), 5);
        }
    }
    operator.reconcile().await.unwrap();
    assert_eq!(statefulset_replicas(api), 3);
    let snapshot = controller.snapshot();
    for p in snapshot.topics.values().flat_map(|t| &t.partitions) {
        assert!(p.replicas.iter().all(|r| *r < 3), "{p:?}");
        assert_eq!(p.replicas.len(), 2);
    }
}

#[tokio::test]
async fn a_scale_down_below_a_topics_replication_factor_is_refused() {
    let operator = running_cluster(3, 3).await;
    let api = &operator.api;
    scale_to(api, 2);
    operator.reconcile().await.unwrap();
    assert_eq!(
        statefulset_replicas(api),
        3,
        "the StatefulSet is not touched"
    );
    let ready = ready_condition(api);
    assert_eq!(ready["reason"], "ScaleDownRefused");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("topic 'events' keeps 3 replicas")
            && message.contains("set spec.replicas to 3 or more"),
        "{message}"
    );
    let controller = operator.ctx.controllers.get("streams/demo").unwrap();
    assert!(controller.cordoned().await.unwrap().is_empty());
}
