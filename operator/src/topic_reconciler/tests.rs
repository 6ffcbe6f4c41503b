use std::collections::BTreeMap;

use serde_json::{Value, json};
use tributary_broker::controller::ControllerConfig;

use super::*;
use crate::fake_api::FakeApi;
use crate::hosting::Controllers;
use crate::resources::Settings;

const CLUSTER: &str = "/apis/tributary.dev/v1alpha1/namespaces/streams/clusters/demo";
const TOPIC: &str = "/apis/tributary.dev/v1alpha1/namespaces/streams/topics/orders";

/// A fake API server with Cluster `demo` and its controller, with brokers 0..3 in session.
struct Operator {
    api: FakeApi,
    ctx: Arc<Context>,
}

impl Operator {
    async fn new() -> Self {
        let api = FakeApi::new();
        api.put(
            CLUSTER,
            json!({
                "apiVersion": "tributary.dev/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": "demo", "namespace": "streams"},
                "spec": {"replicas": 3},
            }),
        );
        let settings = Settings {
            controller_address: "controller:9093".into(),
        };
        let ctx = Arc::new(Context::new(api.client(), settings, Controllers::default()));
        let operator = Self { api, ctx };
        let controller = operator.start_controller().await;
        for id in 0..3 {
            let registration = crate::test_support::registration(
                id,
                format!("demo-broker-{id}"),
                9095,
                format!("disk-{id}"),
            );
            controller.register_broker(registration).await.unwrap();
        }
        operator
    }

    async fn start_controller(&self) -> Arc<Controller<KubeStore>> {
        let cluster: Cluster = serde_json::from_value(self.api.get(CLUSTER).unwrap()).unwrap();
        self.ctx
            .controllers
            .ensure(&self.ctx.client, &cluster, ControllerConfig::default())
            .await
            .unwrap()
    }

    fn controller(&self) -> Arc<Controller<KubeStore>> {
        self.ctx.controllers.get("streams/demo").unwrap()
    }

    fn apply(&self, spec: Value) {
        let mut object = self.api.get(TOPIC).unwrap_or_else(|| {
            json!({
                "apiVersion": "tributary.dev/v1alpha1",
                "kind": "Topic",
                "metadata": {"name": "orders", "namespace": "streams"},
            })
        });
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
        if object["spec"] != spec {
            object["metadata"]["generation"] = (generation + 1).into();
        }
        object["spec"] = spec;
        self.api.put(TOPIC, object);
    }

    async fn reconcile(&self) -> Action {
        let topic: Topic = serde_json::from_value(self.api.get(TOPIC).unwrap()).unwrap();
        reconcile(Arc::new(topic), self.ctx.clone()).await.unwrap()
    }

    fn condition(&self, type_: &str) -> Value {
        self.api.get(TOPIC).unwrap()["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .cloned()
            .unwrap()
    }
}

#[tokio::test]
async fn a_topic_is_created_grown_and_reconfigured_through_the_controller() {
    let operator = Operator::new().await;
    operator.apply(
        json!({"cluster": "demo", "partitions": 3, "replicationFactor": 2,
        "config": {"retention.ms": 3600000}}),
    );
    operator.reconcile().await;

    let record = operator.controller().snapshot().topics["orders"].clone();
    assert_eq!(record.partitions.len(), 3);
    assert_eq!(record.replication_factor(), 2);
    assert_eq!(record.config["retention.ms"], "3600000");
    let object = operator.api.get(TOPIC).unwrap();
    assert_eq!(object["metadata"]["finalizers"], json!([FINALIZER]));
    let status = &object["status"];
    assert_eq!(status["topicId"], record.id.to_string());
    assert_eq!(status["partitionCount"], 3);
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(operator.condition("Ready")["status"], "True");
    assert_eq!(operator.condition("Degraded")["status"], "False");

    // Reconciling again changes nothing.
    let version = object["metadata"]["resourceVersion"].clone();
    operator.api.clear_calls();
    operator.reconcile().await;
    assert_eq!(
        operator.api.get(TOPIC).unwrap()["metadata"]["resourceVersion"],
        version
    );

    operator.apply(
        json!({"cluster": "demo", "partitions": 5, "replicationFactor": 2,
        "config": {"retention.ms": 7200000, "cleanup.policy": "delete"}}),
    );
    operator.reconcile().await;
    let grown = operator.controller().snapshot().topics["orders"].clone();
    assert_eq!(grown.id, record.id);
    assert_eq!(grown.partitions.len(), 5);
    assert_eq!(grown.partitions[..3], record.partitions[..]);
    assert_eq!(grown.config["retention.ms"], "7200000");
    assert_eq!(grown.config["cleanup.policy"], "delete");
    let status = &operator.api.get(TOPIC).unwrap()["status"];
    assert_eq!(status["partitionCount"], 5);
    assert_eq!(status["observedGeneration"], 2);
}

