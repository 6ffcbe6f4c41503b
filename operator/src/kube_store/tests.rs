use serde_json::json;
use tributary_broker::controller::{Controller, ControllerConfig};
use tributary_broker::metadata::NewTopic;
use tributary_store_suite::StoreFactory;

use super::*;
use crate::fake_api::FakeApi;

const TOPICS: &str = "/apis/tributary.dev/v1alpha1/namespaces/streams/topics";
const METADATA: &str = "/api/v1/namespaces/streams/configmaps/demo-controller-metadata";

fn cluster() -> Cluster {
    serde_json::from_value(json!({
        "apiVersion": "tributary.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "demo", "namespace": "streams", "uid": "uid-demo"},
        "spec": {"replicas": 3},
    }))
    .unwrap()
}

/// Applies a Topic object, as a user would.
fn apply_topic(api: &FakeApi, name: &str, cluster: &str) {
    api.put(
        &format!("{TOPICS}/{name}"),
        json!({
            "apiVersion": "tributary.dev/v1alpha1",
            "kind": "Topic",
            "metadata": {"name": name, "namespace": "streams"},
            "spec": {"cluster": cluster, "partitions": 1},
        }),
    );
}

/// Stores of cluster `demo` over one fake API server.
struct KubeStores(FakeApi);

impl StoreFactory for KubeStores {
    type Store = KubeStore;

    async fn open(&self) -> KubeStore {
        KubeStore::new(self.0.client(), &cluster()).unwrap()
    }
}

/// Some of the suite's topics have Topic objects (their records go to the status); the
/// others, and `b` whose object belongs to another cluster, go to the ConfigMap.
fn stores() -> KubeStores {
    let api = FakeApi::new();
    for name in ["orders", "t", "a"] {
        apply_topic(&api, name, "demo");
    }
    apply_topic(&api, "b", "elsewhere");
    KubeStores(api)
}

tributary_store_suite::metadata_store_suite!(stores());

async fn controller(api: &FakeApi) -> Controller<KubeStore> {
    let store = KubeStore::new(api.client(), &cluster()).unwrap();
    let controller = Controller::start(0, store, ControllerConfig::default())
        .await
        .unwrap();
    for id in 1..=2 {
        let registration = crate::test_support::registration(
            id,
            format!("demo-broker-{id}.demo-brokers"),
            9095,
            format!("disk-{id}"),
        );
        controller.register_broker(registration).await.unwrap();
    }
    controller
}

/// A controller over `api` that has made topic `orders` of its Topic object.
async fn controller_with_orders(api: &FakeApi) -> Controller<KubeStore> {
    apply_topic(api, "orders", "demo");
    let controller = controller(api).await;
    controller
        .create_topic(new_topic("orders"), false)
        .await
        .unwrap();
    controller
}

fn new_topic(name: &str) -> NewTopic {
    NewTopic {
        name: name.into(),
        partitions: 2,
        replication_factor: Some(2),
        config: BTreeMap::from([("retention.ms".into(), "60000".into())]),
    }
}

#[tokio::test]
async fn a_topic_object_holds_its_record_and_everything_else_is_in_the_configmap() {
    let api = FakeApi::new();
    apply_topic(&api, "orders", "demo");
    let controller = controller(&api).await;
    let (record, _) = controller
        .create_topic(new_topic("orders"), false)
        .await
        .unwrap();
    controller
        .create_topic(new_topic("made-by-a-client"), false)
        .await
        .unwrap();

    let status = &api.get(&format!("{TOPICS}/orders")).unwrap()["status"];
    assert_eq!(status["topicId"], record.id.to_string());
    assert_eq!(status["config"], json!({"retention.ms": "60000"}));
    let assignment = status["assignment"].as_str().unwrap();
    assert_eq!(assignment::decode(assignment).unwrap(), record.partitions);
    assert_eq!(status["partitionCount"], 2);
    assert!(status.get("partitions").is_none(), "{status}");
    assert!(
        status.get("unhealthyPartitions").is_none(),
        "all in sync: {status}"
    );

    let data = &api.get(METADATA).unwrap()["data"];
    let keys: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "brokers.1",
            "brokers.2",
            "controller",
            "topics.made-by-a-client"
        ]
    );
    // A topic made outside Kubernetes keeps its partitions in the same compact form.
    let made: Value =
        serde_json::from_str(data["topics.made-by-a-client"].as_str().unwrap()).unwrap();
    assert!(
        made["assignment"].is_string() && made.get("partitions").is_none(),
        "{made}"
    );
    let epoch: Value = serde_json::from_str(data["controller"].as_str().unwrap()).unwrap();
    assert_eq!(epoch["epoch"], 1);
    let metadata = api.get(METADATA).unwrap();
    assert_eq!(
        metadata["metadata"]["ownerReferences"][0]["uid"],
        "uid-demo"
    );

    // A controller that takes over finds both, and a new epoch.
    drop(controller);
    let snapshot = self::controller(&api).await.snapshot();
    assert_eq!(snapshot.topics["orders"], record);
    assert!(snapshot.topics.contains_key("made-by-a-client"));
    assert_eq!(snapshot.controller_epoch, 2);
}