#[tokio::test]
async fn a_deleted_topic_is_deleted_through_the_controller_before_its_object_goes() {
    let operator = Operator::new().await;
    operator.apply(json!({"cluster": "demo", "partitions": 2}));
    operator.reconcile().await;
    assert!(
        operator
            .controller()
            .snapshot()
            .topics
            .contains_key("orders")
    );

    let topics: Api<Topic> = Api::namespaced(operator.ctx.client.clone(), "streams");
    topics.delete("orders", &Default::default()).await.unwrap();
    assert!(
        operator.api.get(TOPIC).is_some(),
        "the finalizer holds the object"
    );
    operator.reconcile().await;
    assert!(
        !operator
            .controller()
            .snapshot()
            .topics
            .contains_key("orders")
    );
    assert!(operator.api.get(TOPIC).is_none(), "then it goes");
}

#[tokio::test]
async fn a_topic_of_a_missing_cluster_or_too_many_replicas_says_what_to_change() {
    let operator = Operator::new().await;
    operator.apply(json!({"cluster": "nope", "partitions": 1}));
    operator.reconcile().await;
    let ready = operator.condition("Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ClusterNotFound");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("correct spec.cluster")
    );

    let operator = Operator::new().await;
    operator.apply(json!({"cluster": "demo", "partitions": 1, "replicationFactor": 5}));
    operator.reconcile().await;
    let ready = operator.condition("Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("5 requested, but 3 brokers are available"),
        "{message}"
    );
    assert!(operator.controller().snapshot().topics.is_empty());
}

#[tokio::test]
async fn a_topic_made_outside_kubernetes_is_not_taken_over_or_deleted() {
    let operator = Operator::new().await;
    let new = NewTopic {
        name: "orders".into(),
        partitions: 1,
        replication_factor: Some(1),
        config: BTreeMap::new(),
    };
    let (outside, _) = operator
        .controller()
        .create_topic(new, false)
        .await
        .unwrap();
    operator.apply(json!({"cluster": "demo", "partitions": 4}));
    operator.reconcile().await;
    let ready = operator.condition("Ready");
    assert_eq!(ready["reason"], "TopicExists");
    assert_eq!(operator.controller().snapshot().topics["orders"], outside);

    let topics: Api<Topic> = Api::namespaced(operator.ctx.client.clone(), "streams");
    topics.delete("orders", &Default::default()).await.unwrap();
    operator.reconcile().await;
    assert_eq!(operator.controller().snapshot().topics["orders"], outside);
}

#[tokio::test]
async fn a_topic_whose_cluster_has_no_controller_yet_keeps_its_finalizer_on_delete() {
    let operator = Operator::new().await;
    operator.apply(json!({"cluster": "demo", "partitions": 1}));
    operator.reconcile().await;
    // The operator restarts: no controller runs until the Cluster is reconciled.
    let restarted = Arc::new(Context::new(
        operator.api.client(),
        operator.ctx.settings.clone(),
        Controllers::default(),
    ));
    let topics: Api<Topic> = Api::namespaced(operator.ctx.client.clone(), "streams");
    topics.delete("orders", &Default::default()).await.unwrap();
    let topic: Topic = serde_json::from_value(operator.api.get(TOPIC).unwrap()).unwrap();
    let action = reconcile(Arc::new(topic), restarted).await.unwrap();
    assert_eq!(action, Action::requeue(RETRY));
    assert!(
        operator.api.get(TOPIC).is_some(),
        "the data is not deleted yet"
    );
}