/// Operators before the compact `assignment` listed every partition in the status and in
/// the ConfigMap: those records load, and the next write replaces them.
#[tokio::test]
async fn records_listed_partition_by_partition_load_and_are_rewritten_compactly() {
    let api = FakeApi::new();
    apply_topic(&api, "orders", "demo");
    let path = format!("{TOPICS}/orders");
    let id = "6f1c1a52-27c4-4c43-9f54-3a3e1f0b2d11";
    let listed = json!([
        {"id": 0, "replicas": [1, 2], "leader": 1, "isr": [1, 2], "leaderEpoch": 3, "partitionEpoch": 5},
        {"id": 1, "replicas": [2, 1], "leader": 2, "isr": [2], "leaderEpoch": 1, "partitionEpoch": 2}
    ]);
    let mut object = api.get(&path).unwrap();
    object["status"] = json!({"topicId": id, "controllerEpoch": 1, "partitions": listed});
    api.put(&path, object);
    let legacy = json!({"name": "made-by-a-client", "id": id, "config": {},
        "partitions": [{"replicas": [1], "leader": 1, "isr": [1], "leader_epoch": 0, "partition_epoch": 0}]});
    api.put(
        METADATA,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "demo-controller-metadata", "namespace": "streams"},
            "data": {"controller": json!({"epoch": 1}).to_string(),
                "topics.made-by-a-client": legacy.to_string()}}),
    );
    let controller = controller(&api).await;
    let snapshot = controller.snapshot();
    let orders = &snapshot.topics["orders"];
    assert_eq!(orders.partitions[1].isr, [2]);
    assert_eq!(orders.partitions[0].partition_epoch, 5);
    assert_eq!(snapshot.topics["made-by-a-client"].partitions.len(), 1);

    controller.create_partitions("orders", 3).await.unwrap();
    let status = &api.get(&path).unwrap()["status"];
    assert!(status.get("partitions").is_none(), "{status}");
    let partitions = assignment::decode(status["assignment"].as_str().unwrap()).unwrap();
    assert_eq!(partitions.len(), 3);
    assert_eq!(partitions[1].isr, [2]);
    assert_eq!(status["underReplicatedPartitions"], 1);
    assert_eq!(status["unhealthyPartitions"][0]["id"], 1);
}

#[tokio::test]
async fn a_status_write_that_loses_a_resource_version_race_is_retried_and_lands() {
    let api = FakeApi::new();
    let controller = controller_with_orders(&api).await;
    // Someone else writes the conditions (a new resourceVersion), and the next write is
    // refused once more for good measure.
    let path = format!("{TOPICS}/orders");
    let mut object = api.get(&path).unwrap();
    object["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
        "reason": "Created", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
    api.put(&path, object);
    api.conflict_once(&path);

    let (grown, _) = controller.create_partitions("orders", 4).await.unwrap();
    let status = &api.get(&path).unwrap()["status"];
    assert_eq!(status["partitionCount"], 4);
    assert_eq!(
        status["conditions"][0]["reason"], "Created",
        "the other writer's conditions are kept"
    );
    assert_eq!(grown.partitions.len(), 4);
}

#[tokio::test]
async fn a_record_changed_by_another_controller_is_not_overwritten() {
    let api = FakeApi::new();
    let controller = controller_with_orders(&api).await;
    let path = format!("{TOPICS}/orders");
    let mut object = api.get(&path).unwrap();
    let mut partitions =
        assignment::decode(object["status"]["assignment"].as_str().unwrap()).unwrap();
    partitions[0].leader_epoch = 7;
    object["status"]["assignment"] = assignment::encode(&partitions).into();
    api.put(&path, object.clone());

    let err = controller.create_partitions("orders", 4).await.unwrap_err();
    assert!(err.to_string().contains("another controller"), "{err}");
    assert_eq!(api.get(&path).unwrap()["status"], object["status"]);
    assert!(controller.is_closed(), "it stops, to be started afresh");
    let controller = self::controller(&api).await;

    // The same holds for what the ConfigMap keeps.
    let mut metadata = api.get(METADATA).unwrap();
    metadata["data"]["brokers.1"] = json!({"incarnation": "someone else's"}).to_string().into();
    api.put(METADATA, metadata);
    let registration = crate::test_support::registration(1, "h", 1, "new-disk");
    let err = controller.register_broker(registration).await.unwrap_err();
    assert!(err.to_string().contains("another controller"), "{err}");
}

#[tokio::test]
async fn deleting_a_topic_clears_its_record_and_keeps_the_users_object() {
    let api = FakeApi::new();
    let controller = controller_with_orders(&api).await;
    controller.delete_topic("orders").await.unwrap();
    let object = api.get(&format!("{TOPICS}/orders")).unwrap();
    assert_eq!(object["spec"]["cluster"], "demo");
    assert_eq!(
        object["status"],
        json!({"controllerEpoch": 1}),
        "no record, and still fenced"
    );
    drop(controller);
    assert!(self::controller(&api).await.snapshot().topics.is_empty());
}

#[tokio::test]
async fn a_damaged_record_stops_the_controller_with_where_it_is() {
    let api = FakeApi::new();
    apply_topic(&api, "orders", "demo");
    let path = format!("{TOPICS}/orders");
    let mut object = api.get(&path).unwrap();
    object["status"] = json!({"topicId": "not-a-uuid", "partitions": []});
    api.put(&path, object);
    let store = KubeStore::new(api.client(), &cluster()).unwrap();
    let err = Controller::start(0, store, ControllerConfig::default())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("Topic orders") && message.contains("status.topicId"),
        "{message}"
    );
}

#[test]
fn configmap_keys_round_trip_topic_names_with_dots() {
    for key in [
        "controller",
        "brokers/3",
        "topics/__consumer_offsets",
        "topics/a.b.c",
    ] {
        assert_eq!(store_key(&data_key_of(key)), key);
    }
}

#[tokio::test]
async fn a_controller_of_an_older_epoch_is_fenced_everywhere() {
    let api = FakeApi::new();
    apply_topic(&api, "orders", "demo");
    let old = controller(&api).await;
    old.create_topic(new_topic("orders"), false).await.unwrap();
    // A second controller takes over (a new leader) while the old one still runs.
    let new = controller(&api).await;
    assert_eq!(new.snapshot().controller_epoch, 2);
    let status = &api.get(&format!("{TOPICS}/orders")).unwrap()["status"];
    assert_eq!(
        status["controllerEpoch"], 2,
        "the new epoch is stamped on every record"
    );

    let err = old.create_partitions("orders", 4).await.unwrap_err();
    assert!(err.to_string().contains("another controller"), "{err}");
    assert!(
        old.is_closed(),
        "a controller whose store changed underneath stops"
    );
    let err = old
        .create_topic(new_topic("other"), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has stopped"), "{err}");

    // The ConfigMap's entries are fenced the same way.
    let older = controller(&api).await;
    let _newest = controller(&api).await;
    let registration = crate::test_support::registration(7, "h", 1, "disk-7");
    let err = older.register_broker(registration).await.unwrap_err();
    assert!(err.to_string().contains("another controller"), "{err}");
    assert_eq!(
        new.create_partitions("orders", 2)
            .await
            .unwrap()
            .0
            .partitions
            .len(),
        2
    );
}

#[tokio::test]
async fn a_topic_whose_object_is_gone_is_deleted_and_a_lost_configmap_keeps_the_epoch() {
    let api = FakeApi::new();
    let controller = controller_with_orders(&api).await;
    let topics: kube::Api<Topic> = kube::Api::namespaced(api.client(), "streams");
    topics.delete("orders", &Default::default()).await.unwrap();
    controller.delete_topic("orders").await.unwrap();
    assert!(!controller.is_closed());

    apply_topic(&api, "orders", "demo");
    controller
        .create_topic(new_topic("orders"), false)
        .await
        .unwrap();
    drop(controller);
    // Someone deletes the metadata ConfigMap: the next controller's epoch still grows.
    let config_maps: kube::Api<ConfigMap> = kube::Api::namespaced(api.client(), "streams");
    config_maps
        .delete("demo-controller-metadata", &Default::default())
        .await
        .unwrap();
    let next = self::controller(&api).await;
    assert_eq!(next.snapshot().controller_epoch, 2);
    assert!(next.snapshot().topics.contains_key("orders"));
}

#[tokio::test]
async fn a_deleted_configmap_is_not_silently_made_again() {
    let api = FakeApi::new();
    let controller = controller(&api).await;
    let config_maps: kube::Api<ConfigMap> = kube::Api::namespaced(api.client(), "streams");
    config_maps
        .delete("demo-controller-metadata", &Default::default())
        .await
        .unwrap();
    let err = controller.allocate_producer_ids(0).await.unwrap_err();
    assert!(err.to_string().contains("another controller"), "{err}");
    assert!(api.get(METADATA).is_none());
}

/// A Topic object being deleted takes its status with it when it goes: a topic made again
/// under its name meanwhile (a Kafka client auto-creating it) is kept in the ConfigMap.
#[tokio::test]
async fn a_topic_made_while_its_object_is_being_deleted_is_not_recorded_in_that_object() {
    let api = FakeApi::new();
    let path = format!("{TOPICS}/orders");
    api.put(
        &path,
        json!({
            "apiVersion": "tributary.dev/v1alpha1",
            "kind": "Topic",
            "metadata": {"name": "orders", "namespace": "streams",
                "finalizers": ["tributary.dev/topic-data"]},
            "spec": {"cluster": "demo", "partitions": 1},
        }),
    );
    api.delete(&path);
    let controller = controller(&api).await;
    controller
        .create_topic(new_topic("orders"), false)
        .await
        .unwrap();
    assert!(
        api.get(&path).unwrap()["status"]
            .get("assignment")
            .is_none(),
        "the record is not in the object being deleted"
    );
    let data = &api.get(METADATA).unwrap()["data"];
    assert!(data.get("topics.orders").is_some(), "{data}");
}
